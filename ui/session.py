"""Streamlit glue: one dense model per process (``st.cache_resource``), one pruning state per session.

The dense model is shared by every session and never written. Each session keeps in ``st.session_state``:
its :class:`PruningState`, the settings last applied to it (magnitude settings, or
``pruning.settings.PruneSettings`` which add method, pattern and calibration), what the last method
reported, its calibration batch, the last load error, and a small memo of results computed for the current
settings (so a rerun that moves nothing recomputes nothing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.models.layers import DEFAULT_KINDS
from prune_explorer.models.loading import LOADERS, STORIES260K
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import DEFAULT_SEQ_LEN, CalibrationBatch
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.result import PruneResult
from prune_explorer.pruning.settings import apply_result as apply_result_to
from prune_explorer.pruning.settings import apply_settings
from prune_explorer.state import PruningState
from ui import defaults, describe, held_widgets, loading, results

log = logging.getLogger(__name__)

STATE = "pruning_state"
ACTIVE = "model_source"  # what the user asked for: a LOADERS key, a folder or a hub id
APPLIED = "pruning_applied"
RUN_LOCK = "run_lock"
APPLIED_INFO = (
    "pruning_applied_info"  # the PruneResult.info of the method applied last (None: magnitude path)
)
CALIBRATION = "calibration_batch"  # (CalibrationBatch or None, error message or None), set by the sidebar
APPLY_REQUESTED = "apply_requested"  # a page asked the sidebar to apply its settings now (e.g. slow methods)
JOB = "apply_job"  # a slow method running in the background (ui.jobs.ApplyJob), until its result is applied
WORKER = "background_worker"  # the session's measuring thread (ui.worker.Worker), stopped by exclusive()
JOB_NOTE = "apply_job_note"  # why the last background run was dropped, shown once in the sidebar
TRAIN_JOB = "train_job"  # the session's training run (ui.train_job.TrainJob), until applied or discarded
TRAIN_NOTE = "train_job_note"  # why the last training run was dropped, shown once on the Train page
TRAIN_QUEUE = "train_queue"  # training plans to start, in order, once the session's run has finished
TRAINED = "train_applied"  # the trained model written into the state (ui.train_job.Trained), see trained()

# Sidebar widget keys reset when the model changes or the user resets to dense.
SPARSITY = "sidebar_sparsity"
THRESHOLD = "sidebar_threshold"
POLICY = "sidebar_policy"
KINDS = "sidebar_kinds"
EXTRAS = "sidebar_extras"
OVERRIDE_LAYERS = "sidebar_override_layers"
METHOD = "sidebar_method"
PATTERN = "sidebar_pattern"
MODEL = "sidebar_model"
SOURCE = "sidebar_source"
# Page widgets whose options depend on the model: forgotten on a model change (their option lists change, so
# the browser gets new widgets). Widgets whose *values* depend on it are set anew (see widget_defaults).
DEFAULTED_KEYS = (
    SPARSITY,
    THRESHOLD,
    KINDS,
    EXTRAS,
    OVERRIDE_LAYERS,
    METHOD,
    PATTERN,
    "prune_prompt",
    "prune_new_tokens",
    "sidebar_calib_seq_len",
)


@contextmanager
def exclusive() -> Iterator[None]:
    """Hold the session's lock: one script run (or state-changing callback) of a session at a time.

    With ``runner.fastReruns`` (the default) a slider move stops the running script and starts the next
    run in a new thread at once, but the old thread only stops at its next Streamlit call; until then it may
    still be writing the session's PruningState or computing with its weights. The new run waits here.
    The session's background measurements (``ui.background``) are asked to stop first.
    """
    worker = st.session_state.get(WORKER)
    if worker is not None:
        worker.begin_run()
    with run_lock():
        yield


def run_lock() -> threading.RLock:
    """The session's lock: held by a script run, a state-changing callback or a background measurement."""
    lock = st.session_state.get(RUN_LOCK)
    if lock is None:
        lock = st.session_state.setdefault(RUN_LOCK, threading.RLock())
    return lock


