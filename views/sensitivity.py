"""Sensitivity: which layers can lose more — prune one group at a time over a sparsity sweep and measure."""

from functools import partial

import streamlit as st

from prune_explorer.measure.sensitivity_groups import MODES
from prune_explorer.models.layers import DEFAULT_KINDS
from ui import background, downloads, protocol, sensitivity_view, session

state = session.state()
dense = state.dense
applied = session.applied()

st.title("Sensitivity")
st.caption(
    "Each layer (or each kind across all blocks, or each whole block) is pruned alone, the rest kept dense, "
    "and the damage is measured on held-out text: KL(dense ‖ pruned) of the next-token distributions and "
    "perplexity. Fragile layers are where a sparsity budget hurts most. The dashed lines are an instant "
    "estimate from the calibration statistics (the share of Σ w²‖x‖² the pruned weights held), drawn beside "
    "the measurement so you can see where the cheap proxy holds."
)
left, right = st.columns(2)
method = left.segmented_control(
    "Method", ["magnitude", "wanda"], default="magnitude", key="sensitivity_method", required=True
)
mode = right.segmented_control(
    "Prune one…",
    list(MODES),
    default="layer",
    key="sensitivity_mode",
    required=True,
    format_func={"layer": "layer", "kind": "kind (all blocks)", "block": "block"}.get,
)
kinds = tuple(getattr(applied, "kinds", None) or DEFAULT_KINDS)  # the sidebar's layer kinds
task = sensitivity_view.task(dense, method, mode, kinds, session.calibration()[0])
result = background.ask(
    task,
    auto=False,
    button="Measure sensitivity",
    key="sensitivity_run",
    hint="Press the button to measure (in the background; results are kept on disk for every session).",
)
if result is not None:
    p = result.protocol
    st.caption(
        f"Protocol: {p['text']}, {p['sequences']} sequence(s) of {p['seq_len']} tokens ({p['predictions']} "
        f"predictions), never used for calibration; dense perplexity on them {result.dense_ppl:.2f}. "
        + ("Read from the on-disk cache." if result.cached else ""),
        help=protocol.sensitivity_card(result),
    )
    st.plotly_chart(sensitivity_view.heatmap(result), key="sensitivity_heatmap")
    downloads.csv_button(
        partial(sensitivity_view.table, result),
        downloads.csv_name(dense.name, "sensitivity", method, mode),
        key="sensitivity_csv",
    )
    at = st.select_slider(
        "Most fragile at",
        options=result.sparsities,
        value=result.sparsities[len(result.sparsities) // 2],
        format_func=lambda s: f"{s:.0%}",
        key="sensitivity_at",
    )
    fragile = result.fragile(at)
    st.dataframe(
        [{"group": g, "KL (nats)": round(kl, 5)} for g, kl in fragile[:10]],
        hide_index=True,
        key="sensitivity_fragile",
    )
    chosen = st.multiselect(
        "Curves of",
        result.groups,
        default=[g for g, _ in fragile[:2]] + [fragile[-1][0]],
        key="sensitivity_chosen",
    )
    if chosen:
        st.plotly_chart(sensitivity_view.curves(result, chosen), key="sensitivity_curves")
