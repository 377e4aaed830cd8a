"""A slow method (SparseGPT on a big model) decided in a background thread, so a slider move does not throw
the run away: the thread only computes (``pruning.settings.method_result`` reads the dense model and writes
nothing); a polling fragment shows its progress and, once it is done, reruns the app, whose sidebar writes
the result into the session's state under the session lock (:func:`finish`).

One job per session, in ``st.session_state[session.JOB]``. Starting another, applying another pruning,
resetting to dense or changing the model cancels it: the thread stops at its next progress report.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from prune_explorer.models.dense import DenseModel
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.result import PruneResult
from prune_explorer.pruning.settings import PruneSettings, method_result
from ui import session

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


class Cancelled(Exception):
    """Raised inside the thread (from its progress callback) when the job was cancelled."""


@dataclass(eq=False)
class ApplyJob:
    """One background run: what it is for, how far it got, and what it decided (or why it failed)."""

    settings: PruneSettings
    dense: DenseModel
    label: str
    fraction: float = 0.0
    result: PruneResult | None = None
    error: str | None = None
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def progress(self, fraction: float) -> None:
        if self.cancelled:
            raise Cancelled
        self.fraction = min(1.0, max(self.fraction, fraction))

    def run(self, batch: CalibrationBatch | None) -> None:
        try:
            self.result = method_result(self.dense, self.settings, batch, progress=self.progress)
        except Cancelled:
            return
        except (ValueError, RuntimeError) as exc:  # RuntimeError: e.g. a Cholesky failure inside torch
            self.error = session.error_message(exc)
        except Exception as exc:  # a bug must reach the user as a message, not a job that never ends
            log.exception("background pruning failed")
            self.error = session.error_message(exc)


def current() -> ApplyJob | None:
    """The session's background job, running or finished but not yet applied, or None."""
    return st.session_state.get(session.JOB)


def start(settings: PruneSettings, label: str, batch: CalibrationBatch | None) -> ApplyJob:
    """Cancel any job of this session and start deciding ``settings`` in a thread."""
    session.cancel_job()
    job = ApplyJob(settings, session.dense(), label)
    job.thread = threading.Thread(target=job.run, args=(batch,), name="prune-explorer-apply", daemon=True)
    st.session_state[session.JOB] = job
    job.thread.start()
    return job


def finish() -> str | None:
    """Apply a finished job's result to the session's state (once); returns its error, if it had one."""
    job = current()
    if job is None or not job.done:
        return None
    st.session_state.pop(session.JOB, None)
    if job.cancelled or job.dense is not session.dense():
        return None
    if job.error is not None:
        return job.error
    return session.apply_result(job.settings, job.result)


def progress() -> None:
    """The running job's progress bar, refreshed every ``POLL_SECONDS``; reruns the app once it is done."""
    if current() is not None:
        _poll()


@st.fragment(run_every=POLL_SECONDS)
def _poll() -> None:
    job = current()
    if job is None:
        return
    if job.done:
        st.rerun()  # the whole app: the sidebar applies the result and every page shows it
    seconds = time.monotonic() - job.started
    st.progress(job.fraction, text=f"{job.label}: {job.fraction:.0%} after {seconds:.0f} s")
    st.caption(
        "Running in the background: moving a slider or changing page does not stop it. It is applied "
        "when it finishes; until then the pages show the pruning applied before."
    )