def default_source() -> str:
    return STORIES260K if STORIES260K in LOADERS else next(iter(LOADERS))


def start(dense: DenseModel, source: str) -> None:
    """Give the session a fresh state on ``dense`` (from ``source``); drop its runs on the previous model."""
    cancel_job()
    drop_training("The training run was dropped: the model changed. Nothing was applied.")
    st.session_state.pop(TRAINED, None)
    st.session_state[ACTIVE] = source
    st.session_state[STATE] = PruningState(dense)
    st.session_state[APPLIED] = None
    st.session_state[APPLIED_INFO] = None
    st.session_state[results.MEMO] = {}


def ensure_state() -> PruningState:
    """The session's pruning state, starting on the default built-in model the first time."""
    if STATE not in st.session_state:
        start(loading.load_dense(default_source()), default_source())
    current = st.session_state[STATE]
    if any(key not in st.session_state for key in DEFAULTED_KEYS):
        missing = {k: v for k, v in widget_defaults(current.dense).items() if k not in st.session_state}
        st.session_state.update(missing)
        held_widgets.hold(missing)
    return current


def state() -> PruningState:
    """The session's pruning state. explorer.py's :func:`ensure_state` has set the widget defaults once this
    run; the many calls after it only read the state (each default checked again cost ~0.3 ms a call). A
    page run without explorer.py (Streamlit's legacy pages/ folder mode, a first run) starts it here."""
    current = st.session_state.get(STATE)
    return current if current is not None else ensure_state()


def dense() -> DenseModel:
    return state().dense


def applied() -> MagnitudeSettings | None:
    """The settings the session's state was last brought to (None: dense, nothing applied yet).

    From the sidebar this is a ``pruning.settings.PruneSettings``: magnitude settings plus method, pattern and
    calibration.
    """
    return st.session_state.get(APPLIED)


def applied_info() -> dict | None:
    """What the method applied last reported (``PruneResult.info``), or None for the magnitude slider path."""
    return st.session_state.get(APPLIED_INFO)


def active_source() -> str:
    ensure_state()
    return st.session_state[ACTIVE]


def widget_defaults(dense: DenseModel) -> dict[str, Any]:
    """Where the sidebar and page widgets start on ``dense`` (keys: ``DEFAULTED_KEYS``).

    The widgets take their first values from session state, never from a ``value=`` argument, and a model
    change sets these anew: a browser keeps showing (and sends back) a widget's old value unless the server
    sets a new one, so a cleared prompt would stay the previous model's.
    """
    return {
        SPARSITY: 0,
        THRESHOLD: 0.0,
        KINDS: defaults.present_kinds(dense, DEFAULT_KINDS),
        EXTRAS: False,
        OVERRIDE_LAYERS: [],
        METHOD: "magnitude",
        PATTERN: "unstructured",
        "prune_prompt": defaults.default_prompt(dense),
        "prune_new_tokens": defaults.default_new_tokens(dense),
        "sidebar_calib_seq_len": min(DEFAULT_SEQ_LEN, context_length(dense.model)),
    }


def sentence(exc: BaseException) -> str:
    """An error's message as the middle of a sentence: no surrounding space, no final period."""
    return str(exc).strip().rstrip(".")


def apply(
    settings: MagnitudeSettings,
    calibration: CalibrationBatch | None = None,
    progress: Progress = None,
) -> str | None:
    """Bring the session's state to ``settings`` (slider path or method, ``pruning.settings`` decides); on
    any error keep the previous state and return why."""
    if settings == applied():
        return None
    try:
        info = apply_settings(state(), settings, calibration, progress)
    except (ValueError, RuntimeError) as exc:  # RuntimeError: e.g. a Cholesky failure inside torch
        if not isinstance(exc, ValueError):
            log.warning("applying %s failed: %s", settings, exc)
        return error_message(exc)
    _record(settings, info)
    return None


