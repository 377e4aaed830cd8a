"""New masks for gradual pruning, from the student's *current* weights (not the dense ones).

The scores and mask rules are the pruning room's own (``pruning.scores``, ``pruning.masks``): magnitude
|w| compared within the layer, Wanda |w|·‖X‖₂ compared within each output row (activation norms taken on
the student itself over calibration text), and N:M within each group of M inputs. Masks only grow: a weight
once pruned stays pruned (its score is set below every kept one and the old mask is and-ed in), so a
sparsity never falls between updates.

N:M gradually: at sparsity s each group of M loses min(round(s·M), M − N) weights, so 2:4 passes through
1-of-4 pruned on its way to 2-of-4 (Zhu & Gupta's schedule in the units N:M allows).

Whole units gradually (neurons, heads; ``pruning.structured``'s units, scores and rounding): at sparsity s
each block loses ``round(s · n_units)`` units, the lowest scored on the student's current weights (magnitude:
the L2 norm of the unit's own weights; Wanda: its output weights scaled by their input norms), a unit once
pruned staying pruned. Trained layers that belong to no unit group (the attention layers under "neurons")
keep their masks: they train, they are not pruned.
"""

from __future__ import annotations

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer
from prune_explorer.pruning.calibration import LayerStats, collect_stats
from prune_explorer.pruning.masks import n_m_mask, per_row_mask, sparsity_of, unstructured_mask
from prune_explorer.pruning.patterns import Pattern
from prune_explorer.pruning.ranking import count_for_sparsity
from prune_explorer.pruning.scores import magnitude_scores, wanda_scores
from prune_explorer.pruning.structured import (
    activation_unit_scores,
    keep_units,
    magnitude_unit_scores,
    required_groups,
)
from prune_explorer.pruning.units import UnitGroup, model_unit_groups, unit_masks
from prune_explorer.training.student import Student

GRADUAL_METHODS = ("magnitude", "wanda")


def check_gradual(method: str, pattern: Pattern) -> None:
    """Raise ValueError unless ``method`` and ``pattern`` can be pruned gradually."""
    if method not in GRADUAL_METHODS:
        raise ValueError(
            f"method: {method!r} cannot prune gradually (its masks or weight updates are decided once on the "
            f"dense model); choose one of {GRADUAL_METHODS}, or prune one-shot and recover"
        )


def check_gradual_units(
    dense: DenseModel, layers: list[PrunableLayer], pattern: Pattern, final_sparsity: float
) -> None:
    """Raise ValueError unless a whole-unit ``pattern`` has unit groups among ``layers`` and its final
    sparsity leaves every block at least one unit (checked before a run, not at its last mask update)."""
    if not pattern.structured:
        return
    try:
        groups = required_groups(dense, layers, pattern.kind)
    except ValueError as exc:
        raise ValueError(f"pattern: {exc} among the trained kinds") from None
    for group in groups:
        if count_for_sparsity(group.n_units, final_sparsity) >= group.n_units:
            raise ValueError(
                f"schedule: a final sparsity of {final_sparsity:.0%} would remove all {group.n_units} "
                f"{pattern.kind} of {group.label()}; choose a lower target"
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
    if pattern.structured:
        return _unit_masks(student, pattern.kind, sparsity, stats)
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


def _unit_masks(
    student: Student, unit: str, sparsity: float, stats: dict[str, LayerStats] | None
) -> dict[str, torch.Tensor]:
    """bool (out, in) masks of the layers of every unit group among the student's layers at ``sparsity``."""
    out = {}
    for group in model_unit_groups(student.dense, student.layers, unit):
        weights = {name: student.weight(name) for name in group.layer_names}
        if stats is None:
            scores = magnitude_unit_scores(group, weights)
        else:
            scores = activation_unit_scores(group, weights, stats[group.col_layer].sq_norms)
        gone = _pruned_units(group, student.mask(group.col_layer))
        scores = torch.where(gone, torch.tensor(-1.0), scores)  # below every kept unit's (norms are >= 0)
        share = max(sparsity, float(gone.float().mean()))
        keep = keep_units(scores, share, group.label())
        shapes = {name: student.dense.by_name[name].shape for name in group.layer_names}
        for name, mask in unit_masks(group, keep, shapes).items():
            out[name] = mask & student.mask(name)
    return out


def _pruned_units(group: UnitGroup, col_mask: torch.Tensor) -> torch.Tensor:
    """bool (n_units,): the units whose every input column of ``group.col_layer`` is pruned."""
    columns = col_mask.any(dim=0).view(group.n_units, group.unit_size)
    return ~columns.any(dim=1)
