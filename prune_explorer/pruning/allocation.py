"""Per-layer sparsity allocation: how to share one average sparsity among layers.

Every allocation returns ``{layer name: sparsity}`` for ``prune_masks(..., layer_sparsity=...)``, whose
*parameter-weighted* average over the selected layers equals the target, so the share of weights pruned is
the one asked whatever the layers' sizes:

    ``uniform``: the target in every layer.
    ``owl``: OWL, "Outlier Weighed Layerwise sparsity" (Yin et al. 2024): blocks whose Wanda scores
        |W_ij|·‖X_j‖₂ hold more outliers (scores above M × the block's mean) are pruned less; sparsities span
        target ± λ.
    ``budget``: the least total damage predicted by measured per-layer damage curves (a sensitivity run);
        the solver is :mod:`prune_explorer.pruning.budget`, re-exported here.

The maths (:func:`owl_sparsities`, :func:`fit_to_target`) takes numbers; :func:`owl` wires it to a model's
block outlier ratios (:mod:`prune_explorer.pruning.outliers`, from its calibration statistics). A
:class:`Basis` holds what does not change as the target moves (OWL's block ratios, the budget's curves, the
layer sizes), so one average-sparsity slider redistributes by arithmetic alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer, group_by_block
from prune_explorer.progress import Progress
from prune_explorer.pruning.budget import budget, predicted_damage
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.outliers import OWL_M, cached_outlier_ratios, outlier_ratios

__all__ = [
    "ALLOCATIONS",
    "Basis",
    "average_sparsity",
    "budget",
    "budget_basis",
    "fit_to_target",
    "layer_sizes",
    "owl",
    "owl_basis",
    "owl_sparsities",
    "predicted_damage",
    "uniform",
]

ALLOCATIONS = ("uniform", "owl", "budget")
OWL_LAMBDA = 0.08
OWL_LAMBDA_MAX = 0.5  # sparsities span target ± λ: beyond 0.5 that is more than the whole of [0, 1]
_BISECTIONS = 200


def check_target(target: float) -> None:
    """Raise ValueError unless the target average sparsity is in [0, 1]."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"the target average sparsity must be between 0 and 1, got {target}")


def layer_sizes(layers: Sequence[PrunableLayer]) -> dict[str, int]:
    """{layer name: weights in it}: the weights of a parameter-weighted average."""
    return {layer.name: layer.numel for layer in layers}


