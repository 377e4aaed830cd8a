"""The Train page's pieces: its controls (returning a ``train_plan.Plan``), the schedule drawn before a run,
the running job's progress and live curves (a polling fragment), a finished job's verdict and buttons, and
the comparison of this session's runs (held-out perplexity against training steps, with the dense line)."""

from __future__ import annotations

import math
import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from prune_explorer.execution.cpu_features import fast_bfloat16
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.models.layers import select
from prune_explorer.state import PruningState
from prune_explorer.training.job import CurvePoint
from prune_explorer.training.masking import GRADUAL_METHODS
from prune_explorer.training.schedule import GradualSchedule, cubic_sparsity, fit_schedule
from prune_explorer.training.settings import MAX_STEPS, PRECISIONS
from ui import defaults, formats, train_histograms, train_job, train_plan
from ui.charts import layout
from ui.sensitivity_view import PALETTE

POLL_SECONDS = 1.0
SCHEDULES = {"oneshot": "One-shot + recovery (masks fixed)", "gradual": "Gradual from dense"}
RECOVER = {"distill": "Distill from dense", "text": "Next-token on text"}
SOURCES = {"builtin": "Built-in text", "upload": "Upload .txt", "sampled": "Sampled from the dense model"}
PATTERNS = ("unstructured", "2:4", "4:8")
PRECISION_LABELS = {"float32": "float32", "bfloat16": "bfloat16 mixed"}
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 5e-3, 1e-2, 2e-2, 5e-2)
# stories260K at 70%, 60 s (bench/train.py, 2026-12-04): one-shot + distillation 1.55x dense at 1e-2, 1.67x
# at 2e-2; gradual 1.47x at 5e-3, 3.3x at 2e-2 (a dense start is hurt by a large step). 1e-2 serves both.
# The controls' values while another page is shown: Streamlit forgets a widget's value in a run that does
# not draw it, and a user checks other pages while a run trains. (id of the dense model, {key: value}).
SAVED = "train_controls"
_KEYS: set[str] = set()


def _key(key: str, default: object) -> str:
    """A widget key whose first value comes from session state (never ``value=``, see session)."""
    _KEYS.add(key)
    st.session_state.setdefault(key, default)
    return key


def _restore(dense: DenseModel) -> None:
    """The values the controls had when this page was last shown on this model."""
    model, saved = st.session_state.get(SAVED, (None, {}))
    if model == id(dense):
        for key, value in saved.items():
            st.session_state.setdefault(key, value)


def _save(dense: DenseModel) -> None:
    """Keep the controls' values (those not drawn this run, the gradual ones under one-shot, as they were)."""
    model, saved = st.session_state.get(SAVED, (None, {}))
    drawn = {k: st.session_state[k] for k in _KEYS if k in st.session_state}
    st.session_state[SAVED] = (id(dense), (saved if model == id(dense) else {}) | drawn)


