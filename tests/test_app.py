"""The Streamlit app through AppTest: every page, the shared sidebar, policies, reset, session isolation."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.support.apptest import (
    PRUNED,
    array,
    captions,
    errors,
    figures,
    generation,
    metric,
    next_token_bars,
    set_sparsity,
    sparsity_overview,
    start,
    sweep,
    weight_bytes,
)
from ui import charts

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


def threshold_caption(at: AppTest) -> float:
    match = re.search(r"Current threshold for .*?\|w\| ≤ ([0-9.]+)", captions(at))
    assert match, captions(at)
    return float(match.group(1))


def test_prune_page_follows_the_slider():
    at = start()
    assert metric(at, PRUNED) == "0.0%"
    assert metric(at, "KL(dense ‖ pruned), next token") == "0.0000 nats"
    assert generation(at, "dense") == generation(at, "pruned")
    assert metric(at, "Dense perplexity") == metric(at, "Pruned perplexity")

    set_sparsity(at, 50)
    assert metric(at, PRUNED) == "50.0%"
    assert float(metric(at, "KL(dense ‖ pruned), next token").split()[0]) > 0
    assert generation(at, "dense") != generation(at, "pruned")
    assert float(metric(at, "Pruned perplexity")) > float(metric(at, "Dense perplexity"))
    assert "Kernel that ran" in "".join(i.value for i in at.info)
    next_token = next_token_bars(at)
    assert list(next_token) == ["dense", "pruned"] and next_token["dense"] != next_token["pruned"]
    assert set(next_token["dense"]) == set(next_token["pruned"]) and len(next_token["dense"]) >= 10
    # Masked dense runs the dense kernel: the headline says so, never a bare 0.63× or 1.17×.
    assert metric(at, "Pruned / dense") == "~1.00×, same kernel"
    assert "They part at new token" in captions(at)


def test_a_huge_perplexity_reads_as_one_short_number(monkeypatch):
    import math

    from prune_explorer.measure import evaluate

    at = start()
    session_model = at.session_state["pruning_state"].model
    score = evaluate.perplexity

    def blown_up(model, ids, **kwargs):
        """The session's pruned model scores 1.79e10, as a broken pruning can (shared sweeps stay real)."""
        result = score(model, ids, **kwargs)
        if model is not session_model:
            return result
        return evaluate.Perplexity(result.tokens * math.log(1.79e10), result.tokens)

    monkeypatch.setattr(evaluate, "perplexity", blown_up)
    set_sparsity(at, 90)
    assert metric(at, "Pruned perplexity") == "1.8e10"
    (pruned,) = [m for m in at.metric if m.label == "Pruned perplexity"]
    assert pruned.delta == "+1.8e10"
    drawn = sweep(at)
    assert drawn["current"] == (pytest.approx(90, abs=0.5), pytest.approx(1.79e10, rel=1e-3))
    assert "your model now (90.0%, perplexity 1.8e10)" in drawn["legend"]  # the diamond, as the metric says


def test_reset_to_dense_restores_exact_weights():
    at = start()
    state = at.session_state["pruning_state"]
    set_sparsity(at, 60)
    assert any(state.is_pruned(layer.name) for layer in state.dense.layers)

    at.button(key="sidebar_reset").click().run()
    assert not at.exception
    assert at.slider(key="sidebar_sparsity").value == 0
    assert metric(at, PRUNED) == "0.0%"
    assert generation(at, "dense") == generation(at, "pruned")
    for layer in state.dense.layers:
        current = state.weight(layer.name).contiguous().view(torch.uint8)
        dense = layer.weight(state.dense.model).contiguous().view(torch.uint8)
        assert torch.equal(current, dense), layer.name


