"""Where a model's widgets start: the layer kinds it has, a prompt that suits it, a generation length that
refreshes within a slider move. Plain functions of the dense model (no session state)."""

from __future__ import annotations

from collections.abc import Sequence

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS
from prune_explorer.pruning.settings import PruneSettings

# Models up to this size are measured on every change; bigger ones wait for a button.
SMALL_MODEL = 5_000_000


def is_small(dense: DenseModel) -> bool:
    return dense.num_parameters() <= SMALL_MODEL


def default_new_tokens(dense: DenseModel) -> int:
    """A generation that refreshes within a slider move: long on tiny models, short on big ones.

    Every move regenerates the pruned text, one memory-bound pass per token (SmolLM2-135M: ~35 ms a token on
    one core of the development machine). A burst of moves on SmolLM2 settled in 845-879 ms with 12 tokens
    and 703-726 ms with 8 (browser bench, same hour); the Prune page's "New tokens" slider asks for more.
    """
    return 40 if is_small(dense) else 8


def default_prompt(dense: DenseModel) -> str:
    if dense.info.get("chat"):
        return "Write one sentence about the sea."
    if dense.info.get("text_set", "stories") == "stories":
        return "Once upon a time"
    return "The king said"


def present_kinds(dense: DenseModel, kinds: Sequence[str]) -> list[str]:
    """The kinds among ``kinds`` that the model has at least one layer of, in the given order."""
    have = {layer.kind for layer in dense.layers}
    return [k for k in kinds if k in have]


def first_settings(dense: DenseModel) -> PruneSettings:
    """The settings a new session's sidebar applies on ``dense`` before anything is moved (0%, magnitude,
    uniform, the default layer kinds): what a fresh server measures ahead of the first visitor."""
    return PruneSettings(kinds=tuple(present_kinds(dense, DEFAULT_KINDS)))
