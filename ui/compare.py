"""Compare page helpers: the grid computed point by point with a Stop button, the points as a table, picking a
point by clicking it or from a list and applying it, and the per-layer charts."""

from __future__ import annotations

import functools
import math

import pandas as pd
import streamlit as st

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer
from prune_explorer.pruning.calibration import CalibrationBatch
from ui import compare_charts, downloads, outputs, sweeps
from ui.describe import PATTERN_LABELS, SHORT_LABELS
from ui.methods import request_apply


def compute_points(
    dense: DenseModel,
    keys: list[tuple],
    missing: list[tuple],
    batch: CalibrationBatch | None,
    start_now: bool,
    stopped: bool,
) -> None:
    """A Compute button (or a start at once), then a Stop button and a progress bar while the ``missing``
    points of the grid ``keys`` are computed one by one; each is stored as it finishes, so a stop keeps it."""
    slot = st.empty()
    label = f"Compute {len(missing)} missing point{'s' * (len(missing) > 1)}"
    if not (
        start_now or slot.button(label, key="compare_compute", type="primary", icon=":material/play_arrow:")
    ):
        st.caption(
            "Stopped: the points already finished are kept. Press the button to compute the rest."
            if stopped
            else "Each point prunes and scores the whole model; finished points are kept if you stop."
        )
        return
    st.session_state.pop("compare_stopped", None)
    outputs.dense_perplexity(dense)  # the dense line of the chart
    slot.button("Stop", key="compare_stop", icon=":material/stop:", on_click=stop, args=(keys,))
    bar = st.progress(0.0, text="Pruning and scoring…")
    for i, key in enumerate(missing):
        text = f"{point_label(key)} ({i + 1} of {len(missing)})"
        sweeps.compute_point(
            dense, key, batch, lambda f, i=i, text=text: bar.progress((i + f) / len(missing), text=text)
        )
    bar.empty()
    slot.empty()


def stop(keys: list[tuple]) -> None:
    """Stop button callback: the rerun it causes ends the computation; do not start it again by itself."""
    st.session_state["compare_stopped"] = keys


def apply_point(widget_key: str) -> None:
    """ "Apply this point" callback: the point chosen in the selectbox ``widget_key`` goes to the sidebar."""
    key = st.session_state.get(widget_key)
    if key is not None:
        request_apply(key[0], key[1], round(100 * key[2]))


def point_label(key: tuple) -> str:
    """ "Wanda · 2:4 · 50%" for a point key."""
    method, pattern, sparsity = key[0], key[1], key[2]
    return f"{SHORT_LABELS[method]} · {pattern} · {sparsity:.0%}"


def points_table(dense: DenseModel, keys: list[tuple]) -> pd.DataFrame:
    """The finished points as rows for ``compare_charts.method_curves``."""
    rows = []
    for key in keys:
        point = sweeps.cached_point(dense, key)
        label = f"{SHORT_LABELS[key[0]]} · {PATTERN_LABELS[key[1]].split(' (')[0]}"
        rows.append(
            dict(
                point=len(rows),
                label=label,
                method=key[0],
                pattern=key[1],
                asked=point.sparsity,
                achieved=point.achieved,
                ppl=point.ppl,
            )
        )
    return pd.DataFrame(rows, columns=["point", "label", "method", "pattern", "asked", "achieved", "ppl"])


def pick_point(keys: list[tuple], chart_key: str, widget_key: str) -> None:
    """Selection callback of the curves chart: a clicked point becomes the one offered for applying."""
    selection = st.session_state.get(chart_key, {}).get("selection", {})
    for clicked in selection.get("points", []):
        custom = clicked.get("customdata")  # [asked %, point id]; arrives as {"0": …, "1": …}
        point = (
            custom.get("1") if isinstance(custom, dict) else custom[1] if isinstance(custom, list) else None
        )
        if point is not None and 0 <= int(point) < len(keys):
            st.session_state[widget_key] = keys[int(point)]
            return


def _compact(layer: PrunableLayer) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``3.q_proj``: short enough for a chart axis."""
    return f"{layer.block}.{layer.name.rsplit('.', 1)[-1]}" if layer.block >= 0 else layer.name


def show_layer_views(
    dense: DenseModel,
    views: sweeps.LayerViews,
    pair: tuple[str, str] | None,
    sparsity: float,
    pattern: str | None = None,
) -> None:
    """Reconstruction error by layer for each method, and the Jaccard overlap of the pair's pruned weights,
    each with its CSV (``pattern`` names the files)."""
    for method, why in views.failed.items():
        st.caption(f"{SHORT_LABELS[method]}: {why}")
    names = [layer.name for layer in dense.layers if any(layer.name in e for e in views.errors.values())]
    labels = [_compact(dense.by_name[name]) for name in names]
    series = {SHORT_LABELS[m]: [errors.get(n, math.nan) for n in names] for m, errors in views.errors.items()}
    colors = {SHORT_LABELS[m]: compare_charts.METHOD_COLORS[m] for m in views.errors}
    st.plotly_chart(
        compare_charts.layer_chart(labels, series, "‖WX − W′X‖ / ‖WX‖", colors), key="compare_errors_chart"
    )
    what = (pattern, f"{round(100 * sparsity)}pct")
    downloads.csv_button(
        functools.partial(downloads.series_table, "layer", names, series, "relative_output_error"),
        downloads.csv_name(dense.name, "reconstruction-error", *what),
        key="compare_errors_csv",
    )
    st.caption(
        f"Relative output error of each pruned layer on its own dense inputs over (up to) "
        f"{sweeps.MEASURE_SEQUENCES} calibration sequences "
        "(0 = the layer computes what it did). Wanda and SparseGPT look at these inputs; magnitude and "
        "random do not."
    )
    if pair is None or views.overlap is None:
        st.caption("Choose two methods to see how far their masks agree.")
        return
    a, b = (SHORT_LABELS[m] for m in pair)
    overlap = {f"{a} vs {b}": [views.overlap.get(n, math.nan) for n in names]}
    by_chance = sparsity / (2 - sparsity)
    st.plotly_chart(
        compare_charts.layer_chart(
            labels,
            overlap,
            "Jaccard of pruned weights",
            y_range=(0, 1.02),
            reference=(by_chance, "two random masks"),
        ),
        key="compare_jaccard_chart",
    )
    overlap["two random masks"] = [by_chance] * len(names)
    downloads.csv_button(
        functools.partial(downloads.series_table, "layer", names, overlap, "jaccard_pruned_weights"),
        downloads.csv_name(dense.name, "mask-overlap", pair[0], pair[1], *what),
        key="compare_jaccard_csv",
    )
    st.caption(
        f"Share of the weights pruned by {a} or {b} that both prune (1 = the same weights, 0 = disjoint). "
        "The dashed line is what two unrelated random masks of this sparsity share: s / (2 − s)."
    )
