"""Pure data -> Plotly figure functions. No Streamlit, no models: numbers in, a Figure out (a
:class:`SpecFigure`, its spec built as plain dicts, for the charts a slider step redraws)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from ui.formats import perplexity_text

DENSE_COLOR = "#4c78a8"
PRUNED_COLOR = "#e45756"
KEPT_COLOR = "#4c78a8"
PINNED_COLOR = "#E69F00"  # Okabe–Ito orange, hatched: apart from dense blue and pruned red


# Below the plot, at the foot of the figure: Plotly reserves the room under the axis title, and the legend
# never sits under the modebar (top right), however many entries wrap onto how many rows.
LEGEND_BELOW = dict(orientation="h", yref="container", y=0.0, yanchor="bottom", xanchor="left", x=0.0)


def layout_spec(height: int, title: str | None = None, top: int = 10) -> dict:
    """Height, tight margins, an optional title, and the legend below the plot (``LEGEND_BELOW``): the
    one layout of every figure in the app."""
    spec = dict(height=height, margin=dict(l=10, r=10, t=40 if title else top, b=10), legend=LEGEND_BELOW)
    return spec | {"title": dict(text=title)} if title else spec


def layout(fig: go.Figure, height: int, title: str | None = None, top: int = 10) -> go.Figure:
    """:func:`layout_spec` applied to a figure built with Plotly's objects."""
    fig.update_layout(**layout_spec(height, title, top))
    return fig


class SpecFigure(go.Figure):
    """A figure handed to ``st.plotly_chart`` as its finished JSON spec, for the charts a slider step redraws.

    Plotly validates every property it is given, about 10 ms for a small figure on this machine, and
    ``st.plotly_chart`` validates a plain dict once more; it reads a ``go.Figure`` through ``to_dict()``
    without validating, so this one returns the spec there (with the template a new Figure would carry).
    It is only for drawing: nothing can be added to it. Its specs are validated in the tests instead
    (``tests/test_charts.py``).
    """

    def __init__(self, data: list[dict], layout: dict):
        super().__init__()
        self._spec = {"data": data, "layout": {"template": _template(), **layout}}

    def to_dict(self) -> dict:
        return self._spec

    def to_plotly_json(self) -> dict:
        return self._spec

    def add_trace(self, *args, **kwargs):
        raise TypeError("a SpecFigure is drawn as it is: build its spec with the traces it needs")

    @property
    def spec(self) -> dict:
        return self._spec


_TEMPLATES: dict[str, dict] = {}


def _template() -> dict:
    """The template Plotly gives a new figure (Streamlit's, once streamlit is imported), taken once a name."""
    name = str(pio.templates.default)
    if name not in _TEMPLATES:
        _TEMPLATES[name] = go.Figure().to_dict()["layout"].get("template", {})
    return _TEMPLATES[name]


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
        _add_threshold(fig, edges, counts, threshold)
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
    return layout(fig, height, title, top=30)


def _add_threshold(fig: go.Figure, edges: np.ndarray, counts: np.ndarray, threshold: float) -> None:
    """The pruned share of a magnitude cut: every bin left of the threshold, the bin holding it cut at the
    threshold, and the threshold itself as a dashed line."""
    inside = int(np.searchsorted(edges, threshold, side="right"))
    cut_edges = np.append(edges[:inside], min(threshold, float(edges[-1])))
    x, y = _steps(cut_edges, counts[: len(cut_edges) - 1])
    pruned = go.Scatter(x=x, y=y, mode="lines", fill="tozeroy", name="pruned", line=dict(color=PRUNED_COLOR))
    fig.add_trace(pruned.update(line_width=1))
    fig.add_vline(
        x=threshold,
        line=dict(color=PRUNED_COLOR, width=2, dash="dash"),
        annotation_text=f"threshold {threshold:.4g}",
        annotation_position="top right",
    )


def add_dense_line(fig: go.Figure, dense_ppl: float | None) -> None:
    """The dense model's perplexity as a dotted line across 0–100% sparsity (nothing when not measured)."""
    if dense_ppl is None:
        return
    fig.add_trace(
        dict(
            type="scatter",
            x=[0, 100],
            y=[dense_ppl] * 2,
            mode="lines",
            name="dense",
            line=dict(color="gray", dash="dot"),
            hoverinfo="skip",
        )
    )


def _model_marks(
    current: tuple[float, float] | None,
    earlier: tuple[float, float, str] | None,
    symbol: str,
    size: int,
) -> list[dict]:
    marks = []
    if current is not None:
        marks.append(
            dict(
                type="scatter",
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
        marks.append(
            dict(
                type="scatter",
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
    return marks


def add_model_mark(
    fig: go.Figure,
    current: tuple[float, float] | None,
    earlier: tuple[float, float, str] | None,
    symbol: str,
    size: int,
) -> None:
    """The session's model on ``fig``: filled when measured now, hollow (``symbol``-open) when measured
    earlier (for the settings ``earlier`` names)."""
    for trace in _model_marks(current, earlier, symbol, size):
        fig.add_trace(trace)


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
    return layout(fig, height, top=30)