def apply_result(settings: MagnitudeSettings, result: PruneResult) -> str | None:
    """Write a method's decision, computed apart (``ui.jobs``), into the session's state under its lock."""
    try:
        with exclusive():
            info = apply_result_to(state(), result)
    except (ValueError, RuntimeError) as exc:  # e.g. a write while a speed measurement swapped modules
        return error_message(exc)
    _record(settings, info)
    return None


def _record(settings: MagnitudeSettings, info: dict | None) -> None:
    """Remember what was applied; a background run for other settings is stale now, so it is dropped."""
    st.session_state[APPLIED] = settings
    st.session_state[APPLIED_INFO] = info
    job = st.session_state.get(JOB)
    if job is not None and job.settings != settings:
        cancel_job(f"The background {job.label} run was dropped: another pruning was applied meanwhile.")


def cancel_job(note: str | None = None) -> None:
    """Cancel the session's background run, if any (its thread stops at its next progress report)."""
    job = st.session_state.pop(JOB, None)
    if job is not None:
        job.cancelled = True
        if note:
            st.session_state[JOB_NOTE] = note


def error_message(exc: BaseException) -> str:
    """A library error as the sidebar shows it, saying that nothing changed."""
    return f"{sentence(exc)}. The previous pruning is kept."


def drop_training(note: str, running_only: bool = False) -> None:
    """Cancel the session's training run and forget it (a finished one too unless ``running_only``): its
    result belongs to a model or a start that is gone. The thread stops after its current step."""
    st.session_state.pop(TRAIN_QUEUE, None)
    job = st.session_state.get(TRAIN_JOB)
    if job is None or (running_only and job.done):
        return
    job.cancel()
    st.session_state.pop(TRAIN_JOB, None)
    st.session_state[TRAIN_NOTE] = note


def trained() -> Any:
    """The trained model the state holds now (``ui.train_job.Trained``), or None.

    It is in force while the sidebar's settings are still the ones it was applied over (the same object:
    any new apply records new settings) and something is pruned; an apply or a reset writes over it.
    """
    record = st.session_state.get(TRAINED)
    if record is None or record.applied is not applied() or nothing_pruned():
        return None
    return record


def applied_words() -> str:
    """What the session's model is now, in one line: the trained model where one is in force
    (``describe.trained``), else the settings applied (``describe.describe``)."""
    record = trained()
    return describe.describe(applied()) if record is None else describe.trained(record)


def applied_short() -> str:
    """:func:`applied_words` in short: "trained · 70%", or "SparseGPT · 2:4 · 50%" (``describe.short``)."""
    record = trained()
    return describe.short(applied()) if record is None else describe.trained_short(record)


def reset_to_dense() -> None:
    """Button callback: exact dense weights back, sliders to zero, magnitude method, overrides cleared."""
    cancel_job()
    drop_training("The training run was cancelled by Reset to dense. Nothing was applied.", running_only=True)
    st.session_state.pop(TRAINED, None)
    with exclusive():
        state().reset()
    st.session_state[APPLIED] = None
    st.session_state[APPLIED_INFO] = None
    st.session_state[SPARSITY] = 0
    st.session_state[THRESHOLD] = 0.0
    st.session_state[OVERRIDE_LAYERS] = []
    st.session_state[METHOD] = "magnitude"
    st.session_state[PATTERN] = "unstructured"


def calibration() -> tuple[CalibrationBatch | None, str | None]:
    """The calibration batch the sidebar built this run, or (None, why not)."""
    return st.session_state.get(CALIBRATION, (None, "no calibration text chosen yet"))


def nothing_pruned() -> bool:
    """True when the working model holds exactly the dense weights, so it computes what the dense one does."""
    current = state()
    return not any(current.is_pruned(layer.name) for layer in current.dense.layers)


def pruned_key() -> tuple:
    """Identifies what the session's working model computes now: the model and the applied settings."""
    current = state()
    if nothing_pruned():
        return (id(current.dense), "dense")
    record = trained()
    extra = () if record is None else (("trained", record.ident),)
    return (id(current.dense), results.settings_key(applied()), *extra)
