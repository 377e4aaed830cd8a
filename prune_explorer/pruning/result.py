"""What a pruning method decided: masks, maybe new weights, and a record of how it ran."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prune_explorer.pruning.target import Target


@dataclass(frozen=True)
class PruneResult:
    """What a method decided.

    Attributes:
        masks: {layer name: bool (out, in)}, True = keep, for every selected layer (structured patterns: the
            layers of the units found, e.g. only attention layers for heads).
        weights: {layer name: float (out, in)} new weights (SparseGPT's reconstruction, zeros where pruned),
            or None when the method only masks.
        info: method, pattern, sparsity asked and obtained, per-layer sparsity, formula, variant, whether it
            ran sequentially, calibration used, messages (dampening raised, N:M tails, ignored slider),
            seconds.
    """

    masks: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] | None = None
    info: dict = field(default_factory=dict)

    def apply(self, state: Target) -> None:
        """Apply to a session's state (masks, or masks and new weights); other layers are left as they are."""
        if self.weights:
            state.apply_weights(self.weights, self.masks)
            rest = {name: m for name, m in self.masks.items() if name not in self.weights}
            if rest:
                state.apply_masks(rest)
        else:
            state.apply_masks(self.masks)
