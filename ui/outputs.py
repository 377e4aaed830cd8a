"""What the pages show, computed through the library once: dense results per process, pruned per session.

Dense results depend only on the shared dense model, so they live in its shared cache for every session;
pruned results live in the session's memo, keyed by the settings applied. A slider move recomputes the
pruned side only. When nothing is pruned the working model computes exactly what the dense one does, so the
dense results are reused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from prune_explorer import texts
from prune_explorer.execution.labels import DENSE, DENSE_ZEROS
from prune_explorer.measure import evaluate, sweep
from prune_explorer.measure.comparison import mask_overlap, reconstruction_errors
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.models.layers import select
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.methods import get_method
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import PruningState
from prune_explorer.timing import Timing, forward_runner, time_interleaved
from ui import session

SWEEP_SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MEASURE_SEQUENCES = 8  # calibration sequences the per-layer reconstruction errors are measured on


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
    """Greedy continuations of ``ids`` by the dense and the session's pruned model.

    The prompt logits computed on the way are kept for :func:`next_token_logits`, so a slider move runs the
    pruned prompt once, not twice.
    """
    dense = state.dense
    stops = stop_ids(dense)

    def run(model) -> evaluate.Continuation:
        return evaluate.continue_greedily(model, ids, max_new_tokens=max_new, stop_ids=stops)

    dense_cont = session.shared(dense, ("continue", tuple(ids), max_new), lambda: run(dense.model))
    session.shared(dense, ("logits", tuple(ids)), lambda: dense_cont.prompt_logits)
    if session.nothing_pruned():
        return Generation(dense=dense_cont.tokens, pruned=dense_cont.tokens)
    key = (session.pruned_key(), tuple(ids), max_new)
    pruned_cont = session.memo("continue", key, lambda: run(state.model))
    session.memo("logits", (session.pruned_key(), tuple(ids)), lambda: pruned_cont.prompt_logits)
    return Generation(dense=dense_cont.tokens, pruned=pruned_cont.tokens)


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


def cached_latency(state: PruningState, ids: list[int]) -> tuple[Timing, Timing] | None:
    return session.peek("latency", (session.pruned_key(), tuple(ids)))


def latency(state: PruningState, ids: list[int]) -> tuple[Timing, Timing]:
    """Median forward latency of the dense and the pruned model on the prompt (interleaved runs)."""
    input_ids = torch.tensor([ids], dtype=torch.long)
    key = (session.pruned_key(), tuple(ids))
    return session.memo("latency", key, lambda: _time_pair(state, input_ids))


def _time_pair(state: PruningState, input_ids: torch.Tensor) -> tuple[Timing, Timing]:
    runs = {
        "dense": forward_runner(state.dense.model, input_ids),
        "pruned": forward_runner(state.model, input_ids),
    }
    pruned_kernel = DENSE if session.nothing_pruned() else DENSE_ZEROS
    timings = time_interleaved(runs, {"dense": DENSE, "pruned": pruned_kernel}, warmup=3, repeats=15)
    return timings["dense"], timings["pruned"]


def _sweep_key(settings: MagnitudeSettings | None) -> tuple:
    settings = settings or MagnitudeSettings()
    return ("sweep", session.settings_key(replace(settings, sparsity=0.0, threshold=0.0)), SWEEP_SPARSITIES)


def _method_sweep(dense: DenseModel, settings: MagnitudeSettings | None) -> list[tuple] | None:
    """Compare-page point keys of the sweep for a method other than magnitude + unstructured, else None.

    N:M has one sparsity, so its sweep is the same method unstructured (the N:M point sits beside it).
    """
    if settings is None or getattr(settings, "slider_path", True):
        return None
    pattern = "unstructured" if parse_pattern(settings.pattern).kind == "n:m" else settings.pattern
    batch = session.calibration()[0]
    return [
        point_key(settings.method, pattern, s, settings.kinds, batch, settings.seed) for s in SWEEP_SPARSITIES
    ]


def cached_sweep(dense: DenseModel, settings: MagnitudeSettings | None) -> list[sweep.SweepPoint] | None:
    keys = _method_sweep(dense, settings)
    if keys is not None:
        points = [cached_point(dense, key) for key in keys]
        return None if missing_points(dense, keys) else [p for p in points if p is not None]
    return session.peek_shared(dense, _sweep_key(settings))


def perplexity_sweep(
    dense: DenseModel, settings: MagnitudeSettings | None, progress: Progress = None
) -> list[sweep.SweepPoint]:
    """Perplexity at 0–90% sparsity with the session's method, pattern, kinds, policy and overrides; shared by
    all sessions (a method's points are the Compare page's)."""
    keys = _method_sweep(dense, settings)
    if keys is not None:
        batch = session.calibration()[0]
        for i, key in enumerate(missing_points(dense, keys)):
            compute_point(dense, key, batch, lambda f, i=i: progress and progress((i + f) / len(keys)))
        return [p for p in (cached_point(dense, key) for key in keys) if p is not None]
    ids = eval_ids(dense)
    return session.shared(
        dense,
        _sweep_key(settings),
        lambda: sweep.perplexity_sweep(dense, ids, SWEEP_SPARSITIES, settings, progress=progress),
    )


# ----- methods side by side (Compare page): every finished point is stored at once, so a stop keeps it


def point_key(
    method: str,
    pattern: str,
    sparsity: float,
    kinds: tuple[str, ...],
    batch: CalibrationBatch | None,
    seed: int = 0,
) -> tuple:
    """(method, pattern, sparsity, kinds, calibration key or None, seed); N:M's sparsity is its fixed one."""
    fixed = parse_pattern(pattern).fixed_sparsity
    calib = (batch.key if batch is not None else "missing") if get_method(method).calibrated else None
    return (method, pattern, round(fixed if fixed is not None else sparsity, 4), tuple(kinds), calib, seed)


