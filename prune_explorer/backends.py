"""Execution backends for pruned weights: how a pruned Linear actually runs, and what that costs.

Zeros stored inside a dense matrix are still multiplied, so masked dense is exactly as fast as dense. A pruned
model only gets faster if it runs a different kernel:

``dense``     masked dense, the baseline: the session's own modules with zeros in them.
``csr``       the (out, in) weight as a CSR matrix with int32 indices, run as ``W @ x.T`` (``torch.addmm``
              into an unfilled output: the fastest sparse call measured on CPU; ``F.linear(x, W_csr)`` and
              COO are much slower), with the residual stream stored token-fastest (:class:`TokenFastest`).
``compact``   structured compaction: MLP neurons and attention heads that contribute nothing are removed,
              leaving physically smaller dense layers (see :mod:`prune_explorer.compaction`).
``semi_2_4``  2:4 semi-structured sparsity via ``torch.sparse.to_sparse_semi_structured``: CUDA only.
``auto``      compaction, then per layer and token count the faster of dense and CSR, from a short
              calibration on this machine (:func:`prune_explorer.speed.calibrate`).

Backends are swapped into a session's working model (``PruningState.model``) by replacing modules, never
into the shared dense model. :func:`restore` puts the session's masked-dense modules back, so
``state.reset()`` still gives the exact dense weights. While a backend is swapped in, do not prune the state.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prune_explorer.state import PruningState

log = logging.getLogger(__name__)

BACKENDS = ("dense", "csr", "compact", "semi_2_4", "auto")
DENSE = "dense matmul (F.linear)"
DENSE_ZEROS = "dense matmul with zeros (F.linear)"
CSR = "CSR torch.addmm int32 (MKL sparse × dense)"
SEMI = "2:4 semi-structured (torch.sparse.to_sparse_semi_structured, CUDA)"
# Below this sparsity CSR stores more bytes than dense (8 per kept weight against 4) and is never tried.
MIN_CSR_SPARSITY = 0.5


class BackendUnavailable(RuntimeError):
    """A backend cannot run on this machine or this model; the message says why."""


def out_in_weight(module: nn.Module) -> torch.Tensor:
    """The weight of a Linear or transformers Conv1D as an (out, in) view of its storage."""
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def to_csr(weight: torch.Tensor) -> torch.Tensor:
    """float (out, in) dense -> CSR with int32 indices (10-30% faster than int64 in torch.sparse.mm)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta" / "invariant checks disabled"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.detach().contiguous().to_sparse_csr()
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32), csr.values(), csr.shape
        )


def csr_bytes(kept: int, rows: int, index_bytes: int = 4, value_bytes: int = 4) -> int:
    """Bytes of a CSR matrix: a value and a column index per kept weight, one row pointer per row (+1)."""
    return kept * (value_bytes + index_bytes) + (rows + 1) * index_bytes


class CSRLinear(nn.Module):
    """A pruned Linear run as ``(W_csr @ x.T).T`` with int32 CSR indices (``torch.addmm``, MKL on CPU).

    The product is written as (out, N) into a fresh uninitialised tensor (``beta=0``: no zero fill) and
    returned as its (N, out) transpose, a view: elementwise ops keep that layout, so a following CSR layer
    (MLP down after gate/up) gets its ``x.T`` contiguous for free. Attention reshapes q/k/v per head and
    only takes the fast SDPA kernel with a contiguous head dimension, so those layers copy to row-major.

    Args:
        weight: float (out, in), zeros are dropped.
        bias: float (out,) or None.
        row_major_output: return a contiguous (N, out) tensor (for q/k/v projections).
    """

    kernel = CSR

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None = None, row_major_output: bool = False
    ):
        super().__init__()
        self.in_features = int(weight.shape[1])
        self.out_features = int(weight.shape[0])
        self.weight_csr = to_csr(weight)
        self.bias = None if bias is None else bias.detach()
        self.row_major_output = row_major_output

    @classmethod
    def from_module(cls, module: nn.Module, row_major_output: bool = False) -> CSRLinear:
        return cls(out_in_weight(module), module.bias, row_major_output)

    @property
    def kept(self) -> int:
        return int(self.weight_csr.values().numel())

    def nbytes(self) -> int:
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return csr_bytes(self.kept, self.out_features) + bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xt = x.reshape(-1, self.in_features).T  # (in, N)
        y = torch.empty(self.out_features, xt.shape[1], dtype=x.dtype, device=x.device)
        y = torch.addmm(y, self.weight_csr, xt, beta=0, out=y).T  # (N, out), a view
        if self.row_major_output:
            y = y.contiguous()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, kept={self.kept}, kernel={self.kernel!r}"


