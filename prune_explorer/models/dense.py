"""A loaded dense model: its weights (never written), its prunable layers, and what sessions share.

Every browser session prunes its own :class:`prune_explorer.state.PruningState` over one ``DenseModel``; the
dense model itself stays read-only, so one session's pruning never shows in another's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prune_explorer.models.cache import SharedCache
from prune_explorer.models.layers import PrunableLayer, find_layers
from prune_explorer.models.memory import DEFAULT_CACHE_BYTES


class DenseModel:
    """A loaded dense model plus what every session can share: its layers and a :class:`SharedCache`.

    Treat it as read-only; :class:`prune_explorer.state.PruningState` is the way to change weights.

    Args:
        model: a causal LM (transformers ``PreTrainedModel`` or compatible); put in eval mode, no grad.
        tokenizer: encode/decode/token_pieces (``tokenizers.HFTokenizer`` or ``tokenizers.Llama2cTokenizer``).
        name: what the user asked for (a built-in name, a folder, a hub id).
        cache_bytes: bound on the shared cache's evictable entries.
        info: source, chat, text_set, quantized_note...
    """

    def __init__(
        self, model: nn.Module, tokenizer, name: str = "model", cache_bytes: int = DEFAULT_CACHE_BYTES, **info
    ):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.info = info
        self.layers: list[PrunableLayer] = find_layers(self.model)
        self.by_name = {layer.name: layer for layer in self.layers}
        # The dense model's structure never changes: look modules up once (a slider move asks 200+ times).
        self._modules = dict(self.model.named_modules())
        self.cache = SharedCache(cache_bytes)

    def storage(self, name: str) -> torch.Tensor:
        """The dense weight of layer ``name`` in its storage layout (read-only by convention)."""
        return self._modules[name].weight

    def num_parameters(self) -> int:
        """Parameters of the dense model, tied ones once; counted once (the dense model never changes, and
        every page run shows the number)."""
        return self.cache.get(("num_parameters",), self._count_parameters, pin=True)

    def _count_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.model.parameters()}.values())


def working_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers are the *same* tensors."""
    memo = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


def context_length(model: nn.Module, default: int = 1024) -> int:
    """The longest sequence the model takes, from its config."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return default
