"""The Speed page's line charts: one colour per kernel family (Okabe & Ito's palette), references dashed."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from ui.charts import layout

# Okabe & Ito's palette: distinct on a projector and for colour-blind readers. Dashed lines are references.
SPEED_COLORS = {
    "dense": "#000000",
    "CSR": "#D55E00",
    "auto": "#0072B2",
    "compacted": "#009E73",
    "ideal": "#E69F00",
    "memory-bound": "#CC79A7",
}


def speed_color(name: str) -> str:
    """The colour of a Speed-page series, by the word it starts with ("CSR int32" -> CSR's)."""
    for key, color in SPEED_COLORS.items():
        if name.lower().startswith(key.lower()):
            return color
    return SPEED_COLORS["compacted"] if name.startswith("structured") else "#56B4E9"


def speed_lines(
    x: Sequence[float], series: dict[str, Sequence[float]], y_title: str, dashed: set[str], height: int = 360
) -> go.Figure:
    """Lines against sparsity, one per series; ``dashed`` series are references (ideal, memory-bound)."""
    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(ys),
                name=name,
                mode="lines" if name in dashed else "lines+markers",
                line=dict(color=speed_color(name), dash="dash" if name in dashed else "solid", width=2.5),
                marker=dict(size=8),
            )
        )
    fig.update_xaxes(title_text="sparsity", tickformat=".0%")
    fig.update_yaxes(title_text=y_title, rangemode="tozero")
    return layout(fig, height, top=30)
