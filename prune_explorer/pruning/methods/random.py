"""Random pruning with a seeded generator: the baseline every method must beat (comparison group: the layer;
N:M: each group of M inputs; whole units: the block's units)."""

from __future__ import annotations

from prune_explorer.pruning.masks import n_m_mask, unstructured_mask
from prune_explorer.pruning.method import Decision, Method, PruneJob
from prune_explorer.pruning.scores import random_scores
from prune_explorer.pruning.structured import structured_masks


def decide(job: PruneJob) -> Decision:
    pattern = job.pattern
    if pattern.structured:
        score = lambda group, weights, index: random_scores((1, group.n_units), job.seed + index).view(-1)  # noqa: E731
        return structured_masks(
            job.dense, job.layers, pattern.kind, job.group_sparsity, score, job.progress
        ), None
    masks = {}
    for layer in job.layers:
        scores = random_scores(layer.shape, job.layer_seed(layer))
        if pattern.kind == "n:m":
            masks[layer.name] = n_m_mask(scores, pattern.n, pattern.m)
        else:
            masks[layer.name] = unstructured_mask(scores, job.sparsity_for(layer))
    return masks, None


METHOD = Method(
    name="random",
    label="Random",
    calibrated=False,
    updates_weights=False,
    patterns=("unstructured", "n:m", "neurons", "heads"),
    formula=r"S_{ij} \sim \mathcal{U}[0, 1)",
    variant="Random pruning with a seeded generator: the baseline every method must beat.",
    unit_formula=r"s_u \sim \mathcal{U}[0, 1)",
    unit_variant="Whole neurons/heads chosen at random (seeded).",
    decide=decide,
)
