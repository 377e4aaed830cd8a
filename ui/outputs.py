"""What the pages show, computed through the library once: dense results per process, pruned per session.

Dense results depend only on the shared dense model, so they live in its shared cache for every session;
pruned results live in the session's memo, keyed by the settings applied. A slider move recomputes the
pruned side only. When nothing is pruned the working model computes exactly what the dense one does, so the
dense results are reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st
import torch

from prune_explorer import texts
from prune_explorer.execution.labels import DENSE, DENSE_ZEROS
from prune_explorer.measure import evaluate
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.progress import Progress
from prune_explorer.state import PruningState
from prune_explorer.timing import Timing, forward_runner, time_interleaved
from ui import background, results, session


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


def generations(
    state: PruningState,
    ids: list[int],
    max_new: int,
    on_token: Callable[[int], None] | None = None,
    on_prompt: Callable[[torch.Tensor], None] | None = None,
) -> Generation:
    """Greedy continuations of ``ids`` by the dense and the session's pruned model.

    The prompt logits computed on the way are kept for :func:`next_token_logits`, so a slider move runs the
    pruned prompt once, not twice. ``on_prompt`` and ``on_token`` hear the pruned model's prompt logits and
    each new token as they come (only when the pruned side is computed now, not memoised), so the page can
    show them while the text grows.
    """
    dense_tokens = dense_generation(state.dense, ids, max_new)
    if session.nothing_pruned():
        return Generation(dense=dense_tokens, pruned=dense_tokens)
    draft = last_pruned_tokens(ids, max_new)  # a step's text is most like the last step's
    pruned_cont = results.memo(
        "continue",
        continuation_key(ids, max_new),
        lambda: pruned_continuation(state.model, state.dense, ids, max_new, on_token, on_prompt, draft),
    )
    results.memo("logits", logits_key(ids), lambda: pruned_cont.prompt_logits)
    return Generation(dense=dense_tokens, pruned=pruned_cont.tokens)


def continuation_key(ids: list[int], max_new: int) -> tuple:
    """The session memo's key of the pruned continuation of ``ids`` under the settings applied now."""
    return (session.pruned_key(), tuple(ids), max_new)


def logits_key(ids: list[int]) -> tuple:
    """The session memo's key of the pruned prompt logits of ``ids`` under the settings applied now."""
    return (session.pruned_key(), tuple(ids))


def pruned_continuation(
    model: torch.nn.Module,
    dense: DenseModel,
    ids: list[int],
    max_new: int,
    on_token=None,
    on_prompt=None,
    draft: list[int] | None = None,
) -> evaluate.Continuation:
    """A pruned model's greedy continuation, decoded speculatively with a free draft: ``draft`` (the text of
    a nearby setting: one slider step on SmolLM2 at 30-50% then takes 2 passes instead of 12), else the
    dense text. The tokens are the model's own greedy choices either way; the draft only saves passes."""
    return evaluate.continue_greedily(
        model,
        ids,
        max_new_tokens=max_new,
        stop_ids=stop_ids(dense),
        on_token=on_token,
        on_prompt=on_prompt,
        draft=draft if draft is not None else dense_generation(dense, ids, max_new),
    )


def _continue(
    model: torch.nn.Module, ids: list[int], max_new: int, stops: tuple[int, ...]
) -> evaluate.Continuation:
    return evaluate.continue_greedily(model, ids, max_new_tokens=max_new, stop_ids=stops)


def dense_generation(dense: DenseModel, ids: list[int], max_new: int) -> list[int]:
    """The dense model's greedy continuation, computed once per process (its prompt logits kept too)."""
    cont = results.shared(
        dense,
        ("continue", tuple(ids), max_new),
        lambda: _continue(dense.model, ids, max_new, stop_ids(dense)),
    )
    results.shared(dense, ("logits", tuple(ids)), lambda: cont.prompt_logits)
    return cont.tokens


def last_pruned_tokens(ids: list[int] | None = None, max_new: int | None = None) -> list[int] | None:
    """The pruned continuation shown before (whatever settings it was for), to stand in while a new grows;
    with ``ids`` and ``max_new``, only one of that prompt and length."""
    hit = st.session_state.get(results.MEMO, {}).get("continue")
    if hit is None or (ids is not None and hit[0][1:] != (tuple(ids), max_new)):
        return None
    return hit[1].tokens


def dense_logits(dense: DenseModel, ids: list[int]) -> torch.Tensor:
    """float32 (T, vocab) logits of the prompt under the dense model (shared)."""
    return results.shared(dense, ("logits", tuple(ids)), lambda: evaluate.next_token_logits(dense.model, ids))


