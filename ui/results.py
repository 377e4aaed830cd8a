"""Results computed once: per session (a memo keyed by what the session's model computes now) and per
process (on the dense model's shared cache, for results that depend on the dense weights only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from prune_explorer.models.dense import DenseModel
from prune_explorer.pruning.policies import MagnitudeSettings

MEMO = "memo"  # session_state: {name: (key, value)}, the last value of each name


def settings_key(settings: MagnitudeSettings | None) -> tuple:
    """A hashable key for ``settings`` (None: the dense model)."""
    if settings is None:
        return ("dense",)
    return (
        settings.policy,
        round(settings.sparsity, 6),
        settings.threshold if settings.policy == "threshold" else 0.0,
        settings.kinds,
        tuple(sorted(settings.overrides.items())),
        *getattr(settings, "method_key", ()),
        *getattr(settings, "allocation_key", ()),
    )


def memo(name: str, key: Any, compute: Callable[[], Any]) -> Any:
    """Session-level cache holding the last value of ``name``; recomputed when ``key`` changes."""
    store = st.session_state.setdefault(MEMO, {})
    hit = store.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = compute()
    store[name] = (key, value)
    return value


def peek(name: str, key: Any) -> Any:
    """The memoised value of ``name`` if it was computed for ``key``, else None."""
    hit = st.session_state.get(MEMO, {}).get(name)
    return hit[1] if hit is not None and hit[0] == key else None


def shared(dense: DenseModel, key: tuple, compute: Callable[[], Any]) -> Any:
    """Process-wide result on the dense model's shared cache (computed once, evicted least recently used)
    for results that depend on the dense weights only."""
    return dense.cache.get(("ui", *key), compute)


def peek_shared(dense: DenseModel, key: tuple) -> Any:
    """The shared value for ``key`` if some session computed it, else None."""
    return dense.cache.peek(("ui", *key))