def is_two_four(mask: torch.Tensor) -> bool:
    """True if every group of 4 consecutive inputs of each row keeps at most 2 (bool (out, in) mask)."""
    if mask.shape[-1] % 4:
        return False
    return bool((mask.reshape(mask.shape[0], -1, 4).sum(-1) <= 2).all())


def semi_structured_available(device: torch.device | str) -> str | None:
    """None if 2:4 kernels can run on ``device``, else the reason they cannot."""
    device = torch.device(device)
    if device.type != "cuda":
        return (
            "2:4 semi-structured sparse kernels exist in torch only for CUDA GPUs; "
            f"this model runs on {device.type}"
        )
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return "this torch build has no torch.sparse.to_sparse_semi_structured"
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"2:4 kernels need a GPU of compute capability 8.0 or newer, this one is {major}.x"
    return None


class SemiStructuredLinear(nn.Module):
    """A 2:4-pruned Linear on CUDA, its weight a ``SparseSemiStructuredTensor``.

    Raises:
        BackendUnavailable: not on a CUDA GPU that has the kernels.
        ValueError: the mask is not 2:4 along the input dimension, or torch refuses the shape/dtype.
    """

    kernel = SEMI

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        reason = semi_structured_available(weight.device)
        if reason:
            raise BackendUnavailable(reason)
        if not is_two_four(weight != 0):
            raise ValueError("the weight is not 2:4 sparse (at most 2 kept in every 4 consecutive inputs)")
        try:
            self.weight_2_4 = torch.sparse.to_sparse_semi_structured(weight.detach().contiguous())
        except Exception as exc:  # torch checks dtype and minimum shapes
            raise ValueError(f"torch cannot make this weight 2:4 semi-structured: {exc}") from exc
        self.out_features, self.in_features = (int(s) for s in weight.shape)
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(x.reshape(-1, self.in_features), self.weight_2_4, self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)


def available_backends(device: torch.device | str = "cpu") -> dict[str, str | None]:
    """Each backend name mapped to None (runs here) or the reason it cannot run on ``device``."""
    return {name: (semi_structured_available(device) if name == "semi_2_4" else None) for name in BACKENDS}


class AutoLinear(nn.Module):
    """Runs each call on the backend calibrated as fastest for the nearest measured token count.

    ``choice`` maps a token count (rows of the input, batch × sequence) to ``"dense"`` or ``"csr"``;
    a call with N tokens uses the calibrated count nearest to N on a log scale.
    """

    def __init__(self, dense: nn.Module, csr: CSRLinear, choice: dict[int, str]):
        super().__init__()
        self.dense, self.csr = dense, csr
        self.choice = dict(sorted(choice.items()))
        self.in_features = csr.in_features

    def pick(self, tokens: int) -> str:
        near = min(self.choice, key=lambda t: abs(math.log2(max(t, 1)) - math.log2(max(tokens, 1))))
        return self.choice[near]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // self.in_features
        return self.csr(x) if self.pick(tokens) == "csr" else self.dense(x)


@dataclass
class LayerReport:
    """What runs one weight now.

    Attributes:
        name: module path; ``shape``: (out, in) as it runs (smaller after compaction);
        sparsity: share of zeros in the weight as it runs; ``backend``: dense, csr, compact, semi_2_4 or auto;
        kernel: label of what runs, per token count when auto chose differently by token count;
        choices: token count -> "dense" / "csr" (auto only); ``timings_ms``: token count -> backend -> median
        ms in the calibration; ``note``: why a layer stayed on masked dense, or what compaction did.
    """

    name: str
    shape: tuple[int, int]
    sparsity: float
    backend: str
    kernel: str
    choices: dict[int, str] = field(default_factory=dict)
    timings_ms: dict[int, dict[str, float]] = field(default_factory=dict)
    note: str = ""


@dataclass
class BackendReport:
    """What runs each layer; ``tokens``: token counts ``auto`` calibrated; ``layout``: activation layout."""

    backend: str
    layers: list[LayerReport]
    tokens: tuple[int, ...] = ()
    layout: str = ""

    def rows(self) -> list[dict]:
        """One flat dict per layer, for a table."""
        out = []
        for r in self.layers:
            row = {"layer": r.name, "shape": f"{r.shape[0]}×{r.shape[1]}", "sparsity": round(r.sparsity, 4)}
            row.update(backend=r.backend, kernel=r.kernel, note=r.note)
            for t in self.tokens:
                times = r.timings_ms.get(t, {})
                row[f"dense ms @{t}"] = times.get("dense")
                row[f"csr ms @{t}"] = times.get("csr")
            out.append(row)
        return out

    def kernels(self, family: bool = True) -> dict[str, int]:
        """How many layers run each kernel; ``family`` drops the sizes from compacted labels."""
        counts: dict[str, int] = {}
        for r in self.layers:
            label = re.sub(r" \d+→\d+ (rows|columns|heads)", "", r.kernel) if family else r.kernel
            counts[label] = counts.get(label, 0) + 1
        return counts

    def summary(self) -> str:
        """One line: how many layers run each kernel, most common first (and the activation layout)."""
        text = ", ".join(f"{n}× {k}" for k, n in sorted(self.kernels().items(), key=lambda kv: -kv[1]))
        return text + ("; token-fastest residual stream" if self.layout else "")


