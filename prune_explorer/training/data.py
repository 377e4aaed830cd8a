"""Training token streams: the built-in training text, a user's text, or text sampled from the dense model.

Whatever the source, training text never overlaps the model's evaluation or calibration text: a stream that
shares a run of :data:`OVERLAP_TOKENS` tokens with either is refused (a user's text) or loses the sampled
sequences that do (text sampled from the model). Held-out perplexity during and after training is then a
held-out number.

Sampling from the dense model (the teacher) needs no data set at all: it is what lets the small story model,
whose training data does not ship, be recovered; with distillation it is the data-free recipe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prune_explorer import texts
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.progress import Progress

log = logging.getLogger(__name__)

SOURCES = ("builtin", "text", "sampled")
# A training stream may share no run this long with evaluation or calibration text (short common phrases,
# "Once upon a time, there was a", speaker names, are shorter).
OVERLAP_TOKENS = 32
DEFAULT_SAMPLED_TOKENS = 32 * 256


@dataclass(frozen=True)
class TrainingData:
    """One training token stream.

    Attributes:
        ids: int64 (N,), the stream; batches are windows at random offsets.
        source: what it is, for display ("built-in shakespeare training text", "uploaded text", ...).
    """

    ids: torch.Tensor
    source: str

    @property
    def tokens(self) -> int:
        return int(self.ids.numel())

    def batch(self, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """int64 (batch_size, seq_len) windows of the stream at uniformly random offsets."""
        if self.tokens < seq_len:
            raise ValueError(f"the training stream has {self.tokens} tokens, fewer than seq_len={seq_len}")
        starts = torch.randint(0, self.tokens - seq_len + 1, (batch_size,), generator=generator)
        return torch.stack([self.ids[s : s + seq_len] for s in starts.tolist()])


def _ngrams(ids: Sequence[int], n: int) -> set[tuple[int, ...]]:
    return {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}


def shared_run(ids: Sequence[int], other: Sequence[int], n: int = OVERLAP_TOKENS) -> int | None:
    """Offset in ``ids`` of the first run of ``n`` tokens that also occurs in ``other``, or None."""
    seen = _ngrams(list(other), n)
    ids = list(ids)
    return next((i for i in range(len(ids) - n + 1) if tuple(ids[i : i + n]) in seen), None)


def held_out_ids(dense: DenseModel) -> dict[str, list[int]]:
    """Token ids (no BOS) of the model's evaluation and calibration texts: what training must not see."""
    text_set = dense.info.get("text_set", "stories")
    return {
        "evaluation": dense.tokenizer.encode(texts.eval_text(text_set), bos=False),
        "calibration": dense.tokenizer.encode(texts.calibration_text(text_set), bos=False),
    }


def text_data(dense: DenseModel, text: str, seq_len: int, source: str = "uploaded text") -> TrainingData:
    """A stream from a text, checked: long enough for two windows, no overlap with held-out text.

    Raises:
        ValueError: empty text, fewer than ``2 * seq_len`` tokens, or a run of :data:`OVERLAP_TOKENS` tokens
            shared with the evaluation or calibration text (the message says which and where).
    """
    if not text or not text.strip():
        raise ValueError("text: the training text is empty; give some text or train on sampled text")
    ids = dense.tokenizer.encode(text, bos=True)
    if len(ids) < 2 * seq_len:
        raise ValueError(
            f"text: the training text has {len(ids)} tokens; training on windows of seq_len={seq_len} needs "
            f"at least {2 * seq_len}: give a longer text or a shorter seq_len"
        )
    for name, other in held_out_ids(dense).items():
        at = shared_run(ids, other)
        if at is not None:
            snippet = dense.tokenizer.decode(ids[at : at + OVERLAP_TOKENS])
            raise ValueError(
                f"text: the training text repeats {OVERLAP_TOKENS} tokens of the {name} text at token {at} "
                f"({snippet[:60]!r}...); training on it would make held-out perplexity meaningless"
            )
    return TrainingData(torch.tensor(ids, dtype=torch.long), source)


