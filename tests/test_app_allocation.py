"""The sidebar's allocation through AppTest: the per-layer chart follows the slider and shows the session's
own per-layer sparsity, OWL and the budget share the slider's average exactly, and a refused choice (the
budget without curves, λ out of range) says why and keeps the pruning."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from prune_explorer.measure.sensitivity import measure_sensitivity
from prune_explorer.models.layers import select
from prune_explorer.plans.recipe_io import parse_recipe
from prune_explorer.pruning import allocation, budget_bounds
from prune_explorer.scenes import Scene, scene_to_query
from tests.support.apptest import (
    APP,
    PRUNED,
    TIMEOUT,
    array,
    captions,
    figures,
    measured,
    metric,
    pruned_counts,
    set_sparsity,
    sidebar_layer_bars,
    start,
)
from tests.support.downloads import record_downloads

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


def bars(at: AppTest) -> np.ndarray:
    return sidebar_layer_bars(at)[0]


def average_line(at: AppTest) -> float:
    return sidebar_layer_bars(at)[1]


def state_percent(at: AppTest) -> np.ndarray:
    """The session's pruned share of every selected layer, in percent, as the chart rounds it."""
    state, applied = at.session_state["pruning_state"], at.session_state["pruning_applied"]
    layers = select(state.dense.layers, applied.kinds)
    return np.array([round(100 * state.pruned_count(la.name) / la.numel, 2) for la in layers])


def choose_allocation(at: AppTest, name: str) -> AppTest:
    at.selectbox(key="sidebar_allocation").set_value(name).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_EXPLORER_CACHE", str(tmp_path))  # no sensitivity curves but this test's
    return tmp_path


def test_the_chart_follows_the_slider_and_the_state(fresh_cache):
    at = start()
    set_sparsity(choose_allocation(at, "owl"), 40)
    at40 = bars(at)
    assert np.array_equal(at40, state_percent(at))
    assert len(set(at40.tolist())) > 1, "OWL gives blocks different shares"
    assert average_line(at) == pytest.approx(40.0, abs=0.01)
    assert metric(at, PRUNED) == "40.0%"
    assert "OWL allocation (M 5, λ 0.08)" in captions(at)  # the sidebar's "Applied: ..." line

    set_sparsity(at, 65)
    at65 = bars(at)
    assert np.array_equal(at65, state_percent(at)) and not np.array_equal(at40, at65)
    assert (at65 > at40).all()
    assert average_line(at) == pytest.approx(65.0, abs=0.01)
    applied = at.session_state["pruning_applied"]
    state = at.session_state["pruning_state"]
    layers = select(state.dense.layers, applied.kinds)
    shares = applied.layer_sparsity
    assert allocation.average_sparsity(shares, allocation.layer_sizes(layers)) == pytest.approx(
        0.65, abs=1e-9
    )
    assert pruned_counts(at) == {
        la.name: round(shares[la.name] * la.numel) if la.name in shares else 0 for la in state.dense.layers
    }

    choose_allocation(at, "uniform")
    assert np.allclose(bars(at), 65.0, atol=0.05), "uniform: every layer at the slider (to one weight)"


def test_budget_without_curves_is_refused_and_keeps_the_pruning(fresh_cache):
    at = set_sparsity(start(), 50)
    before = pruned_counts(at)
    choose_allocation(at, "budget")
    assert at.selectbox(key="sidebar_allocation").value == "uniform"
    warning = " ".join(w.value for w in at.warning)
    assert "No sensitivity curves" in warning and "Sensitivity page" in warning
    assert pruned_counts(at) == before