@dataclass
class _Swap:
    originals: dict[str, nn.Module] = field(default_factory=dict)
    attrs: list[tuple[nn.Module, str, object]] = field(default_factory=list)
    report: BackendReport | None = None


_SWAPS: weakref.WeakKeyDictionary[nn.Module, _Swap] = weakref.WeakKeyDictionary()


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def replace_module(state: PruningState, path: str, module: nn.Module) -> None:
    """Put ``module`` at ``path`` in the session's working model, remembering the masked-dense original."""
    swap = _SWAPS.setdefault(state.model, _Swap())
    swap.originals.setdefault(path, state.model.get_submodule(path))
    _set_module(state.model, path, module)


def set_attribute(state: PruningState, module: nn.Module, attr: str, value: object) -> None:
    """Set ``module.attr`` (a module of the session's working model), remembering the old value."""
    swap = _SWAPS.setdefault(state.model, _Swap())
    swap.attrs.append((module, attr, getattr(module, attr)))
    setattr(module, attr, value)


def is_swapped(state: PruningState) -> bool:
    return state.model in _SWAPS


def current_report(state: PruningState) -> BackendReport | None:
    """The report of the backend swapped into ``state`` now, or None if it runs masked dense."""
    swap = _SWAPS.get(state.model)
    return swap.report if swap else None


def restore(state: PruningState) -> None:
    """Put the session's masked-dense modules and attributes back (a no-op when nothing is swapped)."""
    swap = _SWAPS.pop(state.model, None)
    if swap is None:
        return
    for module, attr, old in reversed(swap.attrs):
        setattr(module, attr, old)
    for path, module in swap.originals.items():
        _set_module(state.model, path, module)


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


def _dense_label(sparsity: float) -> str:
    return DENSE_ZEROS if sparsity > 0 else DENSE


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


