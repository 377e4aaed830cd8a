"""Measurements that follow the page instead of holding it up: one worker thread per session.

A slider step must show its cheap outputs (text, next token, KL) at once. Forward latency, perplexity and
the sweep take longer, so a script run only *asks* for them (:func:`ask`) and draws what is measured
already. When the run ends (:func:`end_run`), the session's worker measures what that run asked for, one
task at a time, after a short quiet spell (a burst of slider steps starts nothing); a small polling
fragment (:func:`poll`) shows its progress and reruns the app once everything asked for is there.

Tasks on the session's own model hold the session lock (``session.exclusive``) while they measure, since a
slider move rewrites those weights; a new run (:func:`begin_run`) asks the worker to stop, and it does at
its next progress report, long before a person notices; tasks off the session's model wait or are held
(``ui.worker``, the thread itself). Results go into the session memo (``ui.results``) under the task's name
and key.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from ui import results, session
from ui.worker import Task, Worker

__all__ = ["Task", "ask", "begin_run", "end_run", "poll", "prefetch", "result", "unfinished", "worker"]

WORKER = session.WORKER
ASKED = "background_asked"  # the tasks the current run asks for: [Task]
REQUESTED = "background_requested"  # (name, key) a button asked for, kept until measured
POLL_SECONDS = 0.3
PROGRESS_KEY = "background_progress"


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