def _store(dense: DenseModel, name: str) -> dict:
    """A process-wide dict on the dense model for small results (floats), never evicted."""
    return dense.cache.get(("ui", "store", name), dict, pin=True)


def cached_point(dense: DenseModel, key: tuple) -> sweep.SweepPoint | None:
    """A finished point, or None (not computed yet, or it failed: see :func:`point_error`)."""
    value = _store(dense, "points").get(key)
    return value if isinstance(value, sweep.SweepPoint) else None


def point_error(dense: DenseModel, key: tuple) -> str | None:
    value = _store(dense, "points").get(key)
    return value if isinstance(value, str) else None


def missing_points(dense: DenseModel, keys: list[tuple]) -> list[tuple]:
    store = _store(dense, "points")
    return [key for key in keys if key not in store]


def compute_point(
    dense: DenseModel, key: tuple, batch: CalibrationBatch | None, progress: Progress = None
) -> sweep.SweepPoint | None:
    """Prune a scratch state to one point and score the held-out text; stores the point (or the error)."""
    method, pattern, sparsity, kinds, _, seed = key
    half = (lambda f: progress(f / 2)) if progress else None
    try:
        result = _result(dense, key, batch, half)
    except ValueError as exc:
        _store(dense, "points")[key] = str(exc)
        return None
    scratch = PruningState(dense)
    result.apply(scratch)
    ppl = evaluate.perplexity(
        scratch.model, eval_ids(dense), progress=(lambda f: progress(0.5 + f / 2)) if progress else None
    )
    achieved = scratch.overall_sparsity(select(dense.layers, kinds))
    point = sweep.SweepPoint(sparsity=sparsity, achieved=achieved, ppl=ppl.ppl)
    _store(dense, "points")[key] = point
    return point


def _result(dense: DenseModel, key: tuple, batch: CalibrationBatch | None, progress: Progress = None):
    method, pattern, sparsity, kinds, _, seed = key
    return prune_masks(
        dense,
        method,
        pattern,
        sparsity,
        kinds=kinds,
        calibration=batch if get_method(method).calibrated else None,
        seed=seed,
        progress=progress,
    )


@dataclass(frozen=True)
class LayerViews:
    """Per-layer numbers of several methods at one pattern and sparsity."""

    errors: dict[str, dict[str, float]]  # method -> layer -> relative ‖WX − W'X‖ / ‖WX‖
    overlap: dict[str, float] | None  # layer -> Jaccard of the pruned weights of the chosen pair
    failed: dict[str, str]  # method -> why it could not run


