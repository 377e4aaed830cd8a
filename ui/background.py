"""Measurements that follow the page instead of holding it up: one worker thread per session.

A slider step must show its cheap outputs (text, next token, KL) at once. Forward latency, perplexity and
the sweep take longer, so a script run only *asks* for them (:func:`ask`) and draws what is measured
already. When the run ends (:func:`end_run`), the session's worker measures what that run asked for, one
task at a time, after a short quiet spell (a burst of slider steps starts nothing); a small polling
fragment (:func:`poll`) shows its progress and reruns the app once everything asked for is there.

Tasks on the session's own model hold the session lock (``session.exclusive``) while they measure, since a
slider move rewrites those weights; a new run (:func:`begin_run`) asks the worker to stop, and it does at
its next progress report, long before a person notices. Tasks that only read the shared dense model (the
sweep's scratch copy) just wait, keeping their progress; one that names the scratch model it runs (the
look-ahead's, shared by the sessions under a lock) waits between two of its layers, so it does not compete
with the run for memory, but only for ``HOLD_SECONDS``: then it stops and lets the lock go (a session that
never ends its run must not hold every other session's look-ahead). A stopped task is measured again if
the next run still asks for it. Results go into the session memo (``ui.results``) under the task's name and
key.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import streamlit as st
from torch import nn

from prune_explorer import threads
from prune_explorer.progress import Progress
from ui import results, session

log = logging.getLogger(__name__)

WORKER = session.WORKER
ASKED = "background_asked"  # the tasks the current run asks for: [Task]
REQUESTED = "background_requested"  # (name, key) a button asked for, kept until measured
QUIET_SECONDS = 0.15  # the worker starts this long after a run ends, so a burst of steps starts nothing
POLL_SECONDS = 0.3
# A task on a scratch model shared under a lock waits this long for a run to end, then lets the lock go.
HOLD_SECONDS = 2.0
PROGRESS_KEY = "background_progress"


class Stopped(Exception):
    """Raised in the worker at a progress report when a script run needs the session (or the task went)."""


@dataclass(eq=False)
class Task:
    """One measurement: ``compute(progress)`` returns the value stored in the session memo as
    ``(name, key)``; ``on_session_model`` says whether it reads the session's pruned weights."""

    name: str
    key: Hashable
    label: str
    compute: Callable[[Progress], Any]
    on_session_model: bool = True
    cached: Callable[[], Any] | None = None  # where a value measured elsewhere is found (default: the memo)
    # The model it runs (never the shared dense one): a run stops (the session's own model) or holds it (a
    # scratch copy shared under a lock, such as the look-ahead's) between two of its layers.
    model: nn.Module | None = None
    fraction: float = 0.0
    quiet: bool = False  # measured last, with no progress shown and no rerun when done (see prefetch)

    @property
    def hold_seconds(self) -> float | None:
        """How long a script run holds this task where it is before stopping it: 0 on the session's model
        (its weights are about to change), :data:`HOLD_SECONDS` on a scratch model shared under a lock (the
        look-ahead's), None (for as long as the run goes) for the rest."""
        if self.on_session_model:
            return 0.0
        return HOLD_SECONDS if self.model is not None else None

    @property
    def ident(self) -> tuple:
        return (self.name, self.key)


