"""Look-ahead for the sparsity slider: the Prune page's outputs one step either side of the current setting,
computed while the page is idle, so a keyboard step finds them ready.

On the slider path (magnitude, unstructured) the pruned model is a function of the dense weights and the
setting alone, so what the Prune page shows of it (the greedy continuation and the prompt's logits) is the
same in every session. Those results go on the dense model's shared cache, keyed by the setting, whether the
live path computed them (a user coming back to a setting, a second session at it) or the look-ahead did.

After each Prune page run the session's worker computes the two neighbouring slider positions (the direction
of the last move first) on one scratch copy of the model per process, on one thread, as a *quiet* background
task: no progress bar, no rerun, last in the queue. A run of the session holds it between two layers of a
forward, so it does not share the memory bus with the run, and it goes on if the next run asks for the same
neighbours; it stops if the run asks for others, or lasts over ``worker.HOLD_SECONDS`` (the scratch
copy's lock is every session's).
A step to a position found there only applies its masks and draws. The results come from the function the
live path calls (``outputs.pruned_continuation``, drafted by the current setting's text), on the same thread
count, so a step shows the same greedy tokens either way.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import replace

import streamlit as st

from prune_explorer import threads
from prune_explorer.measure.evaluate import Continuation
from prune_explorer.models.dense import DenseModel
from prune_explorer.progress import Progress
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.settings import apply_settings, uses_slider_path
from prune_explorer.state import PruningState
from ui import background, outputs, results, session

LAST_PERCENT = "lookahead_last_percent"  # session_state: the slider position of the previous Prune run
NEIGHBOUR_POLICIES = ("uniform", "global")  # policies whose slider is the sparsity (not a typed threshold)

# One scratch state per dense model and process (weakly keyed: it goes with its model), with its lock.
_scratch: weakref.WeakKeyDictionary[DenseModel, tuple[threading.Lock, PruningState]] = (
    weakref.WeakKeyDictionary()
)
_scratch_lock = threading.Lock()


def shareable(settings: MagnitudeSettings | None) -> bool:
    """Whether the pruned model under ``settings`` is the same in every session (the slider path)."""
    if settings is None:
        return False
    return uses_slider_path(
        getattr(settings, "method", "magnitude"), getattr(settings, "pattern", "unstructured")
    )


def _key(settings: MagnitudeSettings, ids: list[int], max_new: int) -> tuple:
    return ("pruned_continuation", results.settings_key(settings), tuple(ids), max_new)


def cached(
    dense: DenseModel, settings: MagnitudeSettings, ids: list[int], max_new: int
) -> Continuation | None:
    """The continuation (with its prompt logits) of ``settings`` if some session or the look-ahead has it."""
    return results.peek_shared(dense, _key(settings, ids, max_new))


def prime(state: PruningState, ids: list[int], max_new: int) -> bool:
    """Put the shared outputs of the applied setting into the session memo, if they exist; True if they did
    (the live path then computes nothing)."""
    applied = session.applied()
    if not shareable(applied) or session.nothing_pruned():
        return False
    found = cached(state.dense, applied, ids, max_new)
    if found is None:
        return False
    store = st.session_state.setdefault(results.MEMO, {})
    store["continue"] = (outputs.continuation_key(ids, max_new), found)
    store["logits"] = (outputs.logits_key(ids), found.prompt_logits)
    return True


def remember(state: PruningState, ids: list[int], max_new: int) -> None:
    """Share the continuation the live path just computed for the applied setting."""
    applied = session.applied()
    if not shareable(applied) or session.nothing_pruned():
        return
    found = results.peek("continue", outputs.continuation_key(ids, max_new))
    if found is not None:
        results.shared(state.dense, _key(applied, ids, max_new), lambda: found)


def neighbours(settings: MagnitudeSettings, last_percent: int | None) -> list[MagnitudeSettings]:
    """The settings one slider step either side of ``settings`` (the direction of the last move first)."""
    if not shareable(settings) or settings.policy not in NEIGHBOUR_POLICIES:
        return []
    percent = round(settings.sparsity * 100)
    order = (-1, 1) if last_percent is not None and percent < last_percent else (1, -1)
    return [replace(settings, sparsity=(percent + d) / 100.0) for d in order if 0 < percent + d <= 100]


def ask(state: PruningState, ids: list[int], max_new: int) -> None:
    """Ask the session's worker for the neighbouring positions' outputs, quietly, after everything else."""
    applied = session.applied()
    last = st.session_state.get(LAST_PERCENT)
    if applied is not None:
        st.session_state[LAST_PERCENT] = round(applied.sparsity * 100)
    dense = state.dense
    todo = [s for s in neighbours(applied, last) if cached(dense, s, ids, max_new) is None]
    draft = outputs.last_pruned_tokens(ids, max_new)  # this setting's text: the neighbours' best draft
    if not todo:
        return
    background.prefetch(
        background.Task(
            name="lookahead",
            key=tuple(_key(s, ids, max_new) for s in todo),
            label="Look-ahead",
            compute=lambda progress: _compute(dense, todo, ids, max_new, draft, progress),
            on_session_model=False,
            model=_scratch_state(dense)[1].model,  # a run of the session holds it between two layers
            cached=lambda: True if all(cached(dense, s, ids, max_new) for s in todo) else None,
        )
    )


def _scratch_state(dense: DenseModel) -> tuple[threading.Lock, PruningState]:
    with _scratch_lock:
        found = _scratch.get(dense)
        if found is None:
            found = _scratch[dense] = (threading.Lock(), PruningState(dense))
        return found


def _compute(
    dense: DenseModel,
    todo: list[MagnitudeSettings],
    ids: list[int],
    max_new: int,
    draft: list[int] | None,
    progress: Progress,
) -> bool:
    lock, scratch = _scratch_state(dense)
    with lock, threads.interactive():
        for i, settings in enumerate(todo):
            if cached(dense, settings, ids, max_new) is not None:
                continue
            apply_settings(scratch, settings)
            done = [0]

            def on_token(token: int, i: int = i, done: list[int] = done) -> None:
                done[0] += 1
                progress((i + min(done[0], max_new) / max(max_new, 1)) / len(todo))

            cont = outputs.pruned_continuation(
                scratch.model, dense, ids, max_new, on_token=on_token, draft=draft
            )
            results.shared(dense, _key(settings, ids, max_new), lambda cont=cont: cont)
    return True
