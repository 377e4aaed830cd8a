"""Driving the app headlessly (Streamlit's AppTest) from tests and benchmarks.

Read what the app shows as data: metrics by label, captions and errors as text, and figures through their
Plotly spec parsed with ``json.loads`` (never by searching the spec's text: Plotly escapes non-ASCII
characters such as "·" unless orjson is installed).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "explorer.py"  # the Streamlit script (app.py serves it, warmed up)
TIMEOUT = 120
PRUNED = "Pruned (selected layers)"


@contextmanager
def navigation_not_pages_folder() -> Iterator[None]:
    """Make AppTest route through explorer.py's ``st.navigation`` on every rerun, as a real server does.

    AppTest (Streamlit 1.67) re-detects the legacy ``pages/`` folder before every run, so a rerun after the
    first would execute the page file alone, without explorer.py. A real server stops doing that once
    ``st.navigation`` has run.
    """
    init = PagesManager.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = patched
    try:
        yield
    finally:
        PagesManager.__init__ = init


def start() -> AppTest:
    """The app, run once (stories260K loaded) and its background measurements shown, with no exception."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return measured(at)


def measured(at: AppTest, timeout: float = TIMEOUT) -> AppTest:
    """Wait for the measurements the last run asked for (``ui.background``: latency, perplexity, sweep),
    then rerun so the page shows them, as the page's polling fragment does in a browser."""
    worker = at.session_state["background_worker"] if "background_worker" in at.session_state else None
    if worker is None or not shown_pending(worker):
        return at
    deadline = time.monotonic() + timeout
    while shown_pending(worker):
        assert time.monotonic() < deadline, f"background measurements still pending: {worker.pending()}"
        time.sleep(0.02)
    at.run()
    assert not at.exception, at.exception
    return at


def shown_pending(worker) -> list:
    """The worker's pending tasks whose results the page shows (not the quiet look-ahead)."""
    return [task for task in worker.pending() if not task.quiet]


def idle(at: AppTest, timeout: float = TIMEOUT) -> AppTest:
    """Wait until the session's worker has nothing left, quiet tasks (``ui.lookahead``) included."""
    worker = at.session_state["background_worker"]
    deadline = time.monotonic() + timeout
    while worker.pending():
        assert time.monotonic() < deadline, f"background tasks still pending: {worker.pending()}"
        time.sleep(0.02)
    return at


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return values[0]


def generation(at: AppTest, side: str) -> str:
    """The visible text of the dense or pruned continuation."""
    bodies = [h.value for h in at.html if f"pe-gen-{side}" in h.value]
    assert len(bodies) == 1
    return re.sub(r"<[^>]+>", "", bodies[0])


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def set_sparsity(at: AppTest, percent: int) -> AppTest:
    at.slider(key="sidebar_sparsity").set_value(percent).run()
    assert not at.exception, at.exception
    return measured(at)


def choose(at: AppTest, method: str | None = None, pattern: str | None = None) -> AppTest:
    """Pick a method and/or pattern in the sidebar and rerun."""
    if method is not None:
        at.selectbox(key="sidebar_method").set_value(method)
    if pattern is not None:
        at.selectbox(key="sidebar_pattern").set_value(pattern)
    at.run()
    assert not at.exception, at.exception
    return measured(at)


def pruned_counts(at: AppTest) -> dict[str, int]:
    state = at.session_state["pruning_state"]
    return {layer.name: state.pruned_count(layer.name) for layer in state.dense.layers}


def weight_bytes(dense) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().view(torch.uint8) for n, p in dense.model.named_parameters()}


def figures(at: AppTest) -> list[dict]:
    """Every Plotly chart on the page (not the sidebar's: see :func:`sidebar_figures`), as the figure dict
    it was sent as (``data``, ``layout``)."""
    return [json.loads(chart.proto.spec) for chart in at.main.get("plotly_chart")]


def _html_with(at: AppTest, css_class: str, where: str = "main") -> str:
    (found,) = [h.value for h in getattr(at, where).get("html") if f'class="{css_class}"' in h.value]
    return found


def sparsity_overview(at: AppTest) -> dict:
    """The Layers page's block × kind grid (``ui.sparsity_grid``), as :func:`grid_figure` reads it."""
    return grid_figure(_html_with(at, "pe-sparsity-grid"))


def next_token_bars(at: AppTest) -> dict[str, dict[str, float | None]]:
    """The Prune page's next-token chart (``ui.light_charts``) as series -> {token label: probability}
    (None where the series has no bar), in the order drawn."""
    return {
        t["name"]: dict(zip(t["x"], t["y"])) for t in light_figure(_html_with(at, "pe-next-token"))["data"]
    }


def light_figure(chart_html: str) -> dict:
    """A next-token chart's HTML read back from its bars' data attributes as a figure-like dict (``data``:
    one trace a series, ``x`` tokens, ``y`` probabilities, None where no bar), as a Plotly chart reads."""
    traces: dict[str, dict] = {}
    for row in re.split(r'<div class="pe-token-row" data-token="', chart_html)[1:]:
        token = html.unescape(row.split('"', 1)[0])
        for series, p in re.findall(r'class="pe-bar" data-series="(\w+)" data-p="([^"]*)"', row):
            trace = traces.setdefault(series, {"name": series, "x": [], "y": []})
            trace["x"].append(token)
            trace["y"].append(float(p) if p else None)
    return {"data": list(traces.values())}


