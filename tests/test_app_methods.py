"""The sidebar's method and pattern pickers and the Compare page, through AppTest on stories260K."""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.support.apptest import (
    PRUNED,
    axis_titles,
    captions,
    choose,
    errors,
    figures,
    finish_background,
    generation,
    legend_below,
    metric,
    pruned_counts,
    set_sparsity,
    start,
    trace_names,
)
from tests.support.models import saved_model

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


@pytest.mark.parametrize(
    ("method", "pattern"), [("wanda", None), ("sparsegpt", None), ("magnitude", "2:4"), ("wanda", "heads")]
)
def test_a_method_or_pattern_applies(method, pattern):
    at = start()
    set_sparsity(at, 30)
    before_text, before_share = generation(at, "pruned"), metric(at, PRUNED)
    state = at.session_state["pruning_state"]
    before_weights = {n: state.weight(n).clone() for n in pruned_counts(at)}

    at.slider(key="sidebar_sparsity").set_value(60)
    choose(at, method, pattern)
    assert not at.error, errors(at)
    applied = at.session_state["pruning_applied"]
    assert (applied.method, applied.pattern) == (method, pattern or "unstructured")
    assert metric(at, PRUNED) != before_share
    assert generation(at, "pruned") != before_text
    assert any(not torch.equal(state.weight(n), w) for n, w in before_weights.items())
    assert f"Applied: {'SparseGPT' if method == 'sparsegpt' else ''}" in captions(at)
    assert any("\\begin{gathered}" in latex.value for latex in at.latex)  # the method's formula

    at.button(key="sidebar_reset").click().run()  # back to dense and to the magnitude slider path
    assert not at.exception, at.exception
    assert at.selectbox(key="sidebar_method").value == "magnitude"
    assert at.selectbox(key="sidebar_pattern").value == "unstructured"
    assert metric(at, PRUNED) == "0.0%"
    assert generation(at, "dense") == generation(at, "pruned")


