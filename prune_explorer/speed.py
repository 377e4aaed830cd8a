"""How fast a pruned model runs, and why: per-layer and end-to-end latency, FLOPs, bytes, sizes, break-even.

Every timing warms up, repeats and reports the median (:mod:`prune_explorer.timing`) and carries the label
of the kernel that ran. Two reference lines explain the numbers:

ideal (FLOPs)   dense time × kept FLOPs / dense FLOPs: what skipping every pruned multiply would give.
memory-bound    dense time × bytes read / dense bytes: one-token decoding mostly streams weights from memory,
                and CSR reads 8 bytes per kept weight (value + int32 index) against 4 for dense, so it cannot
                beat dense below 50% sparsity however good the kernel.
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prune_explorer import backends as B
from prune_explorer.compaction import find_groups, neuron_masks
from prune_explorer.evaluate import context_length
from prune_explorer.masks import magnitude_mask
from prune_explorer.pruning import MagnitudeSettings, apply_magnitude
from prune_explorer.state import DenseModel, PruningState
from prune_explorer.timing import Timing, time_call

Progress = Callable[[float], None] | None


def _bucket(sparsity: float) -> float:
    return round(sparsity * 20) / 20  # 5% buckets


def _forward_kwargs(model: nn.Module, **kwargs) -> dict:
    params = inspect.signature(model.forward).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def _ids(model: nn.Module, tokens: int) -> torch.Tensor:
    vocab = int(getattr(model.config, "vocab_size", 2))
    device = next(model.parameters()).device
    return (torch.arange(tokens, device=device).view(1, -1) * 7 + 3) % vocab


# ----- auto: per-layer calibration inside the running model


class _Probe(nn.Module):
    """Runs a layer on dense or CSR and records each call's wall time while ``recording``."""

    def __init__(self, dense: nn.Module, csr: B.CSRLinear):
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


@torch.inference_mode()
def _time_in_situ(model: nn.Module, probes: list[_Probe], tokens: int, warmup: int, repeats: int) -> None:
    """Full forwards over ``tokens`` tokens, alternating all-dense and all-CSR, timing every probed layer.

    Timing inside the real model keeps each layer's cache conditions: in a forward every weight is read
    once and evicted by the others, which is what makes one-token decoding memory-bound.
    """
    ids = _ids(model, min(tokens, context_length(model)))
    kwargs = _forward_kwargs(model, use_cache=False, logits_to_keep=1)
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
    min_sparsity: float = B.MIN_CSR_SPARSITY,
    margin: float = 0.95,
    cache: dict | None = None,
    warmup: int = 2,
    repeats: int = 7,
) -> list[B.LayerReport]:
    """Pick dense or CSR for each layer and token count from timings in the running model; install it.

    Layers are grouped by (shape, 5% sparsity bucket); a group takes CSR at a token count where the mean of
    its layers' median CSR times is under ``margin`` × the mean of their dense times, and so is the mean of
    their fastest runs. Results are kept in
    ``cache`` (default: the dense model's cache) under (shape, bucket, tokens), so later calls measure only
    what is new.
    """
    cache = state.dense.cache.setdefault("speed_calibration", {}) if cache is None else cache
    modules = {p: state.model.get_submodule(p) for p in paths}
    sparsity = {p: B.pruned_share(state, p) for p in paths}
    key = {p: (tuple(B.out_in_weight(m).shape), _bucket(sparsity[p])) for p, m in modules.items()}
    candidates = [p for p in paths if sparsity[p] >= min_sparsity]
    todo = [p for p in candidates if any((*key[p], t) not in cache for t in tokens)]
    csr = {p: B.csr_for(state, p) for p in todo}
    if todo:
        probes = {p: _Probe(modules[p], csr[p]) for p in todo}
        for p, probe in probes.items():
            B.replace_module(state, p, probe)
        try:
            for t in tokens:
                _time_in_situ(state.model, list(probes.values()), t, warmup, repeats + (8 if t <= 8 else 0))
                groups: dict[tuple, dict[str, list[float]]] = {}
                for p, probe in probes.items():
                    g = groups.setdefault(
                        (*key[p], t), {m: [] for m in ("dense", "csr", "dense_min", "csr_min")}
                    )
                    for mode in ("dense", "csr"):
                        g[mode].append(statistics.median(probe.runs[mode]))
                        g[f"{mode}_min"].append(min(probe.runs[mode]))
                        probe.runs[mode].clear()
                for k, g in groups.items():
                    cache[k] = {mode: statistics.fmean(v) for mode, v in g.items()}
        finally:
            for p in probes:
                B._set_module(state.model, p, modules[p])
    reports = []
    for p in paths:
        shape, module = key[p][0], modules[p]
        dense_label = getattr(module, "kernel_label", None)
        dense_label = (dense_label + " with zeros") if dense_label and sparsity[p] > 0 else dense_label
        dense_label = dense_label or (B.DENSE_ZEROS if sparsity[p] > 0 else B.DENSE)
        backend = "compact" if hasattr(module, "kernel_label") else "dense"
        if p not in candidates:
            note = f"below {min_sparsity:.0%} sparsity CSR moves more bytes than dense: not tried"
            reports.append(
                B.LayerReport(p, shape, sparsity[p], backend, dense_label, note=note if sparsity[p] else "")
            )
            continue
        times = {t: cache[(*key[p], t)] for t in tokens}
        choice = {t: ("csr" if _csr_wins(times[t], margin) else "dense") for t in tokens}
        picked = set(choice.values())
        if "csr" in picked and p not in csr:
            csr[p] = B.csr_for(state, p)
        if picked == {"dense"}:
            label = dense_label
        elif picked == {"csr"}:
            label = B.CSR
            B.replace_module(state, p, csr[p])
        else:
            label = "; ".join(
                f"{B.CSR if c == 'csr' else dense_label} at {t} token{'s' * (t != 1)}"
                for t, c in choice.items()
            )
            B.replace_module(state, p, B.AutoLinear(module, csr[p], choice))
        reports.append(B.LayerReport(p, shape, sparsity[p], "auto", label, choice, times))
    return reports


