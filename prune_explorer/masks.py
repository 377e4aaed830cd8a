"""Bool masks from scores. True = keep; every mask is shaped like the (out, in) weight it applies to."""

from __future__ import annotations

import torch

from prune_explorer.ranking import count_for_sparsity, rank_scores


def check_mask(mask: torch.Tensor, shape: tuple[int, ...], name: str = "mask") -> None:
    """Raise ValueError unless ``mask`` is torch.bool with ``shape``; the message names both shapes."""
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be torch.bool, got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)} but the weight is {tuple(shape)}")


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the ``round(sparsity * numel)`` lowest scores of the whole tensor (comparison group: the layer).

    Ties are broken by flat index, lowest first. With scores = |w| this is magnitude pruning and selects the
    same weights as ``torch.nn.utils.prune.l1_unstructured(amount=sparsity)`` wherever |w| has no ties.

    Args:
        scores: float (out, in), higher = more important.
        sparsity: share of weights to prune, in [0, 1].
    Returns:
        bool (out, in), True = keep.
    """
    k = count_for_sparsity(scores.numel(), sparsity)
    return rank_scores(scores).mask(k, scores.shape)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Magnitude pruning of one (out, in) weight: keep the largest |w|."""
    return unstructured_mask(weight.detach().abs(), sparsity)


def sparsity_of(mask: torch.Tensor) -> float:
    """Share of False (pruned) entries."""
    return 1.0 - float(mask.sum()) / mask.numel() if mask.numel() else 0.0
