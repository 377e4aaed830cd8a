"""Find the prunable weights of a model and name what each one does.

A prunable layer is any ``nn.Linear``, transformers ``Conv1D`` (GPT-2 stores its weight as (in, out)) or
``nn.Embedding``. Every weight is presented to the rest of the library as an (out, in) matrix, whatever its
storage, so masks and scores have one layout. Tied weights (the LM head that *is* the embedding) are one
tensor under two names: discovery reports it once and remembers every module that holds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

# Kinds a user can switch on or off as a group.
ATTENTION_KINDS = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o")
MLP_KINDS = ("mlp_gate", "mlp_up", "mlp_down")
EXTRA_KINDS = ("embedding", "lm_head")
ALL_KINDS = ATTENTION_KINDS + MLP_KINDS + ("other",) + EXTRA_KINDS
DEFAULT_KINDS = ATTENTION_KINDS + MLP_KINDS + ("other",)

_ATTENTION_NAMES = {
    "q_proj": "attn_q",
    "query": "attn_q",
    "wq": "attn_q",
    "k_proj": "attn_k",
    "key": "attn_k",
    "wk": "attn_k",
    "v_proj": "attn_v",
    "value": "attn_v",
    "wv": "attn_v",
    "o_proj": "attn_o",
    "out_proj": "attn_o",
    "wo": "attn_o",
    "dense": "attn_o",
    "c_attn": "attn_qkv",
    "qkv_proj": "attn_qkv",
    "query_key_value": "attn_qkv",
    "Wqkv": "attn_qkv",
    "c_proj": "attn_o",
}
_MLP_NAMES = {
    "gate_proj": "mlp_gate",
    "w1": "mlp_gate",
    "up_proj": "mlp_up",
    "w3": "mlp_up",
    "c_fc": "mlp_up",
    "fc1": "mlp_up",
    "fc_in": "mlp_up",
    "dense_h_to_4h": "mlp_up",
    "down_proj": "mlp_down",
    "w2": "mlp_down",
    "c_proj": "mlp_down",
    "fc2": "mlp_down",
    "fc_out": "mlp_down",
    "dense_4h_to_h": "mlp_down",
}


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable weight tensor.

    Attributes:
        name: module path of its first holder, e.g. ``model.layers.0.self_attn.q_proj``.
        kind: one of ``ALL_KINDS``.
        shape: (out, in) as seen by scores and masks.
        transposed: True where storage is (in, out) (transformers ``Conv1D``).
        holders: every module path whose ``weight`` is this same tensor (tied weights).
        block: index of the transformer block it belongs to, or -1.
    """

    name: str
    kind: str
    shape: tuple[int, int]
    transposed: bool
    holders: tuple[str, ...]
    block: int

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def weight(self, model: nn.Module) -> torch.Tensor:
        """The layer's weight in ``model`` as an (out, in) view of its storage."""
        w = model.get_submodule(self.name).weight
        return w.T if self.transposed else w


def classify(name: str, module: nn.Module, is_output: bool) -> str:
    """Say what a weight does from its module type and its place in the model."""
    if is_output:
        return "lm_head"
    if isinstance(module, nn.Embedding):
        return "embedding"
    parts = name.split(".")
    leaf = parts[-1]
    parent = ".".join(parts[:-1]).lower()
    in_attention = any(t in parent for t in ("attn", "attention"))
    in_mlp = any(t in parent for t in ("mlp", "ffn", "feed_forward", "feedforward"))
    if in_attention and leaf in _ATTENTION_NAMES:
        return _ATTENTION_NAMES[leaf]
    if in_mlp and leaf in _MLP_NAMES:
        return _MLP_NAMES[leaf]
    if leaf in _ATTENTION_NAMES and leaf not in _MLP_NAMES:
        return _ATTENTION_NAMES[leaf]
    if leaf in _MLP_NAMES and leaf not in _ATTENTION_NAMES:
        return _MLP_NAMES[leaf]
    return "other"


def _block_index(name: str) -> int:
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return -1


def find_layers(model: nn.Module) -> list[PrunableLayer]:
    """List every prunable weight of ``model`` once, in module order.

    Returns all kinds, embeddings and LM head included; use :func:`select` to filter.
    """
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    by_tensor: dict[int, list[tuple[str, nn.Module]]] = {}
    order: list[int] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, Conv1D, nn.Embedding)):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            continue
        key = id(weight)
        if key not in by_tensor:
            by_tensor[key] = []
            order.append(key)
        by_tensor[key].append((name, module))
    layers = []
    for key in order:
        holders = by_tensor[key]
        name, module = holders[0]
        is_output = output is not None and any(m is output for _, m in holders) and len(holders) == 1
        kind = classify(name, module, is_output)
        transposed = isinstance(module, Conv1D)
        rows, cols = module.weight.shape
        shape = (cols, rows) if transposed else (rows, cols)
        layers.append(
            PrunableLayer(
                name=name,
                kind=kind,
                shape=(int(shape[0]), int(shape[1])),
                transposed=transposed,
                holders=tuple(n for n, _ in holders),
                block=_block_index(name),
            )
        )
    return layers


def select(layers: Iterable[PrunableLayer], kinds: Iterable[str] = DEFAULT_KINDS) -> list[PrunableLayer]:
    """Keep the layers whose kind is in ``kinds`` (default: attention and MLP, no embeddings or LM head)."""
    wanted = set(kinds)
    unknown = wanted - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown layer kinds {sorted(unknown)}; known kinds are {list(ALL_KINDS)}")
    return [layer for layer in layers if layer.kind in wanted]


def block_name(layer: PrunableLayer) -> str | None:
    """Module path of the transformer block holding ``layer`` (the path up to its first numeric part)."""
    parts = layer.name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return None


def group_by_block(layers: Iterable[PrunableLayer]) -> list[list[PrunableLayer]]:
    """Layers grouped by transformer block, blocks in model order (layers outside blocks: one group each)."""
    groups: dict[object, list[PrunableLayer]] = {}
    for layer in layers:
        groups.setdefault(layer.block if layer.block >= 0 else layer.name, []).append(layer)
    return list(groups.values())
