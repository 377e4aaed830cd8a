"""Pure data -> Plotly figure functions. No Streamlit, no models: numbers in, a Figure out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

DENSE_COLOR = "#4c78a8"
PRUNED_COLOR = "#e45756"
KEPT_COLOR = "#4c78a8"


def _layout(fig: go.Figure, height: int, title: str | None = None, top: int = 10) -> go.Figure:
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=40 if title else top, b=10),
        title=dict(text=title) if title else None,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
    )
    return fig


def _steps(edges: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outline of a histogram as a polyline: (edge, count) pairs that draw flat-topped bins."""
    return np.repeat(edges, 2)[1:-1], np.repeat(counts, 2).astype(float)


def magnitude_histogram(
    edges: np.ndarray,
    counts: np.ndarray,
    threshold: float,
    log_x: bool = False,
    log_y: bool = False,
    height: int = 320,
    title: str | None = None,
) -> go.Figure:
    """|w| histogram of one layer; bins at or below ``threshold`` (the pruned share) drawn red and shaded.

    Args:
        edges: float (bins + 1,) ascending bin edges in |w|.
        counts: int (bins,) weights per bin.
        threshold: largest pruned |w| (0 when nothing is pruned).
    """
    counts = np.asarray(counts, dtype=float)
    if log_y:
        # Empty bins cannot sit on a log axis; draw them just under 1 so the outline stays closed.
        counts = np.where(counts > 0, counts, 0.8)
    fig = go.Figure()
    x, y = _steps(edges, counts)
    fig.add_trace(
        go.Scatter(x=x, y=y, mode="lines", fill="tozeroy", name="kept", line=dict(color=KEPT_COLOR, width=1))
    )
    if threshold > 0:
        # The pruned share: every bin left of the threshold, the bin holding it cut at the threshold.
        inside = int(np.searchsorted(edges, threshold, side="right"))
        cut_edges = np.append(edges[:inside], min(threshold, float(edges[-1])))
        x, y = _steps(cut_edges, counts[: len(cut_edges) - 1])
        fig.add_trace(
            go.Scatter(
                x=x, y=y, mode="lines", fill="tozeroy", name="pruned", line=dict(color=PRUNED_COLOR, width=1)
            )
        )
        fig.add_vline(
            x=threshold,
            line=dict(color=PRUNED_COLOR, width=2, dash="dash"),
            annotation_text=f"threshold {threshold:.4g}",
            annotation_position="top right",
        )
    fig.update_xaxes(title_text="|w|", type="log" if log_x else "linear")
    fig.update_yaxes(title_text="weights", type="log" if log_y else "linear")
    if log_x:
        fig.update_xaxes(dtick=1)
    if log_y:
        fig.update_yaxes(range=[np.log10(0.7), np.log10(max(float(counts.max()), 1.0) * 1.5)], dtick=1)
    return _layout(fig, height, title, top=30)


def next_token_bars(table: pd.DataFrame, height: int = 360) -> go.Figure:
    """Grouped bars of next-token probabilities, dense beside pruned, one group per token."""
    fig = go.Figure()
    fig.add_trace(go.Bar(x=table["token"], y=table["dense"], name="dense", marker_color=DENSE_COLOR))
    fig.add_trace(go.Bar(x=table["token"], y=table["pruned"], name="pruned", marker_color=PRUNED_COLOR))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="probability", rangemode="tozero")
    fig.update_xaxes(title_text="next token", tickangle=-30)
    return _layout(fig, height)


def sweep_chart(
    sparsity: Sequence[float],
    ppl: Sequence[float],
    dense_ppl: float | None = None,
    current: tuple[float, float] | None = None,
    height: int = 340,
) -> go.Figure:
    """Perplexity against sparsity (log y), with the dense level and the session's current point.

    Args:
        sparsity: achieved sparsity of each sweep point, in [0, 1].
        ppl: perplexity at each point.
        current: (sparsity, perplexity) of the session's model now, or None when not measured.
    """
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[100 * s for s in sparsity],
            y=list(ppl),
            mode="lines+markers",
            name="sweep",
            line_color=DENSE_COLOR,
        )
    )
    if dense_ppl is not None:
        fig.add_trace(
            go.Scatter(
                x=[0, 100],
                y=[dense_ppl, dense_ppl],
                mode="lines",
                name="dense",
                line=dict(color="gray", dash="dot"),
            )
        )
    if current is not None:
        fig.add_trace(
            go.Scatter(
                x=[100 * current[0]],
                y=[current[1]],
                mode="markers",
                name="your model now",
                marker=dict(color=PRUNED_COLOR, size=13, symbol="diamond"),
            )
        )
    fig.update_xaxes(title_text="sparsity of the selected layers (%)", range=[-2, 102])
    fig.update_yaxes(title_text="perplexity (log)", type="log", dtick=1)
    return _layout(fig, height)


def sparsity_heatmap(
    kinds: Sequence[str], blocks: Sequence[str], grid: np.ndarray, height: int = 300
) -> go.Figure:
    """Per-layer sparsity (%) as a kinds × blocks heatmap, the value written in each cell."""
    text = [["" if np.isnan(v) else f"{v:.0f}" for v in row] for row in grid]
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=list(blocks),
            y=list(kinds),
            zmin=0,
            zmax=100,
            colorscale="Reds",
            text=text,
            texttemplate="%{text}",
            colorbar=dict(title="% pruned"),
            hovertemplate="block %{x}<br>%{y}<br>%{z:.1f}% pruned<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="block", type="category")
    fig.update_yaxes(autorange="reversed", type="category")
    return _layout(fig, height)


def weight_patch(dense: np.ndarray, pruned: np.ndarray, height: int = 260) -> go.Figure:
    """Two heatmaps of the same corner of a weight matrix: as trained, and with the session's zeros."""
    from plotly.subplots import make_subplots

    limit = float(np.abs(dense).max()) or 1.0
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("dense", "pruned (white = zero)"), horizontal_spacing=0.06
    )
    for col, values in ((1, dense), (2, pruned)):
        fig.add_trace(
            go.Heatmap(
                z=values,
                zmin=-limit,
                zmax=limit,
                colorscale="RdBu",
                showscale=col == 2,
                hovertemplate="row %{y}, col %{x}<br>w = %{z:.4f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=col)
        fig.update_xaxes(showticklabels=False, row=1, col=col)
    return _layout(fig, height, top=30)