def next_token_logits(state: PruningState, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (T, vocab) logits of the prompt under the dense and the pruned model."""
    shared = dense_logits(state.dense, ids)
    if session.nothing_pruned():
        return shared, shared
    return shared, results.memo(
        "logits", logits_key(ids), lambda: evaluate.next_token_logits(state.model, ids)
    )


def eval_ids(dense: DenseModel) -> list[int]:
    """The held-out evaluation text of the model's text set, tokenized once per model."""
    text_set = dense.info.get("text_set", "stories")
    return results.shared(
        dense, ("eval_ids", text_set), lambda: dense.tokenizer.encode(texts.eval_text(text_set))
    )


def dense_perplexity(dense: DenseModel, progress: Progress = None) -> evaluate.Perplexity:
    ids = eval_ids(dense)
    return results.shared(
        dense, ("perplexity",), lambda: evaluate.perplexity(dense.model, ids, progress=progress)
    )


def cached_dense_perplexity(dense: DenseModel) -> evaluate.Perplexity | None:
    return results.peek_shared(dense, ("perplexity",))


def cached_pruned_perplexity(state: PruningState) -> evaluate.Perplexity | None:
    if session.nothing_pruned():
        return cached_dense_perplexity(state.dense)
    return results.peek("perplexity", session.pruned_key())


def pruned_perplexity(state: PruningState, progress: Progress = None) -> evaluate.Perplexity:
    if session.nothing_pruned():
        result = dense_perplexity(state.dense, progress)
    else:
        ids = eval_ids(state.dense)
        result = results.memo(
            "perplexity",
            session.pruned_key(),
            lambda: evaluate.perplexity(state.model, ids, progress=progress),
        )
    return result


def latency_task(state: PruningState, ids: list[int]) -> background.Task:
    """Median forward latency of the dense and the pruned model on the prompt (interleaved runs), measured
    in the background: (dense, pruned) Timing."""
    input_ids = torch.tensor([ids], dtype=torch.long)
    pruned_kernel = DENSE if session.nothing_pruned() else DENSE_ZEROS
    runs = {
        "dense": forward_runner(state.dense.model, input_ids),
        "pruned": forward_runner(state.model, input_ids),
    }

    def measure(progress: Progress) -> tuple[Timing, Timing]:
        kernels = {"dense": DENSE, "pruned": pruned_kernel}
        timings = time_interleaved(runs, kernels, warmup=3, repeats=15, progress=progress)
        return timings["dense"], timings["pruned"]

    key = (session.pruned_key(), tuple(ids))
    return background.Task("latency", key, "Timing dense and pruned forward passes", measure)


def perplexity_task(state: PruningState) -> background.Task:
    """Perplexity of the held-out text under the session's model (and the dense one, shared), measured in
    the background."""
    dense, nothing_pruned = state.dense, session.nothing_pruned()

    def measure(progress: Progress) -> evaluate.Perplexity:
        dense_ppl = dense_perplexity(dense, progress=lambda f: progress(f / 2))
        if nothing_pruned:
            return dense_ppl
        return evaluate.perplexity(state.model, eval_ids(dense), progress=lambda f: progress(0.5 + f / 2))

    return background.Task(
        "perplexity",
        session.pruned_key(),
        "Scoring the held-out text",
        measure,
        cached=lambda: cached_pruned_perplexity(state),
        model=None if nothing_pruned else state.model,
    )


def _token_ids(dense: DenseModel, n_tokens: int) -> list[int]:
    return eval_ids(dense)[: min(n_tokens, context_length(dense.model))]


def cached_token_losses(
    state: PruningState, n_tokens: int
) -> tuple[list[int], torch.Tensor, torch.Tensor] | None:
    ids = _token_ids(state.dense, n_tokens)
    dense_nll = results.peek_shared(state.dense, ("token_nll", len(ids)))
    if dense_nll is None:
        return None
    if session.nothing_pruned():
        return ids, dense_nll, dense_nll
    pruned_nll = results.peek("token_nll", (session.pruned_key(), len(ids)))
    return None if pruned_nll is None else (ids, dense_nll, pruned_nll)


def token_losses(state: PruningState, n_tokens: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The first ``n_tokens`` of the evaluation text and each predicted token's NLL (float32 (n-1,), nats)
    under the dense and the session's pruned model."""
    dense = state.dense
    ids = _token_ids(dense, n_tokens)
    t = torch.tensor(ids, dtype=torch.long)
    dense_nll = results.shared(dense, ("token_nll", len(ids)), lambda: evaluate.token_nll(dense.model, t))
    if session.nothing_pruned():
        return ids, dense_nll, dense_nll
    key = (session.pruned_key(), len(ids))
    return ids, dense_nll, results.memo("token_nll", key, lambda: evaluate.token_nll(state.model, t))