class Worker:
    """The session's measuring thread and its queue (the tasks the last finished run asked for)."""

    def __init__(self, lock: threading.RLock):
        self._lock = lock  # the session's run lock
        self._cond = threading.Condition()
        self._queue: list[Task] = []
        self._script_running = True
        self._ended_at = 0.0
        self._store: dict = {}
        self._thread: threading.Thread | None = None
        self.errors: dict[tuple, str] = {}
        self.current: Task | None = None
        self._closing = False
        _workers.add(self)

    def close(self, timeout: float = 10.0) -> None:
        """Stop at the next progress report and wait for the thread (torch aborts the process if a thread
        is still inside an op when the interpreter exits)."""
        with self._cond:
            self._closing = True
            self._queue = []
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def begin_run(self) -> None:
        """A script run starts: stop (or hold) the task being measured and start nothing new."""
        with self._cond:
            self._script_running = True
            self._cond.notify_all()

    def end_run(self, tasks: list[Task], store: dict) -> None:
        """A script run ended asking for ``tasks``: measure those not measured yet, into ``store``."""
        with self._cond:
            queued = {t.ident: t for t in self._queue}  # a task asked for again keeps its progress
            asked = sorted(_unique(tasks), key=lambda t: t.quiet)  # quiet tasks after the rest
            self._queue = [queued.get(t.ident, t) for t in asked if t.ident not in self.errors]
            self._store = store
            self._script_running = False
            self._ended_at = time.monotonic()
            if self._queue and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._loop, name="prune-explorer-measure", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> list[Task]:
        with self._cond:
            return list(self._queue)

    def _loop(self) -> None:
        threads.use_all_cores()
        while (task := self._next()) is not None:
            if task.on_session_model:
                with self._lock:
                    self._measure(task)
            else:
                self._measure(task)

    def _next(self) -> Task | None:
        """The next task once no script runs and the quiet spell has passed; None when the queue is empty."""
        with self._cond:
            while True:
                if not self._queue or self._closing:
                    self._thread = None
                    return None
                wait = self._ended_at + QUIET_SECONDS - time.monotonic()
                if not self._script_running and wait <= 0:
                    return self._queue[0]
                self._cond.wait(timeout=max(wait, 0.05) if not self._script_running else None)

    def _measure(self, task: Task) -> None:
        with self._cond:
            if self._script_running or task not in self._queue:
                return
            self.current, store = task, self._store
        try:
            with self._stop_between_layers(task):
                value = task.compute(lambda fraction: self._checkpoint(task, fraction))
        except Stopped:
            return
        except Exception as exc:  # a measurement that fails must say so, not leave the page waiting
            log.exception("background %s failed", task.name)
            self.errors[task.ident] = f"{task.label} failed: {exc}"
            value = None
        else:
            store[task.name] = (task.key, value)
        finally:
            self.current = None
        with self._cond:
            if task in self._queue:
                self._queue.remove(task)

    @contextmanager
    def _stop_between_layers(self, task: Task) -> Iterator[None]:
        """Let a script run stop or hold a long forward of the task's model between two of its linear layers
        (:meth:`_hold`): the session's own model, or a scratch copy (the look-ahead's, which then does not
        share the memory bus with the run). Never the shared dense model, whose hooks other sessions would
        run."""
        if task.model is None:
            yield
            return
        model = task.model

        def check(module: nn.Module, args: tuple) -> None:
            if self._script_running and threading.current_thread() is self._thread:
                self._hold(task)

        handles = [m.register_forward_pre_hook(check) for m in model.modules() if isinstance(m, nn.Linear)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _checkpoint(self, task: Task, fraction: float) -> None:
        """Progress report from inside a task: hold it while a script run goes, as long as the task may be
        held (:attr:`Task.hold_seconds`), else stop it."""
        with self._cond:
            task.fraction = min(1.0, max(task.fraction, fraction))
        self._hold(task)

    def _hold(self, task: Task) -> None:
        """Wait while a script run goes and ``task`` is still asked for, up to its hold time; raise
        :class:`Stopped` if the run outlasts it, the task was dropped or the worker closes."""
        limit = task.hold_seconds
        deadline = None if limit is None else time.monotonic() + limit
        with self._cond:
            while self._script_running and task in self._queue and not self._closing:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(timeout=left)
            if self._script_running or task not in self._queue or self._closing:
                raise Stopped


_workers: weakref.WeakSet[Worker] = weakref.WeakSet()


@atexit.register
def _close_workers() -> None:
    for found in list(_workers):
        found.close()


def _unique(tasks: list[Task]) -> list[Task]:
    seen, out = set(), []
    for task in tasks:
        if task.ident not in seen:
            seen.add(task.ident)
            out.append(task)
    return out


def worker() -> Worker:
    found = st.session_state.get(WORKER)
    if found is None:
        found = st.session_state.setdefault(WORKER, Worker(session.run_lock()))
    return found


def begin_run() -> None:
    """Call first in every app run, before waiting for the session lock."""
    worker().begin_run()
    st.session_state[ASKED] = []


def end_run() -> None:
    """Call last in every app run: hand the worker what the run asked for."""
    asked = st.session_state.get(ASKED, [])
    requested = st.session_state.get(REQUESTED, set())
    st.session_state[REQUESTED] = requested & {t.ident for t in asked}
    worker().end_run(asked, st.session_state.setdefault(results.MEMO, {}))


def result(task: Task) -> Any:
    """The task's value if it was measured (its ``cached`` lookup, else this session's memo), else None."""
    return task.cached() if task.cached is not None else results.peek(task.name, task.key)


def ask(task: Task, auto: bool = True, button: str = "", key: str | None = None, hint: str = "") -> Any:
    """The task's value, or None while it is measured in the background (or until the button asks).

    ``auto``: measure without asking (small models); else the ``button`` (widget ``key``, explained by
    ``hint``) asks, and the request is kept until the value arrives or the settings change. Shows what is
    happening in place of the value.
    """
    value = result(task)
    if value is not None:
        return value
    error = worker().errors.get(task.ident)
    if error is not None:
        st.error(error)
        return None
    requested = st.session_state.setdefault(REQUESTED, set())
    if not auto:  # the callbacks run before the script, so each run draws the button its state calls for
        if task.ident not in requested:
            st.button(button, key=key, on_click=_request, args=(task.ident,))
            st.caption(hint)
            return None
        st.button("Cancel", key=f"{key}_cancel", on_click=_cancel, args=(task.ident,), icon=":material/stop:")
    st.session_state.setdefault(ASKED, []).append(task)
    st.caption(f"{task.label}: measuring in the background; the slider stays live meanwhile.")
    return None


def prefetch(task: Task) -> None:
    """Ask for ``task`` quietly: measured after everything else this run asks for, with nothing drawn and no
    rerun when it is done (work a later step may use, such as ``ui.lookahead``)."""
    if result(task) is None:
        st.session_state.setdefault(ASKED, []).append(replace(task, quiet=True))


def _request(ident: tuple) -> None:
    st.session_state.setdefault(REQUESTED, set()).add(ident)


def _cancel(ident: tuple) -> None:
    """Not asked for in the next run: the worker drops the task at its next progress report."""
    st.session_state.setdefault(REQUESTED, set()).discard(ident)


def unfinished() -> list[Task]:
    """What this run asked for that is neither measured nor failed yet."""
    errors = worker().errors
    asked = st.session_state.get(ASKED, [])
    return [t for t in asked if not t.quiet and t.ident not in errors and result(t) is None]


def poll() -> None:
    """The measuring task's progress while the run's tasks are measured; reruns the app when all are in."""
    if unfinished():
        _poll()


@st.fragment(run_every=POLL_SECONDS)
def _poll() -> None:
    left = unfinished()
    if not left:
        st.rerun()  # the whole app: every section draws what was measured, and the polling stops
    current = worker().current
    task = current if current in left else left[0]
    with st.container(key=PROGRESS_KEY):  # a browser test knows measurements are pending by this key
        st.progress(task.fraction, text=f"{task.label}… ({len(left)} measurement(s) left)")
