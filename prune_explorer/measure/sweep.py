"""Sparsity sweeps: how a quality measure moves as more weights go, for one model and one policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS, select
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.methods import get_method
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import PruningState


@dataclass(frozen=True)
class SweepPoint:
    sparsity: float  # asked for
    achieved: float  # over the selected layers
    ppl: float


def perplexity_sweep(
    dense: DenseModel,
    ids: Sequence[int] | torch.Tensor,
    sparsities: Sequence[float],
    settings: MagnitudeSettings | None = None,
    window: int | None = None,
    progress: Progress = None,
) -> list[SweepPoint]:
    """Perplexity of ``ids`` at each sparsity, on a scratch state (no session's state is touched).

    The policy, kinds and overrides come from ``settings``; its ``sparsity`` is replaced by each point.
    """
    settings = settings or MagnitudeSettings()
    state = PruningState(dense)
    layers = select(dense.layers, settings.kinds)
    points = []
    for i, s in enumerate(sparsities):
        apply_magnitude(
            state,
            replace(
                settings, sparsity=float(s), policy="global" if settings.policy == "global" else "uniform"
            ),
        )
        share = (lambda f, i=i: progress((i + f) / len(sparsities))) if progress else None
        result = perplexity(state.model, ids, window=window, progress=share)
        points.append(SweepPoint(sparsity=float(s), achieved=state.overall_sparsity(layers), ppl=result.ppl))
    return points


def method_point(
    dense: DenseModel,
    ids: Sequence[int] | torch.Tensor,
    method: str,
    sparsity: float,
    *,
    pattern: str = "unstructured",
    kinds: Sequence[str] = DEFAULT_KINDS,
    calibration: CalibrationBatch | None = None,
    seed: int = 0,
    layer_sparsity: Mapping[str, float] | None = None,
    window: int | None = None,
    progress: Progress = None,
) -> SweepPoint:
    """Perplexity of ``ids`` after ``method`` prunes a scratch copy of ``dense`` (no session's state is
    touched) to ``sparsity``, per layer ``layer_sparsity`` where given (an allocation); ``achieved`` is the
    share of the selected layers' weights pruned. Pruning takes the first half of ``progress``.

    Raises:
        ValueError: as ``prune_masks`` (a bad setting, a pattern the method lacks, calibration too short).
    """
    result = prune_masks(
        dense,
        method,
        pattern,
        sparsity,
        kinds=kinds,
        calibration=calibration if get_method(method).calibrated else None,
        seed=seed,
        layer_sparsity=layer_sparsity,
        progress=(lambda f: progress(f / 2)) if progress else None,
    )
    state = PruningState(dense)
    result.apply(state)
    scored = perplexity(
        state.model, ids, window=window, progress=(lambda f: progress(0.5 + f / 2)) if progress else None
    )
    achieved = state.overall_sparsity(select(dense.layers, kinds))
    return SweepPoint(sparsity=float(sparsity), achieved=achieved, ppl=scored.ppl)
