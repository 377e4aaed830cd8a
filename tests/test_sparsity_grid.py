"""The Layers page's block × kind sparsity grid (``ui.sparsity_grid``): each cell's value, colour, text."""

from __future__ import annotations

import math
import re

import numpy as np
from plotly.colors import sequential

from tests.support.apptest import grid_figure
from ui.sparsity_grid import DARK_FROM, GRID_CLASS, cell_color, sparsity_grid_html


def test_every_cell_carries_and_prints_its_value_and_an_empty_one_nothing():
    grid = np.array([[0.0, 49.6, 100.0], [12.5, np.nan, 75.0]])
    body = sparsity_grid_html(["attn q", "mlp <up>"], ["0", "1", "2"], grid)
    assert f'class="{GRID_CLASS}"' in body and "mlp &lt;up&gt;" in body and "<up>" not in body
    read = grid_figure(body)["data"][0]
    assert read["y"] == ["attn q", "mlp <up>"] and read["x"] == ["0", "1", "2"]
    z = np.array(read["z"])
    assert np.array_equal(np.isnan(z), np.isnan(grid)) and np.allclose(z[~np.isnan(z)], grid[~np.isnan(grid)])
    printed = re.findall(r'data-pct="[^"]*" title="([^"]*)"[^>]*>([^<]*)</div>', body)
    assert [text for _, text in printed] == ["0", "50", "100", "12", "75"]  # rounded as the heatmap was
    assert printed[1][0] == "block 1 · attn q: 49.6% pruned"
    empty = re.search(r'data-kind="mlp &lt;up&gt;" data-block="1"></div>', body)
    assert empty is not None  # no value, no colour, no text


def test_colours_run_from_white_to_dark_red_with_readable_numbers():
    def rgb(color: str) -> list[float]:
        return [float(v) for v in re.findall(r"[\d.]+", color)]

    assert rgb(cell_color(0.0)) == rgb(sequential.Reds[0]) and rgb(cell_color(100.0)) == rgb(
        sequential.Reds[-1]
    )
    assert cell_color(-5.0) == cell_color(0.0) and cell_color(140.0) == cell_color(100.0)

    shades = [sum(rgb(cell_color(p))) for p in range(0, 101, 10)]
    assert all(a > b for a, b in zip(shades, shades[1:]))  # darker with every step
    body = sparsity_grid_html(["k"], ["0", "1"], np.array([[DARK_FROM - 1, DARK_FROM]]))
    inks = re.findall(r"color:(#\w+)", body)
    assert inks == ["#262730", "#fff"]
    assert not any(math.isnan(v) for v in grid_figure(body)["data"][0]["z"][0])
