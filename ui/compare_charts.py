"""The Compare page's figures: perplexity curves of several methods and patterns on one chart, and one value
per layer for each method. Pure data -> Plotly figure, in the app's one layout (``ui.charts.layout``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui.charts import DENSE_COLOR, add_dense_line, add_model_mark, layout
from ui.formats import perplexity_text

METHOD_COLORS = {"magnitude": "#4c78a8", "random": "#9d9d9d", "wanda": "#f58518", "sparsegpt": "#54a24b"}
PATTERN_STYLES = {  # (line dash, marker symbol)
    "unstructured": ("solid", "circle"),
    "2:4": ("solid", "diamond"),
    "4:8": ("solid", "square"),
    "neurons": ("dash", "triangle-up"),
    "heads": ("dot", "x"),
}


def method_curves(
    points: pd.DataFrame,
    dense_ppl: float | None = None,
    highlight: tuple[float, float] | None = None,
    current: tuple[float, float] | None = None,
    height: int = 480,
    earlier: tuple[float, float, str] | None = None,
) -> go.Figure:
    """Perplexity against achieved sparsity (log y), one curve per method × pattern on one chart.

    Args:
        points: one row per point with columns ``label`` (curve name), ``method``, ``pattern``,
            ``achieved`` (sparsity of the selected layers, in [0, 1]), ``asked`` (in [0, 1]), ``ppl`` and
            ``point`` (an id handed back in a selection event's ``customdata[1]``).
            Colour follows the method, line dash and marker the pattern.
        highlight: (sparsity, perplexity) of the point chosen for applying, ringed.
        current: (sparsity, perplexity) of the session's model now (a star).
        earlier: (sparsity, perplexity, settings) last measured for earlier settings (a hollow star).
    """
    fig = go.Figure()
    for label, curve in points.groupby("label", sort=False):
        curve = curve.sort_values("achieved")
        method, pattern = curve["method"].iloc[0], curve["pattern"].iloc[0]
        dash, symbol = PATTERN_STYLES.get(pattern, ("solid", "circle"))
        fig.add_trace(
            go.Scatter(
                x=100 * curve["achieved"],
                y=curve["ppl"],
                text=[perplexity_text(v) for v in curve["ppl"]],
                customdata=np.stack([100 * curve["asked"], curve["point"]], axis=-1),
                mode="lines+markers",
                name=label,
                line=dict(color=METHOD_COLORS.get(method, DENSE_COLOR), dash=dash, width=2),
                marker=dict(symbol=symbol, size=9),
                hovertemplate=(
                    f"{label}<br>asked %{{customdata[0]:.0f}}%<br>achieved %{{x:.1f}}%"
                    "<br>perplexity %{text}<extra></extra>"
                ),
            )
        )
    _add_reference_marks(fig, dense_ppl, highlight)
    add_model_mark(fig, current, earlier, "star", 14)
    fig.update_xaxes(title_text="sparsity of the selected layers (%)", range=[-2, 102])
    fig.update_yaxes(title_text="perplexity (log)", type="log", dtick=1, exponentformat="power")
    return layout(fig, height)


def _add_reference_marks(
    fig: go.Figure, dense_ppl: float | None, highlight: tuple[float, float] | None
) -> None:
    """The dense model's line and the chosen point (a ring)."""
    add_dense_line(fig, dense_ppl)
    if highlight is not None:
        fig.add_trace(
            go.Scatter(
                x=[100 * highlight[0]],
                y=[highlight[1]],
                mode="markers",
                name="chosen point",
                marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
                hoverinfo="skip",
            )
        )


def layer_chart(
    layers: Sequence[str],
    series: dict[str, Sequence[float]],
    y_title: str,
    colors: dict[str, str] | None = None,
    y_range: tuple[float, float] | None = None,
    reference: tuple[float, str] | None = None,
    height: int = 340,
) -> go.Figure:
    """One value per layer for each series: grouped bars for a few layers, lines and markers for many.

    Args:
        layers: layer labels in model order (the x axis, categorical).
        series: {name: values aligned with ``layers``} (NaN where a series has no value).
        colors: {name: colour}.
        reference: (y, label) of a dashed horizontal reference line across the layers.
    """
    colors = colors or {}
    bars = len(layers) <= 40
    fig = go.Figure()
    for name, values in series.items():
        color = colors.get(name, DENSE_COLOR)
        common = dict(x=list(layers), y=list(values), name=name)
        if bars:
            fig.add_trace(go.Bar(**common, marker_color=color))
        else:
            fig.add_trace(
                go.Scatter(**common, mode="lines+markers", line=dict(color=color), marker=dict(size=5))
            )
    if reference is not None:  # a trace, not a shape, so the legend names it and bars do not hide it
        fig.add_trace(
            go.Scatter(
                x=[layers[0], layers[-1]] if layers else [],
                y=[reference[0], reference[0]],
                mode="lines",
                name=reference[1],
                line=dict(color="black", dash="dash", width=1.5),
                hoverinfo="skip",
            )
        )
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="layer (block.module)", type="category", tickangle=-45)
    fig.update_yaxes(title_text=y_title, range=list(y_range) if y_range else None)
    return layout(fig, height)
