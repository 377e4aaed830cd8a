"""Fused CPU loops for the slider path, compiled with numba.

A slider move changes the weights whose position in the pruning order lies between the old and the new cut.
Each weight carries a one-byte bucket (its slice of the order, see ``ranking.LayerRanking``): one loop reads
the buckets and writes only the weights of the buckets wholly inside the move (zeroed, or restored from
dense), so a move costs one byte read per weight plus the cache lines that change; in torch the same is
three or four full passes (compare, multiply by the mask, fix the sign of zero). The few weights of the two
partial buckets at the ends are scattered through the order; scatters run in parallel over their indices
(they touch distinct weights).

numba's default threading layer must not be entered from two threads at once, and Streamlit serves each
browser session on its own thread: every call here holds one process-wide lock. Entering numba's parallel
layer also resets torch's intra-op thread count (seen with torch 2.13 and numba 0.68: 1 becomes 2), so
every call puts the caller's count back.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from numba import njit, prange

_LOCK = threading.Lock()


class _Kernel:
    """Hold the process-wide kernel lock; keep torch's thread count as the caller had it (a plain class: a
    slider move enters it a few hundred times)."""

    def __enter__(self) -> None:
        _LOCK.acquire()
        self.threads = torch.get_num_threads()

    def __exit__(self, *exc: object) -> None:
        try:
            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        finally:
            _LOCK.release()


_KERNEL = _Kernel()


@njit(parallel=True, cache=True)
def _masked_copy(dense: np.ndarray, bucket: np.ndarray, b: int, out: np.ndarray) -> None:
    for i in prange(dense.shape[0]):
        out[i] = dense[i] if bucket[i] >= b else 0.0


@njit(parallel=True, cache=True)
def _keep_from(bucket: np.ndarray, b: int, keep: np.ndarray) -> None:
    for i in prange(bucket.shape[0]):
        keep[i] = bucket[i] >= b


@njit(parallel=True, cache=True)
def _zero_buckets(out: np.ndarray, bucket: np.ndarray, b0: int, b1: int) -> None:
    for i in prange(out.shape[0]):
        if b0 <= bucket[i] < b1:
            out[i] = 0.0


@njit(parallel=True, cache=True)
def _restore_buckets(out: np.ndarray, dense: np.ndarray, bucket: np.ndarray, b0: int, b1: int) -> None:
    for i in prange(out.shape[0]):
        if b0 <= bucket[i] < b1:
            out[i] = dense[i]


@njit(parallel=True, cache=True)
def _zero_at(out: np.ndarray, idx: np.ndarray) -> None:
    for j in prange(idx.shape[0]):
        out[idx[j]] = 0.0


@njit(parallel=True, cache=True)
def _copy_at(out: np.ndarray, src: np.ndarray, idx: np.ndarray) -> None:
    for j in prange(idx.shape[0]):
        out[idx[j]] = src[idx[j]]


def _flat(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    if t.dtype != dtype or t.dim() != 1 or not t.is_contiguous():
        raise ValueError(f"expected a contiguous 1-D {dtype} tensor, got {t.dtype} of shape {tuple(t.shape)}")
    return t.detach().numpy()


def masked_copy(dense: torch.Tensor, bucket: torch.Tensor, b: int, out: torch.Tensor) -> None:
    """``out = where(bucket >= b, dense, +0.0)``: float32 (n,) dense, uint8 (n,) bucket, float32 (n,) out."""
    with _KERNEL:
        _masked_copy(_flat(dense, torch.float32), _flat(bucket, torch.uint8), b, _flat(out, torch.float32))


def keep_from(bucket: torch.Tensor, b: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """bool (n,) ``bucket >= b`` for uint8 (n,) bucket, written into ``out`` if given; ``b`` may be 256."""
    keep = torch.empty(bucket.shape, dtype=torch.bool) if out is None else out
    with _KERNEL:
        _keep_from(_flat(bucket, torch.uint8), b, _flat(keep, torch.bool))
    return keep


def zero_buckets(out: torch.Tensor, bucket: torch.Tensor, b0: int, b1: int) -> None:
    """``out[(b0 <= bucket) & (bucket < b1)] = +0.0``: float32 (n,) out, uint8 (n,) bucket."""
    with _KERNEL:
        _zero_buckets(_flat(out, torch.float32), _flat(bucket, torch.uint8), b0, b1)


def restore_buckets(out: torch.Tensor, dense: torch.Tensor, bucket: torch.Tensor, b0: int, b1: int) -> None:
    """``out[sel] = dense[sel]`` where ``sel = (b0 <= bucket) & (bucket < b1)``: float32 (n,), uint8 (n,)."""
    with _KERNEL:
        _restore_buckets(
            _flat(out, torch.float32), _flat(dense, torch.float32), _flat(bucket, torch.uint8), b0, b1
        )


def zero_at(out: torch.Tensor, idx: torch.Tensor) -> None:
    """``out[idx] = +0.0``: float32 (n,) out, int32 (m,) distinct indices."""
    with _KERNEL:
        _zero_at(_flat(out, torch.float32), _flat(idx, torch.int32))


def copy_at(out: torch.Tensor, src: torch.Tensor, idx: torch.Tensor) -> None:
    """``out[idx] = src[idx]``: float32 (n,) out and src, int32 (m,) distinct indices."""
    with _KERNEL:
        _copy_at(_flat(out, torch.float32), _flat(src, torch.float32), _flat(idx, torch.int32))


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel now, so no slider move waits for it."""
    dense, out = torch.ones(4), torch.empty(4)
    idx = torch.arange(2, dtype=torch.int32)
    bucket = torch.arange(4, dtype=torch.uint8)
    masked_copy(dense, bucket, 2, out)
    keep_from(bucket, 2)
    zero_buckets(out, bucket, 1, 3)
    restore_buckets(out, dense, bucket, 1, 3)
    zero_at(out, idx)
    copy_at(out, dense, idx)
