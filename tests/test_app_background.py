"""Slow measurements after the page (ui.background): a slider step shows its cheap outputs at once, latency,
perplexity and the sweep arrive afterwards, and big models wait for buttons whose results belong to the
settings they were measured at."""

from __future__ import annotations

import re

import pytest

from tests.support.apptest import (
    captions,
    measured,
    metric,
    set_sparsity,
    start,
    sweep,
)

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


def test_a_step_shows_its_outputs_first_and_its_measurements_after():
    at = start()
    at.slider(key="sidebar_sparsity").set_value(37).run()  # the run that answers the step, nothing awaited
    assert not at.exception, at.exception
    assert float(metric(at, "KL(dense ‖ pruned), next token").split()[0]) > 0  # cheap outputs: there
    assert "Scoring the held-out text: measuring in the background" in captions(at)
    assert not [m for m in at.metric if m.label == "Pruned perplexity"]
    worker = at.session_state["background_worker"]
    assert {task.name for task in worker.pending()} >= {"latency", "perplexity"}

    measured(at)  # what the page's polling fragment does once the worker is done
    assert float(metric(at, "Pruned perplexity")) > float(metric(at, "Dense perplexity"))
    assert "measuring in the background" not in captions(at)
    assert metric(at, "Pruned / dense")


def test_big_models_wait_for_buttons(monkeypatch):
    from ui import defaults

    at = start()
    monkeypatch.setattr(defaults, "SMALL_MODEL", 0)  # treat stories260K as a big model
    set_sparsity(at, 35)
    assert "sparsity of the selected layers (%)" in sweep(at)["svg"]  # swept at start, shown
    assert "Run the sweep" not in {b.label for b in at.button}  # its settings were swept: reused, no button
    at.session_state["pruning_state"].dense.cache.clear()  # as on a server that never swept them
    at.run()
    labels = {b.label for b in at.button}
    assert {"Time a forward pass", "Compute perplexity", "Run the sweep"} <= labels
    assert "Press the button to score" in captions(at)
    assert not [m for m in at.metric if m.label == "Pruned perplexity"]

    measured(at.button(key="prune_ppl").click().run())  # measured in the background, then shown
    assert float(metric(at, "Pruned perplexity")) > float(metric(at, "Dense perplexity"))
    measured(at.button(key="prune_time").click().run())
    assert metric(at, "Pruned / dense") == "~1.00×, same kernel"

    measured(at.button(key="prune_sweep").click().run())
    assert sweep(at)["current"] is not None
    assert "The diamond is your model now." in captions(at)

    set_sparsity(at, 45)  # results belong to the settings they were measured at
    assert not [m for m in at.metric if m.label == "Pruned perplexity"]
    # The sweep keeps the last measured point, hollow and named for the setting it was measured at.
    drawn = sweep(at)
    assert drawn["earlier"][0] == pytest.approx(35, abs=0.5) and drawn["current"] is None
    assert "your model, measured for Magnitude |w| · uniform policy · 35%" in drawn["legend"]
    assert "The hollow diamond is your model as last measured (Magnitude |w| · uniform policy · 35%)" in (
        captions(at)
    )

    at.switch_page("views/learn.py").run()
    assert not at.exception, at.exception
    assert "walks along the curve" not in captions(at)  # a promise only a small model keeps
    assert "The hollow diamond is your model as last measured" in captions(at)
    measured(at.button(key="learn_time").click().run())
    assert metric(at, "Pruned / dense forward time") == "~1.00×, same kernel"
    assert re.search(r"Measured: dense [0-9.]+ ± [0-9.]+ ms, pruned", captions(at))
