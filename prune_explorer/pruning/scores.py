"""Importance scores and mask comparisons: tensors in, new tensors out (no hooks, no model, no state).

Scores are float32 (out, in), higher = more important; :mod:`prune_explorer.masks` turns them into bool masks.
Which comparison group a score is ranked in (layer, row, block of M) is chosen there, not here.
"""

from __future__ import annotations

import torch


def _check_weight(weight: torch.Tensor) -> None:
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D (out, in) matrix, got shape {tuple(weight.shape)}")


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W_ij| (magnitude pruning, as ``torch.nn.utils.prune.l1_unstructured``).

    Args:
        weight: float (out, in).
    Returns:
        float32 (out, in).
    """
    _check_weight(weight)
    return weight.detach().abs().to(torch.float32)


def random_scores(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """Uniform random scores from a seeded generator: the random-pruning baseline (same seed, same mask).

    Args:
        shape: (out, in).
        seed: generator seed.
    Returns:
        float32 (out, in) in [0, 1).
    """
    generator = torch.Generator().manual_seed(int(seed))
    return torch.rand(tuple(shape), generator=generator, dtype=torch.float32)


def wanda_scores(weight: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    """Wanda importance S_ij = |W_ij| · ‖X_j‖₂ (Sun et al. 2023, "Pruning by Weights and activations").

    ‖X_j‖₂ is the L2 norm of input feature j over every calibration token. The paper compares scores within
    each output row (``masks.per_row_mask``), or within blocks of M for N:M (``masks.n_m_mask``).

    Args:
        weight: float (out, in).
        sq_norms: float (in,), ‖X_j‖₂² summed over calibration tokens (any positive common scale works:
            the ranking within a row does not change).
    Returns:
        float32 (out, in).
    Raises:
        ValueError: ``sq_norms`` does not have ``in`` entries, or has negative entries.
    """
    _check_weight(weight)
    if tuple(sq_norms.shape) != (weight.shape[1],):
        raise ValueError(
            f"activation norms have shape {tuple(sq_norms.shape)} but the weight {tuple(weight.shape)} "
            f"needs ({weight.shape[1]},)"
        )
    if bool((sq_norms < 0).any()):
        raise ValueError("squared activation norms cannot be negative")
    norms = sq_norms.detach().to(torch.float64).sqrt().to(torch.float32)
    return weight.detach().abs().to(torch.float32) * norms.view(1, -1)


def reconstruction_error(weight: torch.Tensor, new_weight: torch.Tensor, gram: torch.Tensor) -> float:
    """Squared output error ‖WX − W'X‖_F² of a layer over calibration inputs X, from their Gram matrix.

    With X the (in, tokens) inputs, ‖(W − W')X‖_F² = tr(ΔW XXᵀ ΔWᵀ), so only XXᵀ (in, in) is needed. This is
    the layer-wise objective SparseGPT minimises (Frantar & Alistarh 2023, eq. 1).

    Args:
        weight: float (out, in), the dense weight.
        new_weight: float (out, in), the pruned (and possibly updated) weight.
        gram: float (in, in), XXᵀ summed over calibration tokens.
    Returns:
        The squared Frobenius error (float, in the units of the summed Gram).
    """
    _check_weight(weight)
    if tuple(new_weight.shape) != tuple(weight.shape):
        raise ValueError(
            f"new weight has shape {tuple(new_weight.shape)} but the weight is {tuple(weight.shape)}"
        )
    cols = weight.shape[1]
    if tuple(gram.shape) != (cols, cols):
        raise ValueError(
            f"Gram matrix has shape {tuple(gram.shape)} but the weight {tuple(weight.shape)} needs "
            f"({cols}, {cols})"
        )
    delta = (weight.detach() - new_weight.detach()).to(torch.float64)
    return float(((delta @ gram.detach().to(torch.float64)) * delta).sum().clamp_min(0.0))


def relative_reconstruction_error(
    weight: torch.Tensor, new_weight: torch.Tensor, gram: torch.Tensor
) -> float:
    """‖WX − W'X‖_F / ‖WX‖_F: the share of a layer's calibration output that pruning changed (0 = none)."""
    w = weight.detach().to(torch.float64)
    base = float(((w @ gram.detach().to(torch.float64)) * w).sum())
    err = reconstruction_error(weight, new_weight, gram)
    return (err / base) ** 0.5 if base > 0 else 0.0


def jaccard_pruned(mask_a: torch.Tensor, mask_b: torch.Tensor) -> float:
    """Jaccard overlap |P_a ∩ P_b| / |P_a ∪ P_b| of the weights two masks *prune* (False entries).

    1.0 when both prune the same weights (or neither prunes any); 0.0 when they prune disjoint sets.

    Args:
        mask_a: bool (out, in), True = keep.
        mask_b: bool (out, in), True = keep.
    Raises:
        ValueError: either mask is not torch.bool, or the shapes differ (both are named).
    """
    for label, mask in (("first mask", mask_a), ("second mask", mask_b)):
        if mask.dtype != torch.bool:
            raise ValueError(f"{label} must be torch.bool, got {mask.dtype}")
    if mask_a.shape != mask_b.shape:
        raise ValueError(f"masks differ in shape: {tuple(mask_a.shape)} and {tuple(mask_b.shape)}")
    pruned_a, pruned_b = ~mask_a, ~mask_b
    union = int((pruned_a | pruned_b).sum())
    return int((pruned_a & pruned_b).sum()) / union if union else 1.0
