"""Magnitude-pruning settings, as a user picks them, turned into per-layer counts and applied to a state.

Policies:
    ``uniform``: the same sparsity in every selected layer (comparison group: each layer).
    ``global``: one |w| cut-off across all selected layers, placed so the overall sparsity is as asked
        (comparison group: the selected layers together; layers end with different sparsities).
    ``threshold``: prune every weight with |w| <= a typed threshold in every selected layer.
Under ``uniform``, settings that carry an allocation's ``layer_sparsity`` (``pruning.settings.PruneSettings``)
give each layer its own share instead. Per-layer overrides then set chosen layers to their own sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS, PrunableLayer, select
from prune_explorer.pruning.ranking import (
    GlobalRanking,
    count_for_sparsity,
    layer_rankings,
    threshold_counts,
)
from prune_explorer.pruning.target import Target

POLICIES = ("uniform", "global", "threshold")


@dataclass(frozen=True)
class MagnitudeSettings:
    """What to prune: ``sparsity`` in [0, 1]; ``threshold`` in |w| units (for the ``threshold`` policy)."""

    sparsity: float = 0.0
    policy: str = "uniform"
    threshold: float = 0.0
    kinds: tuple[str, ...] = DEFAULT_KINDS
    overrides: dict[str, float] = field(default_factory=dict)

    def validate(self, dense: DenseModel) -> None:
        """Raise ValueError with a user-facing message for any field out of range."""
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {POLICIES}")
        if not 0.0 <= self.sparsity <= 1.0:
            raise ValueError(f"sparsity must be between 0 and 1, got {self.sparsity}")
        for name, s in self.overrides.items():
            if name not in dense.by_name:
                raise ValueError(f"override names no prunable layer: {name!r}")
            if not 0.0 <= s <= 1.0:
                raise ValueError(f"override sparsity for {name} must be between 0 and 1, got {s}")
        select([], self.kinds)  # checks the kind names


def selected_layers(dense: DenseModel, kinds: tuple[str, ...]) -> list[PrunableLayer]:
    return select(dense.layers, kinds)


def global_ranking(dense: DenseModel, layers: list[PrunableLayer]) -> GlobalRanking:
    """The merged ranking of ``layers``, built once per model and selection."""
    key = ("global_ranking", tuple(layer.name for layer in layers))
    return dense.cache.get(key, lambda: GlobalRanking(layer_rankings(dense, layers), layers))


def magnitude_counts(dense: DenseModel, settings: MagnitudeSettings) -> dict[str, int]:
    """How many weights to prune in every prunable layer (0 for layers not selected)."""
    settings.validate(dense)
    layers = selected_layers(dense, settings.kinds)
    if settings.policy == "uniform":  # counts from sizes alone: a fresh model at 0% waits for no ranking
        shares = getattr(settings, "layer_sparsity", None) or {}  # an allocation's (pruning.settings)
        counts = {
            layer.name: count_for_sparsity(layer.numel, shares.get(layer.name, settings.sparsity))
            for layer in layers
        }
    elif settings.policy == "global":
        counts = global_ranking(dense, layers).counts(settings.sparsity)
    else:
        counts = threshold_counts(layer_rankings(dense, layers), layers, settings.threshold)
    for name, s in settings.overrides.items():
        counts[name] = count_for_sparsity(dense.by_name[name].numel, s)
    return {layer.name: counts.get(layer.name, 0) for layer in dense.layers}


def apply_magnitude(state: Target, settings: MagnitudeSettings) -> dict[str, int]:
    """Bring ``state`` to ``settings`` (only the weights that change are touched); returns the counts."""
    counts = magnitude_counts(state.dense, settings)
    state.apply_counts(counts)
    return counts
