"""The Train page's comparison: in one press, recover the session's pruned model, then prune gradually from
dense to the same sparsity with the same budget, one run after the other (a queue the page advances when a
run has finished); and beside the runs, one-shot magnitude, Wanda and SparseGPT at the same sparsity without
any training (the Compare page's points, shared with it), so one chart holds every case the seed compares."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from prune_explorer.models.dense import DenseModel
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.training.masking import GRADUAL_METHODS
from prune_explorer.training.schedule import fit_schedule
from ui import defaults, session, sweeps, train_job, train_plan, train_view
from ui.describe import SHORT_LABELS

REFERENCE_METHODS = ("magnitude", "wanda", "sparsegpt")


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
    target = round(train_view.current_sparsity(session.state(), train_plan.kinds()), 4)
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


def reference_point(runs: list[train_job.Run]) -> tuple[str, float] | None:
    """(pattern, share of weights) the one-shot references prune: the latest run's; None when there is nothing
    to compare (no pruning, whole units: a share of units, not of the trained weights) or the runs were scored
    on part of the held-out text (a reference point is scored on all of it)."""
    if not runs or any(run.eval_tokens for run in runs):
        return None
    latest = runs[-1]
    sparsity = round(latest.curve[-1].sparsity, 2)
    if parse_pattern(latest.pattern).structured or not 0 < sparsity < 1:
        return None
    return latest.pattern, sparsity


def reference_keys(
    pattern: str, sparsity: float, kinds: tuple[str, ...], batch: CalibrationBatch | None
) -> list[tuple]:
    """Compare-page point keys of one-shot magnitude, Wanda and SparseGPT at ``pattern`` and ``sparsity``."""
    return [sweeps.point_key(method, pattern, sparsity, kinds, batch) for method in REFERENCE_METHODS]


def references(dense: DenseModel, keys: list[tuple]) -> list[tuple[str, float]]:
    """(label, held-out perplexity) of the finished reference points, in ``keys``' order."""
    out = []
    for key in keys:
        point = sweeps.cached_point(dense, key)
        if point is not None:
            pattern = "" if key[1] == "unstructured" else f" {key[1]}"
            out.append((f"one-shot {SHORT_LABELS[key[0]]}{pattern} {key[2]:.0%}, no training", point.ppl))
    return out


def reference_lines(dense: DenseModel, runs: list[train_job.Run]) -> list[tuple[str, float]]:
    """The one-shot references of the comparison chart: computed now on a small model, on a button on a big
    one (each point prunes a scratch copy and scores the held-out text); (label, perplexity) of those done."""
    reference = reference_point(runs)
    if reference is None:
        return []
    pattern, sparsity = reference
    batch = session.calibration()[0]
    keys = reference_keys(pattern, sparsity, train_plan.kinds(), batch)
    missing = sweeps.missing_points(dense, keys)
    if missing and (
        defaults.is_small(dense)
        or st.button(
            f"Add one-shot Magnitude, Wanda and SparseGPT at {sparsity:.0%} {pattern} (no training)",
            key="train_references",
            help="Each prunes a scratch copy once and scores the held-out text (SparseGPT on a big model "
            "takes a minute); the points are the Compare page's, shared with it.",
        )
    ):
        bar = st.progress(0.0, text="One-shot references…")
        for i, key in enumerate(missing):
            sweeps.compute_point(dense, key, batch, lambda f, i=i: bar.progress((i + f) / len(missing)))
        bar.empty()
    for key in keys:
        if sweeps.point_error(dense, key):
            st.caption(f"One-shot {key[0]}: {sweeps.point_error(dense, key)}")
    return references(dense, keys)