def test_lambda_out_of_range_is_refused_and_keeps_the_pruning(fresh_cache):
    at = set_sparsity(choose_allocation(start(), "owl"), 50)
    before, shown = pruned_counts(at), bars(at)
    at.number_input(key="sidebar_owl_lam").set_value(0.9).run()
    assert not at.exception, at.exception
    assert at.number_input(key="sidebar_owl_lam").value == pytest.approx(0.08)
    assert "λ must be between 0 and 0.5" in " ".join(w.value for w in at.warning)
    assert pruned_counts(at) == before and np.array_equal(bars(at), shown)

    at.number_input(key="sidebar_owl_lam").set_value(0.2).run()  # a wider spread, accepted
    assert not at.exception, at.exception
    assert np.ptp(bars(at)) > np.ptp(shown)
    assert at.session_state["pruning_applied"].owl_lam == pytest.approx(0.2)


def test_budget_with_curves_meets_the_slider(fresh_cache):
    at = start()
    state = at.session_state["pruning_state"]
    batch = at.session_state["calibration_batch"][0]
    measure_sensitivity(state.dense, "magnitude", mode="layer", calibration=batch)  # as the Sensitivity page
    set_sparsity(choose_allocation(at, "budget"), 60)
    assert at.selectbox(key="sidebar_allocation").value == "budget"
    applied = at.session_state["pruning_applied"]
    assert applied.allocation == "budget" and applied.basis is not None
    assert np.array_equal(bars(at), state_percent(at))
    assert average_line(at) == pytest.approx(60.0, abs=0.01)
    assert len(set(bars(at).tolist())) > 1


def test_allocation_page_draws_the_state_and_compares_allocations(fresh_cache):
    at = set_sparsity(choose_allocation(start(), "owl"), 50)
    at.switch_page("views/allocation.py").run()
    assert not at.exception, at.exception
    bars_now, comparison = figures(measured(at))
    assert np.array_equal(array(bars_now["data"][0]["y"]), state_percent(at))
    lines = {trace["name"]: trace for trace in comparison["data"]}
    assert {"uniform", "OWL", "dense"} <= set(lines) and "budget" not in lines  # no curves yet
    assert "Sensitivity page" in " ".join(i.value for i in at.info)
    reached = {name: array(lines[name]["x"]) for name in ("uniform", "OWL")}
    assert np.allclose(reached["uniform"], reached["OWL"], atol=0.05)  # equal total sparsity
    assert np.allclose(reached["uniform"], [30, 40, 50, 60, 70, 80], atol=0.05)
    assert not np.allclose(array(lines["uniform"]["y"]), array(lines["OWL"]["y"]))

    state = at.session_state["pruning_state"]
    measure_sensitivity(
        state.dense, "magnitude", mode="layer", calibration=at.session_state["calibration_batch"][0]
    )
    measured(at.run())
    lines = {trace["name"]: trace for trace in figures(at)[1]["data"]}
    assert np.allclose(array(lines["budget"]["x"]), reached["uniform"], atol=0.05)


def test_a_link_carries_the_allocation(fresh_cache):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({"sparsity": "55", "allocation": "owl", "owl_lam": "0.2"})
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="sidebar_allocation").value == "owl"
    applied = at.session_state["pruning_applied"]
    assert (applied.allocation, applied.owl_lam, applied.sparsity) == ("owl", 0.2, 0.55)
    assert at.query_params == scene_to_query(Scene(sparsity=55, allocation="owl", owl_lam=0.2))
    choose_allocation(at, "uniform")  # the address bar follows, OWL's λ no longer in it
    assert at.query_params == scene_to_query(Scene(sparsity=55))


def test_a_link_carries_the_budgets_deviation(fresh_cache):
    first = start()
    dense = first.session_state["pruning_state"].dense
    measure_sensitivity(
        dense, "magnitude", mode="layer", calibration=first.session_state["calibration_batch"][0]
    )
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({"sparsity": "60", "allocation": "budget", "budget_dev": "0.04"})
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="sidebar_allocation").value == "budget"
    assert at.session_state["sidebar_budget_deviation"] == pytest.approx(0.04)
    applied = at.session_state["pruning_applied"]
    assert applied.allocation == "budget" and budget_bounds.deviation_in(applied) == pytest.approx(0.04)
    assert within(at, 0.56, 0.64)
    assert at.query_params == scene_to_query(Scene(sparsity=60, allocation="budget", budget_dev=0.04))
    choose_allocation(at, "uniform")  # the address bar follows, the deviation no longer in it
    assert at.query_params == scene_to_query(Scene(sparsity=60))


