"""Wanda (Sun et al. 2023): S_ij = |W_ij|·‖X_j‖₂ compared within each output row, no weight update.

Two variants: one pass of the dense model over the calibration text (the default here: its statistics are
shared by every session, so a slider move only re-ranks), or block by block on the already-pruned earlier
blocks, as the authors' code runs it (``sequential=True``; measurably better at 2:4). Every result says which.
"""

from __future__ import annotations

import torch

from prune_explorer.models.layers import PrunableLayer
from prune_explorer.pruning.calibration import LayerStats, activation_stats
from prune_explorer.pruning.masks import n_m_mask, per_row_mask
from prune_explorer.pruning.method import Decision, Method, PruneJob
from prune_explorer.pruning.scores import wanda_scores
from prune_explorer.pruning.sequential import prune_sequentially
from prune_explorer.pruning.structured import activation_unit_scores, structured_masks
from prune_explorer.pruning.units import model_unit_groups


def _layer_mask(job: PruneJob, layer: PrunableLayer, weight: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    scores = wanda_scores(weight, stats.sq_norms)
    if job.pattern.kind == "n:m":
        return n_m_mask(scores, job.pattern.n, job.pattern.m)
    return per_row_mask(scores, job.sparsity_for(layer))


def _units(job: PruneJob) -> Decision:
    dense = job.dense
    groups = model_unit_groups(dense, job.layers, job.pattern.kind)
    cols = [dense.by_name[group.col_layer] for group in groups]
    stats = activation_stats(dense, cols, job.calibration, job.progress)

    def score(group, weights, index):
        return activation_unit_scores(group, weights, stats[group.col_layer].sq_norms)

    return structured_masks(dense, job.layers, job.pattern.kind, job.group_sparsity, score), None


def decide(job: PruneJob) -> Decision:
    if job.pattern.structured:
        return _units(job)
    dense = job.dense
    if job.sequential:

        def prune_layer(layer: PrunableLayer, weight: torch.Tensor, stats: LayerStats):
            return _layer_mask(job, layer, weight, stats), None

        masks, _ = prune_sequentially(dense, job.layers, job.calibration, prune_layer, False, job.progress)
        return masks, None
    stats = activation_stats(dense, job.layers, job.calibration, job.progress)
    return {
        layer.name: _layer_mask(job, layer, layer.weight(dense.model), stats[layer.name])
        for layer in job.layers
    }, None


METHOD = Method(
    name="wanda",
    label="Wanda",
    calibrated=True,
    updates_weights=False,
    patterns=("unstructured", "n:m", "neurons", "heads"),
    formula=r"S_{ij} = |W_{ij}| \cdot \lVert X_j \rVert_2",
    variant=(
        "Wanda (Sun et al. 2023): |W|·‖X‖₂ compared within each output row (N:M: within each group of M), "
        "no weight update; activation norms from one pass of the dense model over the calibration text."
    ),
    sequential_variant=(
        "Wanda as the authors' code runs it: |W|·‖X‖₂ within each output row (N:M: each group of M), no "
        "weight update; each block's activation norms taken on the already-pruned earlier blocks."
    ),
    unit_formula=(
        r"s_u = \sqrt{\textstyle\sum_{j \in u}"
        r" \lVert W^{\mathrm{out}}_{:,j} \rVert_2^2\,\lVert X_j \rVert_2^2}"
    ),
    unit_variant="Whole neurons/heads by Wanda-style output-weight norms scaled by input activation norms.",
    decide=decide,
)
