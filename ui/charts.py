"""Pure data -> Plotly figure functions. No Streamlit, no models: numbers in, a Figure out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui.data import perplexity_text

DENSE_COLOR = "#4c78a8"
PRUNED_COLOR = "#e45756"
KEPT_COLOR = "#4c78a8"


# Below the plot, at the foot of the figure: Plotly reserves the room under the axis title, and the legend
# never sits under the modebar (top right), however many entries wrap onto how many rows.
LEGEND_BELOW = dict(orientation="h", yref="container", y=0.0, yanchor="bottom", xanchor="left", x=0.0)


def _layout(fig: go.Figure, height: int, title: str | None = None, top: int = 10) -> go.Figure:
    """Height, tight margins, an optional title, and the legend below the plot (``LEGEND_BELOW``)."""
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=40 if title else top, b=10),
        title=dict(text=title) if title else None,
        legend=LEGEND_BELOW,
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
    pruned: np.ndarray | None = None,
    tail_to: float | None = None,
) -> go.Figure:
    """|w| histogram of one layer; bins at or below ``threshold`` (the pruned share) drawn red and shaded.

    Args:
        edges: float (bins + 1,) ascending bin edges in |w|.
        counts: int (bins,) weights per bin.
        threshold: largest pruned |w| (0 when nothing is pruned).
        pruned: int (bins,) pruned weights per bin, for masks that are not a magnitude cut-off (Wanda,
            SparseGPT, N:M, structured); drawn red instead of the threshold.
        tail_to: the largest |w| when the axis was cut short of it (the last bin holds the tail), else None.
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
    if pruned is not None:
        x, y = _steps(edges, np.asarray(pruned, dtype=float))
        fig.add_trace(
            go.Scatter(
                x=x, y=y, mode="lines", fill="tozeroy", name="pruned", line=dict(color=PRUNED_COLOR, width=1)
            )
        )
    elif threshold > 0:
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
    if tail_to is not None:
        fig.add_annotation(
            x=float(edges[-1]), y=1.0, yref="paper", xanchor="right", yanchor="bottom", showarrow=False,
            text=f"last bin: every |w| up to {tail_to:.3g}",
        )  # fmt: skip
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
    name: str = "sweep",
    earlier: tuple[float, float, str] | None = None,
) -> go.Figure:
    """Perplexity against sparsity (log y), with the dense level and the session's current point.

    Args:
        sparsity: achieved sparsity of each sweep point, in [0, 1].
        ppl: perplexity at each point.
        current: (sparsity, perplexity) of the session's model now, or None when not measured.
        earlier: (sparsity, perplexity, settings) last measured for earlier settings, drawn hollow.
    """
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[100 * s for s in sparsity],
            y=list(ppl),
            text=[perplexity_text(v) for v in ppl],
            mode="lines+markers",
            name=name,
            line_color=DENSE_COLOR,
            hovertemplate="%{x:.1f}% sparsity<br>perplexity %{text}<extra></extra>",
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
    _add_model_mark(fig, current, earlier, "diamond", 13)
    fig.update_xaxes(title_text="sparsity of the selected layers (%)", range=[-2, 102])
    fig.update_yaxes(title_text="perplexity (log)", type="log", dtick=1, exponentformat="power")
    return _layout(fig, height)


def _add_model_mark(
    fig: go.Figure,
    current: tuple[float, float] | None,
    earlier: tuple[float, float, str] | None,
    symbol: str,
    size: int,
) -> None:
    """The session's model: filled when measured now, hollow (``symbol``-open) when measured earlier."""
    if current is not None:
        fig.add_trace(
            go.Scatter(
                x=[100 * current[0]],
                y=[current[1]],
                mode="markers",
                name="your model now",
                marker=dict(color=PRUNED_COLOR, size=size, symbol=symbol),
                hovertemplate=f"your model now<br>%{{x:.1f}}%, perplexity {perplexity_text(current[1])}"
                "<extra></extra>",
            )
        )
    if earlier is not None:
        fig.add_trace(
            go.Scatter(
                x=[100 * earlier[0]],
                y=[earlier[1]],
                mode="markers",
                name="your model, measured earlier",
                marker=dict(color=PRUNED_COLOR, size=size, symbol=f"{symbol}-open", line=dict(width=2)),
                hovertemplate=(
                    f"measured for {earlier[2]}<br>%{{x:.1f}}%, perplexity "
                    f"{perplexity_text(earlier[1])}<extra></extra>"
                ),
            )
        )


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


ZERO_COLOR = "#1b1b1b"  # pruned weights: nearly black, never mistaken for a small kept weight (near white)


def weight_patch(dense: np.ndarray, pruned: np.ndarray, height: int = 260) -> go.Figure:
    """Two heatmaps of the same corner of a weight matrix: as trained, and with the session's zeros.

    Pruned weights (zero now, not zero in ``dense``) are drawn in ``ZERO_COLOR`` on their own trace; on the
    red-blue scale a zero would be as white as a small weight that was kept.
    """
    from plotly.subplots import make_subplots

    limit = float(np.abs(dense).max()) or 1.0
    gone = (pruned == 0) & (dense != 0)
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("dense", "pruned (black = pruned)"), horizontal_spacing=0.06
    )
    for col, values in ((1, dense), (2, np.where(gone, np.nan, pruned))):
        fig.add_trace(
            go.Heatmap(
                z=values,
                zmin=-limit,
                zmax=limit,
                colorscale="RdBu",
                showscale=col == 2,
                hovertemplate="row %{y}, col %{x}<br>w = %{z:.4f}<extra></extra>",
                name="weights",
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=col)
        fig.update_xaxes(showticklabels=False, row=1, col=col)
    fig.add_trace(
        go.Heatmap(
            z=np.where(gone, 1.0, np.nan),
            colorscale=[[0, ZERO_COLOR], [1, ZERO_COLOR]],
            showscale=False,
            name="pruned",
            customdata=dense,
            hovertemplate="row %{y}, col %{x}<br>pruned (was %{customdata:.4f})<extra></extra>",
        ),
        row=1,
        col=2,
    )
    return _layout(fig, height, top=30)


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
    _add_model_mark(fig, current, earlier, "star", 14)
    fig.update_xaxes(title_text="sparsity of the selected layers (%)", range=[-2, 102])
    fig.update_yaxes(title_text="perplexity (log)", type="log", dtick=1, exponentformat="power")
    return _layout(fig, height)


def _add_reference_marks(
    fig: go.Figure, dense_ppl: float | None, highlight: tuple[float, float] | None
) -> None:
    """The dense model's line and the chosen point (a ring)."""
    if dense_ppl is not None:
        fig.add_trace(
            go.Scatter(
                x=[0, 100],
                y=[dense_ppl, dense_ppl],
                mode="lines",
                name="dense",
                line=dict(color="gray", dash="dot"),
                hoverinfo="skip",
            )
        )
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
    return _layout(fig, height)


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
    return _layout(fig, height, top=30)
