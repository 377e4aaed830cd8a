"""Execution backends for pruned weights: how a pruned model actually runs, and what that costs.

Zeros stored inside a dense matrix are still multiplied, so masked dense is exactly as fast as dense. A pruned
model only gets faster if it runs a different kernel (modules in :mod:`prune_explorer.execution.modules`):

``dense``     masked dense, the baseline: the session's own modules with zeros in them.
``csr``       every pruned layer as CSR, with the residual stream stored token-fastest.
``compact``   structured compaction: MLP neurons and attention heads that contribute nothing are removed,
              leaving physically smaller dense layers (:mod:`prune_explorer.execution.compaction`).
``semi_2_4``  2:4 semi-structured sparsity via ``torch.sparse.to_sparse_semi_structured``: CUDA only.
``auto``      compaction, then per layer and token count the faster of dense and CSR, from a short
              measurement on this machine (:mod:`prune_explorer.execution.autotune`).

Backends are swapped into a session's working model (``PruningState.model``) through the state
(``PruningState.swap_module``), never into the shared dense model, and :func:`restore` puts the masked-dense
modules back, so ``state.reset()`` still gives the exact dense weights. :func:`running_on` holds the state's
lock for the whole time a backend is in: a slider move of the same session waits until the model is back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from prune_explorer.execution import autotune, compaction
from prune_explorer.execution.labels import TOKEN_FASTEST, dense_label
from prune_explorer.execution.modules import (
    BackendUnavailable,
    SemiStructuredLinear,
    TokenFastest,
    out_in_weight,
    semi_structured_available,
)
from prune_explorer.execution.paths import csr_for, linear_layers, pruned_share
from prune_explorer.execution.reports import BackendReport, LayerReport
from prune_explorer.state import PruningState

log = logging.getLogger(__name__)

BACKENDS = ("dense", "csr", "compact", "semi_2_4", "auto")
# Below this sparsity CSR stores more bytes than dense (8 per kept weight against 4) and is never tried.
MIN_CSR_SPARSITY = autotune.MIN_CSR_SPARSITY


def available_backends(device: torch.device | str = "cpu") -> dict[str, str | None]:
    """Each backend name mapped to None (runs here) or the reason it cannot run on ``device``."""
    return {name: (semi_structured_available(device) if name == "semi_2_4" else None) for name in BACKENDS}


def restore(state: PruningState) -> None:
    """Put the session's masked-dense modules and attributes back (a no-op when nothing is swapped)."""
    state.restore_modules()


@contextmanager
def running_on(state: PruningState, backend: str = "auto", **options) -> Iterator[BackendReport]:
    """Run the session's model on ``backend`` for the ``with`` block, holding the state's lock throughout.

    Writes to the state from other threads (a slider move) wait until the masked-dense modules are back; the
    modules are restored however the block ends. ``options`` go to :func:`apply_backend`.
    """
    with state.lock:
        report = apply_backend(state, backend, **options)
        try:
            yield report
        finally:
            restore(state)


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
        compact_notes = compaction.compact(state)
    reports = []
    layout = ""
    if backend == "auto":
        layout = _token_fastest(state)  # calibrate in the layout CSR layers will run in
        reports = autotune.calibrate(
            state, paths, tokens, min_sparsity=min_sparsity, margin=margin, cache=cache
        )
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
        reports.append(LayerReport(path, shape, sparsity, "dense", dense_label(sparsity), note=note))
    report = BackendReport(backend, reports, tuple(tokens) if backend == "auto" else (), layout)
    state.set_swap_report(report)
    return report


def _token_fastest(state: PruningState, undo: bool = False) -> str:
    """Wrap (or, with ``undo``, unwrap) the working model's input embedding in :class:`TokenFastest`."""
    get = getattr(state.model, "get_input_embeddings", None)
    embedding = get() if get else None
    path = next((n for n, m in state.model.named_modules() if m is embedding and n), None)
    if path is None:
        return ""
    if undo:
        if isinstance(embedding, TokenFastest):
            state.unswap_module(path)
        return ""
    state.swap_module(path, TokenFastest(embedding))
    return TOKEN_FASTEST


def _install(state: PruningState, path: str, backend: str, note: str) -> LayerReport:
    module = state.model.get_submodule(path)
    shape = tuple(out_in_weight(module).shape)
    sparsity = pruned_share(state, path)
    label = dense_label(sparsity)
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
    state.swap_module(path, new)
    return LayerReport(path, shape, sparsity, backend, new.kernel, note=note)
