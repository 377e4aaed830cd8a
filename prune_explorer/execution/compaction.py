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

Units are the library's one model of them (:class:`prune_explorer.pruning.units.UnitGroup`), the same that
structured pruning removes. The new modules are swapped in through the state (``PruningState.swap_module``),
so ``execution.backends.restore`` undoes them.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prune_explorer.execution.labels import compacted_label
from prune_explorer.execution.modules import out_in_weight
from prune_explorer.models.dense import DenseModel
from prune_explorer.pruning.units import UnitGroup, model_unit_groups
from prune_explorer.state import PruningState


def _groups(dense: DenseModel, unit: str) -> list[UnitGroup]:
    try:
        return model_unit_groups(dense, dense.layers, unit)
    except ValueError:  # a layout the unit model cannot read (no head count, two MLPs in a block...)
        return []


def compactable_groups(dense: DenseModel) -> tuple[list[UnitGroup], list[UnitGroup], dict[str, str]]:
    """The MLP (neuron) and attention (head) groups of ``dense`` that can be cut smaller, and a note per layer
    of a group that cannot (a tied weight, an attention module that does not expose its head layout)."""
    notes: dict[str, str] = {}
    mlps, attns = [], []
    for group in [*_groups(dense, "neurons"), *_groups(dense, "heads")]:
        tied = [n for n in group.layer_names if len(dense.by_name[n].holders) > 1]
        if tied:
            for name in group.layer_names:
                notes[name] = f"cannot compact: {tied[0]} is a shared (tied) weight; stays on masked dense"
            continue
        if group.unit == "heads":
            module = dense.model.get_submodule(group.parent)
            head_dim = getattr(module, "head_dim", None)
            if head_dim != group.unit_size or (group.fused_qkv and not hasattr(module, "split_size")):
                for name in group.layer_names:
                    notes[name] = f"cannot compact: {type(module).__name__} does not say its head layout"
                continue
        (mlps if group.unit == "neurons" else attns).append(group)
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


def removable_neurons(state: PruningState, group: UnitGroup) -> torch.Tensor:
    """bool (intermediate,): MLP neurons that add exactly zero under the state's masks."""
    dead = ~state.mask(group.col_layer).any(0)
    parent = state.model.get_submodule(group.parent)
    if group.gate is not None:
        dead |= _dead_rows(state, group.up)
        if _act_zero_at_zero(parent):
            dead |= _dead_rows(state, group.gate)
    elif _act_zero_at_zero(parent):
        dead |= _dead_rows(state, group.up)
    return dead


def removable_heads(state: PruningState, g: UnitGroup) -> torch.Tensor:
    """bool (n_units,): query heads that add exactly zero under the state's masks."""
    o_mask = state.mask(g.col_layer)
    dead = ~o_mask.reshape(o_mask.shape[0], g.n_units, g.unit_size).any(0).any(-1)
    q_dim, kv_dim = g.n_units * g.unit_size, g.n_kv * g.unit_size
    if g.fused_qkv:
        v_rows = _dead_rows(state, g.row_layers[0], slice(q_dim + kv_dim, q_dim + 2 * kv_dim))
    else:
        v_rows = _dead_rows(state, g.kv_layers[1])
    v_dead = v_rows.view(g.n_kv, g.unit_size).all(-1)
    return dead | v_dead.repeat_interleave(g.n_units // g.n_kv)


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
    state.swap_module(path, module)


def _set(state: PruningState, module: nn.Module, attr: str, value: int) -> None:
    if hasattr(module, attr):
        state.set_module_attribute(module, attr, value)


def _compact_mlp(state: PruningState, g: UnitGroup) -> str | None:
    dead = removable_neurons(state, g)
    n = dead.numel()
    if not dead.any():
        return None
    keep = ~dead
    if not keep.any():  # a zero-width layer breaks some kernels; one dead neuron still adds zero
        keep[0] = True
    idx = keep.nonzero().view(-1)
    k = idx.numel()
    for name in g.row_layers:
        _install(state, name, compacted_label(n, k, "rows"), rows=idx)
    _install(state, g.col_layer, compacted_label(n, k, "columns"), cols=idx)
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


def _compact_attention(state: PruningState, g: UnitGroup) -> str | None:
    dead = removable_heads(state, g)
    heads, kv_keep = _kept_heads(dead, g.n_kv)
    if len(heads) == g.n_units:
        return None
    hd, parent = g.unit_size, state.model.get_submodule(g.parent)
    q_rows, kv_rows = _rows(heads, hd), _rows(kv_keep, hd)
    label = compacted_label(g.n_units, len(heads), "heads")
    if g.fused_qkv:
        q_dim, kv_dim = g.n_units * hd, g.n_kv * hd
        rows = torch.cat([q_rows, q_dim + kv_rows, q_dim + kv_dim + kv_rows])
        _install(state, g.row_layers[0], label, rows=rows)
        _set(state, parent, "split_size", len(heads) * hd)
    else:
        _install(state, g.row_layers[0], label, rows=q_rows)
        for name in g.kv_layers:
            _install(state, name, label, rows=kv_rows)
        _set(state, parent, "num_key_value_groups", len(heads) // len(kv_keep))
        _set(state, parent, "num_key_value_heads", len(kv_keep))
    _set(state, parent, "num_heads", len(heads))
    _install(state, g.col_layer, label, cols=q_rows)
    return f"compacted: {g.n_units - len(heads)} of {g.n_units} heads removed ({len(kv_keep)} KV heads kept)"


def compact(state: PruningState) -> dict[str, str]:
    """Swap smaller dense layers into the session's working model wherever whole units are pruned.

    Returns:
        A note per affected layer: what was removed, or why its group cannot be compacted.
    """
    mlps, attns, notes = compactable_groups(state.dense)
    for group in [*mlps, *attns]:
        note = _compact_mlp(state, group) if group.unit == "neurons" else _compact_attention(state, group)
        if note:
            for name in group.layer_names:
                notes[name] = note
    return notes
