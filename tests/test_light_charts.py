"""The HTML charts a slider step redraws (``ui.light_charts``) draw the numbers they are given."""

import re

import numpy as np
import pandas as pd

from tests.support.apptest import light_figure
from ui import light_charts

TABLE = pd.DataFrame(
    {"token": ["' a'", '"<b>"', "'&'"], "dense": [0.5, 0.3, 0.0002], "pruned": [0.25, 0.4, 0.0]}
)


def widths(chart: str) -> list[float]:
    return [float(w) for w in re.findall(r"width:([0-9.]+)%;min-width", chart)]


def test_next_token_bars_carry_every_probability_and_escape_the_tokens():
    chart = light_charts.next_token_html(TABLE)
    drawn = light_figure(chart)["data"]
    assert [t["name"] for t in drawn] == ["dense", "pruned"]
    assert drawn[0]["x"] == TABLE["token"].tolist()  # read back unescaped, in the table's order
    assert drawn[0]["y"] == TABLE["dense"].tolist() and drawn[1]["y"] == TABLE["pruned"].tolist()
    assert "&lt;b&gt;" in chart and "<b>" not in chart  # a token is text, never markup
    # one scale for every bar: the largest probability fills the track, the others in proportion
    w = widths(chart)  # dense, pruned for each token in turn
    assert w[0] == max(w) and np.allclose(
        np.array(w) / w[0], np.array([0.5, 0.25, 0.3, 0.4, 0.0002, 0.0]) / 0.5, atol=1e-3
    )
    assert "50.0%" in chart and "<0.1%" in chart and ">0%<" in chart


def test_a_pinned_series_is_hatched_and_has_no_bar_where_the_pin_kept_none():
    chart = light_charts.next_token_html(TABLE.assign(pinned=[0.1, np.nan, 0.3]))
    pinned = light_figure(chart)["data"][2]
    assert pinned["name"] == "pinned" and pinned["y"] == [0.1, None, 0.3]
    assert "repeating-linear-gradient" in chart
    assert len(widths(chart)) == 3 * 3 - 1  # every bar but the missing one


def test_layer_bars_one_bar_a_layer_and_the_weighted_average():
    percents, names = [10.0, 50.0, 90.0], ["b0.q", "b0.k", 'b1"mlp']
    chart = light_charts.layer_bars_html(percents, ["#111", "#222", "#333"], names, average=62.5)
    assert [float(v) for v in re.findall(r'data-pct="([^"]+)"', chart)] == percents
    assert [float(v) for v in re.findall(r"height:([0-9.]+)%;background", chart)] == percents
    assert re.findall(r'data-average="([^"]+)"', chart) == ["62.5000"] and "bottom:62.50%" in chart
    assert 'title="b1&quot;mlp: 90.0%"' in chart
