"""The three charts a slider step redraws, as plain HTML (and an SVG picture) instead of Plotly figures.

Streamlit names a Plotly chart by a hash of its spec, so a chart whose numbers change is a new element:
the browser throws the old plot away and builds a new one (``Plotly.newPlot``). In a profile of Chromium
over slider steps on the Prune page, Plotly's code was the largest single cost of the page's main thread
(~190 ms a step on this machine, three charts rebuilt per step; after the first two moved to HTML, the
sweep alone still cost ~85 ms a run). The next-token bars and the sidebar's per-layer bars need no zoom or
pan: as HTML they are one ``innerHTML`` update, readable at any size (the numbers are printed, not
hovered), and carry their data in ``data-`` attributes for tests. The sparsity sweep is an SVG picture with
every point's value printed on it.

Pure functions: numbers in, an HTML string out (for ``st.html``, which keeps plain HTML, inline styles and
``data:`` images, not inline SVG); no Streamlit, no models.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from urllib.parse import quote

import pandas as pd

from ui.charts import DENSE_COLOR, PINNED_COLOR, PRUNED_COLOR
from ui.formats import perplexity_text

SERIES_COLORS = {"dense": DENSE_COLOR, "pruned": PRUNED_COLOR, "pinned": PINNED_COLOR}
_HATCH = "repeating-linear-gradient(45deg, {c}, {c} 3px, #7a5400 3px, #7a5400 4px)"
NEXT_TOKEN_CLASS = "pe-next-token"
LAYER_BARS_CLASS = "pe-layer-bars"


def _fill(series: str) -> str:
    color = SERIES_COLORS[series]
    return _HATCH.format(c=color) if series == "pinned" else color


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%" if p >= 0.001 else ("<0.1%" if p > 0 else "0%")


def _bar(series: str, p: float | None, scale: float) -> str:
    """One series' bar of one token: its length against the largest probability shown, and its value."""
    if p is None or p != p:  # NaN: the pin kept no probability for this token
        return (
            f'<div class="pe-bar" data-series="{series}" data-p="" style="height:0.55rem;'
            'font-size:0.7rem;line-height:0.55rem;opacity:0.6">—</div>'
        )
    width = 0.0 if scale <= 0 else 100.0 * p / scale
    return (
        f'<div class="pe-bar" data-series="{series}" data-p="{p!r}" style="display:flex;align-items:center;'
        'gap:0.3rem;height:0.7rem">'
        f'<span style="display:inline-block;height:0.55rem;width:{0.82 * width:.2f}%;min-width:1px;'
        f'background:{_fill(series)};border-radius:1px"></span>'
        f'<span style="font-size:0.72rem;line-height:0.7rem;white-space:nowrap">{_percent(p)}</span></div>'
    )


def next_token_html(table: pd.DataFrame) -> str:
    """Next-token probabilities per token as horizontal bars: dense, pruned, and pinned (hatched orange)
    when ``table`` has a ``pinned`` column (``ui.data.topk_table`` / ``ui.pin.topk_table``); one scale for
    every bar, so lengths compare across tokens and models."""
    series = [s for s in ("dense", "pruned", "pinned") if s in table]
    values = [[None if v != v else float(v) for v in table[s].tolist()] for s in series]
    scale = max((v for column in values for v in column if v is not None), default=0.0)
    legend = "".join(
        f'<span style="display:inline-flex;align-items:center;gap:0.25rem;margin-right:0.9rem">'
        f'<span style="display:inline-block;width:0.8rem;height:0.55rem;background:{_fill(s)}"></span>'
        f"{s}</span>"
        for s in series
    )
    rows = []
    for i, token in enumerate(table["token"].tolist()):
        bars = "".join(_bar(s, values[j][i], scale) for j, s in enumerate(series))
        rows.append(
            f'<div class="pe-token-row" data-token="{html.escape(token, quote=True)}" style="display:grid;'
            "grid-template-columns:minmax(4rem,9rem) 1fr;gap:0.5rem;align-items:center;padding:0.12rem 0;"
            'border-bottom:1px solid rgba(128,128,128,0.15)">'
            '<code style="font-size:0.8rem;text-align:right;overflow:hidden;text-overflow:ellipsis;'
            f'white-space:nowrap">{html.escape(token)}</code><div>{bars}</div></div>'
        )
    return (
        f'<div class="{NEXT_TOKEN_CLASS}" style="font-size:0.85rem">'
        f'<div style="display:flex;justify-content:space-between;margin-bottom:0.3rem">'
        f"<span>Next-token probability</span><span>{legend}</span></div>{''.join(rows)}</div>"
    )