def builtin_data(dense: DenseModel, seq_len: int) -> TrainingData:
    """The built-in training text of the model's text set (``texts.training_text``)."""
    text_set = dense.info.get("text_set", "stories")
    return text_data(dense, texts.training_text(text_set), seq_len, f"built-in {text_set} training text")


@torch.inference_mode()
def sample_sequences(
    dense: DenseModel,
    n_sequences: int,
    seq_len: int,
    temperature: float = 1.0,
    seed: int = 0,
    progress: Progress = None,
) -> torch.Tensor:
    """int64 (n_sequences, seq_len) texts sampled from the dense model, each from BOS, with its KV cache.

    Plain ancestral sampling at ``temperature`` from a seeded generator (the global RNG is not touched);
    end-of-text tokens are sampled like any other, so a sequence may hold several short texts.
    """
    if n_sequences < 1 or seq_len < 2:
        raise ValueError(f"sample at least 1 sequence of 2 tokens, got {n_sequences} x {seq_len}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    bos = getattr(dense.tokenizer, "bos_token_id", None)
    bos = 1 if bos is None else int(bos)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((n_sequences, 1), bos, dtype=torch.long)
    out = dense.model(input_ids=ids, use_cache=True)
    tokens = [ids]
    for i in range(seq_len - 1):
        probs = F.softmax(out.logits[:, -1].float() / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=generator)
        tokens.append(nxt)
        if i < seq_len - 2:
            out = dense.model(input_ids=nxt, cache=out.cache, use_cache=True)
        if progress:
            progress((i + 1) / (seq_len - 1))
    return torch.cat(tokens, dim=1)


def sampled_data(
    dense: DenseModel,
    tokens: int = DEFAULT_SAMPLED_TOKENS,
    seq_len: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    progress: Progress = None,
) -> TrainingData:
    """A stream of about ``tokens`` tokens sampled from the dense model, in sequences of ``seq_len``
    (default: 256, within the model's context); sequences sharing a run with held-out text are dropped.

    Raises:
        ValueError: ``tokens`` < 2 sequences' worth, or every sequence overlapped held-out text.
    """
    seq_len = min(seq_len or 256, context_length(dense.model))
    n = tokens // seq_len
    if n < 2:
        raise ValueError(f"tokens: sample at least two sequences of {seq_len} tokens, got tokens={tokens}")
    sequences = sample_sequences(dense, n, seq_len, temperature, seed, progress)
    held_out = [_ngrams(other, OVERLAP_TOKENS) for other in held_out_ids(dense).values()]
    kept = []
    for row in sequences.tolist():
        grams = _ngrams(row, OVERLAP_TOKENS)
        if any(grams & other for other in held_out):
            continue
        kept.append(row)
    if len(kept) < len(sequences):
        log.info("dropped %d sampled sequences that overlap held-out text", len(sequences) - len(kept))
    if not kept:
        raise ValueError("every sampled sequence overlapped the evaluation or calibration text")
    ids = torch.tensor(kept, dtype=torch.long).view(-1)
    return TrainingData(ids, f"{len(kept)} x {seq_len} tokens sampled from the dense model (T={temperature})")


def training_data(
    dense: DenseModel,
    source: str = "auto",
    text: str | None = None,
    seq_len: int = 128,
    tokens: int = DEFAULT_SAMPLED_TOKENS,
    seed: int = 0,
    progress: Progress = None,
) -> TrainingData:
    """The training stream for ``source``: "builtin", "text" (``text`` given), "sampled", or "auto" (the
    built-in text where the model's text set has one, else sampled).

    Raises:
        ValueError: an unknown source, "text" without a text, or as the source's own function.
    """
    if source == "auto":
        source = "builtin" if dense.info.get("text_set", "stories") == "shakespeare" else "sampled"
    if source not in SOURCES:
        raise ValueError(f"source: unknown training data source {source!r}; choose one of {SOURCES} or auto")
    if source == "text":
        if text is None:
            raise ValueError("text: the text source needs a text")
        return text_data(dense, text, seq_len)
    if source == "builtin":
        return builtin_data(dense, seq_len)
    return sampled_data(dense, tokens, max(seq_len, 256), seed=seed, progress=progress)