def controls(dense: DenseModel) -> train_plan.Plan:
    """Every control of a run; returns what they are set to."""
    _restore(dense)
    small = defaults.is_small(dense)
    left, right = st.columns(2)
    schedule = left.segmented_control(
        "Schedule",
        list(SCHEDULES),
        format_func=SCHEDULES.get,
        key=_key("train_schedule", "oneshot"),
        required=True,
    )
    recover = right.segmented_control(
        "Recovery loss",
        list(RECOVER),
        format_func=RECOVER.get,
        key=_key("train_recover", "distill"),
        required=True,
    )
    source, text = _data_controls(dense)
    a, b, c = st.columns(3)
    steps = a.number_input("Steps", 1, MAX_STEPS, step=10, key=_key("train_steps", 200))
    lr = b.select_slider(
        "Learning rate",
        LEARNING_RATES,
        format_func="{:g}".format,
        key=_key("train_lr", 1e-2 if small else 3e-4),
    )
    seconds = c.number_input(
        "Time budget (s)", 0, 86_400, step=10, key=_key("train_seconds", 60), help="0: no limit"
    )
    gradual = _gradual_controls(int(steps)) if schedule == "gradual" else {}
    with st.expander("More settings"):
        d, e, f = st.columns(3)
        batch = d.number_input("Batch size", 1, 4096, key=_key("train_batch", 16 if small else 4))
        seq_len = e.number_input(
            "Sequence length", 2, context_length(dense.model), key=_key("train_seq_len", 128)
        )
        points = f.number_input("Points on the curves", 0, 1000, key=_key("train_points", 10))
        g, h, i = st.columns(3)
        eval_tokens = g.number_input(
            "Held-out tokens", 0, 10**9, step=256, key=_key("train_eval_tokens", 0), help="0: all of it"
        )
        hidden = h.number_input(
            "Hidden-state weight",
            0.0,
            1e6,
            step=0.1,
            key=_key("train_hidden", 0.0),
            help="distillation: weight of the per-layer hidden-state MSE beside the logit KL",
        )
        sampled = i.number_input("Sampled tokens", 512, 10**7, step=1024, key=_key("train_sampled", 8192))
        precision = st.segmented_control(
            "Arithmetic",
            list(PRECISIONS),
            format_func=PRECISION_LABELS.get,
            key=_key("train_precision", "bfloat16" if fast_bfloat16() and not small else "float32"),
            help="bfloat16: mixed precision (the forward's matmuls in bfloat16; weights, optimizer and "
            "losses in float32): more steps a second on a CPU with AVX512-BF16 or AMX; perplexity is "
            "measured in float32 either way",
        )
    _save(dense)
    return train_plan.Plan(
        schedule=schedule,
        recover=recover,
        source=source,
        text=text,
        steps=int(steps),
        lr=float(lr),
        seconds=float(seconds),
        batch_size=int(batch),
        seq_len=int(seq_len),
        points=int(points),
        eval_tokens=int(eval_tokens),
        hidden_weight=float(hidden),
        precision=precision or "float32",
        sampled_tokens=int(sampled),
        **gradual,
    )


def _data_controls(dense: DenseModel) -> tuple[str, str | None]:
    """The training text's source and, for an upload, its text (None until one is uploaded)."""
    has_builtin = dense.info.get("text_set", "stories") == "shakespeare"
    source = st.segmented_control(
        "Training data",
        list(SOURCES),
        format_func=SOURCES.get,
        key=_key("train_source", "builtin" if has_builtin else "sampled"),
        required=True,
    )
    text = None
    if source == "upload":
        upload = st.file_uploader("Training text (.txt)", type=["txt"], key="train_upload")
        if upload is not None:
            text = upload.getvalue().decode("utf-8", errors="replace")
    st.caption(
        "Training text never overlaps the evaluation or calibration text (a text that repeats 32 tokens of "
        "either is refused; sampled sequences that do are dropped)."
    )
    return source, text


def _fit(steps: int) -> None:
    """Button callback: interval and updates so the masks reach the target at about 70% of the run."""
    fitted = fit_schedule(st.session_state["train_target"] / 100, max(2, steps))
    st.session_state.update(train_t0=fitted.start_step, train_dt=fitted.every, train_updates=fitted.updates)


def _gradual_controls(steps: int) -> dict:
    """Zhu & Gupta's parameters: s_f, t0, dt, n, and how the masks are chosen."""
    a, b = st.columns(2)
    method = a.selectbox("Gradual method", GRADUAL_METHODS, key=_key("train_method", "magnitude"))
    pattern = b.selectbox("Pattern", PATTERNS, key=_key("train_pattern", "unstructured"))
    fixed = 50 if pattern != "unstructured" else None  # N:M fixes the final sparsity at 50% here
    if fixed is not None:
        st.session_state["train_target"] = fixed
    c, d, e, f = st.columns(4)
    target = c.slider(
        "Target sparsity (%)", 0, 95, step=5, key=_key("train_target", 70), disabled=fixed is not None
    )
    t0 = d.number_input("Start step", 0, MAX_STEPS, key=_key("train_t0", 0))
    dt = e.number_input("Interval dt", 1, MAX_STEPS, key=_key("train_dt", 7))
    n = f.number_input("Mask updates", 1, 100_000, key=_key("train_updates", 20))
    st.button("Fit the schedule to the steps", key="train_fit", on_click=_fit, args=(steps,))
    return dict(
        target=target / 100, start_step=int(t0), every=int(dt), updates=int(n), method=method, pattern=pattern
    )


