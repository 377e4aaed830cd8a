"""Structured pruning: score whole units (MLP neurons, attention heads), decide which go, make their masks.

Units are :class:`prune_explorer.pruning.units.UnitGroup` (the library's one model of them).
Comparison group: the units of one block (neurons of that block's MLP, heads of that block's attention);
``k = round(sparsity · n_units)`` go, ties broken by unit index, lowest first. Removing every unit of a block
is refused. Scores:
    ``magnitude``: L2 norm of all the unit's own weights, concatenated (``torch.nn.utils.prune.ln_structured``
        with n=2 on the (n_units, weights-per-unit) matrix);
    ``activation``: Wanda-style, the unit's output weights scaled by their input norms,
        sqrt(Σ_{j∈unit} ‖W_out[:, j]‖₂² ‖X_j‖₂²) on the layer that consumes the unit (down, o). For one neuron
        it is exactly the calibration-output change ‖W_down[:, i] X_iᵀ‖_F its removal causes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer
from prune_explorer.progress import Progress
from prune_explorer.pruning.ranking import count_for_sparsity, sort_keys
from prune_explorer.pruning.units import UnitGroup, model_unit_groups, unit_masks

STRUCTURED_SCORES = ("magnitude", "activation", "random")


def unit_weights(group: UnitGroup, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each unit's own weights as one row: float32 (n_units, weights per unit).

    Neurons: [gate row i, up row i, down column i]; heads: [q rows of h, o columns of h] (K/V rows are shared
    under GQA and left out, so every query head is scored on the same footing).

    Args:
        weights: {name: float (out, in)} for every layer of the group.
    """
    n, size = group.n_units, group.unit_size
    parts = []
    for name in group.row_layers:
        w = weights[name].detach().to(torch.float32)
        w = w[: n * size] if group.fused_qkv else w
        parts.append(w.reshape(n, -1))
    col = weights[group.col_layer].detach().to(torch.float32)
    parts.append(col.T.reshape(n, -1))
    return torch.cat(parts, dim=1)


def magnitude_unit_scores(group: UnitGroup, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """L2 norm of each unit's own weights, float32 (n_units,) (ln_structured's n=2 score)."""
    return unit_weights(group, weights).norm(p=2, dim=1)


def activation_unit_scores(
    group: UnitGroup, weights: dict[str, torch.Tensor], sq_norms: torch.Tensor
) -> torch.Tensor:
    """Wanda-style unit score sqrt(Σ_{j∈unit} ‖W_out[:, j]‖₂² ‖X_j‖₂²), float32 (n_units,).

    Args:
        weights: {name: float (out, in)}; only ``group.col_layer`` is read.
        sq_norms: float (in,) Σ_t X_tj² of ``group.col_layer``'s inputs.
    """
    col = weights[group.col_layer].detach().to(torch.float64)
    if tuple(sq_norms.shape) != (col.shape[1],):
        raise ValueError(
            f"activation norms have shape {tuple(sq_norms.shape)} but {group.col_layer} "
            f"{tuple(col.shape)} needs ({col.shape[1]},)"
        )
    per_col = (col**2).sum(0) * sq_norms.to(torch.float64)
    return per_col.view(group.n_units, group.unit_size).sum(1).sqrt().to(torch.float32)


def keep_units(scores: torch.Tensor, sparsity: float, label: str = "this group") -> torch.Tensor:
    """bool (n_units,), True = keep: the ``round(sparsity · n_units)`` lowest scores go, ties by index.

    Raises:
        ValueError: the sparsity would remove every unit.
    """
    n = scores.numel()
    k = count_for_sparsity(n, sparsity)
    if k >= n:
        raise ValueError(
            f"sparsity {sparsity:.0%} would remove all {n} units of {label} (round(sparsity · {n}) = {k}); "
            f"choose a lower sparsity: at most {n - 1} of {n} can go"
        )
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.sort(sort_keys(scores), stable=True).indices[:k]] = False
    return keep


def required_groups(dense: DenseModel, layers: Sequence[PrunableLayer], unit: str) -> list[UnitGroup]:
    """The complete unit groups among ``layers``.

    Raises:
        ValueError: there is none, naming the layers a block needs for ``unit``.
    """
    groups = model_unit_groups(dense, layers, unit)
    if not groups:
        needed = (
            "mlp_gate/mlp_up and mlp_down" if unit == "neurons" else "attn_q/k/v (or attn_qkv) and attn_o"
        )
        raise ValueError(f"pruning {unit} needs the {needed} layers of a block selected; none are")
    return groups


# A unit score: (group, {name: float (out, in) weight}, group index) -> float32 (n_units,), higher = keep.
UnitScorer = Callable[[UnitGroup, dict[str, torch.Tensor], int], torch.Tensor]


def structured_masks(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    unit: str,
    sparsity: float | Callable[[UnitGroup], float],
    score: UnitScorer,
    progress: Progress = None,
) -> dict[str, torch.Tensor]:
    """Bool (out, in) masks that remove the ``round(sparsity · n_units)`` lowest-scored units of every block
    (comparison group: the block's units), for every layer of every complete group among ``layers``.

    Args:
        sparsity: one share for every block, or a function giving each group its own (per-layer sparsities
            become per block: see ``PruneJob.unit_sparsity``).
    Raises:
        ValueError: no complete group among ``layers``, or a sparsity that removes every unit of a block.
    """
    groups = required_groups(dense, layers, unit)
    masks = {}
    for i, group in enumerate(groups):
        weights = {name: dense.by_name[name].weight(dense.model) for name in group.layer_names}
        share = sparsity(group) if callable(sparsity) else sparsity
        keep = keep_units(score(group, weights, i), share, group.label())
        masks.update(unit_masks(group, keep, {name: dense.by_name[name].shape for name in group.layer_names}))
        if progress:
            progress((i + 1) / len(groups))
    return masks