# ----- end to end


@dataclass(frozen=True)
class Phase:
    """One phase to time: ``prefill`` (``tokens`` tokens, logits for the last one, as generate does) or
    ``decode`` (one new token after a cache of ``tokens`` tokens)."""

    name: str
    tokens: int


PREFILL = Phase("prefill", 128)
DECODE = Phase("decode", 128)


def runner(model: nn.Module, phase: Phase) -> Callable[[], object]:
    """A no-argument function running ``phase`` once on ``model`` (a decode step keeps the cache length)."""
    tokens = min(phase.tokens, context_length(model) - 1)
    ids = _ids(model, tokens)
    if phase.name == "prefill":
        kwargs = _forward_kwargs(model, use_cache=False, logits_to_keep=1)
        return torch.inference_mode()(lambda: model(input_ids=ids, **kwargs))
    with torch.inference_mode():
        out = model(input_ids=ids, **_forward_kwargs(model, use_cache=True, logits_to_keep=1))
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    step = ids[:, -1:]
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    kwargs = _forward_kwargs(model, use_cache=True, logits_to_keep=1)

    @torch.inference_mode()
    def decode() -> None:
        model(input_ids=step, **{name: cache}, **kwargs)
        cache.crop(-1)  # drop the new token: every timed step sees the same context length

    return decode


def time_interleaved(
    fns: dict[str, Callable[[], object]], kernels: dict[str, str], warmup: int = 2, repeats: int = 7
) -> dict[str, Timing]:
    """Median wall time of each function, run in turn repeat by repeat so machine noise hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            runs[k].append((time.perf_counter() - start) * 1000.0)
    return {k: Timing(runs[k], kernels[k]) for k in fns}


def kept_weights(module: nn.Module, memo: dict[int, int] | None = None) -> int:
    """Weights a kernel that skips zeros would multiply: the nonzeros of a Linear/Conv1D, a CSR's values."""
    if memo is not None:
        if id(module) not in memo:
            memo[id(module)] = kept_weights(module)
        return memo[id(module)]
    if isinstance(module, B.AutoLinear):
        module = module.csr
    if isinstance(module, B.CSRLinear):
        return module.kept
    return int(torch.count_nonzero(B.out_in_weight(module)))