def test_n_m_disables_the_slider_and_shows_its_sparsity():
    at = start()
    set_sparsity(at, 20)
    choose(at, "wanda", "2:4")
    slider = at.slider(key="sidebar_sparsity")
    assert slider.disabled and slider.value == 50
    assert "sparsity fixed at 50%" in captions(at)
    assert metric(at, PRUNED) == "50.0%"
    state = at.session_state["pruning_state"]
    mask = state.mask("model.layers.0.mlp.up_proj")
    assert torch.equal(
        mask.view(mask.shape[0], -1, 4).sum(-1), torch.full((mask.shape[0], mask.shape[1] // 4), 2)
    )

    choose(at, pattern="unstructured")
    assert not at.slider(key="sidebar_sparsity").disabled


def test_too_short_calibration_text_keeps_the_previous_state():
    at = start()
    at.slider(key="sidebar_sparsity").set_value(50)
    choose(at, "wanda")
    before, applied = pruned_counts(at), at.session_state["pruning_applied"]
    text = generation(at, "pruned")
    state, layer = at.session_state["pruning_state"], "model.layers.1.mlp.down_proj"
    mask = state.mask(layer).clone()

    at.button_group(key="sidebar_calib_source").set_value("paste").run()
    at.text_area(key="sidebar_calib_text").input("Once upon a time there was a cat.").run()
    assert not at.exception, at.exception
    assert "tokens but one sequence" in errors(at) and "previous pruning is kept" in errors(at)
    assert "(Tokens each)" in errors(at) and "seq_len" not in errors(at)  # the field's name, not the code's
    assert pruned_counts(at) == before
    assert at.session_state["pruning_applied"] == applied
    assert generation(at, "pruned") == text

    at.number_input(key="sidebar_calib_seq_len").set_value(8).run()  # short sequences fit: Wanda reruns
    assert not at.error, errors(at)
    assert at.session_state["pruning_applied"].calibration.source == "pasted text"
    assert not torch.equal(state.mask(layer), mask)  # other activations, other weights kept per row


@pytest.fixture
def fresh_points(stories):
    """Compare-page points live on the shared dense model: start each Compare test without them."""
    at = start()
    dense = at.session_state["pruning_state"].dense
    for name in ("points", "layers"):
        store = dense.cache.peek(("ui", "store", name))
        if store is not None:
            store.clear()
    return at


def point_key(at: AppTest, method: str, pattern: str, sparsity: float) -> tuple:
    """The key the Compare page gives a point, with the sidebar's layer kinds and calibration."""
    from ui import sweeps

    kinds = tuple(at.pills(key="sidebar_kinds").value)
    return sweeps.point_key(method, pattern, sparsity, kinds, at.session_state["calibration_batch"][0])


def test_compare_page_curves_layers_tokens_and_apply(fresh_points):
    from ui import sweeps

    at = fresh_points
    at.switch_page("views/compare.py").run()
    at.button_group(key="compare_methods").set_value(["magnitude", "wanda"])
    at.button_group(key="compare_patterns").set_value(["unstructured"])
    at.button_group(key="compare_grid").set_value([30, 60])
    at.run()
    assert not at.exception, at.exception
    curves, errors_chart, jaccard = figures(at)  # curves, reconstruction error, Jaccard
    assert {"Magnitude · Unstructured", "Wanda · Unstructured"} <= set(trace_names(curves))
    assert "your model now" in trace_names(curves) and "The star is your model now." in captions(at)
    (star,) = [t for t in curves["data"] if t["name"] == "your model now"]
    assert star["marker"]["symbol"] == "star"
    assert all(legend_below(figure) for figure in (curves, errors_chart, jaccard))  # clear of the modebar
    assert "‖WX − W′X‖ / ‖WX‖" in axis_titles(errors_chart)
    assert set(trace_names(errors_chart)) == {"Magnitude", "Wanda"}
    assert "Jaccard of pruned weights" in axis_titles(jaccard)
    assert trace_names(jaccard) == ["Magnitude vs Wanda", "two random masks"]  # and its reference line
    assert [i.value for i in at.info if "dense now" in i.value]  # nothing to colour yet
    options = at.selectbox(key="compare_point").options
    assert len(options) == 4

    assert "Wanda · unstructured · 60%" in options
    at.selectbox(key="compare_point").set_value(point_key(at, "wanda", "unstructured", 0.6))
    at.button(key="compare_apply").click().run()
    assert not at.exception, at.exception
    applied = at.session_state["pruning_applied"]
    assert (applied.method, applied.sparsity) == ("wanda", 0.6), applied
    assert at.selectbox(key="sidebar_method").value == "wanda"
    assert at.slider(key="sidebar_sparsity").value == 60
    chosen = sweeps.cached_point(
        at.session_state["pruning_state"].dense, point_key(at, "wanda", "unstructured", 0.6)
    )
    assert metric(at, PRUNED) == f"{chosen.achieved:.1%}"  # Wanda rounds per row: 59.5% here
    assert [h for h in at.html if "pe-loss" in h.value and "pe-tok" in h.value]
    assert float(metric(at, "Mean loss, pruned").split()[0]) > float(
        metric(at, "Mean loss, dense").split()[0]
    )

    at.switch_page("views/prune.py").run()
    assert not at.exception, at.exception
    assert metric(at, PRUNED) == f"{chosen.achieved:.1%}"
    assert generation(at, "dense") != generation(at, "pruned")


def test_big_models_compute_on_request_and_keep_finished_points(fresh_points, monkeypatch):
    from ui import defaults, sweeps

    at = fresh_points
    monkeypatch.setattr(defaults, "SMALL_MODEL", 0)  # stories260K as a big model
    dense = at.session_state["pruning_state"].dense
    at.switch_page("views/compare.py").run()
    at.button_group(key="compare_methods").set_value(["magnitude", "random"])
    at.button_group(key="compare_patterns").set_value(["unstructured", "2:4"])
    at.button_group(key="compare_grid").set_value([40, 70])
    at.run()
    assert not at.exception, at.exception
    assert at.button(key="compare_compute").label == "Compute 6 missing points"  # 2:4 is one point each
    assert not at.main.get("plotly_chart")

    # A stopped run leaves what it finished: one point done, the chart shows it, the button offers the rest.
    sweeps.compute_point(dense, point_key(at, "random", "unstructured", 0.4), None)
    at.run()
    assert at.button(key="compare_compute").label == "Compute 5 missing points"
    assert "Random · Unstructured" in trace_names(figures(at)[0])

    at.button(key="compare_compute").click().run()
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key == "compare_compute"]
    assert len(at.selectbox(key="compare_point").options) == 6

    # SparseGPT waits for its Apply button on a big model.
    before = pruned_counts(at)
    at.slider(key="sidebar_sparsity").set_value(50)
    choose(at, "sparsegpt")
    assert pruned_counts(at) == before
    at.button(key="sidebar_apply").click().run()
    assert not at.exception, at.exception
    finish_background(at)
    assert at.session_state["pruning_applied"].method == "sparsegpt"
    assert metric(at, PRUNED) == "50.0%"

    assert not [h for h in at.html if "pe-tok" in h.value]  # token losses wait for their button too
    at.button(key="compare_tokens_go").click().run()
    assert not at.exception, at.exception
    assert [h for h in at.html if "pe-tok" in h.value]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_model_change_clears_the_method_and_other_architectures_work(tmp_path, arch):
    folder = tmp_path / arch
    saved_model(folder, arch)
    at = start()
    choose(at, "wanda", "2:4")
    assert metric(at, PRUNED) == "50.0%"

    at.text_input(key="sidebar_source").input(str(folder))
    at.button(key="sidebar_load").click().run()
    assert not at.exception, at.exception
    assert (
        at.session_state["pruning_applied"] is None
        or at.session_state["pruning_applied"].method == "magnitude"
    )
    assert at.selectbox(key="sidebar_method").value == "magnitude"
    assert at.selectbox(key="sidebar_pattern").value == "unstructured"
    assert metric(at, PRUNED) == "0.0%"

    at.slider(key="sidebar_sparsity").set_value(50)
    choose(at, "wanda", "heads")  # GQA heads (Llama) or a fused qkv Conv1D (GPT-2)
    assert not at.error, errors(at)
    assert metric(at, PRUNED) != "0.0%"
    at.switch_page("views/compare.py").run()
    assert not at.exception, at.exception
    assert len(at.main.get("plotly_chart")) == 3
    assert [h for h in at.html if "pe-tok" in h.value]


def test_layers_histogram_shows_where_a_method_pruned():
    """Wanda's pruned weights are not the smallest |w|: the Layers page says so instead of a threshold."""
    at = start()
    at.slider(key="sidebar_sparsity").set_value(50)
    choose(at, "wanda")
    at.switch_page("views/layers.py").run()
    assert not at.exception, at.exception
    text = captions(at)
    assert "does not cut at one |w|" in text and "Current threshold" not in text
    histogram = figures(at)[0]
    assert "pruned" in trace_names(histogram)
    assert not histogram["layout"].get("shapes") and not histogram["layout"].get(
        "annotations"
    )  # no threshold
    state = at.session_state["pruning_state"]
    name = state.dense.layers[1].name
    assert not state.pruned_by_magnitude(name)
    choose(at, "magnitude")
    assert "Current threshold" in captions(at)


def test_sparsegpt_on_a_big_model_runs_in_the_background_and_survives_a_slider_move(monkeypatch):
    """After Apply the sidebar shows the run, not a stale Apply button; a slider move does not drop it."""
    import threading

    from ui import defaults, jobs

    gate, decide = threading.Event(), jobs.method_result
    monkeypatch.setattr(jobs, "method_result", lambda *a, **k: gate.wait(60) and decide(*a, **k))
    at = start()
    monkeypatch.setattr(defaults, "SMALL_MODEL", 0)  # stories260K as a big model
    at.slider(key="sidebar_sparsity").set_value(50)
    choose(at, "sparsegpt")
    assert "press Apply to run SparseGPT · unstructured · 50%" in captions(at)
    assert metric(at, PRUNED) == "0.0%"

    at.button(key="sidebar_apply").click().run()
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key == "sidebar_apply"]  # the run shows, not its button
    assert "Running in the background" in captions(at)

    set_sparsity(at, 60)  # a move during the run keeps it going and offers the new setting
    assert "Running in the background" in captions(at)
    assert "Until it finishes the pruning shown is none (dense)" in captions(at)
    gate.set()
    finish_background(at)
    applied = at.session_state["pruning_applied"]
    assert (applied.method, applied.sparsity) == ("sparsegpt", 0.5)
    assert metric(at, PRUNED) == "50.0%"
    assert "Applied: SparseGPT" in captions(at)
    assert "the pruning shown is SparseGPT · unstructured · 50%" in captions(at)  # 60% waits for Apply

    set_sparsity(at, 50)  # back at what is applied: no Apply button, no run, nothing stale
    assert not [b for b in at.button if b.key == "sidebar_apply"]
    assert "press Apply" not in captions(at) and "Running in the background" not in captions(at)


