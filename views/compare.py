"""Compare: methods and patterns side by side on the loaded model — perplexity curves, per-layer
reconstruction error and mask overlap, the tokens that suffer; any point can be applied to the live model."""

import functools

import streamlit as st

from prune_explorer.models.layers import DEFAULT_KINDS
from prune_explorer.pruning.methods import METHODS, get_method, supported_patterns
from prune_explorer.pruning.patterns import PATTERNS, parse_pattern
from ui import (
    compare,
    compare_charts,
    data,
    defaults,
    describe,
    downloads,
    model_mark,
    outputs,
    protocol,
    session,
    sweeps,
)

GRID = (10, 20, 30, 40, 50, 60, 70, 80, 90)

state = session.state()
dense = state.dense
applied = session.applied()
small = defaults.is_small(dense)
batch, calib_error = session.calibration()
kinds = applied.kinds if applied is not None else tuple(defaults.present_kinds(dense, DEFAULT_KINDS))

st.title("Compare methods")
st.caption(
    f"Every point prunes a scratch copy of **{dense.name}** (your model is untouched until you apply one) "
    "and scores the held-out evaluation text, which never overlaps the calibration text. Layer kinds and "
    "calibration come from the sidebar."
)

# ----- perplexity against sparsity
# Pills, not multiselects: every option stays visible (wrapping onto more rows) with the chosen ones lit.
left, right = st.columns(2)
chosen = left.pills(
    "Methods", list(METHODS), selection_mode="multi", default=["magnitude", "wanda"],
    format_func=describe.SHORT_LABELS.get, key="compare_methods", persist_state="session", wrap=True,
) or []  # fmt: skip
patterns = right.pills(
    "Patterns", PATTERNS, selection_mode="multi", default=["unstructured"],
    format_func=describe.PATTERN_LABELS.get, key="compare_patterns", persist_state="session", wrap=True,
) or []  # fmt: skip
percents = st.pills(
    "Sparsities (%)", GRID, selection_mode="multi", default=[20, 40, 50, 60, 70, 80], key="compare_grid",
    persist_state="session", help="N:M patterns have one fixed sparsity, so one point per method.", wrap=True,
) or []  # fmt: skip
skipped = [m for m in chosen if get_method(m).calibrated and batch is None]
if skipped:
    st.warning(f"{calib_error} — {', '.join(skipped)} left out until the sidebar's calibration text works.")
combos = [(m, p) for m in chosen for p in patterns if m not in skipped and p in supported_patterns(m)]
for m in chosen:
    unsupported = [p for p in patterns if p not in supported_patterns(m)]
    if unsupported:
        st.caption(
            f"{get_method(m).label} prunes {', '.join(get_method(m).patterns)} patterns only; its "
            f"{', '.join(unsupported)} curves are left out."
        )
unstructured = parse_pattern("unstructured")
variants = {m: get_method(m).variant_for(unstructured, get_method(m).sequential_default) for m in chosen}
ran = [f"**{get_method(m).label}**: {v.rstrip('.')}" for m, v in variants.items()]
if ran:
    st.caption("Variants run: " + "; ".join(ran) + ".")
keys = list(
    dict.fromkeys(sweeps.point_key(m, p, s / 100, kinds, batch) for m, p in combos for s in sorted(percents))
)
if not keys:
    st.info("Pick at least one method, one pattern and one sparsity.")
    st.stop()

missing = sweeps.missing_points(dense, keys)
stopped = st.session_state.get("compare_stopped") == keys
if missing:
    compare.compute_points(dense, keys, missing, batch, start_now=small and not stopped, stopped=stopped)

done = [key for key in keys if sweeps.cached_point(dense, key) is not None]
for key in keys:
    if sweeps.point_error(dense, key):
        st.caption(f"{compare.point_label(key)}: {sweeps.point_error(dense, key)}")
