"""Masks built by hand for tests that need specific units pruned, from the library's one unit model."""

from __future__ import annotations

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.pruning.units import model_unit_groups, unit_masks


def head_masks(dense: DenseModel, pruned: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """bool (out, in) masks removing the given query heads: ``pruned`` maps an attention module path
    (``UnitGroup.parent``, e.g. "model.layers.0.self_attn") to the query-head indices to remove there.

    K/V heads go only with every query head that shares them (``pruning.units.unit_masks``).
    """
    groups = {g.parent: g for g in model_unit_groups(dense, dense.layers, "heads")}
    masks = {}
    for parent, heads in pruned.items():
        group = groups[parent]
        keep = torch.ones(group.n_units, dtype=torch.bool)
        keep[list(heads)] = False
        shapes = {name: dense.by_name[name].shape for name in group.layer_names}
        masks.update(unit_masks(group, keep, shapes))
    return masks
