"""One dense model per process: loaded and ranked once, shared by every session, never loaded twice.

Keyed by the resolved source (``./m`` and ``/abs/m`` are one model). Streamlit's resource cache holds up to
four models; a model it let go that some session still holds is found in a weak registry instead of being
loaded a second time.
"""

from __future__ import annotations

import threading
import weakref

import streamlit as st

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.models.loading import load_model, resolve_source
from prune_explorer.pruning import kernels
from prune_explorer.pruning.ranking import layer_rankings

_LOADING = threading.Lock()
# Every dense model some session still holds, by resolved source: a model evicted from Streamlit's resource
# cache but still in use is found here instead of being loaded a second time.
_IN_USE: weakref.WeakValueDictionary[str, DenseModel] = weakref.WeakValueDictionary()


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
    """Load and rank ``source`` (a resolved source) once per process.

    The progress bar lives inside the cached function (and is emptied there), so a cache hit replays nothing.
    """
    bar = st.progress(0.0, text=f"Loading {source}…")

    def progress(fraction: float, stage: str) -> None:
        bar.progress(min(1.0, max(0.0, fraction)), text=f"Loading {source}: {stage}")

    try:
        dense = load_model(source, progress=progress)
        # Sort every default layer's |w| now, once for all sessions, so no slider move waits for it.
        layer_rankings(
            dense,
            select(dense.layers),
            progress=lambda f: bar.progress(f, text=f"Ranking the weights of {source} by |w| (once)"),
        )
        kernels.warm_up()
        return dense
    finally:
        bar.empty()
