"""Replay a model from any transformer block: the dense pass is run once, a pruned layer reruns only the rest.

Pruning one layer of block b cannot change what enters blocks 0..b, so a sensitivity sweep keeps what the
dense model computes on a fixed token set (the hidden states entering every block, the other arguments each
block receives, the dense next-token distributions) and, for a layer in block b, runs only blocks b..end
from the stored input, then the final norm and the LM head. One code path for every architecture: the block
arguments are recorded by forward pre-hooks (``pruning.sequential.capture_block_inputs``), and the tail
(final norm, LM head) is checked against a full forward once; where it differs, or a model cannot be
replayed, every point runs the full model instead (same numbers, slower).

KL(dense‖pruned) and the NLL are computed from the same (n_seq, T) tokens: the distribution at position t
predicts token t+1, so each sequence gives T-1 predictions.

A big LM head (SmolLM2-135M: 49,152 x 576, a third of a sweep's arithmetic) is linear, so a variant's logits
are the dense logits plus the head applied to the change of its input, W·(n − n₀). Where the CPU multiplies
bfloat16 natively (AVX512-BF16 or AMX: 2.5x float32's speed here) that change goes through a bfloat16 copy
of the head (:class:`HeadDelta`). Its rounding error is relative to the change, not to the logits, so KL
keeps its relative precision at 30% sparsity as at 90% (measured: within 0.13% of float32 on SmolLM2,
0.23% on stories260K), where rounding the logits themselves to bfloat16 would swamp a small KL. Checked on a
perturbed input when the trace is built; a head that fails the check, or a CPU without fast bfloat16, keeps
float32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prune_explorer.execution import cpu_features
from prune_explorer.models.layers import PrunableLayer, block_name
from prune_explorer.pruning.sequential import capture_block_inputs, run_block

log = logging.getLogger(__name__)

# Attribute names of the final norm between the last block and the LM head (Llama/Mistral/Qwen, GPT-2,
# Phi/GPT-NeoX, Mamba-style, OPT).
_FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "norm_f", "final_layer_norm")
# Rows of logits per log-softmax: a (rows, vocab) block stays in cache on a 49k vocabulary.
_ROWS = 128
# Largest |replayed − full| logit difference, relative to max(1, max |logit|), accepted as the same forward.
_TOLERANCE = 1e-4
# LM heads of at least this many weights take the bfloat16 delta (a small head costs nothing to run in full).
DELTA_MIN_WEIGHTS = 1 << 20
# Largest error of the delta's logits on a test perturbation, relative to the largest logit change.
_DELTA_TOLERANCE = 2e-2


@dataclass(frozen=True)
class HeadDelta:
    """The dense LM head's input and logits, and its weight in bfloat16: a variant's logits as the dense
    logits plus the head applied, in bfloat16 with float32 sums, to the change of the head's input.

    Attributes:
        inputs: float32 (n_seq, T, hidden), what enters the head in the dense model (after the final norm).
        logits: float32 (n_seq, T, vocab), the dense logits from those inputs.
        weight: bfloat16 (vocab, hidden), the head's weight.
    """

    inputs: torch.Tensor
    logits: torch.Tensor
    weight: torch.Tensor

    def logits_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """float32 logits for head inputs ``inputs`` shaped like the dense ones."""
        if inputs.shape != self.inputs.shape:
            raise ValueError(f"head inputs {tuple(inputs.shape)}, expected {tuple(self.inputs.shape)}")
        change = (inputs.float() - self.inputs).to(torch.bfloat16)
        return self.logits + F.linear(change, self.weight).float()


def head_delta_usable(model: nn.Module) -> bool:
    """Whether a replay of ``model`` takes the bfloat16 head delta: a plain float32 Linear LM head of at
    least :data:`DELTA_MIN_WEIGHTS` weights on a CPU with fast bfloat16 (the checks known before a trace)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return (
        isinstance(head, nn.Linear)
        and head.weight.dtype == torch.float32
        and head.weight.device.type == "cpu"
        and head.weight.numel() >= DELTA_MIN_WEIGHTS
        and cpu_features.fast_bfloat16()
    )


@dataclass
class DenseTrace:
    """What the dense model computes on fixed tokens, kept to replay a pruned model from any block.

    Attributes:
        ids: int64 (n_seq, T), the token set.
        blocks: module paths of the transformer blocks, in model order.
        hidden: per block, float (n_seq, T, hidden) entering it in the dense model.
        calls: per block, (positional arguments after the hidden states, keyword arguments) it received.
        keyword: the hidden states are passed as ``hidden_states=``.
        tail: module paths (final norm or None, LM head) mapping the last block's output to logits, or None
            when replay is not possible (every point then runs the full model).
        probs: float32 (n_seq * (T-1), vocab), dense next-token distributions.
        neg_entropy: float32 (n_seq * (T-1),), Σ p log p of each dense distribution.
        nll: mean dense NLL in nats of ids[:, 1:].
        head: the bfloat16 head delta (:class:`HeadDelta`) the replayed variants' logits take, or None: the
            float32 tail.
        batchable: hidden states of several variants stacked on the batch axis replay correctly with the
            recorded arguments (checked; true where they broadcast, e.g. one sequence on a Llama).
    """

    ids: torch.Tensor
    blocks: list[str]
    hidden: list[torch.Tensor]
    calls: list[tuple[tuple, dict]]
    keyword: bool
    tail: tuple[str | None, str] | None
    probs: torch.Tensor
    neg_entropy: torch.Tensor
    nll: float
    head: HeadDelta | None = None
    batchable: bool = False

    @property
    def replayable(self) -> bool:
        return self.tail is not None

    @property
    def predictions(self) -> int:
        return int(self.ids.shape[0] * (self.ids.shape[1] - 1))