def _out_features(module: nn.Module) -> int:
    if isinstance(module, (B.CSRLinear, B.AutoLinear, B.SemiStructuredLinear)):
        return module.csr.out_features if isinstance(module, B.AutoLinear) else module.out_features
    return int(B.out_in_weight(module).shape[0])


def _in_features(module: nn.Module) -> int:
    if isinstance(module, (B.CSRLinear, B.AutoLinear, B.SemiStructuredLinear)):
        return module.in_features
    return int(B.out_in_weight(module).shape[1])


def _linear_holders(dense: DenseModel, model: nn.Module) -> Iterator[tuple[str, nn.Module, bool]]:
    """(path, module, is_output_head) for every weight-holding matrix multiply of ``model``."""
    output = dense.model.get_output_embeddings() if hasattr(dense.model, "get_output_embeddings") else None
    for layer in dense.layers:
        for holder in layer.holders:
            is_head = output is not None and dense.model.get_submodule(holder) is output
            module = model.get_submodule(holder)
            if not isinstance(module, (nn.Embedding, B.TokenFastest)):
                yield holder, module, is_head


def model_flops(
    dense: DenseModel,
    model: nn.Module,
    phase: Phase,
    skip_zeros: bool = True,
    kept: dict[int, int] | None = None,
) -> float:
    """FLOPs of one phase: matrix multiplies (LM head for one position), and causal attention.

    Args:
        skip_zeros: count only kept weights (the ideal a sparse kernel could reach); False: every weight.
        kept: memo of kept-weight counts by module id, shared between calls on the same model.
    """
    rows = phase.tokens if phase.name == "prefill" else 1
    total = 0.0
    for _, module, is_head in _linear_holders(dense, model):
        weights = kept_weights(module, kept) if skip_zeros else _out_features(module) * _in_features(module)
        total += 2.0 * weights * (1 if is_head else rows)
    _, attns, _ = find_groups(dense)
    keys = phase.tokens * (phase.tokens + 1) / 2 if phase.name == "prefill" else phase.tokens + 1
    for g in attns:
        width = _out_features(model.get_submodule(g.qkv or g.q)) // (3 if g.qkv else 1)
        total += 2.0 * 2.0 * width * keys  # q·k and p·v per (query, key) pair
    return total


def streamed_bytes(dense: DenseModel, model: nn.Module, kept: dict[int, int] | None = None) -> int:
    """float32 weight bytes one decode step reads, as ``model`` runs: CSR layers as CSR, the rest dense.

    An auto layer counts the smaller of its two forms (decoding takes CSR only where that is faster).
    """
    total = 0
    for _, module, _ in _linear_holders(dense, model):
        size = 4 * _out_features(module) * _in_features(module)
        if isinstance(module, (B.CSRLinear, B.AutoLinear)):
            csr = B.csr_bytes(kept_weights(module, kept), _out_features(module))
            size = csr if isinstance(module, B.CSRLinear) else min(size, csr)
        total += size
    return total


@dataclass(frozen=True)
class Case:
    """A pruning to measure: ``structure`` is "unstructured" (magnitude, per layer) or "mlp_neurons"."""

    label: str
    sparsity: float = 0.0
    structure: str = "unstructured"
    backend: str = "dense"


@dataclass
class CaseResult:
    case: Case
    timings: dict[str, Timing]  # "dense prefill", "case prefill", "dense decode", "case decode"
    report: B.BackendReport
    flops: dict[str, tuple[float, float]]  # phase -> (dense FLOPs, kept FLOPs)
    bytes: tuple[int, int]  # decode weight bytes (dense, as the case runs)
    extra: dict = field(default_factory=dict)

    def speedup(self, phase: str) -> float:
        return self.timings[f"dense {phase}"].median_ms / self.timings[f"case {phase}"].median_ms

    def ideal(self, phase: str) -> float:
        dense, kept = self.flops[phase]
        return dense / kept

    def memory_bound(self) -> float:
        return self.bytes[0] / self.bytes[1]


def prune_for(state: PruningState, case: Case) -> None:
    """Bring ``state`` to ``case``'s pruning (attention and MLP layers; embeddings and LM head dense)."""
    state.reset()
    if case.sparsity == 0:
        return
    if case.structure == "mlp_neurons":
        state.apply_masks(neuron_masks(state.dense, case.sparsity))
    elif case.structure == "unstructured":
        apply_magnitude(state, MagnitudeSettings(sparsity=case.sparsity))
    else:
        raise ValueError(f"unknown structure {case.structure!r}; use 'unstructured' or 'mlp_neurons'")


