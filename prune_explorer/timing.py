"""The one timer: warm up, repeat, report the median and spread, and carry the label of what ran.

Every latency the library reports comes from :func:`time_call` or :func:`time_interleaved` (several calls run
in turn, repeat by repeat, so noise from other work on the machine hits all alike). The labels name kernels
(``execution.labels``); this module only measures.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from prune_explorer.progress import Progress


@dataclass(frozen=True)
class Timing:
    """Wall-clock milliseconds of repeated runs of one call, and what ran."""

    runs_ms: list[float] = field(repr=False)
    kernel: str

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def min_ms(self) -> float:
        return min(self.runs_ms)

    @property
    def spread_ms(self) -> float:
        """Half the inter-quartile range: the noise to read a difference against."""
        if len(self.runs_ms) < 4:
            return 0.0
        q = statistics.quantiles(self.runs_ms, n=4)
        return (q[2] - q[0]) / 2


def time_call(fn: Callable[[], object], kernel: str, warmup: int = 3, repeats: int = 15) -> Timing:
    """Median wall time of ``fn()`` after ``warmup`` untimed calls."""
    return time_interleaved({"call": fn}, {"call": kernel}, warmup, repeats)["call"]


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    kernels: dict[str, str],
    warmup: int = 2,
    repeats: int = 7,
    progress: Progress = None,
) -> dict[str, Timing]:
    """Median wall time of each function, run in turn repeat by repeat so machine noise hits all alike.

    ``progress`` hears the share of rounds done after each round (warm-up included), between timed calls.
    """
    rounds = warmup + repeats
    for i in range(warmup):
        for fn in fns.values():
            fn()
        if progress:
            progress((i + 1) / rounds)
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            runs[k].append((time.perf_counter() - start) * 1000.0)
        if progress:
            progress((warmup + i + 1) / rounds)
    return {k: Timing(runs[k], kernels[k]) for k in fns}


def forward_kwargs(model: nn.Module, **kwargs) -> dict:
    """The keyword arguments among ``kwargs`` that ``model.forward`` takes."""
    params = inspect.signature(model.forward).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def synthetic_ids(model: nn.Module, tokens: int) -> torch.Tensor:
    """int64 (1, tokens) token ids spread over the vocabulary, for timing (the values do not matter)."""
    vocab = int(getattr(model.config, "vocab_size", 2))
    device = next(model.parameters()).device
    return (torch.arange(tokens, device=device).view(1, -1) * 7 + 3) % vocab


def forward_runner(model: nn.Module, input_ids: torch.Tensor) -> Callable[[], object]:
    """A no-argument function running one full forward over ``input_ids`` ((1, T) int64), no KV cache."""
    kwargs = forward_kwargs(model, use_cache=False)

    @torch.inference_mode()
    def forward() -> None:
        model(input_ids=input_ids, **kwargs)

    return forward
