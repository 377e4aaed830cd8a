"""Bool masks from scores. True = keep; every mask is shaped like the (out, in) weight it applies to."""

from __future__ import annotations

import torch

from prune_explorer.pruning.ranking import count_for_sparsity, rank_scores, sort_keys


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


def parse_n_m(pattern: str) -> tuple[int, int]:
    """Read an N:M pattern such as ``"2:4"``: N weights kept in every group of M consecutive inputs.

    Raises:
        ValueError: not two integers, N < 1, or N >= M (nothing would be pruned).
    """
    try:
        n_text, m_text = pattern.split(":")
        n, m = int(n_text), int(m_text)
    except ValueError:
        raise ValueError(f"an N:M pattern is two integers like '2:4', got {pattern!r}") from None
    if n < 1:
        raise ValueError(f"N:M pattern {pattern!r}: N must be at least 1 (N weights are kept per group)")
    if n >= m:
        raise ValueError(f"N:M pattern {pattern!r}: N must be smaller than M, or nothing is pruned")
    return n, m


def per_row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the ``round(sparsity * in)`` lowest scores of every output row (comparison group: the row).

    This is Wanda's comparison group (Sun et al. 2023, "per output"); with scores = |w| it is per-row
    magnitude pruning. Ties are broken by column index, lowest first.

    Args:
        scores: float (out, in), higher = more important.
        sparsity: share of each row to prune, in [0, 1].
    Returns:
        bool (out, in), True = keep; every row keeps exactly ``in - round(sparsity * in)`` weights.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (out, in), got shape {tuple(scores.shape)}")
    k = count_for_sparsity(scores.shape[1], sparsity)
    keep = torch.ones(scores.shape, dtype=torch.bool)
    if k:
        order = torch.sort(sort_keys(scores), dim=1, stable=True).indices
        keep.scatter_(1, order[:, :k], False)
    return keep


def n_m_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive inputs of a row (comparison group:
    block of M, as NVIDIA's 2:4 sparse tensor cores and the SparseGPT/Wanda papers' N:M variants).

    Ties are broken by column index, lowest pruned first. When ``in`` is not a multiple of ``m`` the last
    ``in % m`` columns form no full group and are kept (dense); :func:`n_m_tail` says how many.

    Args:
        scores: float (out, in), higher = more important.
        n: weights kept per group, 1 <= n < m.
        m: group size.
    Returns:
        bool (out, in), True = keep.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (out, in), got shape {tuple(scores.shape)}")
    if not 1 <= n < m:
        raise ValueError(f"N:M needs 1 <= N < M, got {n}:{m}")
    rows, cols = scores.shape
    full = cols - cols % m
    keep = torch.ones(scores.shape, dtype=torch.bool)
    if full:
        groups = scores.detach()[:, :full].to(torch.float32).reshape(rows, full // m, m)
        order = torch.sort(groups, dim=2, stable=True).indices
        group_keep = torch.ones(groups.shape, dtype=torch.bool)
        group_keep.scatter_(2, order[:, :, : m - n], False)
        keep[:, :full] = group_keep.reshape(rows, full)
    return keep


def n_m_tail(cols: int, m: int) -> int:
    """Columns of an (out, cols) weight left dense by an N:M pattern because they form no full group."""
    return cols % m
