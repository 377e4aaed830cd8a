"""The auto backend: for each pruned layer and token count, dense or CSR, whichever measured faster here.

Timing happens inside the running model (:class:`_Probe` swapped in for each candidate layer, full forwards
alternating all-dense and all-CSR), so each layer keeps the cache conditions of a real forward: every weight
is read once and evicted by the others, which is what makes one-token decoding memory-bound.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from prune_explorer.execution.labels import CSR, DENSE_ZEROS, dense_label
from prune_explorer.execution.modules import AutoLinear, CSRLinear, out_in_weight
from prune_explorer.execution.paths import csr_for, pruned_share
from prune_explorer.execution.reports import LayerReport
from prune_explorer.models.dense import context_length
from prune_explorer.state import PruningState
from prune_explorer.timing import Timing, forward_kwargs, synthetic_ids

# Below this sparsity CSR stores more bytes than dense (8 per kept weight against 4) and is never tried.
MIN_CSR_SPARSITY = 0.5


def _bucket(sparsity: float) -> float:
    return round(sparsity * 20) / 20  # 5% buckets


class _Probe(nn.Module):
    """Runs a layer on dense or CSR and records each call's wall time while ``recording``."""

    def __init__(self, dense: nn.Module, csr: CSRLinear):
        super().__init__()
        self.dense, self.csr = dense, csr
        self.mode, self.recording = "dense", False
        self.runs: dict[str, list[float]] = {"dense": [], "csr": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        impl = self.csr if self.mode == "csr" else self.dense
        if not self.recording:
            return impl(x)
        start = time.perf_counter()
        y = impl(x)
        self.runs[self.mode].append((time.perf_counter() - start) * 1000.0)
        return y

    def take(self) -> dict[str, Timing]:
        """The runs recorded since the last call, as timings labelled with their kernels."""
        timings = {"dense": Timing(self.runs["dense"], DENSE_ZEROS), "csr": Timing(self.runs["csr"], CSR)}
        self.runs = {"dense": [], "csr": []}
        return timings


@torch.inference_mode()
def _time_in_situ(model: nn.Module, probes: list[_Probe], tokens: int, warmup: int, repeats: int) -> None:
    """Full forwards over ``tokens`` tokens, alternating all-dense and all-CSR, timing every probed layer.

    Timing inside the real model keeps each layer's cache conditions: in a forward every weight is read
    once and evicted by the others, which is what makes one-token decoding memory-bound.
    """
    ids = synthetic_ids(model, min(tokens, context_length(model)))
    kwargs = forward_kwargs(model, use_cache=False, logits_to_keep=1)
    for i in range(warmup + repeats):
        for mode in ("dense", "csr"):
            for p in probes:
                p.mode, p.recording = mode, i >= warmup
            model(input_ids=ids, **kwargs)
    for p in probes:
        p.recording = False


def _csr_wins(times: dict[str, float], margin: float) -> bool:
    """CSR must win on the median and on the fastest run: noise on a shared machine only adds time, so a
    win on both is not a stall that happened to hit the dense runs."""
    fast = times.get("csr_min", times["csr"]) < margin * times.get("dense_min", times["dense"])
    return times["csr"] < margin * times["dense"] and fast


def calibrate(
    state: PruningState,
    paths: Sequence[str],
    tokens: Sequence[int] = (128, 1),
    min_sparsity: float = MIN_CSR_SPARSITY,
    margin: float = 0.95,
    cache: dict | None = None,
    warmup: int = 2,
    repeats: int = 7,
) -> list[LayerReport]:
    """Pick dense or CSR for each layer and token count from timings in the running model; install it.

    Layers are grouped by (shape, 5% sparsity bucket); a group takes CSR at a token count where the mean of
    its layers' median CSR times is under ``margin`` × the mean of their dense times, and so is the mean of
    their fastest runs. Results are kept in
    ``cache`` (default: the dense model's cache) under (shape, bucket, tokens), so later calls measure only
    what is new.
    """
    if cache is None:
        cache = state.dense.cache.get("speed_calibration", dict, pin=True)
    modules = {p: state.model.get_submodule(p) for p in paths}
    sparsity = {p: pruned_share(state, p) for p in paths}
    keys = {p: (tuple(out_in_weight(m).shape), _bucket(sparsity[p])) for p, m in modules.items()}
    candidates = [p for p in paths if sparsity[p] >= min_sparsity]
    todo = [p for p in candidates if any((*keys[p], t) not in cache for t in tokens)]
    csr = {p: csr_for(state, p) for p in todo}
    if todo:
        probes = {p: _Probe(modules[p], csr[p]) for p in todo}
        for p, probe in probes.items():
            state.swap_module(p, probe)
        try:
            _measure(state, probes, keys, tokens, warmup, repeats, cache)
        finally:
            for p in probes:
                state.swap_module(p, modules[p])  # what ran there before (masked dense or compacted)
    reports = []
    for p in paths:
        backend, dense_label = _as_it_runs(modules[p], sparsity[p])
        shape = keys[p][0]
        if p not in candidates:
            note = f"below {min_sparsity:.0%} sparsity CSR moves more bytes than dense: not tried"
            reports.append(
                LayerReport(p, shape, sparsity[p], backend, dense_label, note=note if sparsity[p] else "")
            )
            continue
        times = {t: cache[(*keys[p], t)] for t in tokens}
        choice = {t: ("csr" if _csr_wins(times[t], margin) else "dense") for t in tokens}
        label = _install_choice(state, p, modules[p], csr.get(p), choice, dense_label)
        reports.append(LayerReport(p, shape, sparsity[p], "auto", label, choice, times))
    return reports


def _measure(
    state: PruningState,
    probes: dict[str, _Probe],
    keys: dict[str, tuple],
    tokens: Sequence[int],
    warmup: int,
    repeats: int,
    cache: dict,
) -> None:
    """Time every probed layer at each token count; store each (shape, bucket, tokens) group's mean medians
    and mean fastest runs in ``cache``."""
    for t in tokens:
        _time_in_situ(state.model, list(probes.values()), t, warmup, repeats + (8 if t <= 8 else 0))
        groups: dict[tuple, dict[str, list[float]]] = {}
        for p, probe in probes.items():
            group = groups.setdefault(
                (*keys[p], t), {m: [] for m in ("dense", "csr", "dense_min", "csr_min")}
            )
            for mode, timing in probe.take().items():
                group[mode].append(timing.median_ms)
                group[f"{mode}_min"].append(timing.min_ms)
        for k, group in groups.items():
            cache[k] = {mode: statistics.fmean(v) for mode, v in group.items()}


def _as_it_runs(module: nn.Module, sparsity: float) -> tuple[str, str]:
    """(backend, kernel label) of a layer left on a dense matmul: masked dense, or compacted."""
    compacted = getattr(module, "kernel_label", None)
    if compacted:
        return "compact", compacted + (" with zeros" if sparsity > 0 else "")
    return "dense", dense_label(sparsity)


def _install_choice(
    state: PruningState,
    path: str,
    module: nn.Module,
    csr: CSRLinear | None,
    choice: dict[int, str],
    dense_kernel: str,
) -> str:
    """Swap in what ``choice`` (token count -> "dense" / "csr") asks for; returns the kernel label."""
    picked = set(choice.values())
    if picked == {"dense"}:
        return dense_kernel
    csr = csr if csr is not None else csr_for(state, path)
    if picked == {"csr"}:
        state.swap_module(path, csr)
        return CSR
    state.swap_module(path, AutoLinear(module, csr, choice))
    return "; ".join(
        f"{CSR if c == 'csr' else dense_kernel} at {t} token{'s' * (t != 1)}" for t, c in choice.items()
    )
