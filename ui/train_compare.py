"""The Train page's comparison in one press: recover the session's pruned model, then prune gradually from
dense to the same sparsity with the same budget, one run after the other (a queue the page advances when a
run has finished), so the comparison chart shows the seed's claim without setting up two runs by hand."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from prune_explorer.models.layers import select
from prune_explorer.training.masking import GRADUAL_METHODS
from prune_explorer.training.schedule import fit_schedule
from ui import session, train_job, train_plan


def start_comparison(plan: train_plan.Plan) -> str | None:
    """The seed's comparison in one press: recover the session's pruned model now (``plan`` as one-shot),
    then prune gradually from dense to the same sparsity with the same steps, time, data and loss. Returns
    why it was refused (nothing started), or None.

    The gradual run waits in the queue until the first has finished (:func:`advance`); the first's curves
    stay on the comparison chart, the gradual run's result is the one offered for use.
    """
    if session.nothing_pruned():
        return "Compare: nothing is pruned to recover; prune in the sidebar first."
    applied = session.applied()
    if getattr(applied, "pattern", "unstructured") != "unstructured":
        return (
            "Compare: the gradual run prunes to the same share of weights, so the comparison needs "
            "unstructured pruning in the sidebar."
        )
    dense = session.dense()
    layers = select(dense.layers, train_plan.kinds())
    target = round(
        sum(session.state().pruned_count(layer.name) for layer in layers)
        / sum(layer.numel for layer in layers),
        4,
    )
    method = getattr(applied, "method", "magnitude")
    fitted = fit_schedule(target, plan.steps)
    gradual = replace(
        plan, schedule="gradual", target=target, method=method if method in GRADUAL_METHODS else "magnitude",
        pattern="unstructured", start_step=fitted.start_step, every=fitted.every, updates=fitted.updates,
    )  # fmt: skip
    try:
        train_plan.settings_for(gradual).validate(dense)  # refused now, not after the first run
    except ValueError as exc:
        return train_plan.field_message(exc)
    refused = train_job.start(replace(plan, schedule="oneshot"))
    if refused is None:
        st.session_state[session.TRAIN_QUEUE] = [gradual]
    return refused


def queued() -> list[train_plan.Plan]:
    """The plans waiting for the session's run to finish."""
    return list(st.session_state.get(session.TRAIN_QUEUE, []))


def advance() -> bool:
    """Once the session's run has finished, keep its curves and start the next queued plan; returns whether
    one started. A run that failed or was cancelled empties the queue."""
    queue, job = queued(), train_job.current()
    if not queue or job is None or not job.done:
        return False
    st.session_state.pop(session.TRAIN_QUEUE, None)
    if job.result is None or job.result.cancelled:
        return False
    train_job.record(job)
    refused = train_job.start(queue[0])
    if refused is not None:
        st.session_state[train_job.ERROR] = refused
        return False
    if queue[1:]:
        st.session_state[session.TRAIN_QUEUE] = queue[1:]
    return True
