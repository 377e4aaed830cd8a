"""Sparsity sweeps: how a quality measure moves as more weights go, for one model and one policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.progress import Progress
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
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
