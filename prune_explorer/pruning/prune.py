"""Every pruning method behind one call: ``prune_masks(dense, method, pattern, sparsity) -> PruneResult``.

The methods live in :mod:`prune_explorer.pruning.methods`, one module each, behind a registry; this module
checks the request against what the method declares (patterns, calibration, sequential variant), builds the
:class:`~prune_explorer.pruning.method.PruneJob`, and records what ran.
Patterns: ``unstructured``; ``N:M`` such as ``2:4`` (N kept of every M consecutive inputs; fixed sparsity
1 − N/M, the sparsity argument is ignored); ``neurons`` / ``heads`` (whole units, see
:mod:`prune_explorer.pruning.units`).
Per-layer sparsities (``layer_sparsity``, e.g. from :mod:`prune_explorer.pruning.allocation`) give named
layers their own share; whole units go per block, at the share of the block's layers (their
parameter-weighted mean where they differ); N:M ignores them, as it ignores the sparsity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS, PrunableLayer, select
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch, resolve_calibration
from prune_explorer.pruning.masks import n_m_tail, sparsity_of
from prune_explorer.pruning.method import Method, PruneJob
from prune_explorer.pruning.methods import METHODS, get_method
from prune_explorer.pruning.patterns import Pattern, parse_pattern
from prune_explorer.pruning.result import PruneResult
from prune_explorer.pruning.sparsegpt_layer import DEFAULT_BLOCKSIZE, DEFAULT_PERCDAMP
from prune_explorer.pruning.target import Target

log = logging.getLogger(__name__)


def _check_request(method: Method, pattern: Pattern, sparsity: float, sequential: bool | None) -> None:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be between 0 and 1, got {sparsity}")
    if pattern.kind not in method.patterns:
        others = [m.label for m in METHODS.values() if pattern.kind in m.patterns]
        raise ValueError(
            f"{method.label} prunes {_pattern_names(method.patterns)} patterns, not {pattern.kind}; "
            f"for {pattern.kind} use {' or '.join(others) if others else 'another pattern'}"
        )
    if sequential and pattern.structured:
        raise ValueError(
            "structured pruning scores units on one pass of the dense model; sequential is not offered"
        )
    if sequential and not method.calibrated:
        raise ValueError(f"sequential pruning needs calibration data; {method.name} uses none")
    if sequential and not method.offers_sequential:
        raise ValueError(f"{method.label} has no sequential variant")


def _check_layer_sparsity(
    dense: DenseModel, layers: Sequence[PrunableLayer], layer_sparsity: Mapping[str, float]
) -> dict[str, float]:
    """The mapping as plain floats, checked: every name a selected layer, every value in [0, 1]."""
    selected = {layer.name for layer in layers}
    out = {}
    for name, value in layer_sparsity.items():
        if name not in selected:
            why = (
                f"a {dense.by_name[name].kind} layer, not among the kinds selected"
                if name in dense.by_name
                else "no prunable layer of this model"
            )
            raise ValueError(f"layer_sparsity names {name!r}: {why}")
        try:
            share = float(value)
        except (TypeError, ValueError):
            share = float("nan")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"layer_sparsity for {name} must be between 0 and 1, got {value!r}")
        out[name] = share
    return out


def _pattern_names(kinds: Sequence[str]) -> str:
    names = [{"n:m": "N:M"}.get(kind, kind) for kind in kinds]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _n_m_messages(pattern: Pattern, sparsity: float, layers: Sequence[PrunableLayer]) -> list[str]:
    messages = []
    if sparsity != pattern.fixed_sparsity:
        messages.append(
            f"{pattern.n}:{pattern.m} fixes the sparsity at {pattern.fixed_sparsity:.0%}; the sparsity asked "
            "is ignored"
        )
    for layer in layers:
        tail = n_m_tail(layer.shape[1], pattern.m)
        if tail:
            messages.append(
                f"{layer.name}: the last {tail} of {layer.shape[1]} input columns form no full group of "
                f"{pattern.m} and stay dense"
            )
    return messages


def _unit_messages(dense: DenseModel, pattern: Pattern, sparsity: float, masks: dict) -> list[str]:
    """Why whole-unit pruning leaves layers at other sparsities than asked: round(sparsity · units) units go
    in each block, and under grouped-query attention a K/V head goes only with every query head sharing it."""
    shares: dict[str, list[float]] = {}
    for name, mask in masks.items():
        shares.setdefault(dense.by_name[name].kind.split("_", 1)[-1], []).append(sparsity_of(mask))
    mean = {kind: sum(values) / len(values) for kind, values in shares.items()}
    own = {kind: share for kind, share in mean.items() if kind not in ("k", "v")}
    shared = {kind: share for kind, share in mean.items() if kind in ("k", "v")}
    unit, messages = pattern.kind, []
    if any(f"{share:.0%}" != f"{sparsity:.0%}" for share in own.values()):
        messages.append(
            f"{sparsity:.0%} asked, rounded to whole {unit} in each block (round(sparsity × {unit}) go): "
            + ", ".join(own)
            + f" lose {max(own.values()):.0%}"
            + (" on average over blocks" if min(own.values()) != max(own.values()) else "")
        )
    if shared and own and max(shared.values()) < min(own.values()) - 0.005:
        messages.append(
            f"grouped-query attention: each K/V head serves several query heads and goes only when all of "
            f"them have gone, so k and v lose {sum(shared.values()) / len(shared):.0%} on average"
        )
    return messages


def prune_masks(
    dense_or_state: DenseModel | Target,
    method: str,
    pattern: str = "unstructured",
    sparsity: float = 0.5,
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    calibration: CalibrationBatch | str | None = None,
    seed: int = 0,
    sequential: bool | None = None,
    blocksize: int = DEFAULT_BLOCKSIZE,
    percdamp: float = DEFAULT_PERCDAMP,
    progress: Progress = None,
    layer_sparsity: Mapping[str, float] | None = None,
) -> PruneResult:
    """Decide what ``method`` prunes in the selected layers of the dense model (nothing is applied).

    A :class:`~prune_explorer.state.PruningState` may be passed for convenience: its dense model is used, its
    current pruning is not (every method starts from the dense weights).

    Args:
        method: a key of ``pruning.methods.METHODS``.
        pattern: "unstructured", "N:M" (e.g. "2:4"), "neurons" or "heads".
        sparsity: share to prune in [0, 1] (per layer; per row for Wanda; per block's units when structured);
            ignored for N:M, whose sparsity is 1 − N/M.
        kinds: layer kinds to prune (``models.layers.ALL_KINDS``); embeddings cannot be calibrated.
        calibration: a :class:`CalibrationBatch`, a text (cut into sequences of 128 tokens), or None for the
            built-in calibration text of the model's text set. Used by calibrated methods only.
        seed: random method's seed (per layer: seed + layer index).
        sequential: prune block by block on the already-pruned model's activations. Default: the method's
            own (SparseGPT: yes, as its paper; Wanda: one dense pass, cached per calibration batch).
        blocksize, percdamp: SparseGPT's B and λ.
        progress: called with the share done, in (0, 1].
        layer_sparsity: {layer name: share to prune} for layers that get their own sparsity (the others
            take ``sparsity``); each layer's share is counted in that layer's own comparison group (layer,
            or row for Wanda). Whole units: one share per block (see ``PruneJob.group_sparsity``). N:M
            ignores it (with a message).
    Returns:
        :class:`PruneResult`; ``weights`` is set for methods that update weights.
    Raises:
        ValueError: unknown method or pattern, a pattern the method does not support, N:M out of range,
            sparsity outside [0, 1], a structured sparsity that removes every unit, calibration text that is
            empty or too short, embeddings with a calibrated method; a ``layer_sparsity`` name that is no
            selected layer, or a value outside [0, 1] (the message names the layer).
    """
    start = time.perf_counter()
    dense = dense_or_state if isinstance(dense_or_state, DenseModel) else dense_or_state.dense
    spec = get_method(method)
    pat = parse_pattern(pattern)
    _check_request(spec, pat, sparsity, sequential)
    layers = select(dense.layers, kinds)
    if not layers:
        raise ValueError(f"no prunable layers of kinds {list(kinds)} in this model")
    per_layer = _check_layer_sparsity(dense, layers, layer_sparsity or {})
    sequential = spec.sequential_default if sequential is None else sequential
    calib = resolve_calibration(dense, calibration) if spec.calibrated else None
    messages = _n_m_messages(pat, sparsity, layers) if pat.kind == "n:m" else []
    if per_layer and pat.kind == "n:m":
        messages.append(f"{pat.n}:{pat.m} fixes every layer's sparsity; the per-layer sparsities are ignored")
        per_layer = {}
    job = PruneJob(
        dense,
        layers,
        pat,
        sparsity,
        calib,
        bool(sequential),
        seed,
        {"blocksize": blocksize, "percdamp": percdamp},
        progress,
        messages,
        per_layer,
    )
    masks, weights = spec.decide(job)
    if pat.structured and len(set(per_layer.values()) | {sparsity}) == 1:
        job.messages[:0] = _unit_messages(dense, pat, sparsity, masks)
    elif pat.structured:
        job.messages.insert(0, f"per-layer sparsities: each block's {pat.kind} go at its layers' share")
    if progress:
        progress(1.0)
    for message in messages:
        log.info(message)
    return PruneResult(masks=masks, weights=weights or None, info=_info(spec, job, masks, pattern, start))


def _info(spec: Method, job: PruneJob, masks: dict, pattern: str, start: float) -> dict:
    total = sum(m.numel() for m in masks.values())
    pruned = sum(int(m.numel() - m.sum()) for m in masks.values())
    calib = job.calibration
    return {
        "method": spec.name,
        "pattern": pattern,
        "sparsity_asked": job.pattern.fixed_sparsity if job.pattern.kind == "n:m" else job.sparsity,
        "sparsity": pruned / total if total else 0.0,
        "layer_sparsity": {name: sparsity_of(m) for name, m in masks.items()},
        "layer_sparsity_asked": dict(job.layer_sparsity) or None,
        "formula": spec.formula_for(job.pattern),
        "variant": spec.variant_for(job.pattern, job.sequential),
        "sequential": job.sequential,
        "calibration": None
        if calib is None
        else {
            "source": calib.source,
            "n_sequences": calib.n_sequences,
            "seq_len": calib.seq_len,
            "tokens": calib.n_tokens,
            "text_tokens": calib.text_tokens,
        },
        "messages": job.messages,
        "seconds": time.perf_counter() - start,
    }