def current_sparsity(state: PruningState, kinds: tuple[str, ...]) -> float:
    """Share of zero weights over the layers a run trains (``kinds``)."""
    layers = select(state.dense.layers, kinds)
    total = sum(layer.numel for layer in layers)
    return sum(state.pruned_count(layer.name) for layer in layers) / total if total else 0.0


def schedule_chart(plan: train_plan.Plan, held: float) -> go.Figure:
    """Sparsity against step before the run: the masks' (a step at every update) and Zhu & Gupta's cubic
    s_t (dotted); one-shot: the session's sparsity ``held`` fixed.

    Raises:
        ValueError: a schedule parameter out of range (``GradualSchedule``).
    """
    fig = go.Figure()
    if plan.schedule == "gradual":
        schedule = GradualSchedule(plan.target, 0.0, plan.start_step, plan.updates, plan.every)
        updates = [s for s in schedule.update_steps() if s < plan.steps]
        x = [0, *updates, plan.steps]
        y = [
            0.0,
            *(cubic_sparsity(s, schedule) for s in updates),
            cubic_sparsity(updates[-1], schedule) if updates else 0.0,
        ]
        smooth = [
            schedule.start_step + i * (schedule.end_step - schedule.start_step) / 100 for i in range(101)
        ]
        fig.add_scatter(x=x, y=[100 * v for v in y], mode="lines+markers", line_shape="hv", name="masks")
        fig.add_scatter(
            x=smooth,
            y=[100 * cubic_sparsity(int(s), schedule) for s in smooth],
            mode="lines",
            name="cubic s_t",
            line=dict(dash="dot", color="gray"),
        )
    else:
        fig.add_scatter(x=[0, plan.steps], y=[100 * held] * 2, mode="lines", name="masks (held fixed)")
    fig.update_xaxes(title_text="training step", range=[0, plan.steps])
    fig.update_yaxes(title_text="sparsity of the trained layers (%)", range=[-2, 100])
    return layout(fig, 260)


def cost_text(dense: DenseModel, plan: train_plan.Plan) -> str:
    """What a run trains and its memory estimate, before it starts.

    Raises:
        ValueError: a setting out of range (``TrainSettings.validate``'s message: Start would refuse it).
    """
    settings = train_plan.settings_for(plan)
    settings.validate(dense)
    need = train_plan.memory_need(dense, settings)
    return (
        f"Trains the layer kinds the sidebar prunes ({', '.join(train_plan.kinds())}) on a private copy; "
        f"this run needs about {formats.megabytes(need)} beyond the shared model. One training run at a time "
        "per server."
    )


def curves_chart(points: list[CurvePoint], steps_planned: int | None = None) -> go.Figure:
    """Training loss, held-out perplexity and sparsity against step, one above the other (x up to
    ``steps_planned`` while a run trains, so the curves grow across the chart)."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    steps = [p.step for p in points]
    losses = [(p.step, p.loss) for p in points if p.loss is not None]
    fig.add_scatter(x=[s for s, _ in losses], y=[v for _, v in losses], name="training loss", row=1, col=1)
    fig.add_scatter(x=steps, y=[p.ppl for p in points], name="held-out perplexity", row=2, col=1)
    fig.add_scatter(x=steps, y=[100 * p.sparsity for p in points], name="sparsity (%)", row=3, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="perplexity", type="log", row=2, col=1)
    fig.update_yaxes(title_text="sparsity (%)", row=3, col=1)
    fig.update_xaxes(title_text="training step", row=3, col=1)
    if steps_planned:
        fig.update_xaxes(range=[0, steps_planned])
    return layout(fig, 480)


def live() -> None:
    """The running job's progress, Cancel and live curves, refreshed every ``POLL_SECONDS``."""
    if train_job.current() is not None:
        _live()


