"""A training run (``prune_explorer.training``) in a background thread, one per session, and what the session
keeps of it: the result until it is applied or discarded, and every finished run's curves.

The thread trains a private student (``training.student``) that reads the shared dense model and writes
nothing the session owns, so it never holds the session lock: the slider and the other pages stay live.
The start (the session's weights and masks, or the dense ones) is copied in the script run that presses
Start, and the result is written into the session's state only when the user presses "Use the trained
model" (under ``session.exclusive``), as SparseGPT's weights are (``PruningState.apply_weights``), so
"Reset to dense" stays exact. A model switch or a reset drops a running job (``session.drop_training``).

Refusals come before any thread starts and say why: settings out of range (``TrainSettings.validate``), a
too short text, a job larger than free memory (``training.budget.check_job_memory``), another job already
holding the process's slot (``training.budget.job_slot``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import streamlit as st
import torch

from prune_explorer import threads
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.plans.trained import TrainingRecord
from prune_explorer.training.budget import TrainingRefused, check_job_memory, job_slot
from prune_explorer.training.data import TrainingData, training_data
from prune_explorer.training.histograms import WeightSnapshot
from prune_explorer.training.job import TrainingCancelled, train
from prune_explorer.training.result import CurvePoint, TrainResult
from prune_explorer.training.settings import TrainSettings
from prune_explorer.training.student import Start, dense_start, start_from_state
from ui import session, train_histograms, train_plan

log = logging.getLogger(__name__)

RUNS = "train_runs"  # finished runs' curves in this session: [Run]
ERROR = "train_error"  # why the last Start or apply was refused, shown once
# On two cores one training thread leaves the other to the slider and the page.
TRAIN_THREADS = max(1, threads.ALL_CORES - 1)
_ids = itertools.count(1)


@dataclass(frozen=True)
class Trained:
    """The trained model written into the session's state: which run, over which applied settings.

    ``record``: the run's settings and report, for the sidebar's words and the exports; ``measured``: the
    share of the trained layers' weights its masks zero in the state, counted when it was written.
    """

    ident: int
    label: str
    final_ppl: float
    sparsity: float
    applied: object  # session.applied() when it was written (see session.trained)
    record: TrainingRecord | None = None
    measured: float | None = None


@dataclass(frozen=True)
class Run:
    """A finished run's curves, kept for the comparison chart."""

    ident: int
    label: str
    kind: str
    model: str
    curve: tuple[CurvePoint, ...]
    dense_ppl: float
    eval_tokens: int | None
    stopped: str
    pattern: str = "unstructured"  # the masks' pattern (a recovery's: the sidebar's at Start)


@dataclass(eq=False)
class TrainJob:
    """One training run: its inputs, how far it got (updated by the thread), and its result or error."""

    dense: DenseModel
    settings: TrainSettings
    kind: str
    label: str
    start: Start
    data: TrainingData | None  # None: sampled from the dense model in the thread
    sampled_tokens: int = 8192
    watch: list[str] = field(default_factory=list)  # layers whose |w| histograms are recorded
    watch_edges: dict[str, np.ndarray] = field(default_factory=dict)
    histograms: list[WeightSnapshot] = field(default_factory=list)  # grows while the thread trains
    ident: int = field(default_factory=lambda: next(_ids))
    stage: str = "preparing the training data"
    share: float = 0.0
    points: list[CurvePoint] = field(default_factory=list)
    result: TrainResult | None = None
    error: str | None = None
    cancel_requested: bool = False
    created: float = field(default_factory=time.monotonic)
    training_since: float | None = None
    finished: bool = False
    recorded: bool = False
    thread: threading.Thread | None = None
    start_words: str = "dense"  # what the run started from, in words (``session.applied_words`` at Start)
    pattern: str = "unstructured"  # the masks' pattern: the gradual plan's, or the sidebar's at Start

    @property
    def done(self) -> bool:
        return self.finished

    @property
    def steps_done(self) -> int:
        return round(self.share * self.settings.steps)

    def cancel(self) -> None:
        """Ask the thread to stop after its current step (it keeps that step's result)."""
        self.cancel_requested = True

    def seconds_left(self) -> float | None:
        """About how long until it stops: the steps left at the pace so far, or the time budget left."""
        if self.training_since is None or self.share <= 0:
            return None
        elapsed = time.monotonic() - self.training_since
        left = elapsed * (1 - self.share) / self.share
        if self.settings.max_seconds is not None:
            trained = self.points[-1].seconds if self.points else 0.0
            left = min(left, max(0.0, self.settings.max_seconds - max(trained, elapsed)))
        return left

    def _progress(self, share: float) -> None:
        if self.cancel_requested:
            raise TrainingCancelled
        self.share = min(1.0, max(self.share, share))

    def _point(self, point: CurvePoint) -> None:
        self.points.append(point)
        if self.cancel_requested:
            raise TrainingCancelled

    def _sampling(self, share: float) -> None:
        if self.cancel_requested:
            raise TrainingCancelled

    def run(self) -> None:
        """The thread's body: sample the data if asked, then train; every outcome ends in ``finished``."""
        torch.set_num_threads(TRAIN_THREADS)
        try:
            data = self.data or training_data(
                self.dense,
                "sampled",
                seq_len=self.settings.seq_len,
                tokens=self.sampled_tokens,
                seed=self.settings.seed,
                progress=self._sampling,
            )
            self.stage, self.training_since = "training", time.monotonic()
            self.result = train(
                self.dense, data, self.settings, self.start, progress=self._progress, on_point=self._point,
                watch=self.watch, watch_edges=self.watch_edges, on_snapshot=self.histograms.extend,
            )  # fmt: skip
        except TrainingCancelled:  # before training began: nothing to keep
            self.stage = "cancelled before training began"
        except (ValueError, TrainingRefused, RuntimeError) as exc:
            self.error = train_plan.field_message(exc)
        except Exception as exc:  # a bug must reach the user as a message, not a run that never ends
            log.exception("training failed")
            self.error = f"Training failed: {type(exc).__name__}: {exc}"
        finally:
            self.stage = "finished" if self.result is not None else self.stage
            self.finished = True


