"""Calibration: cut a text into token sequences, run the model, and collect each layer's input statistics.

Activation-aware methods look at what flows *into* a layer. For an (out, in) weight and inputs X (tokens, in):
    Wanda needs ‖X_j‖₂² = Σ_t X_tj², one number per input feature (in,);
    SparseGPT needs the Gram matrix XᵀX (in, in), from which its Hessian H = 2XᵀX/N is built.
Statistics are sums over every calibration token (float64) plus the token count, so batches can be added.

Forward hooks are registered on the modules that hold the chosen weights (``nn.Linear`` or transformers
``Conv1D``: both receive (..., in) inputs) and are removed in ``finally``. Embeddings have no input
activations and are refused.

The sequential procedure (each block calibrated on the already-pruned earlier blocks) is in
:mod:`prune_explorer.pruning.sequential`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prune_explorer import texts
from prune_explorer.models.dense import DenseModel, context_length, working_copy
from prune_explorer.models.layers import PrunableLayer
from prune_explorer.progress import Progress

log = logging.getLogger(__name__)


DEFAULT_SEQ_LEN = 128
# The papers use 128 sequences of 2048 tokens from C4; the shipped texts hold far fewer tokens, so by default
# a text is cut into as many sequences as it holds, up to this many.
MAX_SEQUENCES = 128


@dataclass(frozen=True)
class CalibrationBatch:
    """Calibration token sequences cut from one text.

    Attributes:
        ids: int64 (n_sequences, seq_len), consecutive non-overlapping slices of the tokenized text.
        text_tokens: tokens in the whole text (the slices use ``n_sequences * seq_len`` of them).
        source: where the text came from, for display ("built-in stories calibration text", "pasted text").
    """

    ids: torch.Tensor
    text_tokens: int
    source: str = "text"

    @property
    def n_sequences(self) -> int:
        return int(self.ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.ids.shape[1])

    @property
    def n_tokens(self) -> int:
        return int(self.ids.numel())

    @property
    def key(self) -> tuple:
        """A content key (shape + hash of the ids) for caching statistics per model and batch."""
        digest = hashlib.sha1(self.ids.contiguous().numpy().tobytes()).hexdigest()
        return (tuple(self.ids.shape), digest)


def calibration_batch(
    tokenizer,
    text: str,
    seq_len: int = DEFAULT_SEQ_LEN,
    n_sequences: int | None = None,
    source: str = "text",
) -> CalibrationBatch:
    """Tokenize ``text`` and cut it into ``n_sequences`` consecutive sequences of ``seq_len`` tokens.

    The text is encoded as the model reads it (BOS first). Sequences do not overlap; a tail shorter than
    ``seq_len`` is dropped. When the text holds fewer than ``n_sequences`` sequences, all that fit are used
    and a warning is logged (``n_sequences=None``: as many as fit, at most ``MAX_SEQUENCES``).

    Args:
        tokenizer: anything with ``encode(text, bos=True) -> list[int]``.
        text: the calibration text (built-in, pasted or uploaded).
        seq_len: tokens per sequence, >= 2.
        n_sequences: sequences wanted, >= 1, or None.
        source: a label for display.
    Returns:
        A :class:`CalibrationBatch` with int64 ids (n, seq_len).
    Raises:
        ValueError: empty text, ``seq_len`` or ``n_sequences`` out of range, or fewer tokens than one sequence
            needs (the message gives both numbers).
    """
    if seq_len < 2:
        raise ValueError(f"calibration sequences need at least 2 tokens, got seq_len={seq_len}")
    if n_sequences is not None and n_sequences < 1:
        raise ValueError(f"ask for at least one calibration sequence, got n_sequences={n_sequences}")
    if not text or not text.strip():
        raise ValueError("the calibration text is empty: paste or upload some text, or use the built-in text")
    ids = list(tokenizer.encode(text, bos=True))
    if len(ids) < seq_len:
        raise ValueError(
            f"the calibration text has {len(ids)} tokens but one sequence of seq_len={seq_len} "
            f"needs {seq_len}: give a longer text or choose shorter sequences"
        )
    fit = len(ids) // seq_len
    wanted = min(fit, MAX_SEQUENCES) if n_sequences is None else n_sequences
    if wanted > fit:
        log.warning(
            "calibration text has %d tokens: %d sequences of %d fit, not the %d asked; using %d",
            len(ids),
            fit,
            seq_len,
            wanted,
            fit,
        )
        wanted = fit
    batch = torch.tensor(ids[: wanted * seq_len], dtype=torch.long).view(wanted, seq_len)
    return CalibrationBatch(ids=batch, text_tokens=len(ids), source=source)


@dataclass
class LayerStats:
    """Input statistics of one layer over calibration tokens.

    Attributes:
        sq_norms: float64 (in,), Σ_t X_tj² (Wanda's ‖X_j‖₂²).
        gram: float64 (in, in), Σ_t X_tᵀX_t, or None when not collected.
        n_tokens: number of input rows (tokens) seen.
    """

    sq_norms: torch.Tensor
    gram: torch.Tensor | None
    n_tokens: int

    def add(self, x: torch.Tensor) -> None:
        """Accumulate a float (tokens, in) batch of inputs."""
        x = x.detach().to(torch.float32)
        self.sq_norms += (x * x).sum(0, dtype=torch.float64)
        if self.gram is not None:
            self.gram += (x.T @ x).to(torch.float64)
        self.n_tokens += int(x.shape[0])


def empty_stats(layers: Sequence[PrunableLayer], gram: bool) -> dict[str, LayerStats]:
    return {
        layer.name: LayerStats(
            sq_norms=torch.zeros(layer.shape[1], dtype=torch.float64),
            gram=torch.zeros(layer.shape[1], layer.shape[1], dtype=torch.float64) if gram else None,
            n_tokens=0,
        )
        for layer in layers
    }


class StopForward(Exception):
    """Raised by a hook once every hooked layer has seen its input: the rest of the forward is not needed."""


def hooked_module(model: nn.Module, layer: PrunableLayer) -> nn.Module:
    module = model.get_submodule(layer.name)
    if isinstance(module, nn.Embedding):
        raise ValueError(
            f"{layer.name} is an embedding: it has no input activations to calibrate on; "
            "deselect embeddings or use magnitude/random pruning for them"
        )
    return module


@torch.inference_mode()
def collect_stats(
    model: nn.Module,
    layers: Sequence[PrunableLayer],
    ids: torch.Tensor,
    gram: bool = False,
    batch_size: int = 8,
    stop_early: bool = True,
    progress: Progress = None,
) -> dict[str, LayerStats]:
    """Run ``model`` on calibration ``ids`` and collect every layer's input statistics.

    One forward per batch of sequences; with ``stop_early`` the forward is cut once every hooked layer has
    seen its input (a layer called twice in one forward would then be seen once). Hooks are removed in
    ``finally``, also when the model raises. Run it on a model no other session is using (a working copy):
    hooks on a shared model would also record other sessions' forwards.

    Args:
        model: a causal LM taking ``input_ids``.
        layers: the layers to watch (linear or Conv1D; not embeddings).
        ids: int64 (n_sequences, seq_len).
        gram: also collect XᵀX (in, in) per layer (SparseGPT), not only Σ X² (Wanda).
        batch_size: sequences per forward.
        stop_early: stop each forward after the last watched layer.
        progress: called with the share done, in (0, 1].
    Returns:
        {layer name: :class:`LayerStats`}.
    Raises:
        ValueError: ``ids`` not 2-D int64, or an embedding among ``layers``.
    """
    if ids.dim() != 2 or ids.dtype != torch.long:
        raise ValueError(
            f"calibration ids must be int64 (n_sequences, seq_len), got {ids.dtype} {tuple(ids.shape)}"
        )
    modules = {layer.name: hooked_module(model, layer) for layer in layers}
    stats = empty_stats(layers, gram)
    seen: set[str] = set()

    def make_hook(name: str, cols: int):
        def hook(module: nn.Module, args: tuple, output) -> None:
            x = args[0]
            if x.shape[-1] != cols:
                raise ValueError(f"{name} received inputs with {x.shape[-1]} features, its weight has {cols}")
            stats[name].add(x.reshape(-1, cols))
            seen.add(name)
            if stop_early and len(seen) == len(modules):
                raise StopForward

        return hook

    handles = []
    try:
        for layer in layers:
            handles.append(modules[layer.name].register_forward_hook(make_hook(layer.name, layer.shape[1])))
        batches = ids.split(batch_size) if modules else ()
        for i, batch in enumerate(batches):
            seen.clear()
            try:
                model(input_ids=batch, use_cache=False)
            except StopForward:
                pass
            if progress:
                progress((i + 1) / len(batches))
    finally:
        for handle in handles:
            handle.remove()
    return stats


def default_calibration(
    dense: DenseModel, seq_len: int = DEFAULT_SEQ_LEN, n_sequences: int | None = None
) -> CalibrationBatch:
    """The built-in calibration text of the model's text set (disjoint from its evaluation text), cut into
    ``n_sequences`` × ``seq_len`` tokens (None: as many as it holds, at most 128)."""
    text_set = dense.info.get("text_set", "stories")
    seq_len = min(seq_len, context_length(dense.model))
    return calibration_batch(
        dense.tokenizer,
        texts.calibration_text(text_set),
        seq_len,
        n_sequences,
        source=f"built-in {text_set} calibration text",
    )


def resolve_calibration(dense: DenseModel, calibration: CalibrationBatch | str | None) -> CalibrationBatch:
    """A batch from what a caller gave: a batch (checked against the model's context), a text (cut into
    sequences of 128 tokens), or None for :func:`default_calibration`.

    Raises:
        ValueError: sequences longer than the model's context, or a text too short for one sequence.
    """
    if calibration is None:
        return default_calibration(dense)
    if isinstance(calibration, str):
        seq_len = min(DEFAULT_SEQ_LEN, context_length(dense.model))
        return calibration_batch(dense.tokenizer, calibration, seq_len, source="user text")
    if calibration.seq_len > context_length(dense.model):
        raise ValueError(
            f"calibration sequences of {calibration.seq_len} tokens exceed the model's context of "
            f"{context_length(dense.model)}"
        )
    return calibration


def activation_stats(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    calibration: CalibrationBatch,
    progress: Progress = None,
) -> dict[str, LayerStats]:
    """Σ X² per input feature (no Gram) of ``layers`` on the *dense* model, shared by every session per
    calibration batch (the dense model's cache), so moving a Wanda sparsity slider does not rerun the model.

    The returned statistics are shared: read them, never add to them.
    """
    key = ("activation_stats", calibration.key, tuple(layer.name for layer in layers))
    if key in dense.cache and progress:
        progress(1.0)
    # A private working copy: hooks on the shared dense model would see other sessions' forwards.
    return dense.cache.get(
        key, lambda: collect_stats(working_copy(dense.model), layers, calibration.ids, progress=progress)
    )


@dataclass(frozen=True)
class CalibrationSpec:
    """Which calibration batch a pruning used: a label for people and the batch's content key."""

    source: str
    key: tuple
    n_sequences: int
    seq_len: int

    @classmethod
    def of(cls, batch: CalibrationBatch) -> CalibrationSpec:
        return cls(batch.source, batch.key, batch.n_sequences, batch.seq_len)
