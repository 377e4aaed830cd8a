"""What every session of one model shares beyond its weights: rankings, activation statistics, outputs.

One :class:`SharedCache` per loaded model. Each entry is computed once however many sessions ask at the same
time (the others wait for it), its bytes are counted, and entries beyond a byte bound are evicted least
recently used first. Pinned entries (the magnitude rankings every slider move reads) are counted but never
evicted: the memory check budgets them per weight.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def size_of(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes held by tensors and arrays inside ``value`` (containers, dataclasses and plain objects walked;
    a storage shared by two tensors counted once)."""
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, dict):
        return sum(size_of(k, seen) + size_of(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(size_of(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(size_of(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return sum(size_of(v, seen) for v in vars(value).values())
    return 0


@dataclass
class _Entry:
    value: Any
    nbytes: int
    pinned: bool


@dataclass(frozen=True)
class CacheStats:
    """What a cache holds now: ``entries`` and ``nbytes`` (pinned included), the bound, and counters."""

    entries: int
    nbytes: int
    pinned_bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


class SharedCache:
    """A thread-safe, byte-bounded, least-recently-used cache; each key is computed once.

    Args:
        max_bytes: bound on the bytes of unpinned entries; beyond it the least recently used go first (the
            newest entry stays even when it alone is larger).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}
        self._hits = self._misses = self._evictions = 0

    def get(self, key: Hashable, compute: Callable[[], T], *, pin: bool = False) -> T:
        """The value for ``key``, calling ``compute()`` only if no one has (others asking meanwhile wait)."""
        pinned = self._entries.get(key)  # a pinned entry never moves or goes: read it without the lock
        if pinned is not None and pinned.pinned:
            return pinned.value
        with self._lock:
            entry = self._hit(key)
            if entry is not None:
                return entry.value
            build = self._building.setdefault(key, threading.Lock())
        with build:
            with self._lock:
                entry = self._hit(key)
                if entry is not None:  # built by the thread we waited for
                    return entry.value
            try:
                value = compute()
                nbytes = size_of(value)
                with self._lock:
                    self._misses += 1
                    self._entries[key] = _Entry(value, nbytes, pin)
                    self._evict(keep=key)
            finally:
                # Only now: a thread arriving before the entry is stored must wait on ``build``, not compute.
                with self._lock:
                    self._building.pop(key, None)
        return value

    def peek(self, key: Hashable) -> Any:
        """The value for ``key`` if someone computed it (it counts as a use), else None."""
        with self._lock:
            entry = self._hit(key)
            return None if entry is None else entry.value

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> CacheStats:
        with self._lock:
            pinned = sum(e.nbytes for e in self._entries.values() if e.pinned)
            total = sum(e.nbytes for e in self._entries.values())
            return CacheStats(
                len(self._entries), total, pinned, self.max_bytes, self._hits, self._misses, self._evictions
            )

    def clear(self) -> None:
        """Forget every entry (pinned ones included)."""
        with self._lock:
            self._entries.clear()

    def _hit(self, key: Hashable) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._hits += 1
            if not entry.pinned:
                self._entries.move_to_end(key)
        return entry

    def _evict(self, keep: Hashable) -> None:
        unpinned = sum(e.nbytes for e in self._entries.values() if not e.pinned)
        for key in [k for k, e in self._entries.items() if not e.pinned]:
            if unpinned <= self.max_bytes:
                break
            if key == keep:
                continue
            unpinned -= self._entries.pop(key).nbytes
            self._evictions += 1
