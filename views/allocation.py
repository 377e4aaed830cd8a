"""Allocation: how the one sparsity is shared among layers now, and what each allocation costs in perplexity
at equal total sparsity."""

from functools import partial

import streamlit as st

from prune_explorer.models.layers import DEFAULT_KINDS, select
from prune_explorer.pruning import allocation, budget_bounds, outliers
from prune_explorer.pruning.methods import get_method
from ui import (
    allocation_chart,
    allocation_compare,
    allocation_view,
    background,
    budget_curves,
    defaults,
    downloads,
    outputs,
    protocol,
    session,
)

state = session.state()
dense = state.dense
applied = session.applied()

st.title("Allocation")
st.caption(
    "One average sparsity, shared among the layers (Neural Magic Sparsify's pattern): uniform gives every "
    "layer the same share; OWL (Yin et al. 2024) prunes blocks whose |W|·‖X‖ scores hold fewer outliers "
    "more; the budget solver spends the sparsity where the Sensitivity page's per-layer curves predict the "
    "least damage. Choose the allocation in the sidebar; the average (weighted by weights) is the slider's."
)

# ----- the allocation applied now
st.subheader("Per-layer sparsity now")
table = allocation_chart.layer_shares(state, applied)
st.plotly_chart(allocation_chart.bars(table, 380, names=True), key="allocation_bars")
name = getattr(applied, "allocation", "uniform") if getattr(applied, "allocation_applies", True) else None
st.caption(
    f"Bars: the share of each selected layer's weights that is zero in your pruned model, coloured by kind; "
    f"dashed: their weighted average, {allocation_chart.average_percent(table):.1f}%. Allocation: "
    + (allocation_view.LABELS[name] if name else "none (the method's pattern or policy decides per layer)")
    + "."
)
downloads.csv_button(
    table.drop(columns="short"),
    downloads.csv_name(dense.name, "allocation", name or "policy"),
    key="allocation_csv",
)
with st.expander("Table"):
    st.dataframe(
        table[["layer", "kind", "weights", "asked_percent", "pruned_percent"]].round(3),
        hide_index=True,
        key="allocation_table",
    )

# ----- allocations compared
st.subheader("Allocations at equal total sparsity")
method = st.session_state.get(session.METHOD, "magnitude")
kinds = tuple(getattr(applied, "kinds", None) or DEFAULT_KINDS)
batch = session.calibration()[0]
found = budget_curves.curves(dense, method, kinds, batch)
deviation = float(st.session_state.get(allocation_view.BUDGET_DEVIATION, budget_bounds.DEVIATION))
budget = (
    budget_bounds.bounded(allocation.budget_basis(select(dense.layers, kinds), found.curves()), deviation)
    if found is not None
    else None
)
plan = allocation_compare.Plan(
    method=method,
    kinds=kinds,
    calibration=batch,
    m=float(st.session_state.get(allocation_view.OWL_M, outliers.OWL_M)),
    lam=float(st.session_state.get(allocation_view.OWL_LAM, allocation.OWL_LAMBDA)),
    budget=budget,
)
label = get_method(method).label
st.caption(
    f"{label} (the sidebar's method), unstructured, at {', '.join(f'{t:.0%}' for t in plan.targets)} average "
    f"sparsity over your layer kinds; OWL with M = {plan.m:g}, λ = {plan.lam:g}; the budget within the "
    f"average ± {deviation:g} (the sidebar's). Each point prunes a scratch "
    "copy and scores the held-out text; points are shared by every session."
)
if budget is None:
    st.info(f"Budget: not drawn. {budget_curves.no_curves(dense, method)}")
measured = background.ask(
    allocation_compare.task(dense, plan),
    auto=defaults.is_small(dense),
    button="Compare allocations",
    key="allocation_compare",
    hint="Press the button to measure (in the background: the slider stays live).",
)
if measured is not None:
    dense_ppl = outputs.cached_dense_perplexity(dense)
    st.plotly_chart(
        allocation_compare.chart(measured, dense_ppl.ppl if dense_ppl else None),
        key="allocation_compare_chart",
    )
    st.caption(protocol.allocation_card(dense, method, batch))
    for error in allocation_compare.errors(measured):
        st.warning(error)
    downloads.csv_button(
        partial(allocation_compare.table, measured),
        downloads.csv_name(dense.name, "allocations", method),
        key="allocation_compare_csv",
    )
