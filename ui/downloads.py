"""A "Download CSV" button under every chart, and the tidy tables behind them.

Each table is built from the numbers the chart was drawn from (not read back from the figure), one row per
observation, with the unit in each column name (``sparsity_percent``, ``ms_per_call``). The button hands
Streamlit a function, not the CSV: the table is built only when someone clicks (on a server thread, with no
rerun), so a slider move pays for registering the button and nothing else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from ui.data import Histogram

Table = pd.DataFrame | Sequence[Mapping[str, object]]
CURVE_COLUMNS = ["series", "method", "pattern", "asked_sparsity_percent", "sparsity_percent", "perplexity"]


def csv_button(
    table: Table | Callable[[], Table], file_name: str, key: str, slot: DeltaGenerator | None = None
) -> None:
    """A small "Download CSV" button; a click downloads ``table`` without rerunning the app.

    Args:
        table: the chart's rows (a DataFrame, or a list of dicts), or a function of no arguments building
            them, called only when the button is clicked. Bind its arguments now with ``functools.partial``:
            a lambda would read the page's variables at click time, when they may hold something else.
        file_name: e.g. ``csv_name(dense.name, "sweep", "magnitude")``.
        key: widget key, prefixed by page like every key.
        slot: the container to draw in (the chart's own, when it is not the current one).
    """
    (slot or st).download_button(
        "Download CSV",
        data=lambda: to_csv(table() if callable(table) else table),
        file_name=file_name,
        mime="text/csv",
        key=key,
        on_click="ignore",
        type="tertiary",
        icon=":material/download:",
    )


def to_csv(table: Table) -> bytes:
    """UTF-8 CSV with a header row and no index; floats written in full (they parse back to the same
    numbers), missing values as empty fields."""
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def csv_name(*parts: object) -> str:
    """``stories260K-sweep-magnitude.csv`` from ("stories260K", "sweep", "magnitude"); empty parts are
    skipped, and anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``-`` (hub ids have a ``/``)."""
    words = [re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-") for p in parts if p not in (None, "")]
    return "-".join(w for w in words if w) + ".csv"


def sweep_file(model: str, settings: object | None) -> str:
    """File name of a sweep's CSV: the model, "sweep", the method, and the pattern unless unstructured."""
    method = getattr(settings, "method", "magnitude")
    pattern = getattr(settings, "pattern", "unstructured")
    return csv_name(model, "sweep", method, None if pattern == "unstructured" else pattern)


def histogram_table(
    layer: str, hist: Histogram, pruned: np.ndarray | None = None, pruned_total: int = 0
) -> pd.DataFrame:
    """One row per |w| bin of ``ui.charts.magnitude_histogram``: its range, its weights, the pruned ones.

    Args:
        hist: bins ``abs_w_from < |w| <= abs_w_to``; the first bin also holds everything below it (so it
            starts at 0) and, when the axis was cut, the last one everything above it (it ends at the
            largest |w|).
        pruned: int (bins,) pruned weights per bin, for masks that are not a magnitude cut; None for a
            magnitude cut, which prunes the ``pruned_total`` smallest |w| of the layer (comparison group:
            the layer), so it fills the bins from the left.
    """
    counts = np.asarray(hist.counts, dtype=np.int64)
    if pruned is None:
        pruned = np.diff(np.minimum(np.cumsum(counts), int(pruned_total)), prepend=0)
    start = np.asarray(hist.edges[:-1], dtype=float).copy()
    end = np.asarray(hist.edges[1:], dtype=float).copy()
    start[0] = 0.0
    end[-1] = max(float(end[-1]), float(hist.largest))
    return pd.DataFrame(
        {
            "layer": layer,
            "abs_w_from": start,
            "abs_w_to": end,
            "weights": counts,
            "pruned_weights": np.asarray(pruned, dtype=np.int64),
        }
    )


def heatmap_table(kinds: Sequence[str], blocks: Sequence[str], grid: np.ndarray) -> pd.DataFrame:
    """The sparsity heatmap's cells, one row per layer that exists: kind, block, sparsity (%)."""
    rows = [
        {"kind": kind, "block": block, "sparsity_percent": float(value)}
        for kind, row in zip(kinds, grid)
        for block, value in zip(blocks, row)
        if not math.isnan(value)
    ]
    return pd.DataFrame(rows, columns=["kind", "block", "sparsity_percent"])


def patch_table(layer: str, dense: np.ndarray, pruned: np.ndarray) -> pd.DataFrame:
    """The weight patch, one row per weight: row and column in the (out, in) matrix, the dense and the
    session's value, and whether pruning zeroed it (zero now, not zero as trained).

    Args:
        dense, pruned: float (rows, cols), the top-left corner of the layer's weight.
    """
    rows, cols = np.indices(dense.shape)
    return pd.DataFrame(
        {
            "layer": layer,
            "row": rows.ravel(),
            "col": cols.ravel(),
            "dense_w": dense.ravel().astype(float),
            "pruned_w": pruned.ravel().astype(float),
            "pruned": ((pruned == 0) & (dense != 0)).ravel(),
        }
    )


def next_token_table(table: pd.DataFrame) -> pd.DataFrame:
    """``data.topk_table``'s columns ``token``, ``dense``, ``pruned`` (and ``pinned`` when a pin is on the
    chart, ``ui.pin``; empty where the pin kept no probability) as rows of token, model, probability (the
    dense model's most likely token first, as on the chart)."""
    models = [model for model in ("dense", "pruned", "pinned") if model in table]
    rows = [
        {"token": token, "model": model, "probability": float(table[model].iloc[i])}
        for i, token in enumerate(table["token"])
        for model in models
    ]
    return pd.DataFrame(rows, columns=["token", "model", "probability"])


def _mark_rows(
    dense_ppl: float | None,
    current: tuple[float, float] | None,
    earlier: tuple[float, float, str] | None,
) -> list[dict[str, object]]:
    """The reference points of a perplexity chart: the dense model, and the session's model (now or as
    last measured), in ``CURVE_COLUMNS``."""
    rows: list[dict[str, object]] = []
    if dense_ppl is not None:
        rows.append(dict(series="dense", sparsity_percent=0.0, perplexity=dense_ppl))
    if current is not None:
        rows.append(dict(series="your model now", sparsity_percent=100 * current[0], perplexity=current[1]))
    if earlier is not None:
        rows.append(
            dict(
                series=f"your model, measured earlier ({earlier[2]})",
                sparsity_percent=100 * earlier[0],
                perplexity=earlier[1],
            )
        )
    return rows


def curves_table(
    points: pd.DataFrame,
    dense_ppl: float | None = None,
    current: tuple[float, float] | None = None,
    earlier: tuple[float, float, str] | None = None,
) -> pd.DataFrame:
    """Perplexity against sparsity, one row per point, as ``compare_charts.method_curves`` draws it.

    Args:
        points: ``compare.points_table``'s rows (``label``, ``method``, ``pattern``, ``asked``,
            ``achieved`` in [0, 1], ``ppl``).
        dense_ppl, current, earlier: the chart's dense line and marks of the session's model, as rows
            after the curves.
    """
    curves = pd.DataFrame(
        {
            "series": points["label"],
            "method": points["method"],
            "pattern": points["pattern"],
            "asked_sparsity_percent": 100 * points["asked"].astype(float),
            "sparsity_percent": 100 * points["achieved"].astype(float),
            "perplexity": points["ppl"].astype(float),
        }
    )
    rows = curves.to_dict("records") + _mark_rows(dense_ppl, current, earlier)
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def sweep_table(
    points: Iterable,
    name: str = "sweep",
    settings: object | None = None,
    dense_ppl: float | None = None,
    current: tuple[float, float] | None = None,
    earlier: tuple[float, float, str] | None = None,
) -> pd.DataFrame:
    """``light_charts.sweep_html``'s data in ``curves_table``'s columns.

    Args:
        points: ``SweepPoint``s (``sparsity`` asked, ``achieved``, ``ppl``).
        name: the curve's legend name; ``settings``: the applied settings, for the method and pattern
            columns (None: magnitude, unstructured).
    """
    method = getattr(settings, "method", "magnitude")
    pattern = getattr(settings, "pattern", "unstructured")
    rows = [
        dict(label=name, method=method, pattern=pattern, asked=p.sparsity, achieved=p.achieved, ppl=p.ppl)
        for p in points
    ]
    frame = pd.DataFrame(rows, columns=["label", "method", "pattern", "asked", "achieved", "ppl"])
    return curves_table(frame, dense_ppl, current, earlier)


def series_table(
    x_name: str,
    x: Sequence[object],
    series: Mapping[str, Sequence[float]],
    value_name: str,
    x_scale: float = 1.0,
) -> pd.DataFrame:
    """One row per (x, series) point of a chart of several named series over one x axis
    (``speed_charts.speed_lines``, ``compare_charts.layer_chart``); a series shorter than ``x`` covers its
    first values, as on the chart.

    Args:
        x_name, value_name: column names with their unit (``sparsity_percent``, ``ms_per_call``).
        x_scale: multiplies numeric x (100 for fractions shown as percent).
    """
    rows = [
        {x_name: at * x_scale if x_scale != 1.0 else at, "series": name, value_name: float(value)}
        for name, values in series.items()
        for at, value in zip(x, values)
    ]
    return pd.DataFrame(rows, columns=[x_name, "series", value_name])
