"""The pruning state of one user: masks over a shared dense model, and the session's own working weights.

The dense model is loaded once per process and never written. A :class:`PruningState` holds a working model
that *shares* every tensor with the dense one until a layer is pruned; only then does the layer get its own
weight, written as ``where(mask, dense, 0)``. Restoring points the layer back at the dense tensor, so it is
bit-exact.

Magnitude-style masks (a prefix of a precomputed ranking) are kept as a count ``k``: a slider move from k to
k' zeroes or restores only the weights between the two (found through one byte per weight, see
``ranking.LayerRanking``), which keeps the slider fast on a 135M model.
Any other mask (Wanda, N:M, structured) is kept as a bool tensor.

The state guards itself. Every write holds its lock, so writes from two threads (a slider move and a
measurement of the same session) never interleave. A measurement may swap other modules into the working
model for a while (CSR, compacted, auto: :mod:`prune_explorer.execution.backends`); the state records every
swap, and a write while modules are swapped is refused with :class:`ModulesSwappedError`. Use
``execution.backends.running_on`` to hold the lock for the whole swap: writes from other threads then wait
until the masked-dense modules are back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from prune_explorer.models.dense import DenseModel, working_copy
from prune_explorer.models.layers import PrunableLayer
from prune_explorer.pruning.masks import check_mask
from prune_explorer.pruning.ranking import layer_ranking


@dataclass
class _Pruned:
    """How one layer is pruned now: a ranking prefix of length ``k``, or an explicit mask."""

    k: int | None = None
    mask: torch.Tensor | None = None  # bool, storage layout


_ZERO = torch.zeros(())


class ModulesSwappedError(RuntimeError):
    """A write was asked while other modules are swapped into the session's model."""


@dataclass
class _Swap:
    """Modules and attributes swapped into the working model, with what to put back."""

    originals: dict[str, nn.Module] = field(default_factory=dict)
    attrs: list[tuple[nn.Module, str, object]] = field(default_factory=list)
    report: object = None


