"""One layer in isolation: its latency against sparsity on dense, CSR and compacted kernels, the break-even
sparsity of CSR, and the ideal (FLOPs) and memory-bound (bytes) lines to read them against."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prune_explorer.execution.labels import CSR, DENSE_ZEROS, compacted_label
from prune_explorer.execution.modules import CSRLinear, csr_bytes
from prune_explorer.pruning.masks import magnitude_mask
from prune_explorer.timing import Timing, time_call


@dataclass(frozen=True)
class LayerPoint:
    shape: tuple[int, int]
    sparsity: float
    tokens: int
    backend: str  # dense (zeros multiplied), csr, compact (rows removed)
    timing: Timing

    @property
    def median_ms(self) -> float:
        return self.timing.median_ms


def layer_points(
    weight: torch.Tensor,
    sparsities: Sequence[float],
    tokens: int,
    backends: Sequence[str] = ("dense", "csr", "compact"),
    working_set_bytes: int = 32 << 20,
    warmup: int = 2,
    repeats: int = 9,
) -> Iterator[LayerPoint]:
    """Time one (out, in) weight magnitude-pruned at each sparsity on each backend; yields point by point.

    Each call cycles through copies of the weight adding up to ``working_set_bytes``, so the weight comes
    from memory rather than from a cache still warm from the previous call, as in a full forward.
    ``compact`` is a dense matrix with round((1 - s) · out) rows: structured pruning of whole output rows.
    """
    weight = weight.detach().float()
    out_f, in_f = weight.shape
    copies = max(1, min(64, math.ceil(working_set_bytes / (4 * weight.numel()))))
    x = torch.randn(in_f, tokens).T  # token-fastest, as CSR runs inside a model (backends.TokenFastest)
    for s in sparsities:
        pruned = torch.where(magnitude_mask(weight, s), weight, torch.zeros(()))
        for backend in backends:
            if backend == "dense":
                ws = [pruned.clone() for _ in range(copies)]
                fns = [lambda w=w: F.linear(x, w) for w in ws]
                kernel = DENSE_ZEROS
            elif backend == "csr":
                ws = [CSRLinear(pruned) for _ in range(copies)]
                fns = ws
                kernel = CSR
            else:
                rows = max(1, round((1 - s) * out_f))
                ws = [weight[:rows].clone() for _ in range(copies)]
                fns = [lambda w=w: F.linear(x, w) for w in ws]
                kernel = compacted_label(out_f, rows, "rows")
            state = {"i": 0}

            def call(fns=fns, state=state) -> None:
                fn = fns[state["i"] % len(fns)]
                state["i"] += 1
                fn(x) if isinstance(fn, nn.Module) else fn()

            timing = time_call(call, warmup=warmup * copies, repeats=max(repeats, copies), kernel=kernel)
            yield LayerPoint((out_f, in_f), float(s), tokens, backend, timing)


def break_even(points: Sequence[LayerPoint], backend: str = "csr") -> float | None:
    """Sparsity from which ``backend`` stays at least as fast as dense (linear interpolation), or None.

    Read from the top: the crossing below the highest run of sparsities where ``backend`` wins, so one
    noisy point at low sparsity does not move it.
    """
    dense = {p.sparsity: p.median_ms for p in points if p.backend == "dense"}
    ratios = sorted(
        (p.sparsity, p.median_ms / dense[p.sparsity])
        for p in points
        if p.backend == backend and p.sparsity in dense
    )
    i = len(ratios)
    while i > 0 and ratios[i - 1][1] <= 1.0:
        i -= 1
    if i == len(ratios):
        return None
    if i == 0:
        return ratios[0][0]
    (s0, r0), (s1, r1) = ratios[i - 1], ratios[i]
    return s0 + (r0 - 1.0) * (s1 - s0) / (r0 - r1)


def ideal_ms(dense_ms: float, sparsity: float) -> float:
    """The FLOP line: dense time × the share of weights kept."""
    return dense_ms * (1.0 - sparsity)


def memory_bound_ms(dense_ms: float, shape: tuple[int, int], sparsity: float) -> float:
    """The bytes line for CSR: dense time × CSR bytes / dense bytes."""
    numel = shape[0] * shape[1]
    kept = numel - round(sparsity * numel)
    return dense_ms * csr_bytes(kept, shape[0]) / (4 * numel)