def layer_bars_html(
    percents: list[float], colors: list[str], names: list[str], average: float, height: int = 120
) -> str:
    """Pruned share per layer (bars in model order, ``colors`` by kind) on 0–100%, with ``average`` (the
    share of all their weights) as a dashed line; a layer's name and share in its tooltip. Plain divs (the
    HTML ``st.html`` keeps; it drops SVG), stretched to the column's width."""
    bars = "".join(
        f'<div data-pct="{p:.2f}" title="{html.escape(name, quote=True)}: {p:.1f}%" style="flex:1;'
        f'height:{p:.2f}%;background:{c};min-width:0"></div>'
        for p, c, name in zip(percents, colors, names, strict=True)
    )
    gap = "1px" if len(percents) <= 80 else "0"
    lines = "".join(
        f'<div style="position:absolute;left:0;right:0;bottom:{y}%;'
        'border-top:1px solid rgba(128,128,128,0.3)"></div>'
        for y in (0, 50, 100)
    )
    mean = (
        f'<div class="pe-average" data-average="{average:.4f}" style="position:absolute;left:0;right:0;'
        f'bottom:{average:.2f}%;border-top:1.5px dashed #333"></div>'
    )
    ticks = "".join(
        f'<span style="position:absolute;right:0;top:{top}%;transform:translateY(-50%)">{label}</span>'
        for top, label in ((0, "100%"), (50, "50%"), (100, "0%"))
    )
    return (
        f'<div class="{LAYER_BARS_CLASS}" role="img" aria-label="pruned share per layer, average '
        f'{average:.1f}%" style="display:flex;gap:0.3rem;height:{height}px;padding:0.4rem 0">'
        f'<div style="position:relative;width:2.2rem;font-size:0.65rem;opacity:0.7">{ticks}</div>'
        f'<div style="position:relative;flex:1;display:flex;align-items:flex-end;gap:{gap}">'
        f"{lines}{bars}{mean}</div></div>"
    )


# ----- the sparsity sweep: perplexity against sparsity, an SVG picture

SWEEP_CLASS = "pe-sweep"
_H = 300  # the picture's own height; it stretches to the column's width, so its text scales with it
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 16, 22, 44


def sweep_html(
    sparsity: Sequence[float],
    ppl: Sequence[float],
    dense_ppl: float | None = None,
    current: tuple[float, float] | None = None,
    name: str = "sweep",
    earlier: tuple[float, float, str] | None = None,
    width: int = 720,
) -> str:
    """Perplexity against sparsity on a log axis, each point labelled with its value, the dense model's
    level dotted, and the session's model as a diamond (filled: measured now; hollow: for ``earlier``
    settings). The chart a slider step redraws on the Prune and Learn pages: as an SVG picture it costs the
    browser one image decode per step where a Plotly chart cost ~85 ms of its main thread.

    ``st.html`` drops inline SVG, so the SVG is the ``src`` of an ``<img>`` (a data URI); the numbers also
    ride on the wrapper's ``data-`` attributes (for tests and scripts) and in its ``aria-label``.

    Args:
        sparsity: achieved sparsity of each sweep point, in [0, 1].
        ppl: perplexity at each point (points that are not finite and positive are left out).
        current: (sparsity, perplexity) of the session's model now, or None when not measured.
        earlier: (sparsity, perplexity, settings) last measured for earlier settings.
        width: the picture's width in its own units: about the column's width in pixels, so that its
            labels keep their size (720 for the page's width, less for a narrower column).
    """
    points = [(100 * s, p) for s, p in zip(sparsity, ppl, strict=True) if _drawable(p)]
    marks = [(m, filled) for m, filled in ((current, True), (earlier, False)) if m and _drawable(m[1])]
    dense_ppl = dense_ppl if _drawable(dense_ppl) else None
    levels = [p for _, p in points] + [mark[1] for mark, _ in marks] + ([dense_ppl] if dense_ppl else [])
    lo, hi = _decades(levels)
    x = lambda v: _LEFT + (v + 2) / 104 * (width - _LEFT - _RIGHT)  # noqa: E731 - the axis runs −2…102%
    y = lambda v: _TOP + (hi - math.log10(v)) / (hi - lo) * (_H - _TOP - _BOTTOM)  # noqa: E731
    parts = [_sweep_axes(x, y, lo, hi, width)]
    if dense_ppl:
        parts.append(
            f'<line x1="{x(0):.1f}" x2="{x(100):.1f}" y1="{y(dense_ppl):.1f}" y2="{y(dense_ppl):.1f}" '
            'stroke="gray" stroke-width="1.5" stroke-dasharray="2 4"/>'
        )
    if points:
        line = " ".join(f"{x(a):.1f},{y(p):.1f}" for a, p in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{DENSE_COLOR}" stroke-width="2"/>')
        for a, p in points:
            parts.append(f'<circle cx="{x(a):.1f}" cy="{y(p):.1f}" r="3.5" fill="{DENSE_COLOR}"/>')
            parts.append(_svg_text(x(a), y(p) - 8, _label(p), 11, "middle"))
    for mark, filled in marks:
        parts.append(_diamond(x(100 * mark[0]), y(mark[1]), filled))
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {_H}" font-family="sans-serif">'
        f"{''.join(parts)}</svg>"
    )
    label = f"{name}: perplexity at " + ", ".join(f"{a:.0f}% {_label(p)}" for a, p in points)
    data = (
        f'data-name="{html.escape(name, quote=True)}" '
        f'data-x="{",".join(repr(float(a)) for a, _ in points)}" '
        f'data-y="{",".join(repr(float(p)) for _, p in points)}" '
        f'data-dense="{"" if dense_ppl is None else repr(float(dense_ppl))}" '
        f'data-current="{_mark_data(current)}" data-earlier="{_mark_data(earlier)}"'
    )
    return (
        f'<div class="{SWEEP_CLASS}" role="img" aria-label="{html.escape(label, quote=True)}" {data}>'
        f'<img alt="{html.escape(label, quote=True)}" style="width:100%;height:auto;display:block" '
        f'src="data:image/svg+xml;utf8,{quote(svg)}">'
        f"{_sweep_legend(name, dense_ppl is not None, current, earlier)}</div>"
    )


