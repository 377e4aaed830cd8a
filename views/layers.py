"""Layers: every prunable weight, its |w| histogram with the current cut-off, and sparsity by block × kind."""

from functools import partial

import streamlit as st

from ui import charts, data, describe, downloads, formats, pickers, session, sparsity_grid

state = session.state()
dense = state.dense
applied = session.applied()
layers = data.shown_layers(dense, applied)
selected_names = {layer.name for layer in data.selected(dense, applied)}

st.title("Layers")
st.caption(
    "Every weight matrix the sidebar can prune. Embeddings and the LM head appear once the sidebar "
    "includes them."
)
st.dataframe(
    data.layer_table(state, layers, selected_names),
    hide_index=True,
    key="layers_table",
    column_config={
        "parameters": st.column_config.NumberColumn(format="localized"),
        "sparsity %": st.column_config.ProgressColumn(min_value=0, max_value=100, format="%.1f%%"),
    },
)

st.subheader("|w| distribution of one layer")
layer = pickers.layer_picker(layers, key="layers_layer")
log_x, log_y = pickers.histogram_scales("layers")
hist = data.magnitude_histogram(dense, layer.name, log_x)
threshold = data.layer_threshold(state, layer.name)
pruned = state.pruned_count(layer.name)
by_magnitude = state.pruned_by_magnitude(layer.name)
pruned_bins = None if by_magnitude else data.pruned_counts(state, layer.name, hist.edges)
st.plotly_chart(
    charts.magnitude_histogram(
        hist.edges,
        hist.counts,
        threshold if by_magnitude else 0.0,
        log_x=log_x,
        log_y=log_y,
        pruned=pruned_bins,
        tail_to=hist.largest if hist.cut else None,
    ),
    key="layers_histogram",
)
downloads.csv_button(
    partial(downloads.histogram_table, layer.name, hist, pruned_bins, pruned),
    downloads.csv_name(dense.name, "histogram", layer.name, "log" if log_x else None),
    key="layers_histogram_csv",
)
if by_magnitude:
    st.caption(
        f"Current threshold for {data.short_name(layer)}: |w| ≤ {threshold:.6f} · "
        f"{pruned:,} of {layer.numel:,} weights pruned ({state.sparsity(layer.name):.1%}). "
        "Red: the pruned share, the smallest magnitudes."
    )
else:
    st.caption(
        f"{data.short_name(layer)}: {pruned:,} of {layer.numel:,} weights pruned "
        f"({state.sparsity(layer.name):.1%}) by a method that does not cut at one |w|: red shows where the "
        "pruned weights sit in the |w| distribution (some large ones go, some small ones stay)."
    )
if dense.info.get("quantized_note"):
    st.caption(f"Note: {dense.info['quantized_note']}.")

st.subheader("All layers: sparsity by block and kind")
kinds, blocks, grid = data.sparsity_grid(state, layers)
st.html(sparsity_grid.sparsity_grid_html(kinds, blocks, grid))
downloads.csv_button(
    partial(downloads.heatmap_table, kinds, blocks, grid),
    downloads.csv_name(dense.name, "sparsity-by-layer"),
    key="layers_heatmap_csv",
)
st.caption(describe.heatmap_caption(applied))

st.subheader("Memory shared by every session")
cache = dense.cache.stats()
entries = formats.plural(cache.entries, "entry", "entries")
st.caption(
    f"Dense weights: {formats.megabytes(dense.num_parameters() * 4)} (float32, one copy for all sessions). "
    f"Shared cache: {formats.megabytes(cache.nbytes)} in {entries}: "
    f"{formats.megabytes(cache.pinned_bytes)} of |w| rankings (kept: every slider move reads them) and "
    f"{formats.megabytes(cache.nbytes - cache.pinned_bytes)} of other results (activation statistics, merged "
    f"rankings, dense outputs), evicted least recently used beyond {formats.megabytes(cache.max_bytes)}. "
    f"This session's own pruned weights: {formats.megabytes(state.private_bytes())}."
)
