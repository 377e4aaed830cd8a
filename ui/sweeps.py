"""Perplexity against sparsity, shared by every session: the Prune page's sweep, and the Compare page's points
(one per method, pattern and sparsity) with its per-layer views of the methods.

Every finished point is stored at once on the dense model's shared cache, so a stopped run keeps what it
finished and no point is computed twice for the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from prune_explorer.measure import sweep
from prune_explorer.measure.comparison import mask_overlap, reconstruction_errors
from prune_explorer.models.dense import DenseModel
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.methods import get_method
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.prune import prune_masks
from ui import background, protocol, results, session
from ui.outputs import eval_ids

SWEEP_SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MEASURE_SEQUENCES = 8  # calibration sequences the per-layer reconstruction errors are measured on


def _sweep_key(settings: MagnitudeSettings | None) -> tuple:
    settings = settings or MagnitudeSettings()
    return ("sweep", results.settings_key(replace(settings, sparsity=0.0, threshold=0.0)), SWEEP_SPARSITIES)


def _method_sweep(
    dense: DenseModel, settings: MagnitudeSettings | None, batch: CalibrationBatch | None
) -> list[tuple] | None:
    """Compare-page point keys of the sweep for a method other than magnitude + unstructured, else None.

    N:M has one sparsity, so its sweep is the same method unstructured (the N:M point sits beside it).
    """
    if settings is None or getattr(settings, "slider_path", True):
        return None
    pattern = "unstructured" if parse_pattern(settings.pattern).kind == "n:m" else settings.pattern
    return [
        point_key(settings.method, pattern, s, settings.kinds, batch, settings.seed) for s in SWEEP_SPARSITIES
    ]


def cached_sweep(dense: DenseModel, settings: MagnitudeSettings | None) -> list[sweep.SweepPoint] | None:
    keys = _method_sweep(dense, settings, session.calibration()[0])
    if keys is not None:
        points = [cached_point(dense, key) for key in keys]
        return None if missing_points(dense, keys) else [p for p in points if p is not None]
    return results.peek_shared(dense, _sweep_key(settings))


def sweep_task(dense: DenseModel, settings: MagnitudeSettings | None) -> background.Task:
    """:func:`perplexity_sweep` in the background (it prunes a scratch copy: the session's model is free)."""
    batch = session.calibration()[0]
    return background.Task(
        "sweep",
        _sweep_key(settings),
        "Sweeping 0–90% sparsity",
        lambda progress: perplexity_sweep(dense, settings, progress, batch),
        on_session_model=False,
        cached=lambda: cached_sweep(dense, settings),
    )


def perplexity_sweep(
    dense: DenseModel,
    settings: MagnitudeSettings | None,
    progress: Progress,
    batch: CalibrationBatch | None,
) -> list[sweep.SweepPoint]:
    """Perplexity at 0–90% sparsity with the session's method, pattern, kinds, policy and overrides; shared by
    all sessions (a method's points are the Compare page's). ``batch``: the sidebar's calibration batch, for
    methods that need one. Runs without Streamlit (a background thread)."""
    keys = _method_sweep(dense, settings, batch)
    if keys is not None:
        missing = missing_points(dense, keys)
        for i, key in enumerate(missing):
            compute_point(dense, key, batch, lambda f, i=i: progress and progress((i + f) / len(missing)))
        return [p for p in (cached_point(dense, key) for key in keys) if p is not None]
    ids = eval_ids(dense)
    return results.shared(
        dense,
        _sweep_key(settings),
        lambda: sweep.perplexity_sweep(dense, ids, SWEEP_SPARSITIES, settings, progress=progress),
    )


def card(dense: DenseModel, settings: MagnitudeSettings | None) -> str:
    """The protocol card of the sweep of ``settings``: every point scores the held-out text; a method's
    points read the sidebar's calibration batch (they are the Compare page's), the slider path reads the
    calibration its allocation recorded (OWL's), if any."""
    if _method_sweep(dense, settings, None) is not None:
        return protocol.points_card(dense, [settings.method], session.calibration()[0])
    return protocol.perplexity_card(dense, protocol.held_out_tokens(dense), settings)


# ----- methods side by side (Compare page)


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


def small_store(dense: DenseModel, name: str) -> dict:
    """A process-wide dict on the dense model for small results (floats), never evicted."""
    return dense.cache.get(("ui", "store", name), dict, pin=True)


def cached_point(dense: DenseModel, key: tuple) -> sweep.SweepPoint | None:
    """A finished point, or None (not computed yet, or it failed: see :func:`point_error`)."""
    value = small_store(dense, "points").get(key)
    return value if isinstance(value, sweep.SweepPoint) else None


def point_error(dense: DenseModel, key: tuple) -> str | None:
    value = small_store(dense, "points").get(key)
    return value if isinstance(value, str) else None


def missing_points(dense: DenseModel, keys: list[tuple]) -> list[tuple]:
    store = small_store(dense, "points")
    return [key for key in keys if key not in store]


def compute_point(
    dense: DenseModel, key: tuple, batch: CalibrationBatch | None, progress: Progress = None
) -> sweep.SweepPoint | None:
    """Prune a scratch state to one point and score the held-out text; stores the point (or the error)."""
    method, pattern, sparsity, kinds, _, seed = key
    try:
        point = sweep.method_point(
            dense,
            eval_ids(dense),
            method,
            sparsity,
            pattern=pattern,
            kinds=kinds,
            calibration=batch,
            seed=seed,
            progress=progress,
        )
    except ValueError as exc:
        small_store(dense, "points")[key] = str(exc)
        return None
    small_store(dense, "points")[key] = point
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
    store = small_store(dense, "layers")
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
    store = small_store(dense, "layers")
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
