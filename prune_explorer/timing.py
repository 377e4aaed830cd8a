"""Forward latency, measured honestly: warm up, repeat, report the median, and name the kernel that ran."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

DENSE = "dense matmul (torch.nn.functional.linear)"
MASKED_DENSE = (
    "dense matmul (torch.nn.functional.linear; pruned weights are stored zeros and still multiplied)"
)


@dataclass(frozen=True)
class Timing:
    """Wall-clock milliseconds of repeated runs of one call, and what ran."""

    runs_ms: list[float] = field(repr=False)
    kernel: str

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def spread_ms(self) -> float:
        """Half the inter-quartile range: the noise to read a difference against."""
        if len(self.runs_ms) < 4:
            return 0.0
        q = statistics.quantiles(self.runs_ms, n=4)
        return (q[2] - q[0]) / 2


def time_call(
    fn: Callable[[], object], warmup: int = 3, repeats: int = 15, kernel: str = MASKED_DENSE
) -> Timing:
    """Median wall time of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000.0)
    return Timing(runs_ms=runs, kernel=kernel)


def time_forward(
    model: nn.Module, input_ids: torch.Tensor, warmup: int = 3, repeats: int = 15, kernel: str = MASKED_DENSE
) -> Timing:
    """Median latency of one full forward pass over ``input_ids`` ((1, T) int64), no KV cache."""

    @torch.inference_mode()
    def forward() -> None:
        model(input_ids=input_ids, use_cache=False)

    return time_call(forward, warmup=warmup, repeats=repeats, kernel=kernel)


def time_pair(
    dense: nn.Module, pruned: nn.Module, input_ids: torch.Tensor, warmup: int = 3, repeats: int = 15
) -> tuple[Timing, Timing]:
    """Time two models on the same input, interleaved run by run so machine noise hits both alike."""
    for _ in range(warmup):
        with torch.inference_mode():
            dense(input_ids=input_ids, use_cache=False)
            pruned(input_ids=input_ids, use_cache=False)
    dense_runs, pruned_runs = [], []
    for _ in range(repeats):
        for model, runs in ((dense, dense_runs), (pruned, pruned_runs)):
            start = time.perf_counter()
            with torch.inference_mode():
                model(input_ids=input_ids, use_cache=False)
            runs.append((time.perf_counter() - start) * 1000.0)
    return Timing(dense_runs, DENSE), Timing(pruned_runs, MASKED_DENSE)
