"""One dense model per process: loaded and ranked once, shared by every session, never loaded twice.

Keyed by the resolved source (``./m`` and ``/abs/m`` are one model). Streamlit's resource cache holds up to
four models; a model it let go that some session still holds is found in a weak registry instead of being
loaded a second time.
"""

from __future__ import annotations

import threading
import weakref

import streamlit as st

from prune_explorer.execution import few_rows
from prune_explorer.measure import divergence
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.models.loading import load_model, resolve_source
from prune_explorer.pruning import kernels
from prune_explorer.pruning.ranking import layer_rankings

_LOADING = threading.Lock()
# Every dense model some session still holds, by resolved source: a model evicted from Streamlit's resource
# cache but still in use is found here instead of being loaded a second time.
_IN_USE: weakref.WeakValueDictionary[str, DenseModel] = weakref.WeakValueDictionary()
# The share of each model's |w| ranking done by its background thread.
_RANKING: weakref.WeakKeyDictionary[DenseModel, list[float]] = weakref.WeakKeyDictionary()


def load_dense(source: str) -> DenseModel:
    """The dense model for ``source``, loaded once per process and shared by all sessions (read-only).

    Keyed by the resolved source (``./m`` and ``/abs/m`` are one model); a model still held by some session
    is reused even after Streamlit's resource cache let it go.
    """
    resolved = resolve_source(source)
    with _LOADING:
        held = _IN_USE.get(resolved)
    if held is not None:
        return held
    dense = _load_dense(resolved)
    with _LOADING:
        return _IN_USE.setdefault(resolved, dense)


@st.cache_resource(max_entries=4, show_spinner=False)
def _load_dense(source: str) -> DenseModel:
    """Load ``source`` (a resolved source) once per process, and start ranking its weights.

    The progress bar lives inside the cached function (and is emptied there), so a cache hit replays nothing.
    """
    bar = st.progress(0.0, text=f"Loading {source}…")

    def progress(fraction: float, stage: str) -> None:
        bar.progress(min(1.0, max(0.0, fraction)), text=f"Loading {source}: {stage}")

    try:
        dense = load_model(source, progress=progress)
        kernels.warm_up()
        few_rows.install(dense.model)  # before any session copies it: every copy decodes on the same kernel
        few_rows.warm_up()
        divergence.warm_up()
    finally:
        bar.empty()
    _rank_in_background(dense)
    return dense


def _rank_in_background(dense: DenseModel) -> None:
    """Sort every default layer's |w| once for all sessions, in a thread, so the first view of a model does
    not wait for it (it starts dense). A slider move that comes first computes, or waits for, only the
    rankings it needs (the shared cache builds each key once)."""
    progress = _RANKING.setdefault(dense, [0.0])

    def rank() -> None:
        layer_rankings(dense, select(dense.layers), progress=lambda f: progress.__setitem__(0, f))

    threading.Thread(target=rank, name=f"prune-explorer-rank-{dense.name}", daemon=True).start()


def ranking_progress(dense: DenseModel) -> float:
    """How much of ``dense``'s |w| ranking is done (1.0: all of it, or it was never started here)."""
    found = _RANKING.get(dense)
    return 1.0 if found is None else found[0]
