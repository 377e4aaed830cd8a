"""What a sensitivity sweep prunes together, the method's masks for it, and the instant error estimate.

A group is one layer (``mode="layer"``), one kind across every block (``"kind"``: every q_proj, ...) or one
whole block (``"block"``). The masks of every layer at one sparsity come from one ``prune_masks`` call: a
non-sequential method decides each layer on the dense model alone, so a layer's mask is the same whether the
other layers are pruned or not.

The instant estimate needs no forward of a pruned model: the output error the calibration statistics
predict for a layer is Σ over its pruned weights of w_ij² ‖x_j‖² (x_j: input feature j over the calibration
tokens, Wanda's score squared), divided by the same sum over all its weights, so 0 means nothing lost and 1
everything. A group's estimate sums numerators and denominators over its layers. It ignores what follows the
layer (residual stream, later blocks), which is exactly what the measured KL sees; a chart of both shows
where the proxy holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS, PrunableLayer, block_name, select
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch, activation_stats, resolve_calibration
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.result import PruneResult

MODES = ("layer", "kind", "block")
DEFAULT_SPARSITIES = (0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class Group:
    """Layers pruned together, named by the layer, the kind or the block path."""

    name: str
    layers: tuple[PrunableLayer, ...]


def groups(dense: DenseModel, mode: str = "layer", kinds: Sequence[str] = DEFAULT_KINDS) -> list[Group]:
    """The groups of ``mode`` over the layers of ``kinds``, in model order (kinds by first appearance).

    Raises:
        ValueError: unknown mode or kinds, or no layer of those kinds.
    """
    if mode not in MODES:
        raise ValueError(f"unknown sensitivity mode {mode!r}; choose one of {MODES}")
    layers = select(dense.layers, kinds)
    if not layers:
        raise ValueError(f"no prunable layers of kinds {list(kinds)} in this model")
    keyed: dict[str, list[PrunableLayer]] = {}
    for layer in layers:
        key = {"layer": layer.name, "kind": layer.kind, "block": block_name(layer) or layer.name}[mode]
        keyed.setdefault(key, []).append(layer)
    return [Group(name, tuple(members)) for name, members in keyed.items()]


def check_sparsities(sparsities: Sequence[float]) -> list[float]:
    """The sweep as floats.

    Raises:
        ValueError: an empty sweep, a sparsity outside [0, 1], or one given twice.
    """
    values = [float(s) for s in sparsities]
    if not values:
        raise ValueError("give at least one sparsity")
    bad = [s for s in values if not 0.0 <= s <= 1.0]
    if bad:
        raise ValueError(f"sparsity must be between 0 and 1, got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"each sparsity once, please: {values}")
    return values


def method_results(
    dense: DenseModel,
    method: str,
    sparsities: Sequence[float],
    kinds: Sequence[str],
    calibration: CalibrationBatch,
    progress: Progress = None,
) -> list[PruneResult]:
    """The method's unstructured masks (and new weights, if it makes any) for every layer of ``kinds``, one
    :func:`prune_masks` call per sparsity, non-sequential (each layer decided on the dense model)."""
    out = []
    for i, s in enumerate(sparsities):
        share = (lambda f, i=i: progress((i + f) / len(sparsities))) if progress else None
        result = prune_masks(
            dense,
            method,
            "unstructured",
            s,
            kinds=kinds,
            calibration=calibration,
            sequential=False,
            progress=share,
        )
        out.append(result)
    return out


def estimates(
    dense: DenseModel, found: Sequence[Group], results: Sequence[PruneResult], calibration: CalibrationBatch
) -> dict[str, list[float]]:
    """Σ_pruned w² ‖x_j‖² / Σ_all w² ‖x_j‖² per group and result (embeddings, with no inputs: ‖x_j‖ = 1).

    Returns:
        {group name: one float in [0, 1] per result}.
    """
    layers = [layer for g in found for layer in g.layers]
    with_inputs = [layer for layer in layers if layer.kind != "embedding"]
    stats = activation_stats(dense, with_inputs, calibration) if with_inputs else {}
    pruned: dict[str, list[float]] = {}
    total: dict[str, float] = {}
    for layer in layers:
        energy = layer.weight(dense.model).detach().float().square()  # (out, in)
        if layer.name in stats:
            energy = energy * stats[layer.name].sq_norms.to(torch.float32)
        total[layer.name] = float(energy.sum(dtype=torch.float64))
        pruned[layer.name] = [
            float(energy.masked_select(~result.masks[layer.name]).sum(dtype=torch.float64))
            for result in results
        ]
    out = {}
    for g in found:
        den = sum(total[layer.name] for layer in g.layers)
        out[g.name] = [
            sum(pruned[layer.name][i] for layer in g.layers) / den if den > 0 else 0.0
            for i in range(len(results))
        ]
    return out


def instant_estimate(
    dense: DenseModel,
    method: str = "magnitude",
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    *,
    mode: str = "layer",
    kinds: Sequence[str] = DEFAULT_KINDS,
    calibration: CalibrationBatch | str | None = None,
) -> dict[str, list[float]]:
    """The predicted relative output error of each group at each sparsity, before anything is measured.

    Cheap: the method's masks and one calibration pass of the dense model (shared with Wanda's).

    Returns:
        {group name: [Σ_pruned w² ‖x_j‖² / Σ_all w² ‖x_j‖², one per sparsity]}; 0 when nothing is pruned,
        1 when everything is.
    Raises:
        ValueError: unknown method, mode or kinds; a sparsity outside [0, 1].
    """
    values = check_sparsities(sparsities)
    found = groups(dense, mode, kinds)
    calib = resolve_calibration(dense, calibration)
    return estimates(dense, found, method_results(dense, method, values, kinds, calib), calib)
