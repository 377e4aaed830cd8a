"""A sensitivity run's measured points: each variant (group x sparsity) pruned alone and replayed.

A variant is pruned in a scratch :class:`PruningState`, replayed from its group's first block
(:mod:`.replay`) and reset to dense; variants of consecutive groups inside one block share a batch. This is
the measuring loop of :func:`.sensitivity.measure_sensitivity`, apart from its caching and bookkeeping.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from prune_explorer.measure.replay import (
    DenseTrace,
    continue_from,
    divergence,
    run_from,
    run_one_block,
    variant_logits,
)
from prune_explorer.measure.sensitivity_groups import Group
from prune_explorer.models.layers import PrunableLayer, block_name
from prune_explorer.progress import Progress
from prune_explorer.pruning.result import PruneResult
from prune_explorer.state import PruningState

# Most variants (group x sparsity) replayed together on the batch axis: 28 is one block's 7 layers x 4.
_BATCH = 32


def perplexity_of(nll: float) -> float:
    """exp(``nll``), a mean negative log-likelihood in nats; inf where it would overflow a float."""
    return math.exp(nll) if nll < 700 else math.inf


def measure_points(
    scratch: PruningState,
    trace: DenseTrace,
    found: Sequence[Group],
    results: Sequence[PruneResult],
    progress: Progress,
    offset: float = 0.0,
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """(KL, perplexity, achieved sparsity) per group and result: each group pruned alone in ``scratch``,
    replayed from its first block, then reset to dense.

    Where the trace allows it, every variant (group x sparsity) of consecutive groups inside one block b is
    run through block b alone, and their outputs go through the later (dense) blocks together, stacked on
    the batch axis (up to ``_BATCH`` variants: larger matrix products, the same numbers); the final norm, LM
    head and KL then run per variant, so only one variant's logits are held at a time. ``progress`` is
    called after each point with ``offset`` plus that point's part of the rest of the bar.
    """
    index = {path: i for i, path in enumerate(trace.blocks)}
    kl: dict[str, list[float]] = {g.name: [0.0] * len(results) for g in found}
    ppl: dict[str, list[float]] = {g.name: [0.0] * len(results) for g in found}
    achieved: dict[str, list[float]] = {g.name: [0.0] * len(results) for g in found}
    total, done = len(found) * len(results), 0

    def record(g: Group, i: int, div: float, nll: float) -> None:
        nonlocal done
        kl[g.name][i] = max(div, 0.0)  # float error can leave -1e-9 where nothing changed
        ppl[g.name][i] = perplexity_of(nll)
        masks = [results[i].masks[layer.name] for layer in g.layers]
        achieved[g.name][i] = 1.0 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
        done += 1
        if progress:
            progress(offset + (1 - offset) * done / total)

    for start, batch in _batches(found, index, len(results), trace.batchable):
        if start is None or len(batch) == 1:
            for g, i in batch:
                with _pruned(scratch, results[i], g.layers):
                    record(g, i, *divergence(trace, run_from(scratch.model, trace, start)))
            continue
        firsts = []
        for g, i in batch:
            with _pruned(scratch, results[i], g.layers):
                firsts.append(run_one_block(scratch.model, trace, start, trace.hidden[start]))
        stacked = continue_from(scratch.model, trace, start + 1, torch.cat(firsts), logits=False)
        for (g, i), hidden in zip(batch, stacked.split(trace.ids.shape[0]), strict=True):
            record(g, i, *divergence(trace, variant_logits(scratch.model, trace, hidden)))
    return kl, ppl, achieved


def _batches(
    found: Sequence[Group], index: dict[str, int], n_results: int, batchable: bool
) -> Iterator[tuple[int | None, list[tuple[Group, int]]]]:
    """(first block or None, [(group, result index)]) in model order: variants of consecutive groups that sit
    inside one block share a batch (at most ``_BATCH``) when ``batchable``; every other variant is alone."""
    current: tuple[int | None, list[tuple[Group, int]]] = (None, [])
    for g in found:
        starts = {index.get(block_name(layer) or "") for layer in g.layers}
        start = None if None in starts else min(starts)
        variants = [(g, i) for i in range(n_results)]
        if not batchable or start is None or len(starts) > 1:
            if current[1]:
                yield current
                current = (None, [])
            yield from ((start, [v]) for v in variants)
            continue
        if current[1] and (current[0] != start or len(current[1]) + n_results > _BATCH):
            yield current
            current = (None, [])
        current = (start, current[1] + variants)
    if current[1]:
        yield current


@contextmanager
def _pruned(scratch: PruningState, result: PruneResult, layers: Sequence[PrunableLayer]) -> Iterator[None]:
    """``scratch`` with only ``layers`` pruned as ``result`` decided, reset to dense afterwards."""
    names = [layer.name for layer in layers]
    masks = {name: result.masks[name] for name in names}
    weights = {n: result.weights[n] for n in names if n in result.weights} if result.weights else {}
    PruneResult(masks=masks, weights=weights or None).apply(scratch)
    try:
        yield
    finally:
        scratch.reset(names)