def test_layers_page_table_histogram_and_overview():
    at = start()
    at.switch_page("views/layers.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert not table["kind"].isin(["embedding", "LM head"]).any()
    assert (table["sparsity %"] == 0).all()
    assert threshold_caption(at) == 0.0

    set_sparsity(at, 50)
    table = at.dataframe[0].value
    assert table["sparsity %"].round(1).eq(50.0).all()
    assert threshold_caption(at) > 0.0
    (histogram,) = figures(at)  # the |w| histogram (the block × kind overview is HTML)
    (line,) = histogram["layout"]["shapes"]  # the threshold line, where the caption says
    assert line["type"] == "line" and line["x0"] == line["x1"] == pytest.approx(
        threshold_caption(at), abs=1e-6
    )
    assert "pruned" in [trace["name"] for trace in histogram["data"]]
    overview = sparsity_overview(at)["data"][0]
    assert len(overview["y"]) == 7 and len(overview["x"]) == 5  # stories260K: 7 kinds in 5 blocks
    assert np.allclose(overview["z"], 50.0, atol=0.5)

    at.toggle(key="layers_log_x").set_value(True).run()
    at.toggle(key="layers_log_y").set_value(True).run()
    assert not at.exception, at.exception

    chosen = "model.layers.2.mlp.down_proj"
    at.selectbox(key="layers_layer").set_value(chosen).run()
    assert "Current threshold for 2 · mlp.down_proj" in captions(at)
    at.toggle(key="sidebar_extras").set_value(True).run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value["kind"].eq("embedding").any()
    assert at.selectbox(key="layers_layer").value == chosen  # the choice survives a new layer list


def test_learn_page_views_follow_the_slider():
    at = start()
    at.switch_page("views/learn.py").run()
    assert not at.exception, at.exception
    assert metric(at, "Weights removed here") == "0%"
    assert "0 of 288 weights in this corner are zero now (black)." in captions(at)

    set_sparsity(at, 40)
    assert metric(at, "Weights removed here") == "40%"
    patch, histogram = figures(at)[:2]
    (pruned,) = [t for t in patch["data"] if t.get("name") == "pruned"]  # pruned weights: their own colour
    assert {c for _, c in pruned["colorscale"]} == {charts.ZERO_COLOR}
    shown = int(np.isfinite(array(pruned["z"])).sum())
    assert shown == int(re.search(r"(\d+) of 288 weights", captions(at)).group(1)) > 0
    assert metric(at, "KL(dense ‖ pruned), next token").endswith(" nats")
    at.toggle(key="learn_log_x").set_value(True).run()  # the log |w| axis, as on the Layers page
    assert not at.exception, at.exception
    assert figures(at)[1]["layout"]["xaxis"]["type"] == "log"
    assert sweep(at)["current"][0] == pytest.approx(40, abs=0.5)  # the diamond walked with the slider
    assert "walks along the curve" in captions(at)
    assert float(metric(at, "KL(dense ‖ pruned), next token").split()[0]) > 0
    assert "0 of 288 weights" not in captions(at)
    assert "4 · Pruning during training recovers more" in [s.value for s in at.subheader]
    assert [link.proto.page for link in at.main.get("page_link")] == ["train"]  # where it is done


def test_global_policy_and_overrides():
    at = start()
    at.radio(key="sidebar_policy").set_value("global").run()
    set_sparsity(at, 50)
    assert metric(at, PRUNED) == "50.0%"
    state = at.session_state["pruning_state"]
    sparsities = {round(state.sparsity(layer.name), 3) for layer in state.dense.layers if layer.block >= 0}
    assert len(sparsities) > 1  # one global cut-off leaves layers at different sparsities

    name = "model.layers.0.mlp.up_proj"
    at.multiselect(key="sidebar_override_layers").set_value([name]).run()
    at.slider(key="sidebar_override_percent").set_value(90).run()
    assert not at.exception, at.exception
    assert state.sparsity(name) == pytest.approx(0.9, abs=1e-3)
    assert "Applied: Magnitude |w| · global policy · 50% · 1 layer at 90%." in captions(at)  # not "50%" alone
    assert metric(at, PRUNED) != "50.0%"  # the override's 90% counts in the share shown


def test_no_layer_kind_at_all_is_refused_and_the_last_choice_kept():
    at = start()
    set_sparsity(at, 40)
    kinds = at.pills(key="sidebar_kinds")
    chosen = kinds.value
    kinds.set_value([kinds.value[0]]).run()
    assert not at.exception, at.exception
    one = metric(at, PRUNED)

    at.pills(key="sidebar_kinds").set_value([]).run()
    assert not at.exception, at.exception
    assert "At least one layer kind must take part" in " ".join(w.value for w in at.warning)
    assert at.pills(key="sidebar_kinds").value == [chosen[0]]
    assert metric(at, PRUNED) == one and "of 0 weights" not in captions(at)
    at.switch_page("views/prune.py").run()
    assert not at.warning  # said once, where it happened


def test_threshold_out_of_range_keeps_previous_state():
    at = start()
    set_sparsity(at, 30)
    state = at.session_state["pruning_state"]

    at.radio(key="sidebar_policy").set_value("threshold").run()
    start_threshold = at.number_input(key="sidebar_threshold").value
    assert start_threshold > 0  # starts near the pruning the user had, not at "prune nothing"
    shown = metric(at, PRUNED)
    assert shown != "0.0%"
    assert f"threshold policy · |w| ≤ {start_threshold:.5g}" in captions(at)  # the summary names it
    before = {layer.name: state.pruned_count(layer.name) for layer in state.dense.layers}

    at.number_input(key="sidebar_threshold").set_value(100.0).run()
    assert not at.exception, at.exception
    assert "above the largest |w|" in errors(at) and "previous pruning is kept" in errors(at)
    assert at.number_input(key="sidebar_threshold").value == start_threshold  # visibly rejected
    assert {layer.name: state.pruned_count(layer.name) for layer in state.dense.layers} == before
    assert metric(at, PRUNED) == shown

    at.number_input(key="sidebar_threshold").set_value(start_threshold / 4).run()
    assert not at.error
    assert metric(at, PRUNED) != shown
    # The greyed slider follows what the threshold prunes, not the 30% it had before.
    slider = at.slider(key="sidebar_sparsity")
    assert slider.disabled and slider.value == round(float(metric(at, PRUNED).rstrip("%")))
    assert slider.value < 30


def test_an_empty_prompt_is_said_to_be_empty():
    at = start()
    at.text_area(key="prune_prompt").input("").run()
    assert not at.exception, at.exception
    assert "The prompt is empty" in " ".join(w.value for w in at.warning)
    at.text_area(key="prune_prompt").input("Once upon a time").run()
    assert not at.warning


def test_sessions_are_isolated_and_the_dense_model_is_unchanged():
    first, second = start(), start()
    dense = first.session_state["pruning_state"].dense
    assert second.session_state["pruning_state"].dense is dense  # one cached model for the process
    snapshot = weight_bytes(dense)

    set_sparsity(first, 70)
    second.run()
    assert metric(first, PRUNED) == "70.0%"
    assert metric(second, PRUNED) == "0.0%"
    assert generation(second, "dense") == generation(second, "pruned")
    assert generation(first, "dense") == generation(second, "dense")
    after = weight_bytes(dense)
    assert snapshot.keys() == after.keys()
    assert all(torch.equal(snapshot[n], after[n]) for n in snapshot)
