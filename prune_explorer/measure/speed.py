"""How fast a pruned model runs end to end against the dense model, and why (FLOPs, bytes, kernels).

Every timing comes from the one timer (:mod:`prune_explorer.timing`: warm-up, repeats, median, dense and
pruned interleaved) and carries the label of the kernels that ran.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from prune_explorer.execution.backends import running_on
from prune_explorer.execution.labels import DENSE
from prune_explorer.execution.reports import BackendReport
from prune_explorer.measure.flops import DECODE, PREFILL, Phase, model_flops, streamed_bytes
from prune_explorer.models.dense import context_length
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import PruningState
from prune_explorer.timing import Timing, forward_kwargs, synthetic_ids, time_interleaved


def runner(model: nn.Module, phase: Phase) -> Callable[[], object]:
    """A no-argument function running ``phase`` once on ``model`` (a decode step keeps the cache length)."""
    tokens = min(phase.tokens, context_length(model) - 1)
    ids = synthetic_ids(model, tokens)
    if phase.name == "prefill":
        kwargs = forward_kwargs(model, use_cache=False, logits_to_keep=1)
        return torch.inference_mode()(lambda: model(input_ids=ids, **kwargs))
    with torch.inference_mode():
        out = model(input_ids=ids, **forward_kwargs(model, use_cache=True, logits_to_keep=1))
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    step = ids[:, -1:]
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    kwargs = forward_kwargs(model, use_cache=True, logits_to_keep=1)

    @torch.inference_mode()
    def decode() -> None:
        model(input_ids=step, **{name: cache}, **kwargs)
        cache.crop(-1)  # drop the new token: every timed step sees the same context length

    return decode


@dataclass(frozen=True)
class Case:
    """A pruning to measure: ``structure`` is "unstructured" (magnitude, per layer) or "mlp_neurons" (whole
    MLP neurons by magnitude, as the sidebar's pattern)."""

    label: str
    sparsity: float = 0.0
    structure: str = "unstructured"
    backend: str = "dense"


@dataclass
class CaseResult:
    case: Case
    timings: dict[str, Timing]  # "dense prefill", "case prefill", "dense decode", "case decode"
    report: BackendReport
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
    if case.structure == "mlp_neurons":  # the sidebar's "Whole MLP neurons": the same units go
        prune_masks(state.dense, "magnitude", "neurons", case.sparsity).apply(state)
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

    The backend is swapped in only for the measurement, holding the state's lock (a slider move of the same
    session waits): the state is back on masked dense afterwards.
    """
    dense = state.dense
    tokens = sorted({p.tokens if p.name == "prefill" else 1 for p in phases})
    with running_on(state, backend, tokens=tokens) as report:
        timings, flops = {}, {}
        for phase in phases:
            fns = {
                f"dense {phase.name}": runner(dense.model, phase),
                f"case {phase.name}": runner(state.model, phase),
            }
            kernels = {f"dense {phase.name}": DENSE, f"case {phase.name}": report.summary()}
            timings.update(time_interleaved(fns, kernels, warmup, repeats))
        kept: dict[int, int] = {}
        for phase in phases:
            flops[phase.name] = (
                model_flops(dense, dense.model, phase, False),
                model_flops(dense, state.model, phase, kept=kept),
            )
        nbytes = (streamed_bytes(dense, dense.model), streamed_bytes(dense, state.model, kept))
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