def _views_key(kind: str, key: tuple, batch: CalibrationBatch) -> tuple:
    return (kind, key, batch.key)


def cached_layer_views(
    dense: DenseModel, keys: dict[str, tuple], pair: tuple[str, str], batch: CalibrationBatch
) -> LayerViews | None:
    """The per-layer views if every part was computed before (keys: method -> point key), else None."""
    store = _store(dense, "layers")
    wanted = [_views_key("errors", k, batch) for k in keys.values()]
    wanted.append(_views_key("overlap", (keys[pair[0]], keys[pair[1]]), batch))
    if any(w not in store for w in wanted):
        return None
    return layer_views(dense, keys, pair, batch)


def layer_views(
    dense: DenseModel,
    keys: dict[str, tuple],
    pair: tuple[str, str],
    batch: CalibrationBatch,
    progress: Progress = None,
) -> LayerViews:
    """Reconstruction error per layer for each method, and the Jaccard overlap of ``pair``'s masks.

    Errors are measured on the dense model's inputs of each layer over the first ``MEASURE_SEQUENCES``
    sequences of the calibration batch (the methods prune with all of it). ``keys`` maps
    each method (the pair included) to its point key; every finished part is stored at once.
    """
    store = _store(dense, "layers")
    # The measurement reruns the model once per block: a few sequences give stable relative errors.
    measure = replace(batch, ids=batch.ids[:MEASURE_SEQUENCES])
    errors, failed, masks = {}, {}, {}
    overlap_key = _views_key("overlap", (keys[pair[0]], keys[pair[1]]), batch)
    todo = list(keys)
    for i, method in enumerate(todo):

        def step(f: float, i: int = i) -> None:
            if progress:
                progress((i + f) / len(todo))

        error_key = _views_key("errors", keys[method], batch)
        need_mask = method in pair and overlap_key not in store
        if error_key in store and not need_mask:
            errors[method] = store[error_key]
            continue
        try:
            result = _result(dense, keys[method], batch, lambda f, step=step: step(f / 2))
        except ValueError as exc:
            failed[method] = str(exc)
            continue
        if error_key not in store:
            store[error_key] = reconstruction_errors(
                dense, result, calibration=measure, progress=lambda f, step=step: step(0.5 + f / 2)
            )
        errors[method] = store[error_key]
        if need_mask:
            masks[method] = result.masks
    if overlap_key not in store and all(m in masks for m in pair):
        store[overlap_key] = mask_overlap(masks[pair[0]], masks[pair[1]])
    return LayerViews(errors=errors, overlap=store.get(overlap_key), failed=failed)


def _token_ids(dense: DenseModel, n_tokens: int) -> list[int]:
    return eval_ids(dense)[: min(n_tokens, context_length(dense.model))]


def cached_token_losses(
    state: PruningState, n_tokens: int
) -> tuple[list[int], torch.Tensor, torch.Tensor] | None:
    ids = _token_ids(state.dense, n_tokens)
    dense_nll = session.peek_shared(state.dense, ("token_nll", len(ids)))
    if dense_nll is None:
        return None
    if session.nothing_pruned():
        return ids, dense_nll, dense_nll
    pruned_nll = session.peek("token_nll", (session.pruned_key(), len(ids)))
    return None if pruned_nll is None else (ids, dense_nll, pruned_nll)


def token_losses(state: PruningState, n_tokens: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The first ``n_tokens`` of the evaluation text and each predicted token's NLL (float32 (n-1,), nats)
    under the dense and the session's pruned model."""
    dense = state.dense
    ids = _token_ids(dense, n_tokens)
    t = torch.tensor(ids, dtype=torch.long)
    dense_nll = session.shared(dense, ("token_nll", len(ids)), lambda: evaluate.token_nll(dense.model, t))
    if session.nothing_pruned():
        return ids, dense_nll, dense_nll
    key = (session.pruned_key(), len(ids))
    return ids, dense_nll, session.memo("token_nll", key, lambda: evaluate.token_nll(state.model, t))
