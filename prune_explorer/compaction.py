"""Structured compaction: cut out the MLP neurons and attention heads that contribute nothing.

A neuron or head whose every outgoing weight is pruned adds exactly zero, so removing it (and the weights that
only feed it) gives the same outputs from physically smaller dense matrices, which run in proportionally less
time. Units are removed consistently across the layers that share them:

MLP (comparison group: the neurons of one block):
    neuron j goes if column j of down is pruned, or row j of up is pruned (no bias), or row j of gate is
    pruned (no bias, act(0) = 0); gate/up lose row j, down loses column j.
Attention (comparison group: the heads of one block):
    query head h goes if its o columns are pruned, or the v rows of its key/value head are (no bias); a
    key/value head goes when all its query heads do. With grouped KV heads every kept KV head must keep
    the same number of query heads, so groups with fewer survivors keep some zero-output heads to match.
    q/k/v lose the head's rows, o its columns; ``num_key_value_groups`` (Llama) or ``split_size`` and
    ``num_heads`` (GPT-2's fused c_attn) are updated on the session's attention module.

The new modules are installed through :mod:`prune_explorer.backends`, so ``backends.restore`` undoes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prune_explorer.backends import out_in_weight, replace_module, set_attribute
from prune_explorer.layers import classify
from prune_explorer.ranking import count_for_sparsity
from prune_explorer.state import DenseModel, PruningState


@dataclass(frozen=True)
class MLPGroup:
    parent: str
    up: str
    down: str
    gate: str | None = None


@dataclass(frozen=True)
class AttentionGroup:
    parent: str
    o: str
    head_dim: int
    num_heads: int
    num_kv_heads: int
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None  # fused q/k/v rows, as GPT-2's c_attn


def find_groups(dense: DenseModel) -> tuple[list[MLPGroup], list[AttentionGroup], dict[str, str]]:
    """MLP and attention groups of ``dense``, and a note per layer of a group that cannot be compacted."""
    holder_layer = {h: layer for layer in dense.layers for h in layer.holders}
    by_parent: dict[str, dict[str, str]] = {}
    for holder, layer in holder_layer.items():
        kind = (
            layer.kind if holder == layer.name else classify(holder, dense.model.get_submodule(holder), False)
        )
        by_parent.setdefault(holder.rpartition(".")[0], {})[kind] = holder
    mlps, attns, notes = [], [], {}
    for parent, kinds in by_parent.items():
        names = list(kinds.values())
        if "mlp_up" in kinds and "mlp_down" in kinds:
            group = MLPGroup(parent, kinds["mlp_up"], kinds["mlp_down"], kinds.get("mlp_gate"))
        elif "attn_o" in kinds and ("attn_qkv" in kinds or {"attn_q", "attn_k", "attn_v"} <= kinds.keys()):
            module = dense.model.get_submodule(parent)
            hd = getattr(module, "head_dim", None)
            if not isinstance(hd, int) or ("attn_qkv" in kinds and not hasattr(module, "split_size")):
                for name in names:
                    notes[name] = f"cannot compact: {type(module).__name__} does not say its head layout"
                continue
            if "attn_qkv" in kinds:
                heads = holder_layer[kinds["attn_qkv"]].shape[0] // (3 * hd)
                group = AttentionGroup(parent, kinds["attn_o"], hd, heads, heads, qkv=kinds["attn_qkv"])
            else:
                heads = holder_layer[kinds["attn_q"]].shape[0] // hd
                kv = holder_layer[kinds["attn_k"]].shape[0] // hd
                group = AttentionGroup(
                    parent, kinds["attn_o"], hd, heads, kv, kinds["attn_q"], kinds["attn_k"], kinds["attn_v"]
                )
        else:
            continue
        members = [n for n in vars(group).values() if isinstance(n, str) and n != parent]
        bad = [n for n in members if len(holder_layer[n].holders) > 1]
        if bad:
            for name in members:
                notes[name] = f"cannot compact: {bad[0]} is a shared (tied) weight; stays on masked dense"
            continue
        (mlps if isinstance(group, MLPGroup) else attns).append(group)
    return mlps, attns, notes


def _dead_rows(state: PruningState, name: str, rows: slice | None = None) -> torch.Tensor:
    """bool (rows,): the output rows of ``name`` whose weights are all pruned and whose bias is zero."""
    mask = state.mask(name)
    bias = state.model.get_submodule(name).bias
    dead = ~mask.any(1)
    if bias is not None:
        dead &= bias.detach().cpu() == 0
    return dead if rows is None else dead[rows]


def _act_zero_at_zero(module: nn.Module) -> bool:
    act = getattr(module, "act_fn", None) or getattr(module, "act", None)
    if act is None:
        return False
    with torch.no_grad():
        return bool(act(torch.zeros(1)) == 0)


def removable_neurons(state: PruningState, group: MLPGroup) -> torch.Tensor:
    """bool (intermediate,): MLP neurons that add exactly zero under the state's masks."""
    dead = ~state.mask(group.down).any(0)
    parent = state.model.get_submodule(group.parent)
    if group.gate is not None:
        dead |= _dead_rows(state, group.up)
        if _act_zero_at_zero(parent):
            dead |= _dead_rows(state, group.gate)
    elif _act_zero_at_zero(parent):
        dead |= _dead_rows(state, group.up)
    return dead