def current() -> TrainJob | None:
    """The session's training run (running, or finished and not yet applied or discarded), or None."""
    return st.session_state.get(session.TRAIN_JOB)


def running() -> TrainJob | None:
    job = current()
    return job if job is not None and not job.done else None


def _start_point(dense: DenseModel, plan: train_plan.Plan, settings: TrainSettings) -> tuple[Start, str]:
    """Where the run starts and its label: the session's current model, or the dense one (gradual)."""
    layers = select(dense.layers, settings.kinds)
    recover = "distillation" if plan.recover == "distill" else "next-token loss"
    if plan.schedule == "gradual":
        target = f"{plan.method} {plan.pattern} → {plan.target:.0%}"
        return dense_start(dense, layers), f"gradual {target} ({recover})"
    if session.nothing_pruned():
        raise ValueError(
            "schedule: one-shot recovery trains the session's pruned model with its masks fixed, but nothing "
            "is pruned: prune in the sidebar first, or choose gradual"
        )
    return start_from_state(session.state(), layers), f"{session.applied_short()} + {recover}"


def start(plan: train_plan.Plan) -> str | None:
    """Check ``plan`` and start it in a thread; returns why it was refused (nothing started), or None.

    Call inside a script run (which holds the session lock): the start is copied from the session's state.
    """
    if running() is not None:
        return "A training run is already going in this session: wait for it or cancel it first."
    dense = session.dense()
    try:
        settings = train_plan.settings_for(plan)
        settings.validate(dense)
        watch, edges = train_histograms.watched(dense, settings.kinds, plan.watch)
        check_job_memory(train_plan.memory_need(dense, settings, watch))
        with job_slot():  # refused here, with the library's message, rather than inside the thread
            pass
        data = train_plan.training_stream(dense, plan)
        begin, label = _start_point(dense, plan, settings)
    except (ValueError, TrainingRefused) as exc:
        return train_plan.field_message(exc)
    st.session_state.pop(session.TRAIN_NOTE, None)  # a finished result not applied is replaced by this run
    job = TrainJob(dense, settings, plan.schedule, label, begin, data, plan.sampled_tokens, watch, edges)
    job.start_words = "dense" if plan.schedule == "gradual" else session.applied_words()
    job.pattern = (
        plan.pattern if plan.schedule == "gradual" else getattr(session.applied(), "pattern", "unstructured")
    )
    job.thread = threading.Thread(target=job.run, name="prune-explorer-train", daemon=True)
    st.session_state[session.TRAIN_JOB] = job
    job.thread.start()
    return None


def cancel() -> None:
    """Button callback: stop the running job after its current step (its result can still be applied), and
    forget the runs queued after it."""
    st.session_state.pop(session.TRAIN_QUEUE, None)
    job = running()
    if job is not None:
        job.cancel()


def record(job: TrainJob) -> None:
    """Keep a finished job's curves for the comparison chart (once)."""
    if job.recorded or job.result is None:
        return
    job.recorded = True
    info = job.result.info
    run = Run(
        job.ident,
        job.label,
        job.kind,
        job.dense.name,
        tuple(job.result.curve),
        info["dense_ppl"],
        job.settings.eval_tokens,
        info["stopped"],
        job.pattern,
    )
    st.session_state.setdefault(RUNS, []).append(run)


def runs(dense: DenseModel) -> list[Run]:
    """This session's finished runs on ``dense``, oldest first."""
    return [run for run in st.session_state.get(RUNS, []) if run.model == dense.name]


def use_result(best: bool = False) -> None:
    """Button callback: write the finished job's trained weights and masks (its final state, or with ``best``
    its best checkpoint) into the session's state."""
    job = current()
    if job is None or job.result is None or (best and job.result.best is None):
        return
    st.session_state.pop(session.TRAIN_JOB, None)
    if job.dense is not session.dense():  # never apply a result to another model
        st.session_state[session.TRAIN_NOTE] = "The training result was for another model; nothing applied."
        return
    try:
        with session.exclusive():
            job.result.apply(session.state(), best=best)
    except (ValueError, RuntimeError) as exc:  # e.g. a speed measurement holds swapped modules
        st.session_state[ERROR] = session.error_message(exc)
        st.session_state[session.TRAIN_JOB] = job  # still there to apply later
        return
    info = job.result.report(best=best)
    record = TrainingRecord(job.settings, info, job.start_words)
    measured = session.state().overall_sparsity([job.dense.by_name[name] for name in job.result.masks])
    label = f"{job.label}, best checkpoint at step {info['used_step']}" if best else job.label
    ppl = info["used_ppl"] if best else info["final_ppl"]
    st.session_state[session.TRAINED] = Trained(
        job.ident, label, ppl, info["sparsity"], session.applied(), record, measured
    )


def discard() -> None:
    """Button callback: forget the finished job's result (its curves stay on the comparison chart)."""
    st.session_state.pop(session.TRAIN_JOB, None)