def test_owl_on_a_big_model_finds_its_ratios_in_the_background(fresh_cache, monkeypatch):
    from ui import defaults

    at = start()
    monkeypatch.setattr(defaults, "SMALL_MODEL", 0)  # stories260K as a big model
    at.session_state["sidebar_owl_m"] = 6.5  # an M no test used before: no ratios in this process yet
    at.selectbox(key="sidebar_allocation").set_value("owl")
    at.slider(key="sidebar_sparsity").set_value(45).run()
    assert not at.exception, at.exception
    assert at.session_state["pruning_applied"].allocation == "uniform"  # uniform until the ratios are in
    assert "follows the uniform allocation" in captions(at)
    measured(at)
    applied = at.session_state["pruning_applied"]
    assert (applied.allocation, applied.owl_m) == ("owl", 6.5) and applied.basis is not None
    assert np.array_equal(bars(at), state_percent(at)) and len(set(bars(at).tolist())) > 1


def within(at: AppTest, lo: float, hi: float) -> bool:
    """Every layer's share asked within [lo, hi] (exactly), and pruned within it to one weight."""
    asked = np.array(list(at.session_state["pruning_applied"].layer_sparsity.values()))
    eps = 1e-9
    exact = lo - eps <= asked.min() and asked.max() <= hi + eps
    return exact and 100 * lo - 0.1 <= bars(at).min() and bars(at).max() <= 100 * hi + 0.1


def test_the_budget_keeps_every_layer_within_the_deviation_chosen_and_its_recipe_records_it(
    fresh_cache, monkeypatch
):
    payloads = record_downloads(monkeypatch)
    at = start()
    state = at.session_state["pruning_state"]
    measure_sensitivity(
        state.dense, "magnitude", mode="layer", calibration=at.session_state["calibration_batch"][0]
    )
    set_sparsity(choose_allocation(at, "budget"), 60)
    deviation = at.number_input(key="sidebar_budget_deviation")
    assert deviation.value == pytest.approx(0.1)  # the default: unbounded did worse than uniform
    assert at.session_state["pruning_applied"].basis.deviation == pytest.approx(0.1)
    assert within(at, 0.5, 0.7)

    deviation.set_value(0.03).run()
    assert not at.exception, at.exception
    assert at.session_state["pruning_applied"].basis.deviation == pytest.approx(0.03)
    assert within(at, 0.57, 0.63)
    assert average_line(at) == pytest.approx(60.0, abs=0.01) and np.array_equal(bars(at), state_percent(at))
    set_sparsity(at, 65)  # the bound follows the slider (and the sweep's and look-ahead's targets)
    assert within(at, 0.62, 0.68)

    at.switch_page("views/export.py").run()
    (button,) = [b for b in at.get("download_button") if b.proto.id.endswith("export_recipe_download")]
    text = payloads[button.proto.deferred_file_id][0]()
    plan = parse_recipe(text)
    assert (plan.allocation.name, plan.allocation.bounds) == ("budget", (0.62, 0.68))
    wanted = pruned_counts(at)
    deviation = at.number_input(key="sidebar_budget_deviation")
    deviation.set_value(0.2).run()
    assert pruned_counts(at) != wanted
    upload = at.file_uploader(key="export_recipe_upload")
    upload.upload("r.yaml", text.encode("utf-8"), "application/x-yaml").run()
    assert not at.exception, at.exception
    assert pruned_counts(at) == wanted  # the recipe's masks, exactly
    assert at.session_state["sidebar_budget_deviation"] == pytest.approx(0.03)  # and its bound, for Budget