def removable_heads(state: PruningState, g: AttentionGroup) -> torch.Tensor:
    """bool (num_heads,): query heads that add exactly zero under the state's masks."""
    o_mask = state.mask(g.o)
    dead = ~o_mask.reshape(o_mask.shape[0], g.num_heads, g.head_dim).any(0).any(-1)
    width = g.num_kv_heads * g.head_dim
    v_rows = _dead_rows(state, g.qkv, slice(2 * width, 3 * width)) if g.qkv else _dead_rows(state, g.v)
    v_dead = v_rows.view(g.num_kv_heads, g.head_dim).all(-1)
    return dead | v_dead.repeat_interleave(g.num_heads // g.num_kv_heads)


def sliced(
    module: nn.Module,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> nn.Module:
    """A new Linear/Conv1D holding the given (out, in) rows and columns of ``module``'s weight (copies).

    With the layer's bool (out, in) ``mask``, the new module's ``pruned_weights`` counts the pruned weights
    left inside the kept block.
    """
    w = out_in_weight(module).detach()
    w = w if rows is None else w[rows]
    w = w if cols is None else w[:, cols]
    bias = module.bias
    if bias is not None:
        bias = (bias.detach() if rows is None else bias.detach()[rows]).clone()
    out_f, in_f = (int(s) for s in w.shape)
    if isinstance(module, Conv1D):
        new: nn.Module = Conv1D(out_f, in_f)
        new.weight = nn.Parameter(w.T.contiguous(), requires_grad=False)
    else:
        new = nn.Linear(in_f, out_f, bias=bias is not None, device="meta")
        new.weight = nn.Parameter(w.contiguous(), requires_grad=False)
    new.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
    if mask is not None:
        mask = mask if rows is None else mask[rows]
        new.pruned_weights = int((~(mask if cols is None else mask[:, cols])).sum())
    return new


def _install(
    state: PruningState,
    path: str,
    label: str,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
) -> None:
    module = sliced(state.model.get_submodule(path), rows, cols, state.mask(path))
    module.kernel_label = label
    replace_module(state, path, module)


def _set(state: PruningState, module: nn.Module, attr: str, value: int) -> None:
    if hasattr(module, attr):
        set_attribute(state, module, attr, value)


def _compact_mlp(state: PruningState, g: MLPGroup) -> str | None:
    dead = removable_neurons(state, g)
    n = dead.numel()
    if not dead.any():
        return None
    keep = ~dead
    if not keep.any():  # a zero-width layer breaks some kernels; one dead neuron still adds zero
        keep[0] = True
    idx = keep.nonzero().view(-1)
    k = idx.numel()
    for name in (g.up, g.gate):
        if name:
            _install(state, name, f"compacted dense {n}→{k} rows", rows=idx)
    _install(state, g.down, f"compacted dense {n}→{k} columns", cols=idx)
    _set(state, state.model.get_submodule(g.parent), "intermediate_size", k)
    return f"compacted: {n - k} of {n} MLP neurons removed"


def _kept_heads(dead: torch.Tensor, num_kv: int) -> tuple[list[int], list[int]]:
    """Query heads and KV heads to keep, with an equal number of query heads per kept KV head."""
    per_kv = dead.view(num_kv, -1)
    kv_keep = [g for g in range(num_kv) if not bool(per_kv[g].all())] or [0]
    q_per = max(int((~per_kv[g]).sum()) for g in kv_keep) or 1
    heads = []
    for g in kv_keep:
        order = sorted(range(per_kv.shape[1]), key=lambda h: (bool(per_kv[g, h]), h))  # alive first
        heads += sorted(g * per_kv.shape[1] + h for h in order[:q_per])
    return heads, kv_keep


def _rows(heads: list[int], hd: int, offset: int = 0) -> torch.Tensor:
    return torch.cat([torch.arange(offset + h * hd, offset + (h + 1) * hd) for h in heads])


def _compact_attention(state: PruningState, g: AttentionGroup) -> str | None:
    dead = removable_heads(state, g)
    heads, kv_keep = _kept_heads(dead, g.num_kv_heads)
    if len(heads) == g.num_heads:
        return None
    hd, parent = g.head_dim, state.model.get_submodule(g.parent)
    q_rows = _rows(heads, hd)
    label = f"compacted dense {g.num_heads}→{len(heads)} heads"
    if g.qkv:
        width = g.num_heads * hd
        rows = torch.cat([q_rows, q_rows + width, q_rows + 2 * width])
        _install(state, g.qkv, label, rows=rows)
        _set(state, parent, "split_size", len(heads) * hd)
    else:
        kv_rows = _rows(kv_keep, hd)
        for name, rows in ((g.q, q_rows), (g.k, kv_rows), (g.v, kv_rows)):
            _install(state, name, label, rows=rows)
        _set(state, parent, "num_key_value_groups", len(heads) // len(kv_keep))
        _set(state, parent, "num_key_value_heads", len(kv_keep))
    _set(state, parent, "num_heads", len(heads))
    _install(state, g.o, label, cols=q_rows)
    return (
        f"compacted: {g.num_heads - len(heads)} of {g.num_heads} heads removed ({len(kv_keep)} KV heads kept)"
    )


def compact(state: PruningState) -> dict[str, str]:
    """Swap smaller dense layers into the session's working model wherever whole units are pruned.

    Returns:
        A note per affected layer: what was removed, or why its group cannot be compacted.
    """
    mlps, attns, notes = find_groups(state.dense)
    for group in [*mlps, *attns]:
        note = _compact_mlp(state, group) if isinstance(group, MLPGroup) else _compact_attention(state, group)
        if note:
            for name in vars(group).values():
                if isinstance(name, str) and name != group.parent:
                    notes[name] = note
    return notes


def neuron_masks(dense: DenseModel, sparsity: float) -> dict[str, torch.Tensor]:
    """Structured MLP masks: prune the ``round(sparsity · n)`` neurons of each block with the smallest
    ‖up row‖·‖gate row‖·‖down column‖ (comparison group: the block's neurons; ties by index).

    Returns:
        bool (out, in) masks for every up, gate and down layer, True = keep.
    """
    mlps, _, _ = find_groups(dense)
    masks = {}
    for g in mlps:
        score = out_in_weight(dense.model.get_submodule(g.down)).detach().norm(dim=0)
        for name in (g.up, g.gate):
            if name:
                score = score * out_in_weight(dense.model.get_submodule(name)).detach().norm(dim=1)
        k = count_for_sparsity(score.numel(), sparsity)
        keep = torch.ones(score.numel(), dtype=torch.bool)
        keep[torch.sort(score, stable=True).indices[:k]] = False
        for name in (g.up, g.gate):
            if name:
                masks[name] = keep[:, None].expand(dense.by_name[name].shape).clone()
        masks[g.down] = keep[None, :].expand(dense.by_name[g.down].shape).clone()
    return masks


def head_masks(dense: DenseModel, heads: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Masks that prune the o-projection columns of the given query heads, per attention module path.

    Returns:
        bool (out, in) masks for the o layers named by ``heads``' groups, True = keep.
    """
    _, attns, _ = find_groups(dense)
    masks = {}
    for g in attns:
        if g.parent in heads:
            keep = torch.ones(dense.by_name[g.o].shape, dtype=torch.bool)
            for h in heads[g.parent]:
                keep[:, h * g.head_dim : (h + 1) * g.head_dim] = False
            masks[g.o] = keep
    return masks
