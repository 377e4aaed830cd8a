"""Helpers for the recipe and export tests: bit-exact comparison of two sessions, a pruned session."""

from __future__ import annotations

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.plans.recipe import Recipe
from prune_explorer.plans.recipe_capture import recipe_from_state
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.settings import apply_settings, prune_settings
from prune_explorer.state import PruningState


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (``==`` would take -0.0 for 0.0)."""
    return a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)
    )


def assert_same_state(a: PruningState, b: PruningState) -> None:
    """Every layer of the two sessions has the same mask and the same weight bits."""
    for layer in a.dense.layers:
        assert torch.equal(a.mask(layer.name), b.mask(layer.name)), layer.name
        assert same_bits(a.weight(layer.name), b.weight(layer.name)), layer.name


def pruned(dense: DenseModel, settings=None) -> tuple[PruningState, Recipe]:
    """A session brought to ``settings`` (default: Wanda 50% on the built-in text) and its recipe."""
    settings = settings or prune_settings(MagnitudeSettings(0.5), "wanda", "unstructured")
    state = PruningState(dense)
    apply_settings(state, settings)
    return state, recipe_from_state(state, settings)
