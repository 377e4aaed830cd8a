"""Reading what a "Download CSV" button (``ui.downloads``) would hand the browser, in AppTest: the CSV
parsed back with the csv module, and every chart paired with the button right under it."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.support.apptest import grid_figure, light_figure, sweep_figure


def record_downloads(monkeypatch) -> dict:
    """Keep every deferred download the app registers (AppTest's runtime is gone after each run):
    file id -> (the function Streamlit would call on a click, the file name)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    seen: dict = {}
    add = MediaFileManager.add_deferred

    def recording(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        file_id = add(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)
        seen[file_id] = (data_callable, file_name)
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", recording)
    return seen


def parse(payload: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a CSV payload, read with the csv module."""
    reader = csv.DictReader(io.StringIO(payload.decode("utf-8"), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def numbers(rows: list[dict[str, str]], column: str) -> np.ndarray:
    return np.array([float(r[column]) if r[column] != "" else math.nan for r in rows])


def download(payloads: dict, button) -> tuple[str, list[str], list[dict[str, str]]]:
    """What a click on ``button`` downloads: file name, CSV header, rows."""
    build, name = payloads[button.proto.deferred_file_id]
    return (name, *parse(build()))


def leaves(node):
    """The elements under ``node`` in page order."""
    children = getattr(node, "children", None)
    if children is None:
        yield node
        return
    for index in sorted(children):
        yield from leaves(children[index])


def csv_under_charts(at: AppTest, payloads: dict) -> dict[str, tuple[dict, str, list[str], list[dict]]]:
    """Each chart with the CSV of the button right under it: button key -> (figure, file name, header,
    rows). A chart drawn as HTML (``ui.light_charts``) is read back as a figure-like dict."""
    elements = [*leaves(at.main), None]
    found = {}
    for chart, button in zip(elements, elements[1:]):
        body = chart.proto.body if chart is not None and chart.type == "html" else ""
        reader = (
            light_figure
            if 'class="pe-next-token"' in body
            else sweep_figure
            if 'class="pe-sweep"' in body
            else grid_figure
            if 'class="pe-sparsity-grid"' in body
            else None
        )
        if chart is None or (chart.type != "plotly_chart" and reader is None):
            continue
        assert button is not None and button.type == "download_button", f"no button under {chart}"
        assert button.label == "Download CSV" and button.proto.ignore_rerun  # a download does not rerun
        figure = reader(body) if reader is not None else json.loads(chart.proto.spec)
        found[button.key] = (figure, *download(payloads, button))
    assert found, "no chart on the page"
    return found


def trace(figure: dict, name: str) -> dict:
    (found,) = [t for t in figure["data"] if t.get("name") == name]
    return found