def block_paths(layers: Sequence[PrunableLayer]) -> list[str]:
    """Module paths of the transformer blocks holding ``layers`` (the path up to the first number), in the
    layers' (model) order."""
    return list(dict.fromkeys(p for p in (block_name(layer) for layer in layers) if p is not None))


def _tail_paths(model: nn.Module) -> tuple[str | None, str] | None:
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is None:
        return None
    names = {id(m): n for n, m in model.named_modules()}
    base = getattr(model, "base_model", model)
    norm = next(
        (getattr(base, a) for a in _FINAL_NORMS if isinstance(getattr(base, a, None), nn.Module)), None
    )
    if id(output) not in names or (norm is not None and id(norm) not in names):
        return None
    return (names[id(norm)] if norm is not None else None, names[id(output)])


@torch.inference_mode()
def tail_logits(model: nn.Module, tail: tuple[str | None, str], hidden: torch.Tensor) -> torch.Tensor:
    """Logits (…, vocab) from the last block's output (…, hidden): final norm, then LM head."""
    return model.get_submodule(tail[1])(_head_input(model, tail, hidden))


def _head_input(model: nn.Module, tail: tuple[str | None, str], hidden: torch.Tensor) -> torch.Tensor:
    """What enters the LM head from the last block's output: the final norm of ``hidden``, or ``hidden``."""
    norm, _ = tail
    return model.get_submodule(norm)(hidden) if norm is not None else hidden


