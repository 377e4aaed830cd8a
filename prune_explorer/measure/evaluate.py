"""What pruning does to a model's outputs: perplexity, greedy text, next-token probabilities.

Every function takes a model and token ids, so the dense and the pruned model are measured the same way. How
far the two next-token distributions are apart (KL, top-1 agreement) is ``measure.divergence``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prune_explorer.execution import few_rows
from prune_explorer.models.dense import context_length
from prune_explorer.progress import Progress


@dataclass(frozen=True)
class Perplexity:
    """Teacher-forced loss over a text: summed NLL in nats over ``tokens`` predicted tokens."""

    nll: float
    tokens: int

    @property
    def mean_nll(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def ppl(self) -> float:
        return math.exp(self.mean_nll) if self.tokens else float("nan")


# Rows of logits per cross-entropy call: a block stays in cache instead of a (T, vocab) log-softmax in fresh
# memory (same bits, about a third less time on a 49k vocabulary).
_NLL_ROWS = 128


@torch.inference_mode()
def token_nll(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Per-token NLL (float32, (T-1,)) of a single (T,) sequence, predicting ids[1:] from ids[:-1]."""
    logits = model(input_ids=ids.view(1, -1)).logits[0, :-1].float()
    targets = ids[1:]
    return torch.cat(
        [
            F.cross_entropy(logits[i : i + _NLL_ROWS], targets[i : i + _NLL_ROWS], reduction="none")
            for i in range(0, max(targets.numel(), 1), _NLL_ROWS)
        ]
    )


@torch.inference_mode()
def perplexity(
    model: nn.Module,
    ids: Sequence[int] | torch.Tensor,
    window: int | None = None,
    progress: Progress = None,
) -> Perplexity:
    """Perplexity of ``ids`` in non-overlapping windows of at most ``window`` tokens.

    Each window is scored on its own (the first token of a window is context, not predicted), the way the
    Wanda and SparseGPT papers evaluate; ``window`` defaults to the model's context length.
    """
    ids = torch.as_tensor(ids, dtype=torch.long).view(-1)
    window = min(window or context_length(model), context_length(model))
    if ids.numel() < 2:
        raise ValueError("perplexity needs at least two tokens of text")
    nll, count = 0.0, 0
    starts = list(range(0, ids.numel() - 1, window))
    for i, start in enumerate(starts):
        chunk = ids[start : start + window]
        if chunk.numel() < 2:
            break
        losses = token_nll(model, chunk)
        nll += float(losses.double().sum())
        count += losses.numel()
        if progress:
            progress((i + 1) / len(starts))
    return Perplexity(nll=nll, tokens=count)


