"""The charts a slider step redraws are built as plain JSON specs (``ui.charts.SpecFigure``), skipping
Plotly's validation when drawn: here each spec is validated by Plotly instead. A misspelt property, a value
out of its range or a trace type Plotly does not know changes (or refuses) what Plotly builds from it."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from ui import charts


def _plain(value):
    """JSON with Plotly's typed arrays ({"dtype", "bdata"}) read back into lists."""
    if isinstance(value, dict):
        if set(value) >= {"dtype", "bdata"}:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
            return [None if np.isnan(v) else v for v in array.astype(float).tolist()]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _json(spec: dict) -> dict:
    return _plain(json.loads(pio.to_json(spec, validate=False)))


def assert_valid_spec(fig: charts.SpecFigure) -> dict:
    spec = fig.to_dict()
    assert spec["layout"]["template"] == go.Figure().to_dict()["layout"]["template"]
    validated = go.Figure(data=spec["data"], layout=spec["layout"]).to_dict()  # raises on unknown properties
    assert _json(validated) == _json(spec), "Plotly builds something else from this spec"
    return spec


TABLE = pd.DataFrame({"token": ["a", "b", "c"], "dense": [0.5, 0.3, 0.2], "pruned": [0.4, 0.4, 0.2]})


def test_a_spec_figure_takes_no_more_traces():
    fig = charts.SpecFigure([], {})
    with pytest.raises(TypeError):
        fig.add_trace(go.Scatter(x=[1], y=[1]))


def test_the_shared_marks_still_go_on_plotly_figures():
    fig = go.Figure()
    charts.add_dense_line(fig, 4.2)
    charts.add_model_mark(fig, (0.5, 8.0), None, "star", 14)
    assert [trace.name for trace in fig.data] == ["dense", "your model now"]


@pytest.mark.parametrize("names", [False, True])
def test_the_allocation_bars_are_a_valid_spec(names):
    from ui import allocation_chart

    table = pd.DataFrame(
        {
            "short": ["0.q", "0.k", "1.mlp_up"],
            "kind": ["attn_q", "attn_k", "mlp_up"],
            "pruned_percent": [40.0, 45.5, 52.25],
            "weights": [100, 100, 300],
        }
    )
    spec = assert_valid_spec(allocation_chart.bars(table, 150, names=names))
    assert spec["data"][0]["y"] == [40.0, 45.5, 52.25]
    (line,) = spec["layout"]["shapes"]
    assert line["y0"] == pytest.approx(allocation_chart.average_percent(table))
