"""Fused CPU loops for the slider path, compiled with numba.

A slider move writes up to every prunable weight of the model. In torch that is three passes per layer
(compare the ranks, multiply by the bool mask, fix the sign of zero), each a separate kernel; one fused loop
reads the dense weight and its rank once and writes the result once, about three times faster on
SmolLM2-135M. The scatters run in parallel over their indices (they touch distinct weights).

numba's default threading layer must not be entered from two threads at once, and Streamlit serves each
browser session on its own thread: every call here holds one process-wide lock.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from numba import njit, prange

_LOCK = threading.Lock()


@njit(parallel=True, cache=True)
def _masked_copy(dense: np.ndarray, rank: np.ndarray, k: int, out: np.ndarray) -> None:
    for i in prange(dense.shape[0]):
        out[i] = dense[i] if rank[i] >= k else 0.0


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


def masked_copy(dense: torch.Tensor, rank: torch.Tensor, k: int, out: torch.Tensor) -> None:
    """``out = where(rank >= k, dense, +0.0)``: float32 (n,) dense, int32 (n,) rank, float32 (n,) out."""
    with _LOCK:
        _masked_copy(_flat(dense, torch.float32), _flat(rank, torch.int32), k, _flat(out, torch.float32))


def zero_at(out: torch.Tensor, idx: torch.Tensor) -> None:
    """``out[idx] = +0.0``: float32 (n,) out, int32 (m,) distinct indices."""
    with _LOCK:
        _zero_at(_flat(out, torch.float32), _flat(idx, torch.int32))


def copy_at(out: torch.Tensor, src: torch.Tensor, idx: torch.Tensor) -> None:
    """``out[idx] = src[idx]``: float32 (n,) out and src, int32 (m,) distinct indices."""
    with _LOCK:
        _copy_at(_flat(out, torch.float32), _flat(src, torch.float32), _flat(idx, torch.int32))


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel now, so no slider move waits for it."""
    dense, out = torch.ones(4), torch.empty(4)
    idx = torch.arange(2, dtype=torch.int32)
    masked_copy(dense, torch.arange(4, dtype=torch.int32), 2, out)
    zero_at(out, idx)
    copy_at(out, dense, idx)
