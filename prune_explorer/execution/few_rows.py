"""Decoding steps of a few tokens through big Linear layers, as a numba row-dot kernel.

A greedy decoding step multiplies one token (or a few draft tokens) by every weight of the model: it is bound
by how fast the weights stream from memory. On this project's 2-core machine torch's CPU matmul for one row
(MKL's sgemm/sgemv) streams 8-14 GB/s on one thread, while a plain compiled loop of row dot products, which
the compiler vectorises, streams 22-30 GB/s (SmolLM2-135M: 19 ms of matmul a token instead of 54 ms). From
about nine rows on, MKL's blocked matmul wins again, so only products of at most :data:`MAX_ROWS` rows take
this kernel; prompts, perplexity windows and training never do.

It is switched on per thread, only inside :func:`decoding` (what ``measure.evaluate.continue_greedily`` uses
for the passes after the prompt), so every other forward is plain ``F.linear``, bit for bit, and the dense and
the pruned model decode on the same kernel: their texts differ only because of the weights. Within the
kernel, each output is the same loop over one weight row whatever the number of rows, so a token's logits do
not depend on how many draft tokens shared its pass. The sums are in a different order than MKL's (float32
rounding, ~1e-6 relative; closer to a float64 reference in our checks), so a near-tie can rarely pick
another greedy token than a plain forward would.

:func:`install` gives a model's eligible ``nn.Linear`` modules (exactly ``nn.Linear``, float32, at least
:data:`MIN_WEIGHTS` weights: small layers gain nothing over the call's overhead) a subclass whose forward is
``nn.Linear``'s outside :func:`decoding`, so installing on the shared dense model changes nothing any other
session sees.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit
from torch import nn

MAX_ROWS = 8  # rows (tokens) per product; measured break-even with MKL at about 9 on SmolLM2's shapes
MIN_WEIGHTS = 1 << 16  # stories260K's 64-wide layers stay on F.linear (the call overhead is their cost)


@njit(fastmath=True, nogil=True, cache=True)
def _rows_times_weight(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[r, i] = sum_j weight[i, j] * x[r, j]``: one weight row is read once for every input row."""
    n_out, n_in = weight.shape
    for i in range(n_out):
        for r in range(x.shape[0]):
            acc = np.float32(0.0)
            for j in range(n_in):
                acc += weight[i, j] * x[r, j]
            out[r, i] = acc


class _Switch(threading.local):
    on = False


_switch = _Switch()


def rows_times_weight(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for float32 ``x`` (..., in) of a few rows and a float32 contiguous
    (out, in) ``weight``, by the row-dot kernel; returns float32 (..., out)."""
    rows = x.reshape(-1, weight.shape[1]).contiguous()
    out = torch.empty(rows.shape[0], weight.shape[0], dtype=torch.float32)
    _rows_times_weight(weight.detach().numpy(), rows.numpy(), out.numpy())
    if bias is not None:
        out += bias
    return out.view(*x.shape[:-1], weight.shape[0])


class FewRowsLinear(nn.Linear):
    """``nn.Linear`` whose products of at most :data:`MAX_ROWS` rows take the row-dot kernel inside
    :func:`decoding` (and nowhere else)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (
            _switch.on
            and x.dtype == torch.float32
            and w.dtype == torch.float32
            and x.device.type == "cpu"
            and w.is_contiguous()
            and x.numel() <= MAX_ROWS * w.shape[1]
            and not torch.is_grad_enabled()
        ):
            return rows_times_weight(x, w, self.bias)
        return F.linear(x, w, self.bias)


def eligible(module: nn.Module) -> bool:
    """Whether ``module`` is a plain float32 CPU ``nn.Linear`` big enough to gain from the kernel."""
    return (
        type(module) is nn.Linear
        and module.weight.dtype == torch.float32
        and module.weight.device.type == "cpu"
        and module.weight.numel() >= MIN_WEIGHTS
    )


def install(model: nn.Module) -> int:
    """Give ``model``'s eligible Linear modules the :class:`FewRowsLinear` forward (a walk over the modules,
    ~0.1 ms on SmolLM2: cheap enough to repeat before every generation, so a module swapped back in later
    gets it too; a copy made afterwards keeps it). Returns how many modules have it."""
    count = 0
    for module in model.modules():
        if eligible(module):
            module.__class__ = FewRowsLinear  # same layout and parameters; only the forward differs
        count += isinstance(module, FewRowsLinear)
    return count


def installed(model: nn.Module) -> int:
    """How many of ``model``'s modules take the kernel when decoding (0: every product is F.linear)."""
    return sum(isinstance(m, FewRowsLinear) for m in model.modules())


@contextmanager
def decoding() -> Iterator[None]:
    """Let the calling thread's products of a few rows through installed modules take the row-dot kernel."""
    before = _switch.on
    _switch.on = True
    try:
        yield
    finally:
        _switch.on = before


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernel now, so no decoding step waits for it."""
    rows_times_weight(torch.ones(1, 4), torch.ones(3, 4))
