"""The Train page's job pieces: what a run will train and cost, the running job's progress and live curves
(a polling fragment), and a finished job's verdict and buttons. Its controls are :mod:`ui.train_controls`,
its charts :mod:`ui.train_charts`."""

from __future__ import annotations

import math
import time

import streamlit as st

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.state import PruningState
from ui import formats, train_histograms, train_job, train_plan
from ui.train_charts import curves_chart

POLL_SECONDS = 1.0


def current_sparsity(state: PruningState, kinds: tuple[str, ...]) -> float:
    """Share of zero weights over the layers a run trains (``kinds``)."""
    layers = select(state.dense.layers, kinds)
    total = sum(layer.numel for layer in layers)
    return sum(state.pruned_count(layer.name) for layer in layers) / total if total else 0.0


def cost_text(dense: DenseModel, plan: train_plan.Plan) -> str:
    """What a run trains and its memory estimate, before it starts.

    Raises:
        ValueError: a setting out of range (``TrainSettings.validate``'s message: Start would refuse it).
    """
    settings = train_plan.settings_for(plan)
    settings.validate(dense)
    need = train_plan.memory_need(
        dense, settings, train_histograms.watched_names(dense, settings.kinds, plan.watch)
    )
    return (
        f"Trains the layer kinds the sidebar prunes ({', '.join(train_plan.kinds())}) on a private copy; "
        f"this run needs about {formats.megabytes(need)} beyond the shared model. One training run at a time "
        "per server."
    )


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
        f"sparsity {info['sparsity']:.1%}{_units_words(job)}."
    )
    best = job.result.best
    if best is not None:
        text += (
            f" Its lowest held-out perplexity at the final masks was {best.ppl:.2f}, after step {best.step}: "
            "that state is kept too (chosen on the same held-out text, so its number is optimistic)."
        )
    schedule = job.settings.schedule
    if schedule is not None and not info.get("schedule_done", True):
        text += (
            f" It stopped before the schedule reached its target of {schedule.final_sparsity:.0%} (last mask "
            f"update at step {schedule.end_step}): more time, or fit the schedule to fewer steps."
        )
    return text


def _units_words(job: train_job.TrainJob) -> str:
    """For a gradual run of whole units, what its sparsity and its target count (" of the trained layers'
    weights (50% of the neurons of each block; ...)"); else ""."""
    settings, schedule = job.settings, job.settings.schedule
    if schedule is None or not parse_pattern(settings.pattern).structured:
        return ""
    return (
        f" of the trained layers' weights ({schedule.final_sparsity:.0%} of the {settings.pattern} of each "
        "block; the trained layers of other kinds keep every weight)"
    )


def apply_label(job: train_job.TrainJob) -> str:
    """The "use" button's label: a cancelled run names the state it keeps (its last whole step, evaluated)."""
    info = job.result.info
    if not job.result.cancelled:
        return "Use the trained model"
    return f"Use the state at step {info['steps_done']} (perplexity {info['final_ppl']:.2f})"


def best_label(job: train_job.TrainJob) -> str | None:
    """The label of the button that uses the run's best checkpoint, or None: the final state is the best."""
    best = job.result.best
    if best is None:
        return None
    return f"Use the best checkpoint: step {best.step} (perplexity {best.ppl:.2f})"


def usable(job: train_job.TrainJob) -> bool:
    """Whether the kept state is worth using: a diverged run can end on weights with no finite perplexity."""
    return math.isfinite(job.result.info["final_ppl"])