table = compare.points_table(dense, done)
chart_slot = st.container()
if done:
    pick, button = st.columns([3, 1], vertical_alignment="bottom")
    point = pick.selectbox(
        "Point to apply to your model", done, format_func=compare.point_label, key="compare_point"
    )
    button.button(
        "Apply this point", key="compare_apply", type="primary", icon=":material/check:",
        on_click=compare.apply_point, args=("compare_point",),
    )  # fmt: skip
    chosen_point = sweeps.cached_point(dense, point)
    dense_ppl = outputs.dense_perplexity(dense) if small else outputs.cached_dense_perplexity(dense)
    if small:
        model_mark.remember(state, outputs.pruned_perplexity(state))
    mark = model_mark.current(state)
    current, earlier = model_mark.points(mark)
    dense_level = dense_ppl.ppl if dense_ppl else None
    chart_slot.plotly_chart(
        compare_charts.method_curves(
            table,
            dense_level,
            highlight=(chosen_point.achieved, chosen_point.ppl),
            current=current,
            earlier=earlier,
        ),
        key="compare_curves",
        on_select=functools.partial(compare.pick_point, done, "compare_curves", "compare_point"),
        selection_mode="points",
    )
    downloads.csv_button(
        functools.partial(downloads.curves_table, table, dense_level, current, earlier),
        downloads.csv_name(dense.name, "compare-perplexity"),
        key="compare_curves_csv",
        slot=chart_slot,
    )
    chart_slot.caption(
        "Lower is better. The x axis is the share of zeros in the sidebar's layer kinds (neuron and head "
        "patterns prune only their own layers). The ring is the point chosen below; click a point to "
        f"choose it. {model_mark.caption(mark, 'star', 'press Compute perplexity on the Prune page')}"
    )
    chart_slot.caption(protocol.points_card(dense, [key[0] for key in done], batch))

# ----- per layer
st.subheader("Per layer: reconstruction error and mask overlap")
view_methods = [m for m in chosen if m not in skipped]
a, b, c, d = st.columns(4)
view_pattern = a.selectbox(
    "Pattern",
    patterns or ["unstructured"],
    format_func=describe.PATTERN_LABELS.get,
    key="compare_view_pattern",
    persist_state="session",
)
fixed = parse_pattern(view_pattern).fixed_sparsity
view_percent = b.select_slider(
    "Sparsity",
    GRID,
    value=50,
    format_func=lambda p: f"{p}%",
    key="compare_view_sparsity",
    disabled=fixed is not None,
    persist_state="session",
)
view_sparsity = fixed if fixed is not None else view_percent / 100
view_methods = [m for m in view_methods if view_pattern in supported_patterns(m)]
first = c.selectbox("Overlap of", view_methods, format_func=describe.SHORT_LABELS.get, key="compare_pair_a")
second = d.selectbox(
    "and",
    [m for m in view_methods if m != first],
    format_func=describe.SHORT_LABELS.get,
    key="compare_pair_b",
)
if batch is None:
    st.warning(f"{calib_error} — reconstruction errors need the sidebar's calibration text.")
elif not view_methods:
    st.info("Pick at least one method above.")
else:
    view_keys = {m: sweeps.point_key(m, view_pattern, view_percent / 100, kinds, batch) for m in view_methods}
    pair = (first, second) if second else (first, first)
    views = sweeps.cached_layer_views(dense, view_keys, pair, batch)
    if views is None and (small or st.button("Compute per-layer views", key="compare_layers_go")):
        bar = st.progress(0.0, text="Pruning and measuring each layer…")
        views = sweeps.layer_views(dense, view_keys, pair, batch, lambda f: bar.progress(f))
        bar.empty()
    if views is not None:
        compare.show_layer_views(dense, views, pair if second else None, view_sparsity, view_pattern)
    else:
        st.caption("Press the button: each method prunes the model once, then every layer is measured.")

# ----- tokens
st.subheader("Which tokens suffer")
if session.nothing_pruned():
    st.info(
        "Your model is dense now. Apply a pruning (sidebar, or a point above) to see which tokens suffer."
    )
    st.stop()
n_tokens = st.select_slider(
    "Tokens shown", [64, 128, 256, 512], value=256, key="compare_tokens", persist_state="session"
)
losses = outputs.cached_token_losses(state, n_tokens)
if losses is None and (small or st.button("Score the tokens", key="compare_tokens_go")):
    with st.spinner("Scoring each token with both models…"):
        losses = outputs.token_losses(state, n_tokens)
if losses is None:
    st.caption("Press the button to score the evaluation text token by token with both models.")
    st.stop()
ids, dense_nll, pruned_nll = losses
rise = pruned_nll - dense_nll
x, y, z = st.columns(3)
x.metric("Mean loss, dense", f"{float(dense_nll.mean()):.3f} nats")
y.metric(
    "Mean loss, pruned",
    f"{float(pruned_nll.mean()):.3f} nats",
    delta=f"{float(rise.mean()):+.3f}",
    delta_color="inverse",
)
z.metric("Tokens 1+ nat harder", f"{float((rise > 1).float().mean()):.0%}")
st.caption(protocol.token_loss_card(dense, len(ids), applied))
st.html(data.loss_legend_html())
st.html(data.loss_rise_html(dense.tokenizer.token_pieces(ids[1:]), dense_nll.tolist(), pruned_nll.tolist()))
st.caption(f"Your model now: {session.applied_words()}. Each token is coloured by pruned − dense loss.")