def _verify(state: PruningState, reference: torch.Tensor, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        out = state.model(input_ids=ids, use_cache=False).logits.float()
    return float((out - reference).abs().max() / reference.abs().max().clamp_min(1e-6))


def apply_backend(
    state: PruningState,
    backend: str = "auto",
    tokens: Sequence[int] = (128, 1),
    min_sparsity: float = MIN_CSR_SPARSITY,
    margin: float = 0.95,
    cache: dict | None = None,
    verify: bool = True,
    compact: bool = True,
) -> BackendReport:
    """Swap ``backend`` into the session's working model; returns what runs each layer.

    Any backend swapped in before is restored first. Layers a backend cannot take (tied weights, a mask
    that is not 2:4, a group that cannot be compacted) stay on masked dense, with the reason in their note.

    Args:
        backend: one of ``BACKENDS``.
        tokens: token counts to calibrate ``auto`` for (e.g. 128 for prefill, 1 for decoding).
        min_sparsity: CSR is only considered at or above this sparsity.
        margin: ``auto`` takes CSR only where it runs in under ``margin`` × the dense time.
        cache: calibration results by (shape, sparsity bucket, tokens); default: the dense model's cache.
        verify: check on 8 tokens that the logits match masked dense (relative 1e-4); undo and raise if not.
        compact: whether ``auto`` compacts whole pruned neurons and heads first.
    Raises:
        ValueError: unknown backend.
        BackendUnavailable: the backend cannot run on this machine (``semi_2_4`` off CUDA), or it changed
            the model's outputs (verification failed; the masked-dense modules are back).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    restore(state)
    device = next(state.model.parameters()).device
    if backend == "semi_2_4" and (reason := semi_structured_available(device)):
        raise BackendUnavailable(reason)
    if verify:
        vocab = int(getattr(state.model.config, "vocab_size", 2))
        ids = torch.arange(8, device=device).view(1, -1) % vocab
        with torch.inference_mode():
            reference = state.model(input_ids=ids, use_cache=False).logits.float()
    try:
        report = _swap_in(state, backend, tokens, min_sparsity, margin, cache, compact)
        if verify:
            error = _verify(state, reference, ids)
            if not error <= (1e-4 if next(state.model.parameters()).dtype == torch.float32 else 1e-2):
                raise BackendUnavailable(
                    f"backend {backend!r} changed this model's outputs (relative error {error:.2e}); "
                    "the model is back on masked dense"
                )
    except BaseException:  # a half-installed backend must never stay in the session's model
        restore(state)
        raise
    return report


def _swap_in(
    state: PruningState,
    backend: str,
    tokens: Sequence[int],
    min_sparsity: float,
    margin: float,
    cache: dict | None,
    compact: bool,
) -> BackendReport:
    paths, notes = linear_layers(state)
    compact_notes: dict[str, str] = {}
    if backend == "compact" or (backend == "auto" and compact):
        from prune_explorer import compaction

        compact_notes = compaction.compact(state)
    reports = []
    layout = ""
    if backend == "auto":
        from prune_explorer.speed import calibrate

        layout = _token_fastest(state)  # calibrate in the layout CSR layers will run in
        reports = calibrate(state, paths, tokens, min_sparsity=min_sparsity, margin=margin, cache=cache)
        for r in reports:
            r.note = "; ".join(n for n in (compact_notes.get(r.name, ""), r.note) if n)
        if not any(r.choices and "csr" in r.choices.values() for r in reports):
            layout = _token_fastest(state, undo=True)
    else:
        for path in paths:
            reports.append(_install(state, path, backend, compact_notes.get(path, "")))
        if any(r.backend == "csr" for r in reports):
            layout = _token_fastest(state)
    for path, note in notes.items():
        shape = tuple(out_in_weight(state.model.get_submodule(path)).shape)
        sparsity = pruned_share(state, path)
        reports.append(LayerReport(path, shape, sparsity, "dense", _dense_label(sparsity), note=note))
    report = BackendReport(backend, reports, tuple(tokens) if backend == "auto" else (), layout)
    _SWAPS.setdefault(state.model, _Swap()).report = report
    return report


class TokenFastest(nn.Module):
    """Wraps the input embedding so the residual stream is stored token-fastest: (B, T, H) with strides
    (T·H, 1, T). Same values, another layout.

    A CSR layer multiplies ``W @ x.T`` fastest when ``x.T`` is a contiguous (H, T) matrix, i.e. when ``x`` is
    token-fastest; elementwise ops (norms, residual adds, SiLU·up) keep that layout, so no CSR layer has to
    transpose its input. Dense matmuls take either layout at the same speed.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    @property
    def weight(self) -> torch.Tensor:
        return self.inner.weight

    def forward(self, *args, **kwargs) -> torch.Tensor:
        y = self.inner(*args, **kwargs)
        return y.transpose(-1, -2).contiguous().transpose(-1, -2) if y.dim() >= 2 else y


TOKEN_FASTEST = "residual stream stored token-fastest (column-major) so CSR layers need no input transpose"


def _token_fastest(state: PruningState, undo: bool = False) -> str:
    """Wrap (or, with ``undo``, unwrap) the working model's input embedding in :class:`TokenFastest`."""
    get = getattr(state.model, "get_input_embeddings", None)
    embedding = get() if get else None
    path = next((n for n, m in state.model.named_modules() if m is embedding and n), None)
    if path is None:
        return ""
    if undo:
        if isinstance(embedding, TokenFastest):
            _set_module(state.model, path, embedding.inner)
            _SWAPS[state.model].originals.pop(path, None)
        return ""
    replace_module(state, path, TokenFastest(embedding))
    return TOKEN_FASTEST


def _install(state: PruningState, path: str, backend: str, note: str) -> LayerReport:
    module = state.model.get_submodule(path)
    shape = tuple(out_in_weight(module).shape)
    sparsity = pruned_share(state, path)
    label = _dense_label(sparsity)
    if hasattr(module, "kernel_label"):  # set by compaction
        label = module.kernel_label + (" with zeros" if sparsity > 0 else "")
    dense_backend = "compact" if note.startswith("compacted") else "dense"
    if backend in ("dense", "compact") or sparsity == 0:
        return LayerReport(path, shape, sparsity, dense_backend, label, note=note)
    try:
        if backend == "csr":
            new: nn.Module = csr_for(state, path)
        else:
            new = SemiStructuredLinear(out_in_weight(module), module.bias)
    except (BackendUnavailable, ValueError) as exc:
        reason = f"{backend} cannot take this layer ({exc}): stays on masked dense"
        return LayerReport(
            path, shape, sparsity, "dense", label, note="; ".join(n for n in (note, reason) if n)
        )
    replace_module(state, path, new)
    return LayerReport(path, shape, sparsity, backend, new.kernel, note=note)
