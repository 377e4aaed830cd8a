"""OWL's outlier ratios (Yin et al. 2024): per block, the share of Wanda scores |W_ij|·‖X_j‖₂ above M × their
mean, the statistic OWL's allocation (:mod:`.allocation`) spreads sparsity by.

:func:`outlier_ratio` is the maths on tensors; :func:`outlier_ratios` wires it to a model's calibration
statistics (shared with Wanda through the dense model's cache) and keeps the result in that cache, once per
model, layers, calibration and M.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer, group_by_block
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch, activation_stats, resolve_calibration
from prune_explorer.pruning.scores import wanda_scores

OWL_M = 5.0


def outlier_ratio(scores: Sequence[torch.Tensor], m: float = OWL_M) -> float:
    """OWL's layer outlier ratio: the share of scores above ``m`` × their mean, over all tensors together.

    Args:
        scores: float tensors (any shapes), e.g. the Wanda scores (out, in) of one block's layers.
        m: OWL's M (the paper's default 5).
    Returns:
        A share in [0, 1] (the reference code reports it in percent).
    """
    if m <= 0:
        raise ValueError(f"OWL's M must be positive, got {m}")
    count = sum(t.numel() for t in scores)
    if not count:
        return 0.0
    mean = sum(float(t.detach().to(torch.float64).sum()) for t in scores) / count
    above = sum(int((t.detach().to(torch.float64) > m * mean).sum()) for t in scores)
    return above / count


def outlier_ratios(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    calibration: CalibrationBatch | str | None = None,
    m: float = OWL_M,
    progress: Progress = None,
) -> dict[str, float]:
    """Each layer's block outlier ratio (:func:`outlier_ratio` of the Wanda scores of the block's selected
    layers together, on the dense model's calibration activations), computed once per model, layers,
    calibration and M (the dense model's cache), so moving an OWL slider does not recompute it.

    Layers outside transformer blocks (e.g. an LM head) form a block of their own.

    Raises:
        ValueError: an embedding among ``layers`` (no input activations), or calibration text too short.
    """
    if m <= 0:
        raise ValueError(f"OWL's M must be positive, got {m}")
    layers = list(layers)
    calib = resolve_calibration(dense, calibration)
    key = _ratios_key(calib, layers, m)

    def compute() -> dict[str, float]:
        stats = activation_stats(dense, layers, calib, progress)
        out = {}
        for block in group_by_block(layers):
            scores = [wanda_scores(layer.weight(dense.model), stats[layer.name].sq_norms) for layer in block]
            ratio = outlier_ratio(scores, m)
            out.update({layer.name: ratio for layer in block})
        return out

    return dense.cache.get(key, compute)


def _ratios_key(calib: CalibrationBatch, layers: Sequence[PrunableLayer], m: float) -> tuple:
    return ("owl_ratios", calib.key, tuple(layer.name for layer in layers), float(m))


def cached_outlier_ratios(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    calibration: CalibrationBatch | str | None,
    m: float = OWL_M,
) -> dict[str, float] | None:
    """:func:`outlier_ratios` if computed already (by any caller), else None (also for M not positive):
    nothing is computed."""
    if m <= 0:
        return None
    return dense.cache.peek(_ratios_key(resolve_calibration(dense, calibration), list(layers), m))
