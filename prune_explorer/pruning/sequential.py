"""Sequential pruning: each transformer block decided on the activations of the already-pruned earlier blocks.

This is the procedure of the SparseGPT paper and of Wanda's official code. Rather than rerunning the whole
model for every block (quadratic in depth), :func:`capture_block_inputs` records once what enters a
transformer block (hidden states, plus every other argument each block receives: masks, rotary embeddings),
and :func:`run_block` pushes the hidden states through one (pruned) block at a time, as the papers' code does.
The pruned blocks live in a scratch working copy of the dense model, never in a session's state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prune_explorer.models.dense import DenseModel, working_copy
from prune_explorer.models.layers import PrunableLayer, block_name, group_by_block
from prune_explorer.pruning.calibration import (
    CalibrationBatch,
    LayerStats,
    Progress,
    StopForward,
    collect_stats,
    empty_stats,
    hooked_module,
)

log = logging.getLogger(__name__)

# Decides one layer from its dense (out, in) weight and input statistics: (bool mask, new weight or None).
LayerPruner = Callable[[PrunableLayer, torch.Tensor, LayerStats], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class BlockInputs:
    """What enters transformer blocks during calibration, batch by batch.

    Attributes:
        hidden: float (batch, seq, hidden) per calibration batch, entering the first captured block.
        calls: {block path: per batch, (positional arguments after the hidden states, keyword arguments)}.
        keyword: the hidden states are passed as ``hidden_states=`` rather than positionally.
    """

    hidden: list[torch.Tensor]
    calls: dict[str, list[tuple[tuple, dict]]]
    keyword: bool = False


@torch.inference_mode()
def capture_block_inputs(
    model: nn.Module, blocks: Sequence[str], ids: torch.Tensor, batch_size: int = 8
) -> BlockInputs:
    """Run ``model`` once per batch, recording the hidden states entering ``blocks[0]`` and the other
    arguments every block in ``blocks`` receives (forward pre-hooks, removed in ``finally``; the forward stops
    at the last block).

    Raises:
        ValueError: a block received no hidden-state tensor (first positional or ``hidden_states=``), or was
            not called.
    """
    hidden: list[torch.Tensor] = []
    calls: dict[str, list[tuple[tuple, dict]]] = {name: [] for name in blocks}
    keyword = [False]

    def make_hook(name: str, first: bool, last: bool):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if args and isinstance(args[0], torch.Tensor):
                x, rest, kw = args[0], args[1:], dict(kwargs)
            elif isinstance(kwargs.get("hidden_states"), torch.Tensor):
                kw = dict(kwargs)
                x, rest = kw.pop("hidden_states"), args
                keyword[0] = True
            else:
                raise ValueError(f"block {name} received no hidden-state tensor; cannot replay it")
            if first:
                hidden.append(x.detach().clone())
            calls[name].append((rest, kw))
            if last:
                raise StopForward

        return hook

    handles = []
    try:
        for i, name in enumerate(blocks):
            module = model.get_submodule(name)
            hook = make_hook(name, i == 0, i == len(blocks) - 1)
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        for batch in ids.split(batch_size):
            try:
                model(input_ids=batch, use_cache=False)
            except StopForward:
                pass
    finally:
        for handle in handles:
            handle.remove()
    for name, recorded in calls.items():
        if len(recorded) != len(hidden):
            raise ValueError(f"block {name} was not called once per calibration batch; cannot replay it")
    return BlockInputs(hidden=hidden, calls=calls, keyword=keyword[0])


@torch.inference_mode()
def run_block(
    block: nn.Module, hidden: torch.Tensor, call: tuple[tuple, dict], keyword: bool = False
) -> torch.Tensor:
    """One block's output hidden states for recorded inputs (its first output when it returns a tuple)."""
    rest, kwargs = call
    out = block(*rest, hidden_states=hidden, **kwargs) if keyword else block(hidden, *rest, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.inference_mode()
def collect_block_stats(
    block: nn.Module,
    model: nn.Module,
    layers: Sequence[PrunableLayer],
    inputs: BlockInputs,
    block_path: str,
    gram: bool = False,
) -> dict[str, LayerStats]:
    """Input statistics of ``layers`` (all inside ``block``) from replaying the block on recorded inputs.

    Hooks are removed in ``finally``.
    """
    modules = {layer.name: hooked_module(model, layer) for layer in layers}
    stats = empty_stats(layers, gram)

    def make_hook(name: str, cols: int):
        def hook(module: nn.Module, args: tuple, output) -> None:
            stats[name].add(args[0].reshape(-1, cols))

        return hook

    handles = []
    try:
        for layer in layers:
            handles.append(modules[layer.name].register_forward_hook(make_hook(layer.name, layer.shape[1])))
        for hidden, call in zip(inputs.hidden, inputs.calls[block_path], strict=True):
            run_block(block, hidden, call, inputs.keyword)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _block_paths(dense: DenseModel) -> list[str]:
    """Module paths of the model's transformer blocks, in order."""
    paths = [block_name(layer) for layer in dense.layers if layer.block >= 0]
    return list(dict.fromkeys(p for p in paths if p is not None))


def _write_scratch(
    scratch: nn.Module,
    dense: DenseModel,
    group: Sequence[PrunableLayer],
    masks: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor],
) -> None:
    """Give ``scratch`` the group's pruned weights, ``where(mask, new or dense, 0)``, as new tensors."""
    for layer in group:
        source = weights.get(layer.name)
        source = layer.weight(dense.model).detach() if source is None else source
        pruned = torch.where(masks[layer.name], source, torch.zeros((), dtype=source.dtype))
        storage = (pruned.T if layer.transposed else pruned).contiguous()
        param = nn.Parameter(storage.to(dense.storage(layer.name).dtype), requires_grad=False)
        for holder in layer.holders:
            scratch.get_submodule(holder).weight = param