def measure(
    state: PruningState,
    backend: str = "auto",
    phases: Sequence[Phase] = (PREFILL, DECODE),
    warmup: int = 2,
    repeats: int = 7,
    case: Case | None = None,
) -> CaseResult:
    """Time the state's current pruning on ``backend`` against the dense model, interleaved; then restore.

    The backend is swapped in only for the measurement: the state is back on masked dense afterwards.
    """
    dense = state.dense
    tokens = sorted({p.tokens if p.name == "prefill" else 1 for p in phases})
    report = B.apply_backend(state, backend, tokens=tokens)
    try:
        timings, flops = {}, {}
        for phase in phases:
            fns = {
                f"dense {phase.name}": runner(dense.model, phase),
                f"case {phase.name}": runner(state.model, phase),
            }
            kernels = {f"dense {phase.name}": B.DENSE, f"case {phase.name}": report.summary()}
            timings.update(time_interleaved(fns, kernels, warmup, repeats))
        kept: dict[int, int] = {}
        for phase in phases:
            flops[phase.name] = (
                model_flops(dense, dense.model, phase, False),
                model_flops(dense, state.model, phase, kept=kept),
            )
        nbytes = (streamed_bytes(dense, dense.model), streamed_bytes(dense, state.model, kept))
    finally:
        B.restore(state)
    return CaseResult(
        case or Case(f"current pruning on {backend}", backend=backend), timings, report, flops, nbytes
    )


def measure_case(
    state: PruningState,
    case: Case,
    phases: Sequence[Phase] = (PREFILL, DECODE),
    warmup: int = 2,
    repeats: int = 7,
) -> CaseResult:
    """Prune ``state`` as ``case`` says, then :func:`measure` it; the state stays pruned, on masked dense."""
    prune_for(state, case)
    return measure(state, case.backend, phases, warmup, repeats, case)


# ----- one layer, in isolation


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
                kernel = B.DENSE_ZEROS
            elif backend == "csr":
                ws = [B.CSRLinear(pruned) for _ in range(copies)]
                fns = ws
                kernel = B.CSR
            else:
                rows = max(1, round((1 - s) * out_f))
                ws = [weight[:rows].clone() for _ in range(copies)]
                fns = [lambda w=w: F.linear(x, w) for w in ws]
                kernel = f"compacted dense {out_f}→{rows} rows"
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
    return dense_ms * B.csr_bytes(kept, shape[0]) / (4 * numel)


# ----- sizes


@dataclass(frozen=True)
class Size:
    form: str
    memory_bytes: int  # to run it
    disk_bytes: int  # tensor data in a file (a safetensors header adds a few KB)
    kernel: str


def model_sizes(state: PruningState) -> list[Size]:
    """Bytes of the session's pruned model as dense, bitmask, CSR and compacted (undoes any backend).

    The bitmask form (kept values + 1 bit per weight) is a storage format: it is expanded to dense to run.
    """
    B.restore(state)
    params = {id(p): p for p in state.model.parameters()}
    total = sum(p.numel() * p.element_size() for p in params.values())
    bitmask, csr = total, total
    for layer in state.dense.layers:
        if not state.is_pruned(layer.name):
            continue
        numel, kept = layer.numel, layer.numel - state.pruned_count(layer.name)
        bitmask += kept * 4 + math.ceil(numel / 8) - numel * 4
        csr += min(0, B.csr_bytes(kept, layer.shape[0]) - numel * 4)
    B.apply_backend(state, "compact", verify=False)
    try:
        compact = sum(
            p.numel() * p.element_size() for p in {id(p): p for p in state.model.parameters()}.values()
        )
    finally:
        B.restore(state)
    return [
        Size("dense", total, total, B.DENSE_ZEROS),
        Size("bitmask", total, bitmask, "expanded to dense, then " + B.DENSE_ZEROS),
        Size("CSR", csr, csr, B.CSR),
        Size("compacted", compact, compact, "compacted dense (smaller matrices)"),
    ]
