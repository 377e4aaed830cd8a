"""The Sensitivity page through AppTest: measured in the background on a button, then a heatmap, the most
fragile layers, curves beside the instant estimate and a CSV; a second request reads the on-disk cache."""

from __future__ import annotations

import pytest

from tests.support.apptest import captions, figures, measured, start, trace_names

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


def test_sensitivity_measures_in_the_background_and_shows_three_views(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_EXPLORER_CACHE", str(tmp_path))  # a fresh cache for this test
    at = start()
    at.switch_page("views/sensitivity.py").run()
    assert not at.exception, at.exception
    assert "Press the button to measure" in captions(at)
    assert not figures(at)

    at.button(key="sensitivity_run").click().run()  # asked, and cancelled before it is measured
    at.button(key="sensitivity_run_cancel").click().run()
    assert not at.exception, at.exception
    assert not at.session_state["background_worker"].pending()
    assert "Press the button to measure" in captions(at) and not figures(at)

    measured(at.button(key="sensitivity_run").click().run())
    heat, curves = figures(at)
    groups = heat["data"][0]["y"]
    assert len(groups) == 35 and len(heat["data"][0]["x"]) == 4  # stories260K's 35 layers x 4 sparsities
    kl = heat["data"][0]["z"]
    assert all(row[0] <= row[-1] for row in kl)  # more pruning, more damage, for every layer
    fragile = at.dataframe[0].value
    assert list(fragile["KL (nats)"]) == sorted(fragile["KL (nats)"], reverse=True)
    names = trace_names(curves)
    assert any(n.endswith("· KL") for n in names) and any(n.endswith("· estimate") for n in names)
    assert any(b.label == "Download CSV" for b in at.get("download_button"))
    assert "Protocol: built-in" in captions(at)
    assert list(tmp_path.glob("sensitivity/*.json")), "the result is kept on disk"

    second = start()  # another session asks for the same plan: read back, not measured again
    second.switch_page("views/sensitivity.py").run()
    measured(second.button(key="sensitivity_run").click().run())
    assert "Read from the on-disk cache." in captions(second)