def prune_sequentially(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    calibration: CalibrationBatch,
    prune_layer: LayerPruner,
    gram: bool,
    progress: Progress = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Prune block by block; each block's statistics come from a scratch model whose earlier blocks are
    already pruned. Returns (masks, new weights).

    Where a block cannot be replayed (or for layers outside blocks) the whole scratch model is run instead,
    which gives the same statistics at a cost quadratic in depth.
    """
    scratch = working_copy(dense.model)
    groups = group_by_block(layers)
    paths = _block_paths(dense)
    replay = True
    inputs: BlockInputs | None = None
    at = 0  # index in ``paths`` of the block whose inputs ``inputs.hidden`` holds
    masks: dict[str, torch.Tensor] = {}
    weights: dict[str, torch.Tensor] = {}
    for g, group in enumerate(groups):
        path = block_name(group[0]) if group[0].block >= 0 else None
        stats = None
        if replay and path in paths:
            target = paths.index(path)
            if inputs is None or at > target:
                try:
                    inputs = capture_block_inputs(scratch, paths[target:], calibration.ids)
                    at = target
                except ValueError as exc:
                    log.info("cannot replay blocks (%s); running the whole model for every block", exc)
                    replay, inputs = False, None
            if inputs is not None:
                while at < target:  # blocks before ``target`` are pruned already (or not selected)
                    block = scratch.get_submodule(paths[at])
                    calls = inputs.calls[paths[at]]
                    inputs.hidden = [
                        run_block(block, h, c, inputs.keyword)
                        for h, c in zip(inputs.hidden, calls, strict=True)
                    ]
                    at += 1
                stats = collect_block_stats(scratch.get_submodule(path), scratch, group, inputs, path, gram)
        if stats is None:
            stats = collect_stats(scratch, group, calibration.ids, gram=gram)
            inputs = None  # a layer outside the blocks may change what enters them
        for i, layer in enumerate(group):
            mask, new = prune_layer(layer, layer.weight(dense.model), stats.pop(layer.name))
            masks[layer.name] = mask
            if new is not None:
                weights[layer.name] = new
            if progress:
                progress((g + (i + 1) / len(group)) / len(groups))
        _write_scratch(scratch, dense, group, masks, weights)
    return masks, weights