@st.fragment(run_every=POLL_SECONDS)
def _live() -> None:
    job = train_job.current()
    if job is None:
        return
    if job.done:
        st.rerun()  # the whole page: the finished view with its buttons
    steps = job.settings.steps
    if job.stage == "training":
        left = job.seconds_left()
        when = "" if left is None else f", about {left:.0f} s left"
        text = f"Training {job.label}: step {job.steps_done}/{steps}{when}"
    else:
        text = f"{job.label}: {job.stage}… ({time.monotonic() - job.created:.0f} s)"
    st.progress(job.share, text=text)
    st.button(
        "Cancel" if not job.cancel_requested else "Cancelling after this step…",
        key="train_cancel",
        on_click=train_job.cancel,
        disabled=job.cancel_requested,
        icon=":material/stop:",
    )
    st.caption(
        "Training in the background: the slider and the other pages stay live meanwhile. Cancel stops after "
        "the current step and keeps that state, evaluated on the held-out text, to use or discard."
    )
    if job.points:
        st.plotly_chart(curves_chart(list(job.points), steps), key="train_live_curves")
    if job.histograms:
        chosen = st.session_state.get(train_histograms.PICKER, "")
        train_histograms.show(list(job.histograms), chosen, job.dense.name, "train_live_hist", job.watch)


def verdict(job: train_job.TrainJob) -> str:
    """One sentence on a finished job: how it stopped and what it reached."""
    info = job.result.info
    stopped = {"done": "finished", "time budget": "stopped at its time budget"}.get(
        info["stopped"], info["stopped"]
    )
    text = (
        f"{job.label}: {stopped} after {formats.plural(info['steps_done'], 'step')} "
        f"({info['train_seconds']:.0f} s, {info['tokens_seen']:,} tokens of {info['data']}). Held-out "
        f"perplexity {info['start_ppl']:.2f} → {info['final_ppl']:.2f} (dense {info['dense_ppl']:.2f}), "
        f"sparsity {info['sparsity']:.1%}."
    )
    schedule = job.settings.schedule
    if schedule is not None and info["sparsity"] < schedule.final_sparsity - 0.005:
        text += (
            f" It stopped before the schedule reached its target of {schedule.final_sparsity:.0%} (last mask "
            f"update at step {schedule.end_step}): more time, or fit the schedule to fewer steps."
        )
    return text


def apply_label(job: train_job.TrainJob) -> str:
    """The "use" button's label: a cancelled run names the state it keeps (its last whole step, evaluated)."""
    info = job.result.info
    if not job.result.cancelled:
        return "Use the trained model"
    return f"Use the state at step {info['steps_done']} (perplexity {info['final_ppl']:.2f})"


def usable(job: train_job.TrainJob) -> bool:
    """Whether the kept state is worth using: a diverged run can end on weights with no finite perplexity."""
    return math.isfinite(job.result.info["final_ppl"])


def comparison_chart(runs: list[train_job.Run]) -> go.Figure:
    """Held-out perplexity against training steps of every run, one-shot starts marked, dense dotted."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        x, y = [p.step for p in run.curve], [p.ppl for p in run.curve]
        fig.add_scatter(x=x, y=y, mode="lines+markers", name=f"#{i + 1} {run.label}", line=dict(color=colour))
        if run.kind == "oneshot":
            fig.add_scatter(
                x=x[:1],
                y=y[:1],
                mode="markers",
                name=f"#{i + 1} one-shot, before recovery",
                marker=dict(symbol="diamond", size=12, color=colour),
            )
    last = max((run.curve[-1].step for run in runs), default=1)
    dense = runs[-1].dense_ppl
    fig.add_scatter(
        x=[0, last], y=[dense, dense], mode="lines", name="dense", line=dict(color="gray", dash="dot")
    )
    fig.update_xaxes(title_text="training steps")
    fig.update_yaxes(title_text="held-out perplexity (log)", type="log")
    return layout(fig, 380)


def curves_table(runs: list[train_job.Run]) -> pd.DataFrame:
    """One row per run and curve point: what the comparison chart draws, with loss, time and lr."""
    rows = [
        {
            "run": i + 1,
            "label": run.label,
            "schedule": run.kind,
            "step": p.step,
            "training_loss": p.loss,
            "perplexity": p.ppl,
            "dense_perplexity": run.dense_ppl,
            "sparsity_percent": 100 * p.sparsity,
            "train_seconds": p.seconds,
            "lr": p.lr,
            "stopped": run.stopped,
        }
        for i, run in enumerate(runs)
        for p in run.curve
    ]
    return pd.DataFrame(rows)