def test_structured_patterns_say_how_they_round_and_only_supported_patterns_are_offered():
    at = start()
    at.slider(key="sidebar_sparsity").set_value(80)
    choose(at, "wanda", "heads")
    assert not at.error, errors(at)
    text = captions(at)
    assert "80% asked, rounded to whole heads in each block" in text and "q, o lose 75%" in text
    assert "grouped-query attention" in text
    at.switch_page("views/layers.py").run()
    assert "Whole attention heads go, so only attention layers change" in captions(at)  # not "global …"

    choose(at, "sparsegpt")  # SparseGPT has no whole-unit variant: the patterns are not offered
    assert at.selectbox(key="sidebar_pattern").value == "unstructured"
    assert "SparseGPT cannot prune whole attention heads" in " ".join(i.value for i in at.info)
    options = at.selectbox(key="sidebar_pattern").options
    assert "Whole MLP neurons" not in options and "Whole attention heads" not in options
    assert "SparseGPT does not offer whole MLP neurons or whole attention heads." in captions(at)
    assert not at.error, errors(at)
    assert "SparseGPT prunes the same share of every layer" in captions(at)

    choose(at, "magnitude")
    at.radio(key="sidebar_policy").set_value("global").run()
    assert "One |w| threshold over all selected layers" in captions(at)