def _drawable(value: float | None) -> bool:
    """Whether a perplexity can go on the log axis (finite and positive)."""
    return value is not None and math.isfinite(value) and value > 0


def _decades(levels: list[float]) -> tuple[float, float]:
    """The log10 range of the y axis: whole decades around ``levels`` (at least one)."""
    if not levels:
        return 0.0, 1.0
    lo = math.floor(math.log10(min(levels)))
    hi = math.ceil(math.log10(max(levels)))
    return float(lo), float(hi if hi > lo else lo + 1)


def _sweep_axes(x, y, lo: float, hi: float, width: int) -> str:
    """Grid lines and labels: every decade (with 2 and 5 between when there are few), every 10% of x."""
    parts = []
    few = hi - lo <= 2
    for k in range(int(lo), int(hi) + 1):
        for m in (1, 2, 5) if few else (1,):
            v = m * 10.0**k
            if not lo <= math.log10(v) <= hi:
                continue
            parts.append(
                f'<line x1="{_LEFT}" x2="{width - _RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                f'stroke="#ccc" stroke-width="{1 if m == 1 else 0.5}"/>'
            )
            parts.append(_svg_text(_LEFT - 6, y(v) + 4, _tick(v), 11, "end"))
    for a in range(0, 101, 10):
        parts.append(f'<line x1="{x(a):.1f}" x2="{x(a):.1f}" y1="{_TOP}" y2="{_H - _BOTTOM}" stroke="#eee"/>')
        parts.append(_svg_text(x(a), _H - _BOTTOM + 16, str(a), 11, "middle"))
    parts.append(
        _svg_text((_LEFT + width - _RIGHT) / 2, _H - 6, "sparsity of the selected layers (%)", 12, "middle")
    )
    parts.append(
        f'<text x="14" y="{(_TOP + _H - _BOTTOM) / 2:.0f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {(_TOP + _H - _BOTTOM) / 2:.0f})">perplexity (log)</text>'
    )
    return "".join(parts)


def _svg_text(x: float, y: float, text: str, size: int, anchor: str) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="#333">'
        f"{html.escape(text)}</text>"
    )


def _diamond(cx: float, cy: float, filled: bool, r: float = 8.0) -> str:
    fill = PRUNED_COLOR if filled else "white"
    return (
        f'<polygon points="{cx:.1f},{cy - r:.1f} {cx + r:.1f},{cy:.1f} {cx:.1f},{cy + r:.1f} '
        f'{cx - r:.1f},{cy:.1f}" '
        f'fill="{fill}" stroke="{PRUNED_COLOR}" stroke-width="2"/>'
    )


def _label(v: float) -> str:
    return perplexity_text(v, short=True)


def _tick(v: float) -> str:
    """A y-axis label: "1", "20", "5000", then "1e4", "2e5"."""
    if v < 1e4:
        return f"{v:g}"
    exponent = math.floor(math.log10(v) + 1e-9)
    return f"{round(v / 10**exponent)}e{exponent}"


def _mark_data(mark: tuple | None) -> str:
    return "" if mark is None else f"{float(100 * mark[0])!r},{float(mark[1])!r}"


def _where(mark: tuple) -> str:
    return f"({100 * mark[0]:.1f}%, perplexity {_label(mark[1])})"


def _sweep_legend(name: str, dense: bool, current: tuple | None, earlier: tuple | None) -> str:
    swatch = '<span style="display:inline-flex;align-items:center;gap:0.3rem;margin-right:1rem">{}{}</span>'
    items = [
        swatch.format(
            f'<span style="display:inline-block;width:1.2rem;border-top:2px solid {DENSE_COLOR}"></span>',
            html.escape(name),
        )
    ]
    if dense:
        items.append(
            swatch.format(
                '<span style="display:inline-block;width:1.2rem;border-top:2px dotted gray"></span>', "dense"
            )
        )
    diamond = (
        '<span style="display:inline-block;width:0.6rem;height:0.6rem;transform:rotate(45deg);{}"></span>'
    )
    if current is not None:
        items.append(
            swatch.format(diamond.format(f"background:{PRUNED_COLOR}"), f"your model now {_where(current)}")
        )
    if earlier is not None:
        items.append(
            swatch.format(
                diamond.format(f"border:2px solid {PRUNED_COLOR}"),
                f"your model, measured for {html.escape(earlier[2])} {_where(earlier)}",
            )
        )
    return f'<div style="font-size:0.85rem;margin-top:0.2rem">{"".join(items)}</div>'