def grid_figure(chart_html: str) -> dict:
    """The Layers page's sparsity grid (``ui.sparsity_grid``) read back as a figure-like dict, as a Plotly
    heatmap reads: ``data[0]``'s ``z`` (kinds × blocks, NaN for an empty cell), ``x`` blocks, ``y`` kinds."""
    cells = re.findall(
        r'class="pe-cell" data-kind="([^"]*)" data-block="([^"]*)"(?: data-pct="([^"]*)")?', chart_html
    )
    kinds = list(dict.fromkeys(html.unescape(k) for k, _, _ in cells))
    blocks = list(dict.fromkeys(html.unescape(b) for _, b, _ in cells))
    z = [[math.nan] * len(blocks) for _ in kinds]
    for kind, block, pct in cells:
        if pct:
            z[kinds.index(html.unescape(kind))][blocks.index(html.unescape(block))] = float(pct)
    return {"data": [{"z": z, "x": blocks, "y": kinds}]}


def light_sweep(chart_html: str) -> dict:
    """A sparsity sweep (``ui.light_charts.sweep_html``) read back from its data attributes: ``x`` (percent)
    and ``y`` (perplexity) of its points, ``dense``, ``current`` and ``earlier`` ((percent, perplexity) or
    None), the decoded ``svg`` and the ``legend``'s text."""

    def attr(name: str) -> str:
        return html.unescape(re.search(rf'data-{name}="([^"]*)"', chart_html).group(1))

    def numbers(name: str) -> list[float]:
        return [float(v) for v in attr(name).split(",") if v]

    def mark(name: str) -> tuple[float, float] | None:
        values = numbers(name)
        return (values[0], values[1]) if values else None

    svg = urllib.parse.unquote(re.search(r'src="data:image/svg\+xml;utf8,([^"]*)"', chart_html).group(1))
    legend = re.sub(r"<[^>]+>", " ", chart_html.split("<img", 1)[1].split(">", 1)[1])
    return {
        "name": attr("name"),
        "x": numbers("x"),
        "y": numbers("y"),
        "dense": (numbers("dense") or [None])[0],
        "current": mark("current"),
        "earlier": mark("earlier"),
        "svg": svg,
        "legend": " ".join(html.unescape(legend).split()),
    }


def sweep_figure(chart_html: str) -> dict:
    """A sparsity sweep read back as a figure-like dict (``data``: the curve, the dense level, the marks),
    with the names the CSV gives them."""
    drawn = light_sweep(chart_html)
    data = [{"name": drawn["name"], "x": drawn["x"], "y": drawn["y"]}]
    if drawn["dense"] is not None:
        data.append({"name": "dense", "x": [0, 100], "y": [drawn["dense"]] * 2})
    for name, key in (("your model now", "current"), ("your model, measured earlier", "earlier")):
        if drawn[key] is not None:
            data.append({"name": name, "x": [drawn[key][0]], "y": [drawn[key][1]]})
    return {"data": data}


def sweep(at: AppTest) -> dict:
    """The page's sparsity sweep, as :func:`light_sweep` reads it."""
    return light_sweep(_html_with(at, "pe-sweep"))


def sidebar_layer_bars(at: AppTest) -> tuple[np.ndarray, float]:
    """The sidebar's per-layer chart (``ui.light_charts.layer_bars_html``): each bar's pruned percent in
    model order, and the dashed average line's value."""
    chart = _html_with(at, "pe-layer-bars", "sidebar")
    percents = np.array([float(v) for v in re.findall(r'data-pct="([^"]+)"', chart)])
    (average,) = re.findall(r'data-average="([^"]+)"', chart)
    return percents, float(average)


def legend_below(figure: dict) -> bool:
    """Whether the legend sits at the foot of the figure (Plotly reserves its room there), where it cannot
    collide with the modebar at the top right."""
    legend = figure.get("layout", {}).get("legend", {})
    return legend.get("yref") == "container" and legend.get("y") == 0 and legend.get("yanchor") == "bottom"


def array(value) -> np.ndarray:
    """A figure's data array as numpy: a plain list, or Plotly's typed array ({dtype, bdata, shape})."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.array(value, dtype=float)


def trace_names(figure: dict) -> list[str]:
    return [trace.get("name") for trace in figure.get("data", [])]


def axis_titles(figure: dict) -> list[str]:
    """The titles of every axis of a figure (x, y, x2...), as text."""
    out = []
    for key, axis in figure.get("layout", {}).items():
        if re.fullmatch(r"[xy]axis\d*", key) and isinstance(axis, dict):
            title = axis.get("title")
            text = title.get("text") if isinstance(title, dict) else title
            if text:
                out.append(text)
    return out


def finish_background(at: AppTest, timeout: float = TIMEOUT) -> AppTest:
    """Wait for the session's background pruning run (``ui.jobs``), then rerun so the sidebar applies it."""
    job = at.session_state["apply_job"] if "apply_job" in at.session_state else None
    if job is not None:
        job.thread.join(timeout)
        assert not job.thread.is_alive(), "the background pruning run did not finish"
    at.run()
    assert not at.exception, at.exception
    return at