def average_sparsity(allocation: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """Parameter-weighted average Σ n_l s_l / Σ n_l: the share of all the allocation's layers' weights pruned.

    Raises:
        ValueError: a layer of ``allocation`` has no size.
    """
    missing = [name for name in allocation if name not in sizes]
    if missing:
        raise ValueError(f"no size given for layer {missing[0]!r}")
    total = sum(sizes[name] for name in allocation)
    return sum(s * sizes[name] for name, s in allocation.items()) / total if total else 0.0


def uniform(layers: Sequence[PrunableLayer], target: float) -> dict[str, float]:
    """The same sparsity ``target`` in every layer (comparison group: each layer)."""
    check_target(target)
    return {layer.name: float(target) for layer in layers}


def fit_to_target(values: Mapping[str, float], sizes: Mapping[str, int], target: float) -> dict[str, float]:
    """Shift every value by one constant, clipped to [0, 1], so the parameter-weighted average is ``target``.

    Without clipping this is ``v + (target − average(v))`` (OWL's mean-centring, weighted by size); where a
    value would leave [0, 1] the shift is found by bisection, so the average is still exact.

    Raises:
        ValueError: target outside [0, 1], or a layer without a positive size.
    """
    check_target(target)
    if any(sizes.get(name, 0) <= 0 for name in values):
        bad = next(name for name in values if sizes.get(name, 0) <= 0)
        raise ValueError(f"layer {bad!r} needs a positive size to be weighted")
    shift = target - average_sparsity(values, sizes)
    if all(0.0 <= v + shift <= 1.0 for v in values.values()):
        return {name: min(1.0, max(0.0, v + shift)) for name, v in values.items()}
    lo, hi = -max(values.values()), 1.0 - min(values.values())
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        fitted = {name: min(1.0, max(0.0, v + mid)) for name, v in values.items()}
        if average_sparsity(fitted, sizes) < target:
            lo = mid
        else:
            hi = mid
    return {name: min(1.0, max(0.0, v + hi)) for name, v in values.items()}


def owl_sparsities(
    ratios: Sequence[float], sizes: Sequence[int], target: float, lam: float = OWL_LAMBDA
) -> list[float]:
    """OWL's sparsities from the blocks' outlier ratios (Yin et al. 2024, eq. 2 and the authors' code).

    Ratios are min-max normalised to u in [0, 1]; a block gets ``target + λ − 2λu`` (the most outliers
    target − λ, the fewest target + λ), then every value is shifted so the size-weighted average is the
    target (:func:`fit_to_target`; the reference code centres on the plain mean: its blocks are all one size).
    Equal ratios give the uniform allocation.

    Raises:
        ValueError: target outside [0, 1], λ negative, or lengths that differ.
    """
    check_target(target)
    if lam < 0:
        raise ValueError(f"OWL's λ must be at least 0, got {lam}")
    if len(ratios) != len(sizes):
        raise ValueError(f"{len(ratios)} outlier ratios for {len(sizes)} block sizes")
    lo, hi = min(ratios, default=0.0), max(ratios, default=0.0)
    if hi <= lo:
        return [float(target)] * len(ratios)
    raw = {str(i): target + lam - 2 * lam * (r - lo) / (hi - lo) for i, r in enumerate(ratios)}
    fitted = fit_to_target(raw, {str(i): n for i, n in enumerate(sizes)}, target)
    return [fitted[str(i)] for i in range(len(ratios))]


def owl(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    calibration: CalibrationBatch | str | None,
    target: float,
    m: float = OWL_M,
    lam: float = OWL_LAMBDA,
    progress: Progress = None,
) -> dict[str, float]:
    """OWL allocation (Yin et al. 2024): per block (decoder layer), sparsity ``target ± λ`` by its outlier
    ratio, fewer outliers pruned more; every layer of a block gets the block's sparsity.

    Deviation, on purpose: the average is weighted by parameter count (the reference code's plain mean over
    blocks is the same when all blocks have one size), and values are kept in [0, 1] (:func:`fit_to_target`),
    so the share of weights pruned is exactly the target.

    Args:
        dense: the model (its weights and calibration statistics are read, never written).
        layers: the selected layers (no embeddings).
        calibration: a batch, a text, or None for the model's built-in calibration text.
        target: the average sparsity, in [0, 1].
        m: outlier threshold, in multiples of the block's mean score (paper default 5).
        lam: half the spread of sparsities around the target (paper default 0.08).
    Returns:
        {layer name: sparsity} whose parameter-weighted average is ``target``.
    Raises:
        ValueError: target outside [0, 1], M not positive, λ negative, an embedding among ``layers``.
    """
    check_target(target)
    if lam < 0:
        raise ValueError(f"OWL's λ must be at least 0, got {lam}")
    return owl_basis(dense, layers, calibration, m, progress).shares(target, lam=lam)


@dataclass(frozen=True)
class Basis:
    """What an allocation shares a target by, fixed for one model, layer selection and calibration: a move of
    the target then costs arithmetic on a few numbers per layer (no statistics, no sort).

    Attributes:
        name: "owl" or "budget".
        layers: the layer names, in model order.
        sizes: each layer's weights (the average is weighted by them).
        blocks: OWL: each layer's block index (its position in ``ratios``).
        ratios: OWL: each block's outlier ratio (:func:`.outliers.outlier_ratios`).
        curves: budget: each layer's damage curve, ((sparsity, damage), ...).
    """

    name: str
    layers: tuple[str, ...]
    sizes: tuple[int, ...]
    blocks: tuple[int, ...] = ()
    ratios: tuple[float, ...] = ()
    curves: tuple[tuple[tuple[float, float], ...], ...] = ()

    def shares(
        self, target: float, lam: float = OWL_LAMBDA, bounds: tuple[float, float] | None = None
    ) -> dict[str, float]:
        """{layer name: sparsity} whose parameter-weighted average is ``target``.

        Args:
            lam: OWL's λ (ignored by the budget).
            bounds: the budget's (lowest, highest) per-layer sparsity, or None (ignored by OWL).
        Raises:
            ValueError: target outside [0, 1], λ negative, or a target the budget's curves cannot reach.
        """
        check_target(target)
        if self.name == "owl":
            block_sizes = [0] * len(self.ratios)
            for block, size in zip(self.blocks, self.sizes, strict=True):
                block_sizes[block] += size
            per_block = owl_sparsities(self.ratios, block_sizes, target, lam)
            return {name: per_block[b] for name, b in zip(self.layers, self.blocks, strict=True)}
        curves = dict(zip(self.layers, self.curves, strict=True))
        return budget(curves, target, dict(zip(self.layers, self.sizes, strict=True)), bounds=bounds)


def owl_basis(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    calibration: CalibrationBatch | str | None,
    m: float = OWL_M,
    progress: Progress = None,
) -> Basis:
    """OWL's :class:`Basis`: the blocks' outlier ratios (computed once per model, layers, calibration and M:
    :func:`.outliers.outlier_ratios`) and the layer sizes.

    Raises:
        ValueError: as :func:`.outliers.outlier_ratios`.
    """
    layers = list(layers)
    ratios = outlier_ratios(dense, layers, calibration, m, progress)
    blocks = group_by_block(layers)
    index = {layer.name: b for b, block in enumerate(blocks) for layer in block}
    return Basis(
        name="owl",
        layers=tuple(layer.name for layer in layers),
        sizes=tuple(layer.numel for layer in layers),
        blocks=tuple(index[layer.name] for layer in layers),
        ratios=tuple(ratios[block[0].name] for block in blocks),
    )


def cached_owl_basis(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    calibration: CalibrationBatch | str | None,
    m: float = OWL_M,
) -> Basis | None:
    """:func:`owl_basis` if its outlier ratios are computed already (by any caller), else None: nothing is
    computed (a caller can then compute them in the background: a calibration pass on a big model)."""
    layers = list(layers)
    if cached_outlier_ratios(dense, layers, calibration, m) is None:
        return None
    return owl_basis(dense, layers, calibration, m)


def budget_basis(
    layers: Sequence[PrunableLayer], curves: Mapping[str, Sequence[tuple[float, float]]]
) -> Basis:
    """The budget's :class:`Basis` over ``layers`` from damage curves by layer name (e.g. a sensitivity run's
    KL per layer, ``Sensitivity.curves()``).

    Raises:
        ValueError: a layer without a curve (named, with how many lack one).
    """
    missing = [layer.name for layer in layers if layer.name not in curves]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(f"no damage curve for layer {missing[0]!r}{more}")
    return Basis(
        name="budget",
        layers=tuple(layer.name for layer in layers),
        sizes=tuple(layer.numel for layer in layers),
        curves=tuple(tuple((float(s), float(d)) for s, d in curves[layer.name]) for layer in layers),
    )