@torch.inference_mode()
def next_token_logits(model: nn.Module, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """float32 (T, vocab) logits at every position of a prompt."""
    ids = torch.as_tensor(ids, dtype=torch.long).view(1, -1)
    return model(input_ids=ids).logits[0].float()


def top_k(logits: torch.Tensor, k: int = 10) -> list[tuple[int, float]]:
    """The ``k`` most likely next tokens as (id, probability), from one (vocab,) logit row."""
    probs = F.softmax(logits.float(), dim=-1)
    values, idx = torch.topk(probs, min(k, probs.numel()))
    return [(int(i), float(v)) for i, v in zip(idx, values)]


@dataclass(frozen=True)
class Continuation:
    """A greedy continuation and, from the same first forward pass, the logits at every prompt position."""

    tokens: list[int]
    prompt_logits: torch.Tensor  # float32 (T, vocab)


DRAFT_FIRST = 4  # draft tokens in the first pass: cheap when the model disagrees at once (high sparsity)


@torch.inference_mode()
def continue_greedily(
    model: nn.Module,
    ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int = 40,
    stop_ids: Sequence[int] = (),
    on_token: Callable[[int], bool | None] | None = None,
    on_prompt: Callable[[torch.Tensor], None] | None = None,
    draft: Sequence[int] = (),
) -> Continuation:
    """Greedy continuation of ``ids`` (new tokens only), stopping after any of ``stop_ids``.

    Uses the model's KV cache; deterministic, so dense and pruned differ only because of the weights. The
    prompt's logits come with it at no extra forward pass (what the next-token views need), and go to
    ``on_prompt`` as soon as they exist, before any new token: a page can show them while the text grows.
    ``on_token(token)`` is called for each new token; returning True stops the generation early.

    ``draft`` is a guess at the continuation (for a pruned model, the dense model's): its next few tokens
    ride along with each forward pass, every one the model would pick itself is taken from that pass, and
    once the model disagrees decoding goes on one token at a time (speculative decoding with a free draft).
    The tokens are the model's own greedy choices either way; the draft only saves passes (the first holds
    ``DRAFT_FIRST`` draft tokens, each next one twice as many while the model keeps agreeing).

    The prompt's pass is a plain forward; the passes after it, a few tokens each, run the model's big Linear
    layers on ``execution.few_rows``'s row-dot kernel (about twice MKL's speed for one token on a CPU).
    """
    ids = torch.as_tensor(ids, dtype=torch.long).view(-1)
    few_rows.install(model)
    prompt_len = ids.numel()
    steps = max(0, min(max_new_tokens, context_length(model) - prompt_len))
    draft = [int(t) for t in draft][: max(steps - 1, 0)]
    out: list[int] = []
    feed, cache, chunk, prompt_logits = ids.tolist(), None, DRAFT_FIRST, None
    while True:
        agreeing = out == draft[: len(out)]
        extra = draft[len(out) : len(out) + chunk] if agreeing else []
        kwargs = {"use_cache": True}
        if cache is not None:  # the prompt's pass keeps every position's logits; later ones only the new
            kwargs.update(cache=cache, logits_to_keep=len(extra) + 1)
        if cache is None:
            result = model(input_ids=torch.tensor([feed + extra]), **kwargs)
        else:
            with few_rows.decoding():  # a few tokens a pass: memory-bound, the row-dot kernel streams faster
                result = model(input_ids=torch.tensor([feed + extra]), **kwargs)
        cache = result.cache
        if prompt_logits is None:
            prompt_logits = result.logits[0, :prompt_len].float()
            if on_prompt is not None:
                on_prompt(prompt_logits)
            if steps == 0:
                return Continuation(tokens=out, prompt_logits=prompt_logits)
        picks = result.logits[0, -(len(extra) + 1) :].argmax(-1).tolist()  # after feed, after each extra
        for used, token in enumerate(picks):
            out.append(token)
            if token in stop_ids or (on_token is not None and on_token(token)) or len(out) >= steps:
                return Continuation(tokens=out, prompt_logits=prompt_logits)
            if used >= len(extra) or token != extra[used]:
                break
        if len(extra) > used:
            cache.crop(used - len(extra))  # transformers 5: drop the draft positions the model did not take
        feed, chunk = [out[-1]], chunk * 2


def greedy_generate(
    model: nn.Module,
    ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int = 40,
    stop_ids: Sequence[int] = (),
    on_token: Callable[[int], bool | None] | None = None,
) -> list[int]:
    """The new tokens of :func:`continue_greedily`."""
    return continue_greedily(model, ids, max_new_tokens, stop_ids, on_token).tokens


def probabilities(logits: torch.Tensor, ids: Sequence[int]) -> list[float]:
    """Probabilities of the given token ids under one (vocab,) logit row."""
    probs = F.softmax(logits.float(), dim=-1)
    return [float(probs[i]) for i in ids]


def token_diff(dense_ids: Sequence[int], pruned_ids: Sequence[int]) -> list[bool]:
    """For each pruned token, whether the two sequences share it once aligned (``difflib.SequenceMatcher`` on
    the token ids), so one inserted or dropped token marks itself, not every token after it as a comparison
    by position would."""
    same = [False] * len(pruned_ids)
    matcher = difflib.SequenceMatcher(a=list(dense_ids), b=list(pruned_ids), autojunk=False)
    for block in matcher.get_matching_blocks():
        same[block.b : block.b + block.size] = [True] * block.size
    return same


def calibration_words(source: str, n_sequences: int, seq_len: int) -> str:
    """A calibration protocol in words: "built-in stories text, 6 sequences × 128 tokens"."""
    return f"{source}, {n_sequences} sequences × {seq_len} tokens"


def protocol_text(
    text: str, tokens: int, window: int, stride: int | None = None, calibration: str | None = None
) -> str:
    """The words of a protocol card, the same in the app and in an exported model card.

    Args:
        text: what was scored ("built-in stories evaluation text", "the prompt").
        tokens: predicted tokens (the first token of each window is context, not predicted).
        window: tokens per window; stride: tokens between window starts (default: ``window``,
            non-overlapping windows, as :func:`perplexity` scores and the Wanda and SparseGPT papers do).
        calibration: the pruning's calibration (:func:`calibration_words`); None: the method read none.
    """
    stride = window if stride is None else stride
    overlap = "non-overlapping" if stride >= window else "overlapping"
    return (
        f"Protocol: {tokens:,} predicted tokens of the {text}; window {window} tokens, stride {stride} "
        f"({overlap}, each window scored on its own, teacher-forced, float32 on CPU); calibration: "
        f"{calibration or 'none (the method reads no activations)'}"
    )
