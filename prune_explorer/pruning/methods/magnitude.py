"""Magnitude pruning: the smallest |w| go (comparison group: the layer; N:M: each group of M inputs; whole
units: the block's units by the L2 norm of their weights). Per-layer sparsities: each layer its own
``round(s · n)``."""

from __future__ import annotations

from prune_explorer.pruning.masks import n_m_mask
from prune_explorer.pruning.method import Decision, Method, PruneJob
from prune_explorer.pruning.ranking import prefix_mask
from prune_explorer.pruning.scores import magnitude_scores
from prune_explorer.pruning.structured import magnitude_unit_scores, structured_masks


def decide(job: PruneJob) -> Decision:
    dense, pattern = job.dense, job.pattern
    if pattern.structured:
        score = lambda group, weights, index: magnitude_unit_scores(group, weights)  # noqa: E731
        return structured_masks(
            dense, job.layers, pattern.kind, job.group_sparsity, score, job.progress
        ), None
    if pattern.kind == "n:m":
        weights = {layer.name: layer.weight(dense.model) for layer in job.layers}
        return {
            name: n_m_mask(magnitude_scores(w), pattern.n, pattern.m) for name, w in weights.items()
        }, None
    # The shared ranking: the same weights (ties included) as the slider's uniform policy.
    return {layer.name: prefix_mask(dense, layer, job.sparsity_for(layer)) for layer in job.layers}, None


METHOD = Method(
    name="magnitude",
    label="Magnitude",
    calibrated=False,
    updates_weights=False,
    patterns=("unstructured", "n:m", "neurons", "heads"),
    formula=r"S_{ij} = |W_{ij}|",
    variant="Magnitude pruning: the smallest |w| of each layer go (N:M: of every group of M inputs).",
    unit_formula=r"s_u = \lVert W_u \rVert_2",
    unit_variant="Whole neurons/heads with the smallest L2 norm (torch.nn.utils.prune.ln_structured, n=2).",
    decide=decide,
)
