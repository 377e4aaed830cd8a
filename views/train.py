"""Train: recover a pruned model (its masks fixed) or prune gradually while training, in the background,
and compare the runs' held-out perplexity against training steps with the dense model's."""

from dataclasses import replace
from functools import partial

import streamlit as st

from ui import (
    downloads,
    session,
    train_charts,
    train_compare,
    train_controls,
    train_histograms,
    train_job,
    train_plan,
    train_view,
)

state = session.state()
dense = state.dense

st.title("Train")
st.caption(
    "Magnitude pruning works much better during training: the model gets time to learn new paths. "
    "One-shot + recovery trains the session's pruned model with its masks held fixed (pruned weights stay "
    "exactly zero); gradual pruning starts from the dense model and raises the sparsity on Zhu & Gupta's "
    "cubic schedule, recomputing the masks every dt steps. Distillation matches the dense model's "
    "next-token distributions and needs no data set; text sampled from the dense model serves as data. "
    "To see the claim, run both at the same target sparsity, steps and time budget: the chart at the foot of "
    "the page puts every run of this session side by side with the dense model."
)
note = st.session_state.pop(session.TRAIN_NOTE, None)
if note:
    st.warning(note)
error = st.session_state.pop(train_job.ERROR, None)
if error:
    st.error(error)
trained = session.trained()
if trained is not None:
    in_use = (
        f"In use: the trained model ({trained.label}), held-out perplexity {trained.final_ppl:.2f}, "
        f"{trained.sparsity:.1%} sparse. Every page uses it; a new pruning in the sidebar replaces it, and "
        "Reset to dense gives the exact dense weights back."
    )
    st.info(in_use, icon=":material/model_training:")

plan = train_controls.controls(dense)
plan = replace(plan, watch=train_histograms.picker(dense, train_plan.kinds()))
try:
    held = train_view.current_sparsity(state, train_plan.kinds())
    st.plotly_chart(train_charts.schedule_chart(plan, held), key="train_schedule_chart")
    st.caption(train_view.cost_text(dense, plan))
except ValueError as exc:  # a schedule parameter out of range: Start says the same, and starts nothing
    st.warning(train_plan.field_message(exc))

if train_compare.advance():  # a queued run starts once the one before it has finished
    st.rerun()
job = train_job.current()
running = job is not None and not job.done
start, compare = st.columns([1, 3])
if start.button(
    "Start training", key="train_start", type="primary", disabled=running, icon=":material/play_arrow:"
):
    refused = train_job.start(plan)
    if refused:
        st.error(refused)
    else:
        st.rerun()
if compare.button(
    "Compare: recover this pruning, then prune gradually to the same sparsity",
    key="train_compare",
    disabled=running,
    icon=":material/compare_arrows:",
    help="Two runs, one after the other, with these steps, time budget, data and loss: one-shot + recovery "
    "of the sidebar's pruning, then gradual pruning from dense to the same share of weights. Both go on the "
    "chart at the foot of the page; the gradual run's result is the one offered for use.",
):
    refused = train_compare.start_comparison(plan)
    if refused:
        st.error(refused)
    else:
        st.rerun()
for waiting in train_compare.queued():
    st.caption(
        f"Next, when this run has finished (with this page open): gradual {waiting.method} to "
        f"{waiting.target:.1%}, the same steps and time."
    )
if job is not None and job.done and job.result is None:
    if job.error:
        st.error(job.error)
    else:
        st.info(f"{job.label}: {job.stage}; nothing to apply.")
    st.button("Dismiss", key="train_dismiss", on_click=train_job.discard)
elif job is not None and job.done:
    train_job.record(job)
    completed = job.result.info["stopped"] in ("done", "time budget")
    (st.success if completed else st.warning)(train_view.verdict(job))
    st.plotly_chart(train_charts.curves_chart(job.result.curve), key="train_result_curves")
    train_histograms.show(job.result.histograms, plan.watch, dense.name, "train_result_hist", job.watch)
    best = train_view.best_label(job)
    if best:
        use, use_best, drop = st.columns(3)
    else:
        (use, drop), use_best = st.columns(2), None
    usable = train_view.usable(job)
    use.button(
        train_view.apply_label(job),
        key="train_apply",
        type="primary",
        on_click=train_job.use_result,
        disabled=not usable,
        help=None if usable else "its held-out perplexity is not finite: discard it, lower the learning rate",
    )
    if best:
        use_best.button(best, key="train_apply_best", on_click=train_job.use_result, kwargs={"best": True})
    drop.button("Discard", key="train_discard", on_click=train_job.discard)
else:
    train_view.live()

runs = train_job.runs(dense)
if runs:
    st.subheader("One-shot, recovered, gradual")
    refs = train_compare.reference_lines(dense, runs)
    st.plotly_chart(train_charts.comparison_chart(runs, refs), key="train_comparison")
    st.caption(
        "Held-out perplexity of this session's runs against training steps; the diamond is a one-shot "
        "model before recovery, the dotted line the dense model's, the dashed ones one-shot pruning at the "
        "latest run's sparsity with no training at all."
    )
    downloads.csv_button(
        partial(train_charts.curves_table, runs, refs),
        downloads.csv_name(dense.name, "training-curves"),
        key="train_csv",
    )
