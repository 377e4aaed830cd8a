"""SparseGPT (Frantar & Alistarh 2023): OBS mask selection and weight reconstruction, block by block.

The per-layer algorithm is in :mod:`prune_explorer.pruning.sparsegpt_layer`; this module wires it to the
model: each layer's Gram matrix of calibration inputs, transformer blocks pruned in order, each on the inputs
produced by the already-pruned earlier blocks (the paper's procedure; ``sequential=False`` calibrates every
block on the dense model instead).
"""

from __future__ import annotations

import torch

from prune_explorer.models.dense import working_copy
from prune_explorer.models.layers import PrunableLayer, group_by_block
from prune_explorer.pruning.calibration import LayerStats, collect_stats
from prune_explorer.pruning.method import Decision, Method, PruneJob
from prune_explorer.pruning.sequential import prune_sequentially
from prune_explorer.pruning.sparsegpt_layer import DEFAULT_BLOCKSIZE, DEFAULT_PERCDAMP, sparsegpt_prune


def decide(job: PruneJob) -> Decision:
    pattern, dense = job.pattern, job.dense
    n_m = (pattern.n, pattern.m) if pattern.kind == "n:m" else None
    blocksize = int(job.options.get("blocksize", DEFAULT_BLOCKSIZE))
    percdamp = float(job.options.get("percdamp", DEFAULT_PERCDAMP))
    if n_m is not None and blocksize % pattern.m:
        blocksize = max(pattern.m, blocksize - blocksize % pattern.m)  # N:M groups must not straddle blocks

    def prune_layer(layer: PrunableLayer, weight: torch.Tensor, stats: LayerStats):
        out = sparsegpt_prune(
            weight, stats.gram, stats.n_tokens, job.sparsity_for(layer), n_m, blocksize, percdamp
        )
        if out.message:
            job.messages.append(f"{layer.name}: {out.message}")
        return out.mask, out.weight

    if job.sequential:
        return prune_sequentially(dense, job.layers, job.calibration, prune_layer, True, job.progress)
    masks, weights = {}, {}
    groups = group_by_block(job.layers)
    model = working_copy(dense.model)  # hooks on the shared dense model would see other sessions' forwards
    for g, group in enumerate(groups):
        stats = collect_stats(model, group, job.calibration.ids, gram=True)
        for layer in group:
            masks[layer.name], weights[layer.name] = prune_layer(
                layer, layer.weight(dense.model), stats.pop(layer.name)
            )
        if job.progress:
            job.progress((g + 1) / len(groups))
    return masks, weights


METHOD = Method(
    name="sparsegpt",
    label="SparseGPT",
    calibrated=True,
    updates_weights=True,
    patterns=("unstructured", "n:m"),
    formula=(
        r"\min_{\hat W}\ \lVert WX - \hat W X \rVert_2^2,\quad H = 2XX^\top + \lambda I,\quad"
        r" U = \mathrm{chol}(H^{-1})^\top;\quad \text{prune smallest } \frac{w_{ic}^2}{U_{cc}^2},\quad"
        r" W_{:,c:} \mathrel{-}= \frac{w_{:,c} - \hat w_{:,c}}{U_{cc}}\, U_{c,c:}"
    ),
    variant=(
        "SparseGPT (Frantar & Alistarh 2023), Algorithm 1, every block calibrated on the dense model: "
        "H = 2XXᵀ/N with 1% mean-diagonal dampening, blocks of 128 columns with adaptive mask selection "
        "(N:M: every M columns), OBS update of the remaining weights."
    ),
    sequential_variant=(
        "SparseGPT (Frantar & Alistarh 2023), Algorithm 1: H = 2XXᵀ/N with 1% mean-diagonal dampening, "
        "blocks of 128 columns with adaptive mask selection (N:M: every M columns), OBS update of the "
        "remaining weights; transformer blocks pruned in order, each on the inputs produced by the "
        "already-pruned earlier blocks."
    ),
    sequential_default=True,
    decide=decide,
)
