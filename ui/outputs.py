"""What the pages show, computed through the library once: dense results per process, pruned per session.

Dense results depend only on the shared dense model, so they live in ``dense.cache`` for every session;
pruned results live in the session's memo, keyed by the settings applied. A slider move recomputes the
pruned side only. When nothing is pruned the working model computes exactly what the dense one does, so the
dense results are reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from prune_explorer import evaluate, sweep, texts, timing
from prune_explorer.pruning import MagnitudeSettings
from prune_explorer.state import DenseModel, PruningState
from ui import session

# Models up to this size are measured on every change; bigger ones wait for a button.
SMALL_MODEL = 5_000_000
SWEEP_SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
Progress = Callable[[float], None] | None


def is_small(dense: DenseModel) -> bool:
    return session.shared(dense, ("num_parameters",), dense.num_parameters) <= SMALL_MODEL


def default_prompt(dense: DenseModel) -> str:
    if dense.info.get("chat"):
        return "Write one sentence about the sea."
    if dense.info.get("text_set", "stories") == "stories":
        return "Once upon a time"
    return "The king said"


def prompt_ids(dense: DenseModel, text: str) -> list[int]:
    """Token ids of a prompt: a user turn when the tokenizer has a chat template, else BOS + text."""
    if dense.info.get("chat") and hasattr(dense.tokenizer, "chat_prompt"):
        return list(dense.tokenizer.chat_prompt(text))
    return list(dense.tokenizer.encode(text, bos=True))


def stop_ids(dense: DenseModel) -> tuple[int, ...]:
    eos = getattr(dense.tokenizer, "eos_token_id", None)
    return (eos,) if eos is not None else ()


@dataclass(frozen=True)
class Generation:
    dense: list[int]
    pruned: list[int]


def generations(state: PruningState, ids: list[int], max_new: int) -> Generation:
    """Greedy continuations of ``ids`` by the dense and the session's pruned model."""
    dense = state.dense
    stops = stop_ids(dense)

    def run(model) -> list[int]:
        return evaluate.greedy_generate(model, ids, max_new_tokens=max_new, stop_ids=stops)

    dense_out = session.shared(dense, ("generate", tuple(ids), max_new), lambda: run(dense.model))
    if session.nothing_pruned():
        return Generation(dense=dense_out, pruned=dense_out)
    key = (session.pruned_key(), tuple(ids), max_new)
    return Generation(dense=dense_out, pruned=session.memo("generate", key, lambda: run(state.model)))


def next_token_logits(state: PruningState, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (T, vocab) logits of the prompt under the dense and the pruned model."""
    dense = state.dense
    dense_logits = session.shared(
        dense, ("logits", tuple(ids)), lambda: evaluate.next_token_logits(dense.model, ids)
    )
    if session.nothing_pruned():
        return dense_logits, dense_logits
    key = (session.pruned_key(), tuple(ids))
    return dense_logits, session.memo("logits", key, lambda: evaluate.next_token_logits(state.model, ids))


def eval_ids(dense: DenseModel) -> list[int]:
    """The held-out evaluation text of the model's text set, tokenized once per model."""
    text_set = dense.info.get("text_set", "stories")
    return session.shared(
        dense, ("eval_ids", text_set), lambda: dense.tokenizer.encode(texts.eval_text(text_set))
    )


def dense_perplexity(dense: DenseModel, progress: Progress = None) -> evaluate.Perplexity:
    ids = eval_ids(dense)
    return session.shared(
        dense, ("perplexity",), lambda: evaluate.perplexity(dense.model, ids, progress=progress)
    )


def cached_dense_perplexity(dense: DenseModel) -> evaluate.Perplexity | None:
    return session.peek_shared(dense, ("perplexity",))


def cached_pruned_perplexity(state: PruningState) -> evaluate.Perplexity | None:
    if session.nothing_pruned():
        return cached_dense_perplexity(state.dense)
    return session.peek("perplexity", session.pruned_key())


def pruned_perplexity(state: PruningState, progress: Progress = None) -> evaluate.Perplexity:
    if session.nothing_pruned():
        return dense_perplexity(state.dense, progress)
    ids = eval_ids(state.dense)
    return session.memo(
        "perplexity", session.pruned_key(), lambda: evaluate.perplexity(state.model, ids, progress=progress)
    )


def cached_latency(state: PruningState, ids: list[int]) -> tuple[timing.Timing, timing.Timing] | None:
    return session.peek("latency", (session.pruned_key(), tuple(ids)))


def latency(state: PruningState, ids: list[int]) -> tuple[timing.Timing, timing.Timing]:
    """Median forward latency of the dense and the pruned model on the prompt (interleaved runs)."""
    input_ids = torch.tensor([ids], dtype=torch.long)
    key = (session.pruned_key(), tuple(ids))
    return session.memo("latency", key, lambda: timing.time_pair(state.dense.model, state.model, input_ids))


def _sweep_key(settings: MagnitudeSettings | None) -> tuple:
    settings = settings or MagnitudeSettings()
    return ("sweep", session.settings_key(replace(settings, sparsity=0.0, threshold=0.0)), SWEEP_SPARSITIES)


def cached_sweep(dense: DenseModel, settings: MagnitudeSettings | None) -> list[sweep.SweepPoint] | None:
    return session.peek_shared(dense, _sweep_key(settings))


def perplexity_sweep(
    dense: DenseModel, settings: MagnitudeSettings | None, progress: Progress = None
) -> list[sweep.SweepPoint]:
    """Perplexity at 0–90% sparsity with the session's kinds, policy and overrides; shared by all sessions."""
    ids = eval_ids(dense)
    return session.shared(
        dense,
        _sweep_key(settings),
        lambda: sweep.perplexity_sweep(dense, ids, SWEEP_SPARSITIES, settings, progress=progress),
    )
