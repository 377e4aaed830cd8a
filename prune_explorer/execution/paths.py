"""What sits at a module path of a session's working model: its pruned share, its CSR form, and which
layers a backend may take."""

from __future__ import annotations

from torch import nn

from prune_explorer.execution.modules import CSRLinear, out_in_weight
from prune_explorer.state import PruningState


def pruned_share(state: PruningState, path: str) -> float:
    """Share of the weights of the module now at ``path`` that the session's masks prune.

    Counted from the masks, not from zeros: a checkpoint may hold a few exact zeros of its own.
    """
    module = state.model.get_submodule(path)
    if hasattr(module, "pruned_weights"):  # a compacted layer: what its mask prunes inside the kept block
        return module.pruned_weights / max(1, out_in_weight(module).numel())
    for layer in state.dense.layers:
        if path in layer.holders:
            return state.sparsity(layer.name)
    return 0.0


def csr_for(state: PruningState, path: str) -> CSRLinear:
    """A CSR module for the module now at ``path``; q/k/v projections return row-major outputs."""
    kind = next((layer.kind for layer in state.dense.layers if path in layer.holders), "other")
    row_major = kind in ("attn_q", "attn_k", "attn_v", "attn_qkv")
    return CSRLinear.from_module(state.model.get_submodule(path), row_major_output=row_major)


def linear_layers(state: PruningState) -> tuple[list[str], dict[str, str]]:
    """Paths of the working model's prunable Linear/Conv1D modules, and notes for the ones left alone."""
    paths, notes = [], {}
    for layer in state.dense.layers:
        module = state.model.get_submodule(layer.name)
        if isinstance(module, nn.Embedding):
            if len(layer.holders) > 1:
                for holder in layer.holders[1:]:
                    notes[holder] = f"tied weight (one tensor with {layer.name}): stays on masked dense"
            continue
        if len(layer.holders) > 1:
            for holder in layer.holders:
                notes[holder] = "tied weight (one tensor under several names): stays on masked dense"
            continue
        paths.append(layer.name)
    return paths, notes
