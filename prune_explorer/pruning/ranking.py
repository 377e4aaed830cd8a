"""Precomputed weight rankings: what makes a slider move cheap.

Unstructured pruning at any sparsity removes a *prefix* of the weights sorted by score. Sorting once per model
turns every later move into arithmetic on counts: the mask for k pruned weights is "the first k of the order",
and moving from k to k' touches only the weights between them, found by a one-byte bucket per weight. Ties are
broken by flat storage index (a stable sort), so the same k always names the same weights.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer
from prune_explorer.progress import Progress
from prune_explorer.pruning import kernels

# Below these shares of a layer, a move scatters through the order instead of passing over the buckets
# (measured on SmolLM2-135M, 2 threads: a bucket pass costs about as much as zeroing 1.5% of the weights by
# scatter, or restoring 1%, which gathers from the dense weight as well).
ZERO_SCATTER_SHARE = 0.015
RESTORE_SCATTER_SHARE = 0.01
# Each layer's order is cut into this many equal slices ("buckets"); every weight carries its slice number in
# one byte. A slider move then reads one byte per weight to find what changes, instead of a four-byte rank.
BUCKETS = 256


@dataclass(frozen=True)
class LayerRanking:
    """Weights of one layer in pruning order.

    Attributes:
        order: int32 (numel,), flat *storage* indices from least to most important.
        sorted_scores: float32 (numel,), the scores in that order (ascending).
        bucket: uint8 (numel,), storage layout: which of the ``BUCKETS`` consecutive slices of the order each
            weight falls in. Bucket ``b`` holds the positions ``bounds[b] .. bounds[b + 1] - 1`` of the order,
            so "the first k of the order" is every weight of the buckets that end at or before ``k`` (one
            byte compared per weight) plus the few positions of the bucket ``k`` falls in, a short slice of
            ``order`` (see :meth:`whole_buckets` and :meth:`edges`).
        bounds: ``BUCKETS + 1`` ascending positions in the order, from 0 to numel.
    """

    order: torch.Tensor
    sorted_scores: torch.Tensor
    bucket: torch.Tensor = field(repr=False)
    bounds: tuple[int, ...] = field(repr=False)

    @property
    def numel(self) -> int:
        return int(self.order.numel())

    def threshold_for(self, k: int) -> float:
        """Largest pruned score when the first ``k`` weights are pruned (0.0 when none are)."""
        return float(self.sorted_scores[k - 1]) if k > 0 else 0.0

    def count_at_or_below(self, threshold: float) -> int:
        """How many weights have a score <= ``threshold``."""
        t = torch.tensor([threshold], dtype=self.sorted_scores.dtype)
        return int(torch.searchsorted(self.sorted_scores, t, right=True))

    def whole_buckets(self, lo: int, hi: int) -> tuple[int, int]:
        """The buckets ``b0 .. b1 - 1`` that lie wholly inside positions ``lo .. hi - 1`` of the order.

        The rest of the range, positions ``lo .. bounds[b0] - 1`` and ``bounds[b1] .. hi - 1`` (or all of it
        when ``b0 == b1``), spans at most two buckets and is reached through ``order``.
        """
        b0 = bisect_left(self.bounds, lo)
        b1 = bisect_right(self.bounds, hi) - 1
        if b1 <= b0:
            return b0, b0
        return b0, b1

    def edges(self, lo: int, hi: int) -> torch.Tensor:
        """int32 storage indices of positions ``lo .. hi - 1`` outside :meth:`whole_buckets` (see there)."""
        b0, b1 = self.whole_buckets(lo, hi)
        if b0 == b1:
            return self.order[lo:hi]
        return torch.cat((self.order[lo : self.bounds[b0]], self.order[self.bounds[b1] : hi]))

    def mask(self, k: int, storage_shape: torch.Size, out: torch.Tensor | None = None) -> torch.Tensor:
        """bool mask in storage layout, True = keep, with the first ``k`` weights of the order pruned.

        ``out``: a contiguous bool tensor of ``numel`` elements to write into (e.g. a mask kept from the
        last move), instead of a new one.
        """
        flat = out.view(-1) if out is not None else None
        keep = kernels.keep_from(self.bucket, self.whole_buckets(0, k)[1], out=flat)
        keep[self.edges(0, k)] = False
        return keep.view(storage_shape)

    def move(self, own: torch.Tensor, dense: torch.Tensor, old_k: int | None, k: int) -> None:
        """Write a layer's weights from "first ``old_k`` pruned" (None: any other state) to "first ``k``".

        ``own`` and ``dense`` are flat (numel,) storage-layout tensors; only the weights between the two cuts
        are written (zeroed, or restored from ``dense``), through the fused kernels for float32.
        """
        if own.dtype != torch.float32:  # the fused kernels are float32; other dtypes take torch ops
            torch.where(self.mask(k, own.shape), dense, torch.zeros((), dtype=own.dtype), out=own)
        elif old_k is None:
            kernels.masked_copy(dense, self.bucket, self.whole_buckets(0, k)[1], own)
            kernels.zero_at(own, self.edges(0, k))
        elif old_k < k <= old_k + ZERO_SCATTER_SHARE * self.numel:
            kernels.zero_at(own, self.order[old_k:k])
        elif old_k < k:
            kernels.zero_buckets(own, self.bucket, *self.whole_buckets(old_k, k))
            kernels.zero_at(own, self.edges(old_k, k))
        elif k >= old_k - RESTORE_SCATTER_SHARE * self.numel:
            kernels.copy_at(own, dense, self.order[k:old_k])
        else:
            kernels.restore_buckets(own, dense, self.bucket, *self.whole_buckets(k, old_k))
            kernels.copy_at(own, dense, self.edges(k, old_k))


def _bucket_bounds(n: int) -> tuple[int, ...]:
    return tuple((b * n) // BUCKETS for b in range(BUCKETS + 1))


def sort_keys(scores: torch.Tensor) -> torch.Tensor:
    """Keys that sort like ``scores`` (float32, any shape), ties as equal: for non-negative scores their
    int32 bit patterns, which torch sorts (radix) about 4x faster than floats; otherwise the floats."""
    flat = scores.detach().to(torch.float32) + 0.0  # -0.0 -> +0.0, so equal scores have equal bits
    if flat.numel() and bool(flat.min() >= 0):
        return flat.view(torch.int32)
    return flat


def rank_scores(scores: torch.Tensor) -> LayerRanking:
    """Rank a score tensor (any shape, storage layout) from least to most important, ties by index."""
    n = scores.numel()
    if n >= 2**31:
        raise ValueError(f"a layer of {n} weights is too large to rank with int32 indices")
    keys = sort_keys(scores.reshape(-1))
    flat = keys.view(torch.float32)
    order = torch.sort(keys, stable=True).indices
    bounds = _bucket_bounds(n)
    sizes = torch.tensor([bounds[b + 1] - bounds[b] for b in range(BUCKETS)])
    in_order = torch.repeat_interleave(torch.arange(BUCKETS, dtype=torch.uint8), sizes)
    bucket = torch.empty(n, dtype=torch.uint8)
    bucket[order] = in_order
    return LayerRanking(order=order.to(torch.int32), sorted_scores=flat[order], bucket=bucket, bounds=bounds)


def magnitude_ranking(weight_storage: torch.Tensor) -> LayerRanking:
    """Rank a weight by |w| (magnitude pruning, as ``torch.nn.utils.prune.l1_unstructured``)."""
    return rank_scores(weight_storage.detach().abs())


def layer_ranking(dense: DenseModel, name: str) -> LayerRanking:
    """Magnitude ranking of one layer of ``dense``, computed once per process and shared by every session
    (pinned in the dense model's cache: a slider move reads it)."""
    return dense.cache.get(("ranking", name), lambda: magnitude_ranking(dense.storage(name)), pin=True)


def layer_rankings(
    dense: DenseModel, layers: Iterable[PrunableLayer], progress: Progress = None
) -> dict[str, LayerRanking]:
    """Rankings of ``layers`` (computed where missing), reporting the share done to ``progress``."""
    layers = list(layers)
    out = {}
    for i, layer in enumerate(layers):
        out[layer.name] = layer_ranking(dense, layer.name)
        if progress:
            progress((i + 1) / len(layers))
    return out


def prefix_mask(dense: DenseModel, layer: PrunableLayer, sparsity: float) -> torch.Tensor:
    """bool (out, in) magnitude mask of one layer from its shared ranking: the ``round(sparsity · n)``
    smallest |w| go, ties by storage index (the same weights as the slider's uniform policy)."""
    storage_shape = dense.storage(layer.name).shape
    keep = layer_ranking(dense, layer.name).mask(count_for_sparsity(layer.numel, sparsity), storage_shape)
    return keep.T.contiguous() if layer.transposed else keep


def count_for_sparsity(numel: int, sparsity: float) -> int:
    """Number of weights to prune, counted like ``torch.nn.utils.prune``: round(sparsity * numel)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be between 0 and 1, got {sparsity}")
    return int(round(sparsity * numel))


def threshold_counts(
    rankings: dict[str, LayerRanking], layers: Sequence[PrunableLayer], threshold: float
) -> dict[str, int]:
    """Prune every weight with score <= ``threshold`` in every layer (one cut-off for all layers)."""
    if threshold < 0:
        raise ValueError(f"a |w| threshold cannot be negative, got {threshold}")
    top = max((float(rankings[layer.name].sorted_scores[-1]) for layer in layers), default=0.0)
    if threshold > top:
        raise ValueError(
            f"threshold {threshold:.6g} is above the largest |w| of the selected layers ({top:.6g})"
        )
    return {layer.name: rankings[layer.name].count_at_or_below(threshold) for layer in layers}


class GlobalRanking:
    """All selected layers' scores in one ascending array, for the global-threshold policy.

    Built once per (model, layer selection); each move then costs one index lookup and a
    binary search per layer.
    """

    def __init__(self, rankings: dict[str, LayerRanking], layers: Sequence[PrunableLayer]):
        self.names = [layer.name for layer in layers]
        self._rankings = rankings
        if self.names:
            merged = torch.cat([rankings[n].sorted_scores for n in self.names])
            self.sorted_scores = torch.sort(sort_keys(merged)).values.view(torch.float32)
        else:
            self.sorted_scores = torch.empty(0)

    @property
    def numel(self) -> int:
        return int(self.sorted_scores.numel())

    def counts(self, sparsity: float) -> dict[str, int]:
        """Per-layer counts that prune the ``round(sparsity * total)`` smallest scores of all layers together.

        Weights tied at the cut-off are taken in layer order, then by index, so the total is exact.
        """
        total = count_for_sparsity(self.numel, sparsity)
        if total == 0:
            return {n: 0 for n in self.names}
        cut = float(self.sorted_scores[total - 1])
        t = torch.tensor([cut], dtype=self.sorted_scores.dtype)
        counts, ties = {}, {}
        for n in self.names:
            s = self._rankings[n].sorted_scores
            below = int(torch.searchsorted(s, t, right=False))
            counts[n] = below
            ties[n] = int(torch.searchsorted(s, t, right=True)) - below
        remaining = total - sum(counts.values())
        for n in self.names:
            take = min(ties[n], remaining)
            counts[n] += take
            remaining -= take
        return counts