class PruningState:
    """One session's pruning of a :class:`DenseModel`."""

    def __init__(self, dense: DenseModel):
        self.dense = dense
        self.model = working_copy(dense.model)
        # The working model's own (masked-dense) modules: weights are written here even while a backend has
        # other modules at these paths.
        self._modules = dict(self.model.named_modules())
        self._pruned: dict[str, _Pruned] = {}
        self._own: dict[str, torch.Tensor] = {}  # layer -> the session's private weight (storage layout)
        self.lock = threading.RLock()
        self._swap: _Swap | None = None

    # ----- swapped modules (execution backends)
    @property
    def swapped(self) -> bool:
        """Whether modules other than the masked-dense ones are swapped into the working model now."""
        return self._swap is not None

    @property
    def swap_report(self) -> object:
        """What the backend swapped in now reported (``execution.backends.BackendReport``), or None."""
        return self._swap.report if self._swap else None

    def swap_module(self, path: str, module: nn.Module) -> None:
        """Put ``module`` at ``path`` in the working model, remembering the masked-dense original."""
        with self.lock:
            swap = self._swap = self._swap or _Swap()
            current = self.model.get_submodule(path)
            swap.originals.setdefault(path, current)
            _set_module(self.model, path, module)

    def unswap_module(self, path: str) -> None:
        """Put the original module back at ``path`` alone (the rest of the swap stays)."""
        with self.lock:
            if self._swap is not None and path in self._swap.originals:
                _set_module(self.model, path, self._swap.originals.pop(path))

    def set_module_attribute(self, module: nn.Module, attr: str, value: object) -> None:
        """Set ``module.attr`` (a module of the working model), remembering the old value."""
        with self.lock:
            swap = self._swap = self._swap or _Swap()
            swap.attrs.append((module, attr, getattr(module, attr)))
            setattr(module, attr, value)

    def set_swap_report(self, report: object) -> None:
        with self.lock:
            self._swap = self._swap or _Swap()
            self._swap.report = report

    def restore_modules(self) -> None:
        """Put the masked-dense modules and attributes back (a no-op when nothing is swapped)."""
        with self.lock:
            swap, self._swap = self._swap, None
            if swap is None:
                return
            for module, attr, old in reversed(swap.attrs):
                setattr(module, attr, old)
            for path, module in swap.originals.items():
                _set_module(self.model, path, module)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self.lock:
            if self._swap is not None:
                raise ModulesSwappedError(
                    "this session's model is running on other modules (a speed measurement swapped them "
                    "in); restore the masked-dense modules before pruning"
                )
            yield

    # ----- reading
    def is_pruned(self, name: str) -> bool:
        return name in self._pruned

    def pruned_count(self, name: str) -> int:
        """Number of weights the mask removes in layer ``name``."""
        p = self._pruned.get(name)
        if p is None:
            return 0
        if p.k is not None:
            return p.k
        return int(p.mask.numel() - p.mask.sum())

    def pruned_by_magnitude(self, name: str) -> bool:
        """Whether layer ``name``'s pruned weights are exactly its smallest |w| (a prefix of the ranking)."""
        p = self._pruned.get(name)
        return p is None or p.k is not None

    def sparsity(self, name: str) -> float:
        return self.pruned_count(name) / self.dense.by_name[name].numel

    def mask(self, name: str) -> torch.Tensor:
        """bool (out, in) mask of layer ``name``, True = keep."""
        layer = self.dense.by_name[name]
        storage_shape = self.dense.storage(name).shape
        p = self._pruned.get(name)
        if p is None:
            keep = torch.ones(storage_shape, dtype=torch.bool)
        elif p.k is not None:
            keep = layer_ranking(self.dense, name).mask(p.k, storage_shape)
        else:
            keep = p.mask
        return keep.T if layer.transposed else keep

    def overall_sparsity(self, layers: Iterable[PrunableLayer] | None = None) -> float:
        """Share of pruned weights over ``layers`` (default: every layer that is pruned or prunable)."""
        layers = list(self.dense.layers if layers is None else layers)
        total = sum(layer.numel for layer in layers)
        return sum(self.pruned_count(layer.name) for layer in layers) / total if total else 0.0

    def weight(self, name: str) -> torch.Tensor:
        """The session's current (out, in) weight of layer ``name``."""
        layer = self.dense.by_name[name]
        w = self._modules[name].weight
        return w.T if layer.transposed else w

    # ----- writing
    def _own_weight(self, name: str) -> torch.Tensor:
        """The session's private storage for layer ``name``, created on first use (contents not set)."""
        own = self._own.get(name)
        if own is not None:
            return own
        # Every caller writes the whole tensor next, so its first contents never show.
        param = nn.Parameter(torch.empty_like(self.dense.storage(name)), requires_grad=False)
        for holder in self.dense.by_name[name].holders:
            self._modules[holder].weight = param
        self._own[name] = param.data
        return param.data

    def _share_dense(self, name: str) -> None:
        self._pruned.pop(name, None)
        if self._own.pop(name, None) is None:
            return  # already the dense tensor
        dense_w = self.dense.storage(name)
        for holder in self.dense.by_name[name].holders:
            self._modules[holder].weight = dense_w

    def apply_counts(self, counts: dict[str, int]) -> None:
        """Prune the ``k`` lowest-|w| weights of each named layer; layers not named are left as they are.

        A layer already pruned by a ranking prefix is updated in place: only the weights between its old and
        new ``k`` are written. Every count is checked before any weight changes.
        """
        with self._writing():
            self._apply_counts(counts)

    def _apply_counts(self, counts: dict[str, int]) -> None:
        for name, k in counts.items():
            numel = self.dense.by_name[name].numel
            if not 0 <= k <= numel:
                raise ValueError(f"layer {name}: cannot prune {k} of {numel} weights")
        for name, k in counts.items():
            if k == 0:
                self._share_dense(name)
                continue
            old = self._pruned.get(name)
            old_k = old.k if old is not None else None
            if old_k == k:
                continue
            dense_w = self.dense.storage(name).detach().view(-1)
            layer_ranking(self.dense, name).move(self._own_weight(name).view(-1), dense_w, old_k, k)
            self._pruned[name] = _Pruned(k=k)

    def apply_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Apply explicit bool (out, in) masks, True = keep; layers not named are left as they are."""
        with self._writing():
            self._apply_masks(masks)

    def _apply_masks(self, masks: dict[str, torch.Tensor]) -> None:
        for name, keep in masks.items():
            layer = self._layer(name)
            storage_keep = self._storage_mask(layer, keep)
            if bool(storage_keep.all()):
                self._share_dense(name)
                continue
            self._write(name, storage_keep, self.dense.storage(name).detach())

    def apply_weights(self, weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
        """Write new (out, in) weights with their bool masks (True = keep), e.g. SparseGPT's reconstruction.

        The session's own tensor receives ``where(mask, weight, 0)``; the dense model is not touched, so
        :meth:`reset` still restores it exactly. Every named weight needs a mask; layers not named are left
        as they are. A later :meth:`apply_masks` or :meth:`apply_counts` on a layer starts again from dense.
        """
        with self._writing():
            self._apply_weights(weights, masks)

    def _apply_weights(self, weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
        for name, new in weights.items():
            layer = self._layer(name)
            if name not in masks:
                raise ValueError(f"new weights for {name} come without a mask")
            storage_keep = self._storage_mask(layer, masks[name])
            if not new.is_floating_point() or tuple(new.shape) != layer.shape:
                raise ValueError(
                    f"new weight for {name} must be floating point of shape {layer.shape}, "
                    f"got {new.dtype} {tuple(new.shape)}"
                )
            self._write(name, storage_keep, (new.T if layer.transposed else new).detach())

    def _layer(self, name: str) -> PrunableLayer:
        layer = self.dense.by_name.get(name)
        if layer is None:
            raise KeyError(f"no prunable layer named {name!r}")
        return layer

    @staticmethod
    def _storage_mask(layer: PrunableLayer, keep: torch.Tensor) -> torch.Tensor:
        """Validate an (out, in) keep-mask and return it in the layer's storage layout."""
        check_mask(keep, layer.shape, name=f"mask for {layer.name}")
        return (keep.T if layer.transposed else keep).contiguous()

    def _write(self, name: str, storage_keep: torch.Tensor, source: torch.Tensor) -> None:
        own = self._own_weight(name)
        torch.where(storage_keep, source.to(own.dtype), _ZERO.to(own.dtype), out=own)
        self._pruned[name] = _Pruned(mask=storage_keep)

    def reset(self, names: Iterable[str] | None = None) -> None:
        """Return the named layers (default: all) to the exact dense weights."""
        with self._writing():
            for name in list(self._pruned if names is None else names):
                self._share_dense(name)

    def private_bytes(self) -> int:
        """Bytes this session holds beyond the shared dense model (own weights and explicit masks)."""
        total = 0
        for name, p in self._pruned.items():
            total += self.dense.storage(name).numel() * self.dense.storage(name).element_size()
            if p.mask is not None:
                total += p.mask.numel()
        return total


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
