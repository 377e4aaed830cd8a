"""The Layers page's sparsity by block and kind, as an HTML grid instead of a Plotly heatmap.

Every cell prints its value and names itself on hover, so the grid needs no zoom or pan, and as HTML it is
one ``innerHTML`` update a step. As a Plotly heatmap the browser rebuilt it at every slider step, on the same
two cores as the run. Ten stories260K steps on the Layers page, Chrome's Performance metrics and a sampled
profile, one after the other: the main thread busy 357 ms a step with the grid against 442 with the heatmap,
of which Plotly's code 52 ms against 100 (the histogram is still Plotly). The step's histogram shows no
sooner (browser bench, ten steps a run, alternating: medians 238 and 190 ms with the grid, 218 and 247
without, when each run still sampled Plotly's colour scale per cell: ~13 ms a stories260K run, ~80 ms a
SmolLM2 one; now one table per process, 0.5 ms for SmolLM2's 210 cells): it is drawn before the heatmap
was; what the grid saves is CPU the next step or another session can use.

A pure function: numbers in, an HTML string out (for ``st.html``); each cell carries its kind, block and
percent in ``data-`` attributes for tests.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from functools import cache

import numpy as np
from plotly.colors import sample_colorscale

GRID_CLASS = "pe-sparsity-grid"
COLORSCALE = "Reds"  # 0% white to 100% dark red, as the heatmap was
DARK_FROM = 60.0  # percent from which a cell's number is printed white
STEPS = 1000  # colours sampled once per process, every 0.1%: Plotly's sampler takes ~0.4 ms a call


@cache
def _scale() -> tuple[str, ...]:
    return tuple(sample_colorscale(COLORSCALE, [i / STEPS for i in range(STEPS + 1)]))


def cell_color(percent: float) -> str:
    """The cell's background: ``percent`` (0-100) on the red scale, to the nearest 0.1%."""
    return _scale()[round(min(max(percent, 0.0), 100.0) / 100.0 * STEPS)]


def _cell(kind: str, block: str, percent: float) -> str:
    if math.isnan(percent):  # no layer of this kind in this block
        return (
            f'<div class="pe-cell" data-kind="{html.escape(kind)}" data-block="{html.escape(block)}"></div>'
        )
    ink = "#fff" if percent >= DARK_FROM else "#262730"
    tip = f"block {block} · {kind}: {percent:.1f}% pruned"
    return (
        f'<div class="pe-cell" data-kind="{html.escape(kind)}" data-block="{html.escape(block)}" '
        f'data-pct="{percent!r}" title="{html.escape(tip)}" style="background:{cell_color(percent)};'
        f'color:{ink};text-align:center;font-size:0.72rem;line-height:1.6rem;border-radius:2px">'
        f"{percent:.0f}</div>"
    )


def sparsity_grid_html(kinds: Sequence[str], blocks: Sequence[str], grid: np.ndarray) -> str:
    """Per-layer sparsity (%) as a kinds × blocks grid (``grid[k, b]``, NaN where a block has no layer of
    that kind), the value written in each cell, with a colour key below."""
    label = "font-size:0.72rem;white-space:nowrap;opacity:0.8"
    cells = [f'<div style="{label};text-align:right;padding-right:0.4rem">block</div>']
    cells += [f'<div style="{label};text-align:center">{html.escape(b)}</div>' for b in blocks]
    for kind, row in zip(kinds, grid, strict=True):
        cells.append(f'<div style="{label};text-align:right;padding-right:0.4rem;line-height:1.6rem">'
                     f"{html.escape(kind)}</div>")  # fmt: skip
        cells += [_cell(kind, block, float(value)) for block, value in zip(blocks, row, strict=True)]
    stops = ", ".join(cell_color(p) for p in (0, 25, 50, 75, 100))
    key = (
        f'<div style="display:flex;align-items:center;gap:0.4rem;margin-top:0.4rem;{label}">0%'
        f'<span style="display:inline-block;width:8rem;height:0.6rem;border:1px solid rgba(128,128,128,0.35);'
        f'background:linear-gradient(to right, {stops})"></span>100% pruned</div>'
    )
    columns = f"max-content repeat({len(blocks)}, minmax(1.4rem, 4rem))"
    return (
        f'<div class="{GRID_CLASS}" role="img" aria-label="Sparsity by block and kind">'
        f'<div style="display:grid;grid-template-columns:{columns};gap:2px;align-items:center">'
        f"{''.join(cells)}</div>{key}</div>"
    )
