"""The per-session measuring thread behind ``ui.background``: a queue of tasks, measured one at a time after a
script run ends and a short quiet spell, yielding to every new run. Plain threading (no Streamlit), so the
tests drive it directly.

How a task yields when a run begins: one on the session's own model stops (at its next progress report, or
between two linear layers of a long forward), since the run is about to rewrite those weights; one that
names the scratch model it runs (the look-ahead's, shared by the sessions under a lock) is held between two
of its layers for at most :data:`HOLD_SECONDS`, so it does not compete with the run for memory, then stops
and lets the lock go (a session that never ends its run must not hold every other session's look-ahead);
the rest (the sweep's scratch copy) wait at their progress reports, keeping their progress. A stopped task
is measured again if the next run still asks for it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

from prune_explorer import threads
from prune_explorer.progress import Progress

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.15  # the worker starts this long after a run ends, so a burst of steps starts nothing
# A task on a scratch model shared under a lock waits this long for a run to end, then lets the lock go.
HOLD_SECONDS = 2.0


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
