"""The HTML charts a slider step redraws (``ui.light_charts``) draw the numbers they are given."""

import re

import numpy as np
import pandas as pd

from tests.support.apptest import light_figure, light_sweep
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


def _svg_points(svg: str) -> list[tuple[float, float]]:
    line = re.search(r'<polyline points="([^"]+)"', svg).group(1)
    return [tuple(float(v) for v in p.split(",")) for p in line.split()]


def test_the_sweep_draws_every_finite_point_on_a_log_axis_with_its_value():
    chart = light_charts.sweep_html(
        [0.0, 0.3, 0.6, 0.9, 0.95], [4.0, 8.0, 3e4, float("inf"), float("nan")], 4.2, name="magnitude <b>"
    )
    drawn = light_sweep(chart)
    assert drawn["x"] == [0.0, 30.0, 60.0] and drawn["y"] == [4.0, 8.0, 3e4]  # inf and nan left out
    assert drawn["dense"] == 4.2 and drawn["current"] is None and drawn["earlier"] is None
    points = _svg_points(drawn["svg"])
    assert len(points) == 3
    xs, ys = np.array(points).T
    # x in proportion to sparsity; y in proportion to log10(perplexity), higher perplexity higher up
    assert np.allclose(np.diff(xs) / 30.0, (xs[1] - xs[0]) / 30.0, rtol=1e-3)
    slopes = np.diff(ys) / np.diff(np.log10([4.0, 8.0, 3e4]))
    assert slopes[0] < 0 and np.isclose(slopes[0], slopes[1], rtol=1e-2)
    for label in ("4.0", "8.0", "3.0e4"):  # every point's value printed by it
        assert f">{label}</text>" in drawn["svg"]
    assert "magnitude &lt;b&gt;" in chart and "<b>" not in chart.split("<img", 1)[1]  # a name is text
    assert "magnitude <b>" in drawn["legend"] and "dense" in drawn["legend"]


def test_the_sweep_marks_the_model_now_filled_and_as_measured_earlier_hollow():
    now = light_sweep(light_charts.sweep_html([0.0, 0.5], [4.0, 9.0], 4.0, current=(0.4, 6.5)))
    assert now["current"] == (40.0, 6.5) and now["earlier"] is None
    assert "your model now (40.0%, perplexity 6.5)" in now["legend"]
    (diamond,) = re.findall(r"<polygon [^>]+>", now["svg"])
    assert f'fill="{light_charts.PRUNED_COLOR}"' in diamond

    earlier = (0.3, 5.0, "Wanda 30%")
    before = light_sweep(light_charts.sweep_html([0.0, 0.5], [4.0, 9.0], None, earlier=earlier))
    assert before["earlier"] == (30.0, 5.0) and before["current"] is None and before["dense"] is None
    assert "your model, measured for Wanda 30% (30.0%, perplexity 5.0)" in before["legend"]
    (diamond,) = re.findall(r"<polygon [^>]+>", before["svg"])
    assert 'fill="white"' in diamond  # hollow
    # the diamond sits on the curve's scale: between the points at 0% (4.0) and 50% (9.0)
    (cx, cy) = [float(v) for v in diamond.split('points="')[1].split()[0].split(",")]
    (x0, y0), (x1, y1) = _svg_points(before["svg"])
    assert x0 < cx < x1 and y1 < cy + 8 < y0  # the polygon's first vertex is its top, 8 units above


def test_an_empty_sweep_still_draws_its_axes():
    drawn = light_sweep(light_charts.sweep_html([0.5], [float("inf")]))
    assert drawn["x"] == [] and "<polyline" not in drawn["svg"] and "perplexity (log)" in drawn["svg"]
