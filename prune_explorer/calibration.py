"""Calibration: cut a text into token sequences, run the model, and collect each layer's input statistics.

Activation-aware methods look at what flows *into* a layer. For an (out, in) weight and inputs X (tokens, in):
    Wanda needs ‖X_j‖₂² = Σ_t X_tj², one number per input feature (in,);
    SparseGPT needs the Gram matrix XᵀX (in, in), from which its Hessian H = 2XᵀX/N is built.
Statistics are sums over every calibration token (float64) plus the token count, so batches can be added.

Forward hooks are registered on the modules that hold the chosen weights (``nn.Linear`` or transformers
``Conv1D``: both receive (..., in) inputs) and are removed in ``finally``. Embeddings have no input
activations and are refused.

Sequential methods (SparseGPT) need each block's inputs *after* the earlier blocks are pruned. Rather than
rerunning the whole model for every block (quadratic in depth), :func:`capture_block_inputs` records once what
enters a transformer block (hidden states, plus every other argument each block receives: masks, rotary
embeddings), and :func:`run_block` pushes the hidden states through one block at a time, as the papers' code.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prune_explorer.layers import PrunableLayer

log = logging.getLogger(__name__)

Progress = Callable[[float], None] | None

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


def _empty_stats(layers: Sequence[PrunableLayer], gram: bool) -> dict[str, LayerStats]:
    return {
        layer.name: LayerStats(
            sq_norms=torch.zeros(layer.shape[1], dtype=torch.float64),
            gram=torch.zeros(layer.shape[1], layer.shape[1], dtype=torch.float64) if gram else None,
            n_tokens=0,
        )
        for layer in layers
    }


class _StopForward(Exception):
    """Raised by a hook once every hooked layer has seen its input: the rest of the forward is not needed."""


def _hooked_module(model: nn.Module, layer: PrunableLayer) -> nn.Module:
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
    modules = {layer.name: _hooked_module(model, layer) for layer in layers}
    stats = _empty_stats(layers, gram)
    seen: set[str] = set()

    def make_hook(name: str, cols: int):
        def hook(module: nn.Module, args: tuple, output) -> None:
            x = args[0]
            if x.shape[-1] != cols:
                raise ValueError(f"{name} received inputs with {x.shape[-1]} features, its weight has {cols}")
            stats[name].add(x.reshape(-1, cols))
            seen.add(name)
            if stop_early and len(seen) == len(modules):
                raise _StopForward

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
            except _StopForward:
                pass
            if progress:
                progress((i + 1) / len(batches))
    finally:
        for handle in handles:
            handle.remove()
    return stats


def block_name(layer: PrunableLayer) -> str | None:
    """Module path of the transformer block holding ``layer`` (the path up to its first numeric part)."""
    parts = layer.name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return None


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
                raise _StopForward

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
            except _StopForward:
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
    modules = {layer.name: _hooked_module(model, layer) for layer in layers}
    stats = _empty_stats(layers, gram)

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
