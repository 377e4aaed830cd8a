"""What a pruned model must compute and read: FLOPs of a phase and weight bytes of one decode step, counted
on the modules that run now (masked dense, CSR, compacted), for the ideal and memory-bound reference lines.

ideal (FLOPs)   dense time × kept FLOPs / dense FLOPs: what skipping every pruned multiply would give.
memory-bound    dense time × bytes read / dense bytes: one-token decoding mostly streams weights from memory,
                and CSR reads 8 bytes per kept weight (value + int32 index) against 4 for dense, so it cannot
                beat dense below 50% sparsity however good the kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from prune_explorer.execution.modules import (
    AutoLinear,
    CSRLinear,
    SemiStructuredLinear,
    TokenFastest,
    csr_bytes,
    out_in_weight,
)
from prune_explorer.models.dense import DenseModel
from prune_explorer.pruning.units import UnitGroup, model_unit_groups


@dataclass(frozen=True)
class Phase:
    """One phase to time: ``prefill`` (``tokens`` tokens, logits for the last one, as generate does) or
    ``decode`` (one new token after a cache of ``tokens`` tokens)."""

    name: str
    tokens: int


PREFILL = Phase("prefill", 128)
DECODE = Phase("decode", 128)


def kept_weights(module: nn.Module, memo: dict[int, int] | None = None) -> int:
    """Weights a kernel that skips zeros would multiply: the nonzeros of a Linear/Conv1D, a CSR's values."""
    if memo is not None:
        if id(module) not in memo:
            memo[id(module)] = kept_weights(module)
        return memo[id(module)]
    if isinstance(module, AutoLinear):
        module = module.csr
    if isinstance(module, CSRLinear):
        return module.kept
    return int(torch.count_nonzero(out_in_weight(module)))


def _out_features(module: nn.Module) -> int:
    if isinstance(module, (CSRLinear, AutoLinear, SemiStructuredLinear)):
        return module.csr.out_features if isinstance(module, AutoLinear) else module.out_features
    return int(out_in_weight(module).shape[0])


def _in_features(module: nn.Module) -> int:
    if isinstance(module, (CSRLinear, AutoLinear, SemiStructuredLinear)):
        return module.in_features
    return int(out_in_weight(module).shape[1])


def _linear_holders(dense: DenseModel, model: nn.Module) -> Iterator[tuple[str, nn.Module, bool]]:
    """(path, module, is_output_head) for every weight-holding matrix multiply of ``model``."""
    output = dense.model.get_output_embeddings() if hasattr(dense.model, "get_output_embeddings") else None
    for layer in dense.layers:
        for holder in layer.holders:
            is_head = output is not None and dense.model.get_submodule(holder) is output
            module = model.get_submodule(holder)
            if not isinstance(module, (nn.Embedding, TokenFastest)):
                yield holder, module, is_head


def _attention_groups(dense: DenseModel) -> list[UnitGroup]:
    try:
        return model_unit_groups(dense, dense.layers, "heads")
    except ValueError:  # no head count, or a layout the unit model cannot read: no attention FLOPs counted
        return []


def model_flops(
    dense: DenseModel,
    model: nn.Module,
    phase: Phase,
    skip_zeros: bool = True,
    kept: dict[int, int] | None = None,
) -> float:
    """FLOPs of one phase: matrix multiplies (LM head for one position), and causal attention.

    Args:
        skip_zeros: count only kept weights (the ideal a sparse kernel could reach); False: every weight.
        kept: memo of kept-weight counts by module id, shared between calls on the same model.
    """
    rows = phase.tokens if phase.name == "prefill" else 1
    total = 0.0
    for _, module, is_head in _linear_holders(dense, model):
        weights = kept_weights(module, kept) if skip_zeros else _out_features(module) * _in_features(module)
        total += 2.0 * weights * (1 if is_head else rows)
    keys = phase.tokens * (phase.tokens + 1) / 2 if phase.name == "prefill" else phase.tokens + 1
    for g in _attention_groups(dense):
        width = _out_features(model.get_submodule(g.row_layers[0])) // (3 if g.fused_qkv else 1)
        total += 2.0 * 2.0 * width * keys  # q·k and p·v per (query, key) pair
    return total


def streamed_bytes(dense: DenseModel, model: nn.Module, kept: dict[int, int] | None = None) -> int:
    """float32 weight bytes one decode step reads, as ``model`` runs: CSR layers as CSR, the rest dense.

    An auto layer counts the smaller of its two forms (decoding takes CSR only where that is faster).
    """
    total = 0
    for _, module, _ in _linear_holders(dense, model):
        size = 4 * _out_features(module) * _in_features(module)
        if isinstance(module, (CSRLinear, AutoLinear)):
            csr = csr_bytes(kept_weights(module, kept), _out_features(module))
            size = csr if isinstance(module, CSRLinear) else min(size, csr)
        total += size
    return total
