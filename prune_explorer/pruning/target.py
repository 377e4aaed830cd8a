"""What pruning writes into: the interface a session's state offers (``prune_explorer.state.PruningState``).

The pruning package decides masks; it never imports the state that applies them, so the arrows between the
library's rooms run one way (state -> pruning -> models).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch

from prune_explorer.models.dense import DenseModel


class Target(Protocol):
    """A session's pruning over a shared dense model; every method validates before it writes."""

    dense: DenseModel

    def apply_counts(self, counts: dict[str, int]) -> None: ...

    def apply_masks(self, masks: dict[str, torch.Tensor]) -> None: ...

    def apply_weights(self, weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None: ...

    def reset(self, names: Iterable[str] | None = None) -> None: ...
