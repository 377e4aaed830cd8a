"""The interface every pruning method offers, and the job it is given.

A method is one module in :mod:`prune_explorer.pruning.methods` exposing a :class:`Method`: what it
needs (calibration or not), what it does (masks only, or new weights too), the patterns it supports, its
formula and paper variant, and one function that decides the masks for a :class:`PruneJob`.
``prune_masks`` looks the method up in the registry (``pruning.methods.METHODS``) and builds the job;
adding a method is one new file and one registry line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.patterns import Pattern
from prune_explorer.pruning.units import UnitGroup

# What a method decides: {name: bool (out, in) mask, True = keep}, and new weights {name: float (out, in)} or
# None when it only masks.
Decision = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]


@dataclass
class PruneJob:
    """Everything a method needs to decide: the dense model, the selected layers and the settings.

    Attributes:
        calibration: the batch for calibrated methods, else None.
        sequential: prune block by block on the already-pruned earlier blocks (calibrated methods only).
        seed: base seed of random choices (per layer: seed + the layer's index in the model).
        options: method-specific settings (SparseGPT's ``blocksize``, ``percdamp``).
        messages: notes for the user a method adds while it runs (dampening raised, ...).
        layer_sparsity: {layer name: its own sparsity}; layers not named take ``sparsity``
            (see :meth:`sparsity_for`).
    """

    dense: DenseModel
    layers: Sequence[PrunableLayer]
    pattern: Pattern
    sparsity: float
    calibration: CalibrationBatch | None = None
    sequential: bool = False
    seed: int = 0
    options: dict = field(default_factory=dict)
    progress: Progress = None
    messages: list[str] = field(default_factory=list)
    layer_sparsity: Mapping[str, float] = field(default_factory=dict)

    def sparsity_for(self, layer: PrunableLayer | str) -> float:
        """The share to prune in ``layer``: its own entry in ``layer_sparsity``, else ``sparsity``."""
        name = layer if isinstance(layer, str) else layer.name
        return float(self.layer_sparsity.get(name, self.sparsity))

    def group_sparsity(self, group: UnitGroup) -> float:
        """One sparsity for a block's units, which span several layers (gate/up/down, q/k/v/o).

        The layers' own value when they share one (so a mapping equal to the uniform value changes nothing),
        else their parameter-weighted mean: the block then loses about the share of weights its layers were
        given together (units cannot leave one of their layers without the others).
        """
        names = [name for name in group.layer_names if name in self.dense.by_name]
        values = [self.sparsity_for(name) for name in names]
        if len(set(values)) <= 1:
            return values[0] if values else self.sparsity
        sizes = [self.dense.by_name[name].numel for name in names]
        return sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)

    def layer_seed(self, layer: PrunableLayer) -> int:
        return self.seed + next(i for i, other in enumerate(self.dense.layers) if other.name == layer.name)


@dataclass(frozen=True)
class Method:
    """One pruning method.

    Attributes:
        name: registry key ("wanda").
        label: what people call it ("Wanda").
        calibrated: needs calibration activations.
        updates_weights: changes kept weights (its decision carries new weights), not only masks.
        patterns: pattern kinds it supports (``patterns.PATTERN_KINDS``).
        formula: LaTeX of its score (unstructured / N:M); ``unit_formula`` for whole units, if supported.
        variant: which paper variant runs (one-shot); ``sequential_variant`` when run block by block,
            ``unit_variant`` for whole units.
        sequential_default: whether it runs block by block unless told otherwise (as its paper does).
        decide: the masks (and new weights) for a job.
    """

    name: str
    label: str
    calibrated: bool
    updates_weights: bool
    patterns: tuple[str, ...]
    formula: str
    variant: str
    decide: Callable[[PruneJob], Decision]
    unit_formula: str = ""
    unit_variant: str = ""
    sequential_variant: str = ""
    sequential_default: bool = False

    @property
    def offers_sequential(self) -> bool:
        return bool(self.sequential_variant)

    def formula_for(self, pattern: Pattern) -> str:
        return self.unit_formula if pattern.structured else self.formula

    def variant_for(self, pattern: Pattern, sequential: bool = False) -> str:
        if pattern.structured:
            return self.unit_variant
        return self.sequential_variant if sequential and self.sequential_variant else self.variant
