"""How two prunings differ: each layer's output error on its calibration inputs, and the overlap of the
weights they prune."""

from __future__ import annotations

import torch

from prune_explorer.models.dense import DenseModel, working_copy
from prune_explorer.models.layers import group_by_block
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch, collect_stats, resolve_calibration
from prune_explorer.pruning.result import PruneResult
from prune_explorer.pruning.scores import jaccard_pruned, reconstruction_error, relative_reconstruction_error


def reconstruction_errors(
    dense: DenseModel,
    result: PruneResult | dict[str, torch.Tensor],
    calibration: CalibrationBatch | str | None = None,
    relative: bool = True,
    progress: Progress = None,
) -> dict[str, float]:
    """Per-layer output error of a pruning on the *dense* model's calibration inputs X of each layer.

    relative: ‖WX − W'X‖_F / ‖WX‖_F; else the squared ‖WX − W'X‖_F² summed over tokens. W' is the result's new
    weight where it has one, else where(mask, W, 0). Computed block by block (one Gram matrix per layer of a
    block at a time), so the memory stays that of one block.

    Args:
        result: a :class:`PruneResult` or a {name: bool (out, in)} mask dict.
    """
    masks = result.masks if isinstance(result, PruneResult) else result
    new_weights = (result.weights or {}) if isinstance(result, PruneResult) else {}
    calib = resolve_calibration(dense, calibration)
    layers = [dense.by_name[name] for name in masks]
    groups = group_by_block(layers)
    model = working_copy(dense.model)
    errors = {}
    for g, group in enumerate(groups):
        stats = collect_stats(model, group, calib.ids, gram=True)
        for layer in group:
            w = layer.weight(dense.model).detach()
            new = new_weights.get(layer.name)
            if new is None:
                new = torch.where(masks[layer.name], w, torch.zeros((), dtype=w.dtype))
            gram = stats.pop(layer.name).gram
            errors[layer.name] = (relative_reconstruction_error if relative else reconstruction_error)(
                w, new, gram
            )
        if progress:
            progress((g + 1) / len(groups))
    return errors


def mask_overlap(masks_a: dict[str, torch.Tensor], masks_b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per-layer Jaccard overlap of the weights two methods prune (1 = the same weights, 0 = disjoint).

    A layer missing from one dict counts as unpruned there (an all-True mask).
    """
    out = {}
    for name in list(dict.fromkeys([*masks_a, *masks_b])):
        a, b = masks_a.get(name), masks_b.get(name)
        ref = a if a is not None else b
        a = torch.ones_like(ref) if a is None else a
        b = torch.ones_like(ref) if b is None else b
        out[name] = jaccard_pruned(a, b)
    return out
