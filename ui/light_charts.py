"""The two small charts a slider step redraws, as plain HTML and SVG instead of Plotly figures.

Streamlit names a Plotly chart by a hash of its spec, so a chart whose numbers change is a new element:
the browser throws the old plot away and builds a new one (``Plotly.newPlot``). In a profile of Chromium
over slider steps on the Prune page, Plotly's code was the largest single cost of the page's main thread
(~190 ms a step on this machine, three charts rebuilt per step). The next-token bars and the sidebar's
per-layer bars need no zoom or pan: as HTML they are one ``innerHTML`` update, readable at any size (the
numbers are printed, not hovered), and carry their data in ``data-`` attributes for tests.

Pure functions: numbers in, an HTML string out (for ``st.html``, which keeps plain HTML and inline
styles, not SVG); no Streamlit, no models.
"""

from __future__ import annotations

import html

import pandas as pd

from ui.charts import DENSE_COLOR, PINNED_COLOR, PRUNED_COLOR

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
