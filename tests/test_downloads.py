"""The tidy tables behind the "Download CSV" buttons (``ui.downloads``), parsed back with the csv module and
checked against their input, and the button itself: nothing built until a click, no rerun on a click."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from prune_explorer.measure.sweep import SweepPoint
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.state import PruningState
from tests.support.downloads import download, numbers, parse, record_downloads
from ui import data, downloads


def test_csv_parses_back_to_the_same_numbers_and_text():
    table = pd.DataFrame(
        {
            "token": ["' the'", "'é,\"x'"],
            "probability": [0.1 + 0.2, 1 / 3],
            "n": [1, 2],
            "gap": [math.nan, 2.5],
        }
    )
    header, rows = parse(downloads.to_csv(table))
    assert header == ["token", "probability", "n", "gap"]
    assert [r["token"] for r in rows] == ["' the'", "'é,\"x'"]  # quoted, UTF-8
    assert numbers(rows, "probability").tolist() == [0.1 + 0.2, 1 / 3]  # every digit kept
    assert [r["n"] for r in rows] == ["1", "2"] and rows[0]["gap"] == ""
    assert parse(downloads.to_csv([{"a": 1, "b": "x"}]))[1] == [{"a": "1", "b": "x"}]


def test_file_names_say_model_and_what():
    assert downloads.csv_name("stories260K", "sweep", "magnitude") == "stories260K-sweep-magnitude.csv"
    assert downloads.csv_name("HuggingFaceTB/SmolLM2-135M", "speed", None, "") == (
        "HuggingFaceTB-SmolLM2-135M-speed.csv"
    )
    assert downloads.sweep_file("stories260K", None) == "stories260K-sweep-magnitude.csv"
    wanda = SimpleNamespace(method="wanda", pattern="2:4")
    assert downloads.sweep_file("m", wanda) == "m-sweep-wanda-2-4.csv"


def test_histogram_rows_count_every_weight_and_where_the_mask_pruned(llama_dense):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.45))
    for layer in llama_dense.layers:
        if not state.is_pruned(layer.name):
            continue
        for log_x in (False, True):
            hist = data.magnitude_histogram(llama_dense, layer.name, log_x)
            k = state.pruned_count(layer.name)
            header, rows = parse(downloads.to_csv(downloads.histogram_table(layer.name, hist, None, k)))
            assert header == ["layer", "abs_w_from", "abs_w_to", "weights", "pruned_weights"]
            assert {r["layer"] for r in rows} == {layer.name}
            weights, pruned = numbers(rows, "weights"), numbers(rows, "pruned_weights")
            assert weights.tolist() == hist.counts.tolist() and weights.sum() == layer.numel
            # A magnitude cut fills the bins from the left: the same counts as binning the mask itself.
            assert pruned.sum() == k and (pruned <= weights).all()
            assert pruned.tolist() == data.pruned_counts(state, layer.name, hist.edges).tolist()
            assert numbers(rows, "abs_w_from")[0] == 0.0  # the first bin holds everything below it
            assert numbers(rows, "abs_w_to")[-1] == max(hist.edges[-1], hist.largest)
            assert numbers(rows, "abs_w_from")[1:].tolist() == hist.edges[1:-1].tolist()
    given = np.arange(len(hist.counts))
    table = downloads.histogram_table("x", hist, given)  # a mask that is no cut: its own counts
    assert table["pruned_weights"].tolist() == given.tolist()


def test_heatmap_patch_and_next_token_rows():
    grid = np.array([[10.0, math.nan], [0.0, 55.5]])
    header, rows = parse(downloads.to_csv(downloads.heatmap_table(["Q", "MLP up"], ["0", "1"], grid)))
    assert header == ["kind", "block", "sparsity_percent"]
    assert [(r["kind"], r["block"], float(r["sparsity_percent"])) for r in rows] == [
        ("Q", "0", 10.0), ("MLP up", "0", 0.0), ("MLP up", "1", 55.5),
    ]  # fmt: skip

    dense = np.array([[0.5, -0.25, 0.0], [1.0, 2.0, -3.0]])
    pruned = np.array([[0.5, 0.0, 0.0], [0.0, 2.0, -3.0]])
    header, rows = parse(downloads.to_csv(downloads.patch_table("l", dense, pruned)))
    assert header == ["layer", "row", "col", "dense_w", "pruned_w", "pruned"]
    assert len(rows) == 6 and numbers(rows, "dense_w").tolist() == dense.ravel().tolist()
    assert [(r["row"], r["col"]) for r in rows if r["pruned"] == "True"] == [("0", "1"), ("1", "0")]

    table = pd.DataFrame({"token": ["'a'", "'b'"], "dense": [0.7, 0.2], "pruned": [0.4, 0.5]})
    header, rows = parse(downloads.to_csv(downloads.next_token_table(table)))
    assert header == ["token", "model", "probability"]
    assert [(r["token"], r["model"], float(r["probability"])) for r in rows] == [
        ("'a'", "dense", 0.7), ("'a'", "pruned", 0.4), ("'b'", "dense", 0.2), ("'b'", "pruned", 0.5),
    ]  # fmt: skip


def test_sweep_and_curve_rows_in_percent_with_the_reference_points():
    points = [SweepPoint(0.0, 0.0, 10.0), SweepPoint(0.5, 0.49, 12.5), SweepPoint(0.9, 0.91, 400.0)]
    table = downloads.sweep_table(points, "sweep", None, 9.5, (0.3, 11.0), None)
    header, rows = parse(downloads.to_csv(table))
    assert header == downloads.CURVE_COLUMNS
    assert [r["series"] for r in rows] == ["sweep"] * 3 + ["dense", "your model now"]
    assert numbers(rows, "sparsity_percent").tolist() == [0.0, 49.0, 91.0, 0.0, 30.0]
    assert numbers(rows, "asked_sparsity_percent")[:3].tolist() == [0.0, 50.0, 90.0]
    assert numbers(rows, "perplexity").tolist() == [10.0, 12.5, 400.0, 9.5, 11.0]
    assert {r["method"] for r in rows[:3]} == {"magnitude"} and rows[4]["method"] == ""

    earlier = downloads.sweep_table(points[:1], settings=SimpleNamespace(method="wanda", pattern="2:4"),
                                    earlier=(0.5, 13.0, "Wanda 50%"))  # fmt: skip
    assert earlier["series"].tolist() == ["sweep", "your model, measured earlier (Wanda 50%)"]
    assert earlier["pattern"].tolist()[0] == "2:4"
    assert downloads.curves_table(pd.DataFrame(columns=["label", "method", "pattern", "asked", "achieved",
                                                        "ppl"])).empty  # fmt: skip


def test_series_rows_follow_the_chart_including_short_series():
    header, rows = parse(
        downloads.to_csv(
            downloads.series_table(
                "sparsity_percent",
                [0.0, 0.5, 0.9],
                {"dense": [1.0, 1.0, 1.0], "CSR": [0.2, 0.9]},
                "speedup_x",
                100,
            )
        )
    )
    assert header == ["sparsity_percent", "series", "speedup_x"]
    assert [(float(r["sparsity_percent"]), r["series"], float(r["speedup_x"])) for r in rows] == [
        (0.0, "dense", 1.0), (50.0, "dense", 1.0), (90.0, "dense", 1.0),
        (0.0, "CSR", 0.2), (50.0, "CSR", 0.9),
    ]  # fmt: skip


@pytest.fixture
def payloads(monkeypatch) -> dict:
    return record_downloads(monkeypatch)


def test_the_button_builds_nothing_until_clicked_and_does_not_rerun(payloads):
    def app():
        from functools import partial

        import streamlit as st

        from ui import downloads

        calls = st.session_state.setdefault("calls", [])
        build = partial(lambda rows: calls.append(1) or rows, [{"x": 1, "y_percent": 2.5}])
        downloads.csv_button(build, downloads.csv_name("m", "what"), key="t_csv")

    at = AppTest.from_function(app).run()
    assert not at.exception, at.exception
    (button,) = at.get("download_button")
    assert button.label == "Download CSV" and button.proto.ignore_rerun and button.key == "t_csv"
    assert at.session_state["calls"] == []  # the rerun built no table
    name, header, rows = download(payloads, button)
    assert name == "m-what.csv" and header == ["x", "y_percent"] and rows == [{"x": "1", "y_percent": "2.5"}]
    assert at.session_state["calls"] == [1]
