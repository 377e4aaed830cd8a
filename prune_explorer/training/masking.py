"""New masks for gradual pruning, from the student's *current* weights (not the dense ones).

The scores and mask rules are the pruning room's own (``pruning.scores``, ``pruning.masks``): magnitude
|w| compared within the layer, Wanda |w|·‖X‖₂ compared within each output row (activation norms taken on
the student itself over calibration text), and N:M within each group of M inputs. Masks only grow: a weight
once pruned stays pruned (its score is set below every kept one and the old mask is and-ed in), so a
sparsity never falls between updates.

N:M gradually: at sparsity s each group of M loses min(round(s·M), M − N) weights, so 2:4 passes through
1-of-4 pruned on its way to 2-of-4 (Zhu & Gupta's schedule in the units N:M allows).
"""

from __future__ import annotations

import torch

from prune_explorer.pruning.calibration import collect_stats
from prune_explorer.pruning.masks import n_m_mask, per_row_mask, sparsity_of, unstructured_mask
from prune_explorer.pruning.patterns import Pattern
from prune_explorer.pruning.scores import magnitude_scores, wanda_scores
from prune_explorer.training.student import Student

GRADUAL_METHODS = ("magnitude", "wanda")


def check_gradual(method: str, pattern: Pattern) -> None:
    """Raise ValueError unless ``method`` and ``pattern`` can be pruned gradually."""
    if method not in GRADUAL_METHODS:
        raise ValueError(
            f"method: {method!r} cannot prune gradually (its masks or weight updates are decided once on the "
            f"dense model); choose one of {GRADUAL_METHODS}, or prune one-shot and recover"
        )
    if pattern.structured:
        raise ValueError(
            "pattern: whole-unit patterns are not pruned gradually yet; prune one-shot and recover"
        )


def gradual_masks(
    student: Student, method: str, pattern: Pattern, sparsity: float, calibration_ids: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """bool (out, in) masks of every trained layer at ``sparsity`` from the student's current weights.

    Args:
        method: "magnitude" or "wanda" (Wanda needs ``calibration_ids``, int64 (n, T)).
        pattern: unstructured or N:M.
        sparsity: the schedule's s_t (per layer; per row for Wanda; per group of M for N:M, rounded).
    """
    check_gradual(method, pattern)
    stats = None
    if method == "wanda":
        if calibration_ids is None:
            raise ValueError("Wanda's gradual masks need calibration ids")
        stats = collect_stats(student.model, student.layers, calibration_ids)
    out = {}
    for layer in student.layers:
        weight, old = student.weight(layer.name), student.mask(layer.name)
        if stats is None:
            scores = magnitude_scores(weight)
        else:
            scores = wanda_scores(weight, stats[layer.name].sq_norms)
        scores = torch.where(old, scores, torch.tensor(-1.0))
        share = max(sparsity, sparsity_of(old))
        if pattern.kind == "n:m":
            pruned = min(round(sparsity * pattern.m), pattern.m - pattern.n)
            keep = n_m_mask(scores, pattern.m - pruned, pattern.m) if pruned else torch.ones_like(old)
        elif method == "wanda":
            keep = per_row_mask(scores, share)
        else:
            keep = unstructured_mask(scores, share)
        out[layer.name] = keep & old
    return out
