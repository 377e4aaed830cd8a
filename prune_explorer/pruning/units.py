"""Structured units: whole MLP neurons and whole attention heads, the one model of them in the library.

The same :class:`UnitGroup` serves structured pruning (:mod:`prune_explorer.pruning.structured`: unit
scores, which units go) and compaction (``prune_explorer.execution.compaction``: cutting dead units out of
the matrices), so both name the same units; :func:`unit_masks` turns kept units into ordinary bool masks.

A *unit* is what goes as a whole:
    neuron i of a block's MLP: row i of gate and up (GPT-2: row i of ``c_fc``) and column i of down
        (GPT-2: column i of the MLP ``c_proj``);
    query head h of a block's attention: its ``head_dim`` rows of q (or of the q part of a fused qkv) and its
        ``head_dim`` columns of o.
Grouped KV heads (GQA): the unit is the *query* head, the finer choice; a K/V head's rows go only when every
query head sharing it has gone. Without GQA (one K/V head per query head) they go with their head.

Biases are left as they are; zeroing the unit's columns of down/o is what removes its contribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer

UNITS = ("neurons", "heads")


@dataclass(frozen=True)
class UnitGroup:
    """The layers of one block that lose rows and columns together, unit by unit.

    Attributes:
        unit: "neurons" or "heads".
        block: transformer block index.
        n_units: neurons, or query heads.
        unit_size: rows/columns per unit (1 for neurons, head_dim for heads).
        row_layers: layers whose rows [u·size, (u+1)·size) belong to unit u (gate/up, or q; for a fused qkv
            layer only its q rows).
        col_layer: the layer whose input columns [u·size, (u+1)·size) belong to unit u (down, or o).
        kv_layers: k and v layers (heads only); rows of K/V head g are [g·size, (g+1)·size).
        n_kv: K/V heads (heads only).
        fused_qkv: ``row_layers`` is one fused layer with rows [q | k | v] (GPT-2 ``c_attn``).
        parent: module path of the MLP or attention module holding the layers.
        gate: the gated-MLP layer among ``row_layers`` (its rows pass an activation), or None.
    """

    unit: str
    block: int
    n_units: int
    unit_size: int
    row_layers: tuple[str, ...]
    col_layer: str
    kv_layers: tuple[str, ...] = ()
    n_kv: int = 0
    fused_qkv: bool = False
    parent: str = ""
    gate: str | None = None

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.row_layers + self.kv_layers + (self.col_layer,)

    @property
    def up(self) -> str:
        """The MLP layer among ``row_layers`` that is not the gate (neurons only)."""
        return next(name for name in self.row_layers if name != self.gate)

    def label(self) -> str:
        return f"block {self.block} {'MLP' if self.unit == 'neurons' else 'attention'}"


def _by_kind(block_layers: Sequence[PrunableLayer]) -> dict[str, list[PrunableLayer]]:
    out: dict[str, list[PrunableLayer]] = {}
    for layer in block_layers:
        out.setdefault(layer.kind, []).append(layer)
    return out


def find_unit_groups(
    layers: Sequence[PrunableLayer], unit: str, n_heads: int | None = None
) -> list[UnitGroup]:
    """Find every block's neuron or head group among ``layers`` (only complete groups are returned).

    Args:
        layers: the selected prunable layers (as ``layers.find_layers`` reports them).
        unit: "neurons" or "heads".
        n_heads: query heads per attention (the model config's ``num_attention_heads``), for heads.
    Raises:
        ValueError: unknown unit, missing ``n_heads``, shapes that do not split into heads, a block with two
            attentions or MLPs.
    """
    if unit not in UNITS:
        raise ValueError(f"unknown structured unit {unit!r}; choose one of {UNITS}")
    if unit == "heads" and not n_heads:
        raise ValueError("pruning heads needs the number of attention heads (config.num_attention_heads)")
    blocks: dict[int, list[PrunableLayer]] = {}
    for layer in layers:
        if layer.block >= 0:
            blocks.setdefault(layer.block, []).append(layer)
    groups = []
    for block, block_layers in blocks.items():
        kinds = _by_kind(block_layers)
        for kind, found in kinds.items():
            if len(found) > 1 and kind != "other":
                raise ValueError(
                    f"block {block} has {len(found)} layers of kind {kind}; cannot tell units apart"
                )
        one = {kind: found[0] for kind, found in kinds.items()}
        group = _neuron_group(block, one) if unit == "neurons" else _head_group(block, one, n_heads)
        if group is not None:
            groups.append(group)
    return groups


def _neuron_group(block: int, one: dict[str, PrunableLayer]) -> UnitGroup | None:
    down = one.get("mlp_down")
    ups = [one[k] for k in ("mlp_gate", "mlp_up") if k in one]
    if down is None or not ups:
        return None
    n = down.shape[1]
    for layer in ups:
        if layer.shape[0] != n:
            raise ValueError(f"{layer.name} has {layer.shape[0]} rows but {down.name} has {n} input columns")
    gate = one.get("mlp_gate")
    return UnitGroup(
        "neurons",
        block,
        n,
        1,
        tuple(layer.name for layer in ups),
        down.name,
        parent=_parent(down),
        gate=gate.name if gate is not None else None,
    )


def _parent(layer: PrunableLayer) -> str:
    return layer.name.rpartition(".")[0]


def _head_group(block: int, one: dict[str, PrunableLayer], n_heads: int) -> UnitGroup | None:
    o = one.get("attn_o")
    if o is None:
        return None
    q_dim = o.shape[1]
    if q_dim % n_heads:
        raise ValueError(f"{o.name} has {q_dim} input columns, not a multiple of {n_heads} heads")
    size = q_dim // n_heads
    if "attn_qkv" in one:
        qkv = one["attn_qkv"]
        kv_dim, rest = divmod(qkv.shape[0] - q_dim, 2)
        if rest or kv_dim <= 0 or kv_dim % size:
            raise ValueError(
                f"{qkv.name} has {qkv.shape[0]} rows: cannot split into q ({q_dim}) and equal k, v"
            )
        return UnitGroup(
            "heads", block, n_heads, size, (qkv.name,), o.name, (), kv_dim // size, True, _parent(o)
        )
    if not all(k in one for k in ("attn_q", "attn_k", "attn_v")):
        return None
    q, k, v = one["attn_q"], one["attn_k"], one["attn_v"]
    if q.shape[0] != q_dim or k.shape[0] != v.shape[0] or k.shape[0] % size:
        raise ValueError(
            f"block {block}: q/k/v rows {q.shape[0]}/{k.shape[0]}/{v.shape[0]} do not fit {n_heads} "
            f"heads of {size}"
        )
    n_kv = k.shape[0] // size
    if n_heads % n_kv:
        raise ValueError(f"block {block}: {n_heads} query heads cannot share {n_kv} K/V heads evenly")
    return UnitGroup(
        "heads", block, n_heads, size, (q.name,), o.name, (k.name, v.name), n_kv, parent=_parent(o)
    )


def unit_masks(
    group: UnitGroup, keep: torch.Tensor, shapes: dict[str, tuple[int, int]]
) -> dict[str, torch.Tensor]:
    """Bool (out, in) masks of every layer of ``group`` from a unit keep vector (n_units,).

    Args:
        keep: bool (n_units,), True = keep.
        shapes: {name: (out, in)} of the group's layers.
    """
    if keep.dtype != torch.bool or tuple(keep.shape) != (group.n_units,):
        raise ValueError(
            f"unit keep vector must be torch.bool ({group.n_units},), got {keep.dtype} {tuple(keep.shape)}"
        )
    size = group.unit_size
    rows_keep = keep.repeat_interleave(size)  # (n_units * size,)
    masks = {}
    kv_keep = None
    if group.kv_layers or group.fused_qkv:
        # A K/V head goes only when all the query heads sharing it have gone.
        kv_keep = keep.view(group.n_kv, group.n_units // group.n_kv).any(1).repeat_interleave(size)
    for name in group.row_layers:
        out, cols = shapes[name]
        row = rows_keep
        if group.fused_qkv:
            row = torch.cat([rows_keep, kv_keep, kv_keep])
        if row.numel() != out:
            raise ValueError(f"{name} has {out} rows but the group's units cover {row.numel()}")
        masks[name] = row.view(-1, 1).expand(out, cols).clone()
    for name in group.kv_layers:
        out, cols = shapes[name]
        masks[name] = kv_keep.view(-1, 1).expand(out, cols).clone()
    out, cols = shapes[group.col_layer]
    masks[group.col_layer] = rows_keep.view(1, -1).expand(out, cols).clone()
    return masks


def attention_heads(dense: DenseModel) -> int | None:
    """Query heads per attention, from the model config (``num_attention_heads``), or None."""
    return getattr(getattr(dense.model, "config", None), "num_attention_heads", None)


def model_unit_groups(dense: DenseModel, layers: Sequence[PrunableLayer], unit: str) -> list[UnitGroup]:
    """:func:`find_unit_groups` over ``layers`` of ``dense``, with the head count from its config."""
    return find_unit_groups(layers, unit, attention_heads(dense) if unit == "heads" else None)
