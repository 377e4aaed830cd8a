"""On each page, one "Download CSV" button right under each chart, whose CSV holds the chart's own numbers
(read through AppTest: the figures as sent to the browser, the CSV as a click would download it)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.apptest import array, set_sparsity, start
from tests.support.downloads import csv_under_charts, numbers, record_downloads, trace
from ui import downloads

pages = pytest.mark.usefixtures("one_thread", "app_navigation")


@pytest.fixture
def payloads(monkeypatch) -> dict:
    return record_downloads(monkeypatch)


@pages
def test_layers_page_histogram_and_heatmap_download_their_numbers(payloads):
    at = start()
    at.switch_page("views/layers.py").run()
    set_sparsity(at, 50)
    state = at.session_state["pruning_state"]
    found = csv_under_charts(at, payloads)
    assert set(found) == {"layers_histogram_csv", "layers_heatmap_csv"}

    figure, name, header, rows = found["layers_histogram_csv"]
    layer = at.selectbox(key="layers_layer").value
    assert name == f"stories260K-histogram-{layer}.csv"
    assert header == ["layer", "abs_w_from", "abs_w_to", "weights", "pruned_weights"]
    kept = array(trace(figure, "kept")["y"])  # a flat-topped outline: each bin's count twice
    assert numbers(rows, "weights").tolist() == kept[::2].tolist()
    assert numbers(rows, "pruned_weights").sum() == state.pruned_count(layer) > 0

    figure, name, header, rows = found["layers_heatmap_csv"]
    assert name == "stories260K-sparsity-by-layer.csv" and header == ["kind", "block", "sparsity_percent"]
    z = array(figure["data"][0]["z"])
    assert sorted(numbers(rows, "sparsity_percent")) == sorted(z[np.isfinite(z)])
    assert np.allclose(numbers(rows, "sparsity_percent"), 50.0, atol=0.5)


@pages
def test_learn_page_patch_histogram_and_sweep_download_their_numbers(payloads):
    at = start()
    at.switch_page("views/learn.py").run()
    set_sparsity(at, 40)
    found = csv_under_charts(at, payloads)
    assert set(found) == {"learn_patch_csv", "learn_hist_csv", "learn_sweep_csv"}

    figure, name, header, rows = found["learn_patch_csv"]
    assert header == ["layer", "row", "col", "dense_w", "pruned_w", "pruned"]
    dense_z = array(figure["data"][0]["z"])
    assert np.allclose(numbers(rows, "dense_w"), dense_z.ravel())
    shown = int(np.isfinite(array(trace(figure, "pruned")["z"])).sum())
    assert sum(r["pruned"] == "True" for r in rows) == shown > 0

    figure, name, header, rows = found["learn_hist_csv"]
    drawn = array(trace(figure, "kept")["y"])[::2]  # log y: empty bins drawn just under 1, 0 in the CSV
    assert numbers(rows, "weights").tolist() == np.where(drawn < 1, 0, drawn).tolist()

    figure, name, header, rows = found["learn_sweep_csv"]
    assert name == "stories260K-sweep-magnitude.csv" and header == downloads.CURVE_COLUMNS
    curve = [r for r in rows if r["series"] == "sweep"]
    assert numbers(curve, "sparsity_percent").tolist() == array(trace(figure, "sweep")["x"]).tolist()
    assert numbers(curve, "perplexity").tolist() == array(trace(figure, "sweep")["y"]).tolist()
    (now,) = [r for r in rows if r["series"] == "your model now"]
    assert float(now["sparsity_percent"]) == pytest.approx(40, abs=0.5)
    (dense,) = [r for r in rows if r["series"] == "dense"]
    assert float(dense["perplexity"]) == array(trace(figure, "dense")["y"])[0]


@pages
@pytest.mark.slow
def test_compare_page_curves_and_layer_charts_download_their_numbers(payloads):
    at = start()
    at.switch_page("views/compare.py").run()
    at.button_group(key="compare_methods").set_value(["magnitude", "wanda"])
    at.button_group(key="compare_patterns").set_value(["unstructured"])
    at.button_group(key="compare_grid").set_value([30, 60])
    at.run()
    assert not at.exception, at.exception
    found = csv_under_charts(at, payloads)
    assert set(found) == {"compare_curves_csv", "compare_errors_csv", "compare_jaccard_csv"}

    figure, name, header, rows = found["compare_curves_csv"]
    assert name == "stories260K-compare-perplexity.csv" and header == downloads.CURVE_COLUMNS
    for label in ("Magnitude · Unstructured", "Wanda · Unstructured"):
        curve = [r for r in rows if r["series"] == label]
        drawn = trace(figure, label)
        assert sorted(numbers(curve, "sparsity_percent")) == pytest.approx(sorted(array(drawn["x"])))
        assert sorted(numbers(curve, "perplexity")) == pytest.approx(sorted(array(drawn["y"])))
        assert sorted(numbers(curve, "asked_sparsity_percent")) == [30.0, 60.0]

    figure, name, header, rows = found["compare_errors_csv"]
    assert name == "stories260K-reconstruction-error-unstructured-50pct.csv"
    assert header == ["layer", "series", "relative_output_error"]
    for method in ("Magnitude", "Wanda"):
        values = numbers([r for r in rows if r["series"] == method], "relative_output_error")
        assert values.tolist() == pytest.approx(array(trace(figure, method)["y"]).tolist(), nan_ok=True)
    assert all(r["layer"].startswith("model.") for r in rows)  # full names, not the axis' short ones

    figure, name, header, rows = found["compare_jaccard_csv"]
    assert header == ["layer", "series", "jaccard_pruned_weights"]
    pair = [r for r in rows if r["series"] == "Magnitude vs Wanda"]
    assert numbers(pair, "jaccard_pruned_weights").tolist() == pytest.approx(
        array(trace(figure, "Magnitude vs Wanda")["y"]).tolist(), nan_ok=True
    )
    random = numbers([r for r in rows if r["series"] == "two random masks"], "jaccard_pruned_weights")
    assert np.allclose(random, 0.5 / 1.5)


@pages
@pytest.mark.slow
def test_speed_page_charts_download_their_numbers(payloads):
    at = start()
    at.switch_page("views/speed.py").run()
    at.button(key="speed_layer_run").click().run()
    at.button(key="speed_e2e_run").click().run()
    assert not at.exception, at.exception
    found = csv_under_charts(at, payloads)
    assert set(found) == {"speed_layer_csv", "speed_e2e_prefill_csv", "speed_e2e_decode_csv"}
    for key, value in (
        ("speed_layer_csv", "ms_per_call"),
        ("speed_e2e_prefill_csv", "speedup_x"),
        ("speed_e2e_decode_csv", "speedup_x"),
    ):
        figure, name, header, rows = found[key]
        assert header == ["sparsity_percent", "series", value]
        for drawn in figure["data"]:
            mine = [r for r in rows if r["series"] == drawn["name"]]
            assert numbers(mine, "sparsity_percent") == pytest.approx(100 * array(drawn["x"])[: len(mine)])
            assert numbers(mine, value).tolist() == pytest.approx(array(drawn["y"]).tolist())
    assert found["speed_e2e_decode_csv"][1] == "stories260K-speed-decode.csv"


@pages
def test_prune_page_next_token_and_sweep_download_their_numbers(payloads):
    at = start()
    set_sparsity(at, 50)
    found = csv_under_charts(at, payloads)
    assert set(found) == {"prune_topk_csv", "prune_sweep_csv"}

    figure, name, header, rows = found["prune_topk_csv"]
    assert name == "stories260K-next-token.csv" and header == ["token", "model", "probability"]
    for model in ("dense", "pruned"):
        drawn = trace(figure, model)
        mine = [r for r in rows if r["model"] == model]
        assert [r["token"] for r in mine] == list(drawn["x"])
        assert numbers(mine, "probability").tolist() == pytest.approx(array(drawn["y"]).tolist())

    figure, name, header, rows = found["prune_sweep_csv"]
    assert name == "stories260K-sweep-magnitude.csv" and header == downloads.CURVE_COLUMNS
    curve = [r for r in rows if r["series"] == "sweep"]
    assert numbers(curve, "sparsity_percent").tolist() == array(trace(figure, "sweep")["x"]).tolist()
    assert numbers(curve, "perplexity").tolist() == array(trace(figure, "sweep")["y"]).tolist()
    (now,) = [r for r in rows if r["series"] == "your model now"]
    assert float(now["sparsity_percent"]) == pytest.approx(50, abs=0.5)