@torch.inference_mode()
def variant_logits(model: nn.Module, trace: DenseTrace, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (n_seq, T, vocab) of one replayed variant from its last block's output (n_seq, T, hidden):
    the dense logits plus the bfloat16 head delta where the trace has one, else the float32 tail."""
    if trace.head is None:
        return tail_logits(model, trace.tail, hidden)
    return trace.head.logits_of(_head_input(model, trace.tail, hidden))


@torch.inference_mode()
def run_from(model: nn.Module, trace: DenseTrace, start: int | None) -> torch.Tensor:
    """Logits float (n_seq, T, vocab) of ``model`` on the trace's tokens, running blocks ``start``..end from
    the stored hidden states (``model`` must equal the dense model in blocks before ``start``, in the
    embeddings and in the tail). Without a replayable tail, or ``start`` None, the full model runs."""
    if start is None or trace.tail is None:
        return model(input_ids=trace.ids, use_cache=False).logits
    return continue_from(model, trace, start, trace.hidden[start])


@torch.inference_mode()
def run_one_block(model: nn.Module, trace: DenseTrace, index: int, hidden: torch.Tensor) -> torch.Tensor:
    """Block ``index`` of ``model`` on ``hidden`` (n, T, hidden) with the arguments recorded for it."""
    return run_block(model.get_submodule(trace.blocks[index]), hidden, trace.calls[index], trace.keyword)


@torch.inference_mode()
def continue_from(
    model: nn.Module, trace: DenseTrace, start: int, hidden: torch.Tensor, logits: bool = True
) -> torch.Tensor:
    """Logits (n, T, vocab) of blocks ``start``..end and the tail on ``hidden`` (n, T, hidden), or with
    ``logits=False`` the last block's output (n, T, hidden). n is the trace's n_seq, or a multiple of it
    stacking several variants when ``trace.batchable``."""
    for i in range(start, len(trace.blocks)):
        hidden = run_one_block(model, trace, i, hidden)
    if not logits:
        return hidden
    if trace.head is not None and hidden.shape == trace.head.inputs.shape:
        return variant_logits(model, trace, hidden)
    return tail_logits(model, trace.tail, hidden)


@torch.inference_mode()
def divergence(trace: DenseTrace, logits: torch.Tensor) -> tuple[float, float]:
    """(mean KL(dense‖pruned) in nats, mean NLL in nats) over the trace's T-1 predictions per sequence.

    Args:
        logits: float (n_seq, T, vocab) of the pruned model on ``trace.ids``.
    """
    rows = logits[:, :-1].reshape(-1, logits.shape[-1])
    targets = trace.ids[:, 1:].reshape(-1)
    kl = nll = 0.0
    for i in range(0, rows.shape[0], _ROWS):
        logq = torch.log_softmax(rows[i : i + _ROWS].float(), dim=-1)
        p = trace.probs[i : i + _ROWS]
        kl += float((trace.neg_entropy[i : i + _ROWS] - (p * logq).sum(-1)).sum(dtype=torch.float64))
        nll -= float(logq.gather(1, targets[i : i + _ROWS, None]).sum(dtype=torch.float64))
    n = rows.shape[0]
    return kl / n, nll / n


@torch.inference_mode()
def dense_trace(
    model: nn.Module, ids: torch.Tensor, layers: Sequence[PrunableLayer], head_delta: bool | None = None
) -> DenseTrace:
    """Run ``model`` (a working copy of the dense model: hooks are registered on it) once on ``ids`` and keep
    what a replay needs; check the replayed logits against the full forward's.

    Args:
        model: a causal LM taking ``input_ids``.
        ids: int64 (n_seq, T), T >= 2.
        layers: every prunable layer of the model (``DenseModel.layers``), to find the blocks.
        head_delta: give replayed variants the bfloat16 head delta (None: where :func:`head_delta_usable`).
    Raises:
        ValueError: ``ids`` not int64 (n_seq, T) with T >= 2.
    """
    if ids.dim() != 2 or ids.dtype != torch.long or ids.shape[1] < 2:
        raise ValueError(f"token ids must be int64 (n_seq, T >= 2), got {ids.dtype} {tuple(ids.shape)}")
    full = model(input_ids=ids, use_cache=False).logits
    blocks = block_paths(layers)
    tail = _tail_paths(model)
    hidden: list[torch.Tensor] = []
    calls: list[tuple[tuple, dict]] = []
    keyword = False
    if blocks and tail is not None:
        try:
            inputs = capture_block_inputs(model, blocks, ids, batch_size=ids.shape[0])
            keyword = inputs.keyword
            h = inputs.hidden[0]
            for path in blocks:
                hidden.append(h)
                calls.append(inputs.calls[path][0])
                h = run_block(model.get_submodule(path), h, calls[-1], keyword)
            error = float((tail_logits(model, tail, h) - full).abs().max())
            scale = max(1.0, float(full.abs().max()))
            if error > _TOLERANCE * scale:
                log.info("replayed logits differ from the full forward by %.3g; running full forwards", error)
                tail = None
        except ValueError as exc:
            log.info("cannot replay the blocks (%s); running full forwards", exc)
            tail = None
    if tail is None:
        hidden, calls = [], []
    head = None
    if tail is not None and (head_delta_usable(model) if head_delta is None else head_delta):
        head = _head_delta(model, tail, h)
    probs, neg_entropy = _distributions(full)
    trace = DenseTrace(ids, blocks, hidden, calls, keyword, tail, probs, neg_entropy, 0.0, head)
    trace.nll = divergence(trace, full)[1]
    trace.batchable = tail is not None and _stacks(model, trace, full)
    return trace


def _head_delta(model: nn.Module, tail: tuple[str | None, str], last: torch.Tensor) -> HeadDelta | None:
    """The head delta from the dense last block's output ``last``, or None when the head is no plain Linear
    or its bfloat16 logits miss the float32 ones on a perturbed input by more than ``_DELTA_TOLERANCE`` of
    the logits' change."""
    head = model.get_submodule(tail[1])
    if not isinstance(head, nn.Linear):
        return None
    normed = _head_input(model, tail, last)
    delta = HeadDelta(normed.float(), head(normed).float(), head.weight.detach().to(torch.bfloat16))
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(last.shape, generator=generator, dtype=last.dtype)
    moved = last + 0.05 * last.std() * noise  # about the change a pruned layer makes downstream
    want = tail_logits(model, tail, moved).float()
    change = float((want - delta.logits).abs().max())
    error = float((delta.logits_of(_head_input(model, tail, moved)) - want).abs().max())
    if change == 0.0 or error > _DELTA_TOLERANCE * change:
        log.info("bfloat16 head delta off by %.3g of a %.3g logit change; head stays float32", error, change)
        return None
    return delta


def _stacks(model: nn.Module, trace: DenseTrace, full: torch.Tensor) -> bool:
    """Whether two copies of the dense input stacked on the batch axis replay to two copies of the logits."""
    try:
        twice = continue_from(model, trace, 0, torch.cat([trace.hidden[0]] * 2))
    except (RuntimeError, ValueError) as exc:
        log.info("variants cannot share a replay batch (%s); replaying them one by one", exc)
        return False
    scale = max(1.0, float(full.abs().max()))
    return twice.shape[0] == 2 * full.shape[0] and all(
        float((half - full).abs().max()) <= _TOLERANCE * scale for half in twice.split(full.shape[0])
    )


def _distributions(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = logits[:, :-1].reshape(-1, logits.shape[-1])
    probs, neg_entropy = [], []
    for i in range(0, rows.shape[0], _ROWS):
        logp = torch.log_softmax(rows[i : i + _ROWS].float(), dim=-1)
        p = logp.exp()
        probs.append(p)
        neg_entropy.append((p * logp).sum(-1))
    return torch.cat(probs), torch.cat(neg_entropy)
