"""The Train page's |w| ridgeline: one layer's kept weights over a run (``training.histograms``), one ridge a
snapshot, live while the run trains and after it, with the layer picker and the CSV.

The bins are the Layers page's linear bins of the dense layer (``ui.data.magnitude_histogram``), fixed for
the run, so step 0 of a gradual run is the Layers page's histogram and the hole pruning cuts shows against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import sample_colorscale

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer, select
from prune_explorer.training.histograms import WeightSnapshot, default_layers, snapshot_rows
from ui import data, downloads, pickers
from ui.charts import layout

PICKER = "train_hist_layer"
OVERLAP = 1.6  # a ridge's tallest bin, in gaps between ridges: neighbours overlap a little


def trained_layers(dense: DenseModel, kinds: Sequence[str]) -> list[PrunableLayer]:
    return select(dense.layers, kinds)


def picker(dense: DenseModel, kinds: Sequence[str]) -> str:
    """The layer whose |w| the ridgeline shows (a run records it beside one attention and one MLP layer);
    the middle block's MLP layer until one is chosen."""
    layers = trained_layers(dense, kinds)
    if not layers:
        return ""
    if st.session_state.get(PICKER) not in {layer.name for layer in layers}:
        st.session_state[PICKER] = default_layers(layers)[-1].name
    return pickers.layer_picker(layers, key=PICKER, label="Layer for the |w| histogram over training").name


def watched_names(dense: DenseModel, kinds: Sequence[str], chosen: str) -> list[str]:
    """A run's watched layers: ``chosen`` first, then the defaults (one attention and one MLP layer)."""
    layers = trained_layers(dense, kinds)
    names = [chosen] if chosen in {layer.name for layer in layers} else []
    return list(dict.fromkeys(names + [layer.name for layer in default_layers(layers)]))


def watched(dense: DenseModel, kinds: Sequence[str], chosen: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """A run's watched layers (:func:`watched_names`) and their bins (the Layers page's)."""
    names = watched_names(dense, kinds, chosen)
    return names, {name: data.magnitude_histogram(dense, name, log_x=False).edges for name in names}


def of_layer(snapshots: Sequence[WeightSnapshot], layer: str) -> list[WeightSnapshot]:
    return [s for s in snapshots if s.layer == layer]


def ridgeline(snapshots: Sequence[WeightSnapshot], height: int | None = None) -> go.Figure:
    """One filled ridge a snapshot (kept weights per |w| bin), step 0 at the top, later steps below it; a
    common scale, so pruning's hole and the shrinking ridges read against the start."""
    fig = go.Figure()
    top = max((float(s.kept.max()) for s in snapshots if s.kept.size), default=1.0) or 1.0
    colours = sample_colorscale("Viridis", [i / max(1, len(snapshots) - 1) for i in range(len(snapshots))])
    offsets = [len(snapshots) - 1 - i for i in range(len(snapshots))]
    for snap, offset, colour in zip(snapshots, offsets, colours, strict=True):
        # flat-topped bins closed down to the ridge's baseline
        x = np.repeat(snap.edges, 2)
        y = np.concatenate([[0.0], np.repeat(snap.kept, 2), [0.0]]) * OVERLAP / top + offset
        fig.add_scatter(
            x=x, y=y, mode="lines", fill="toself", name=label(snap), line=dict(color=colour, width=1),
            hoveron="points", hovertemplate=f"{label(snap)}<br>|w| %{{x:.3g}}<extra></extra>",
        )  # fmt: skip
    fig.update_xaxes(title_text="|w| of the kept weights", automargin=True)
    fig.update_yaxes(
        tickvals=offsets, ticktext=[label(s) for s in snapshots], showgrid=False, zeroline=False,
        range=[-0.2, len(snapshots) - 1 + OVERLAP + 0.2], automargin=True,
    )  # fmt: skip
    fig.update_layout(showlegend=False)
    return layout(fig, height or min(900, 120 + 28 * len(snapshots)))


def label(snap: WeightSnapshot) -> str:
    return f"step {snap.step} · {snap.pruned / snap.numel:.0%} pruned"


def summary(snapshots: Sequence[WeightSnapshot]) -> str:
    """What the last snapshot says: pruned share, kept weights one-shot would have cut, the kept weights'
    mean move."""
    last = snapshots[-1]
    kept = last.numel - last.pruned
    share = last.pruned / last.numel
    text = f"At step {last.step}: {last.pruned:,} of {last.numel:,} weights pruned ({share:.1%})"
    if last.pruned and kept:
        text += (
            f"; {last.rescued:,} of the {kept:,} kept ({last.rescued / kept:.1%}) are weights one-shot "
            "magnitude pruning of the start would have cut"
        )
    return text + f"; the kept weights moved by {last.drift:.3g} on average (mean |w − w at step 0|)."


def table(snapshots: Sequence[WeightSnapshot]) -> pd.DataFrame:
    """The ridgeline's CSV: one row per snapshot and |w| bin (``training.histograms.snapshot_rows``)."""
    return pd.DataFrame(snapshot_rows(snapshots))


def show(
    snapshots: Sequence[WeightSnapshot], layer: str, model: str, key: str, recorded: Sequence[str]
) -> None:
    """The ridgeline of ``layer``, its CSV and summary, or why there is none (this run did not record it)."""
    mine = of_layer(snapshots, layer)
    if not mine:
        if snapshots:
            names = ", ".join(recorded)
            st.caption(f"This run records the |w| of {names}; the next run records the layer picked.")
        return
    st.plotly_chart(ridgeline(mine), key=key)
    downloads.csv_button(
        partial(table, mine), downloads.csv_name(model, "weights-over-training", layer), key=f"{key}_csv"
    )
    st.caption(summary(mine))
