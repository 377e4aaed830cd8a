"""Every pruning method behind one call: ``prune_masks(dense, method, pattern, sparsity) -> PruneResult``.

Methods (scores in :mod:`scoring`, masks in :mod:`masks`, SparseGPT in :mod:`sparsegpt`, units in
:mod:`structured`; this module only wires them to the model and calibration data):
    ``magnitude``: |W|, comparison group the layer (as the app's uniform policy);
    ``random``: seeded uniform scores, comparison group the layer (the baseline any method must beat);
    ``wanda``: |W_ij|·‖X_j‖₂, comparison group the output row (Sun et al. 2023);
    ``sparsegpt``: OBS mask selection + weight reconstruction (Frantar & Alistarh 2023). It changes weights,
        so its result carries new weights as well as masks.
Patterns: ``unstructured``; ``N:M`` such as ``2:4`` (N kept of every M consecutive inputs; fixed sparsity
1 − N/M, the sparsity argument is ignored); ``neurons`` / ``heads`` (structured, see :mod:`structured`;
magnitude = L2 norm, wanda = activation-weighted, random; SparseGPT is not structured).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from prune_explorer import texts
from prune_explorer.calibration import (
    DEFAULT_SEQ_LEN,
    BlockInputs,
    CalibrationBatch,
    LayerStats,
    block_name,
    calibration_batch,
    capture_block_inputs,
    collect_block_stats,
    collect_stats,
    run_block,
)
from prune_explorer.evaluate import context_length
from prune_explorer.layers import DEFAULT_KINDS, PrunableLayer, select
from prune_explorer.masks import n_m_mask, n_m_tail, parse_n_m, per_row_mask, sparsity_of, unstructured_mask
from prune_explorer.ranking import count_for_sparsity
from prune_explorer.scoring import (
    jaccard_pruned,
    magnitude_scores,
    random_scores,
    reconstruction_error,
    relative_reconstruction_error,
    wanda_scores,
)
from prune_explorer.sparsegpt import DEFAULT_BLOCKSIZE, DEFAULT_PERCDAMP, sparsegpt_prune
from prune_explorer.state import DenseModel, PruningState, working_copy
from prune_explorer.structured import (
    activation_unit_scores,
    find_unit_groups,
    keep_units,
    magnitude_unit_scores,
    unit_masks,
)

log = logging.getLogger(__name__)

Progress = Callable[[float], None] | None

METHODS = ("magnitude", "random", "wanda", "sparsegpt")
CALIBRATED = ("wanda", "sparsegpt")
PATTERNS = ("unstructured", "2:4", "4:8", "neurons", "heads")

# LaTeX for st.latex, keyed by method (structured patterns: "structured_<method>").
FORMULAS = {
    "magnitude": r"S_{ij} = |W_{ij}|",
    "random": r"S_{ij} \sim \mathcal{U}[0, 1)",
    "wanda": r"S_{ij} = |W_{ij}| \cdot \lVert X_j \rVert_2",
    "sparsegpt": (
        r"\min_{\hat W}\ \lVert WX - \hat W X \rVert_2^2,\quad H = 2XX^\top + \lambda I,\quad"
        r" U = \mathrm{chol}(H^{-1})^\top;\quad \text{prune smallest } \frac{w_{ic}^2}{U_{cc}^2},\quad"
        r" W_{:,c:} \mathrel{-}= \frac{w_{:,c} - \hat w_{:,c}}{U_{cc}}\, U_{c,c:}"
    ),
    "structured_magnitude": r"s_u = \lVert W_u \rVert_2",
    "structured_wanda": (
        r"s_u = \sqrt{\textstyle\sum_{j \in u}"
        r" \lVert W^{\mathrm{out}}_{:,j} \rVert_2^2\,\lVert X_j \rVert_2^2}"
    ),
    "structured_random": r"s_u \sim \mathcal{U}[0, 1)",
}
# Which variant runs, for display next to the formula.
VARIANTS = {
    "magnitude": "Magnitude pruning: the smallest |w| of each layer go (N:M: of every group of M inputs).",
    "random": "Random pruning with a seeded generator: the baseline every method must beat.",
    "wanda": (
        "Wanda (Sun et al. 2023): |W|·‖X‖₂ compared within each output row (N:M: within each group of M), "
        "no weight update; activation norms from one pass of the dense model over the calibration text "
        "(sequential=True: block by block on the already-pruned model, as the authors' code)."
    ),
    "sparsegpt": (
        "SparseGPT (Frantar & Alistarh 2023), Algorithm 1: H = 2XXᵀ/N with 1% mean-diagonal dampening, "
        "blocks of 128 columns with adaptive mask selection (N:M: every M columns), OBS update of the "
        "remaining weights; transformer blocks pruned in order, each on the inputs produced by the "
        "already-pruned earlier blocks."
    ),
    "structured_magnitude": (
        "Whole neurons/heads with the smallest L2 norm (torch.nn.utils.prune.ln_structured, n=2)."
    ),
    "structured_wanda": (
        "Whole neurons/heads by Wanda-style output-weight norms scaled by input activation norms."
    ),
    "structured_random": "Whole neurons/heads chosen at random (seeded).",
}


@dataclass(frozen=True)
class Pattern:
    """A parsed sparsity pattern: ``kind`` is "unstructured", "n:m", "neurons" or "heads"."""

    kind: str
    n: int = 0
    m: int = 0

    @property
    def fixed_sparsity(self) -> float | None:
        """1 − N/M for N:M (the sparsity argument is then ignored), else None."""
        return 1.0 - self.n / self.m if self.kind == "n:m" else None

    @property
    def structured(self) -> bool:
        return self.kind in ("neurons", "heads")


def parse_pattern(pattern: str) -> Pattern:
    """Read "unstructured", "neurons", "heads" or an N:M such as "2:4" (N kept per M).

    Raises:
        ValueError: an unknown pattern, N < 1 or N >= M.
    """
    text = pattern.strip().lower()
    if text in ("unstructured", "neurons", "heads"):
        return Pattern(text)
    if ":" in text:
        n, m = parse_n_m(text)
        return Pattern("n:m", n, m)
    raise ValueError(
        f"unknown pattern {pattern!r}; choose unstructured, N:M (e.g. 2:4, 4:8), neurons or heads"
    )


@dataclass(frozen=True)
class PruneResult:
    """What a method decided.

    Attributes:
        masks: {layer name: bool (out, in)}, True = keep, for every selected layer (structured patterns: the
            layers of the units found, e.g. only attention layers for heads).
        weights: {layer name: float (out, in)} new weights (SparseGPT's reconstruction, zeros where pruned),
            or None when the method only masks (apply with ``PruningState.apply_masks``; otherwise
            ``PruningState.apply_weights(weights, masks)``).
        info: method, pattern, sparsity asked and obtained, per-layer sparsity, formula key, variant,
            calibration used, messages (dampening raised, N:M tails, ignored slider), seconds.
    """

    masks: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] | None = None
    info: dict = field(default_factory=dict)

    def apply(self, state: PruningState) -> None:
        """Apply to a session's state (masks, or masks and new weights)."""
        if self.weights:
            state.apply_weights(self.weights, self.masks)
            rest = {name: m for name, m in self.masks.items() if name not in self.weights}
            if rest:
                state.apply_masks(rest)
        else:
            state.apply_masks(self.masks)


def _dense(dense_or_state: DenseModel | PruningState) -> DenseModel:
    return dense_or_state.dense if isinstance(dense_or_state, PruningState) else dense_or_state


def default_calibration(
    dense_or_state: DenseModel | PruningState, seq_len: int = DEFAULT_SEQ_LEN, n_sequences: int | None = None
) -> CalibrationBatch:
    """The built-in calibration text of the model's text set (disjoint from its evaluation text), cut into
    ``n_sequences`` × ``seq_len`` tokens (None: as many as it holds, at most 128)."""
    dense = _dense(dense_or_state)
    text_set = dense.info.get("text_set", "stories")
    seq_len = min(seq_len, context_length(dense.model))
    return calibration_batch(
        dense.tokenizer,
        texts.calibration_text(text_set),
        seq_len,
        n_sequences,
        source=f"built-in {text_set} calibration text",
    )


def _resolve_calibration(dense: DenseModel, calibration: CalibrationBatch | str | None) -> CalibrationBatch:
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
    dense_or_state: DenseModel | PruningState,
    layers: Sequence[PrunableLayer],
    calibration: CalibrationBatch,
    progress: Progress = None,
) -> dict[str, LayerStats]:
    """Σ X² per input feature (no Gram) of ``layers`` on the *dense* model, cached on the dense model per
    calibration batch, so moving a Wanda sparsity slider does not rerun the model."""
    dense = _dense(dense_or_state)
    key = ("activation_stats", calibration.key, tuple(layer.name for layer in layers))
    if key not in dense.cache:
        # A private working copy: hooks on the shared dense model would see other sessions' forwards.
        dense.cache[key] = collect_stats(
            working_copy(dense.model), layers, calibration.ids, progress=progress
        )
    elif progress:
        progress(1.0)
    return dense.cache[key]


def _block_groups(layers: Sequence[PrunableLayer]) -> list[list[PrunableLayer]]:
    """Layers grouped by transformer block, blocks in model order (layers outside blocks: one group each)."""
    groups: dict[object, list[PrunableLayer]] = {}
    for layer in layers:
        groups.setdefault(layer.block if layer.block >= 0 else layer.name, []).append(layer)
    return list(groups.values())


def _layer_mask(
    method: str, pattern: Pattern, sparsity: float, weight: torch.Tensor, stats: LayerStats | None, seed: int
) -> torch.Tensor:
    if method == "magnitude":
        scores = magnitude_scores(weight)
    elif method == "random":
        scores = random_scores(tuple(weight.shape), seed)
    else:
        scores = wanda_scores(weight, stats.sq_norms)
    if pattern.kind == "n:m":
        return n_m_mask(scores, pattern.n, pattern.m)
    return per_row_mask(scores, sparsity) if method == "wanda" else unstructured_mask(scores, sparsity)


def _magnitude_mask(dense: DenseModel, layer: PrunableLayer, sparsity: float) -> torch.Tensor:
    """Per-layer magnitude mask from the dense model's cached ranking (ties by storage index)."""
    storage_shape = dense.storage(layer.name).shape
    keep = dense.ranking(layer.name).mask(count_for_sparsity(layer.numel, sparsity), storage_shape)
    return keep.T.contiguous() if layer.transposed else keep


def _block_paths(dense: DenseModel) -> list[str]:
    """Module paths of the model's transformer blocks, in order."""
    paths = [block_name(layer) for layer in dense.layers if layer.block >= 0]
    return list(dict.fromkeys(p for p in paths if p is not None))


def _sequential(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    calibration: CalibrationBatch,
    prune_layer: Callable[
        [PrunableLayer, torch.Tensor, LayerStats], tuple[torch.Tensor, torch.Tensor | None]
    ],
    gram: bool,
    progress: Progress,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Prune block by block; each block's statistics come from a scratch model whose earlier blocks are
    already pruned (the papers' sequential procedure). Returns (masks, new weights).

    The inputs of the first block are recorded once and pushed through one (pruned) block at a time, as the
    papers' code does; where a block cannot be replayed (or for layers outside blocks) the whole scratch
    model is run instead, which gives the same statistics at a cost quadratic in depth.
    """
    scratch = PruningState(dense)
    groups = _block_groups(layers)
    paths = _block_paths(dense)
    replay = True
    inputs: BlockInputs | None = None
    at = 0  # index in ``paths`` of the block whose inputs ``inputs.hidden`` holds
    masks: dict[str, torch.Tensor] = {}
    weights: dict[str, torch.Tensor] = {}
    for g, group in enumerate(groups):
        path = block_name(group[0]) if group[0].block >= 0 else None
        stats = None
        if replay and path in paths:
            target = paths.index(path)
            if inputs is None or at > target:
                try:
                    inputs = capture_block_inputs(scratch.model, paths[target:], calibration.ids)
                    at = target
                except ValueError as exc:
                    log.info("cannot replay blocks (%s); running the whole model for every block", exc)
                    replay, inputs = False, None
            if inputs is not None:
                while at < target:  # blocks before ``target`` are pruned already (or not selected)
                    block = scratch.model.get_submodule(paths[at])
                    calls = inputs.calls[paths[at]]
                    inputs.hidden = [
                        run_block(block, h, c, inputs.keyword)
                        for h, c in zip(inputs.hidden, calls, strict=True)
                    ]
                    at += 1
                block = scratch.model.get_submodule(path)
                stats = collect_block_stats(block, scratch.model, group, inputs, path, gram)
        if stats is None:
            stats = collect_stats(scratch.model, group, calibration.ids, gram=gram)
            inputs = None  # a layer outside the blocks may change what enters them
        for i, layer in enumerate(group):
            mask, new = prune_layer(layer, layer.weight(dense.model), stats.pop(layer.name))
            masks[layer.name] = mask
            if new is not None:
                weights[layer.name] = new
            if progress:
                progress((g + (i + 1) / len(group)) / len(groups))
        names = [layer.name for layer in group]
        if any(name in weights for name in names):
            scratch.apply_weights({n: weights[n] for n in names}, {n: masks[n] for n in names})
        else:
            scratch.apply_masks({n: masks[n] for n in names})
    return masks, weights


def _structured(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    method: str,
    pattern: Pattern,
    sparsity: float,
    calibration: CalibrationBatch | None,
    seed: int,
    progress: Progress,
) -> dict:
    n_heads = getattr(getattr(dense.model, "config", None), "num_attention_heads", None)
    groups = find_unit_groups(layers, pattern.kind, n_heads)
    if not groups:
        needed = (
            "mlp_gate/mlp_up and mlp_down"
            if pattern.kind == "neurons"
            else "attn_q/k/v (or attn_qkv) and attn_o"
        )
        raise ValueError(f"pruning {pattern.kind} needs the {needed} layers of a block selected; none are")
    by_name = dense.by_name
    stats = None
    if method == "wanda":
        cols = [by_name[g.col_layer] for g in groups]
        stats = activation_stats(dense, cols, calibration, progress)
    masks = {}
    for i, group in enumerate(groups):
        weights = {name: by_name[name].weight(dense.model) for name in group.layer_names}
        if method == "magnitude":
            scores = magnitude_unit_scores(group, weights)
        elif method == "random":
            scores = random_scores((1, group.n_units), seed + i).view(-1)
        else:
            scores = activation_unit_scores(group, weights, stats[group.col_layer].sq_norms)
        keep = keep_units(scores, sparsity, group.label())
        masks.update(unit_masks(group, keep, {name: by_name[name].shape for name in group.layer_names}))
    return masks


def prune_masks(
    dense_or_state: DenseModel | PruningState,
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
) -> PruneResult:
    """Decide what ``method`` prunes in the selected layers of the dense model (nothing is applied).

    A :class:`PruningState` may be passed for convenience: its dense model is used, its current pruning is
    not (every method starts from the dense weights).

    Args:
        method: one of ``METHODS``.
        pattern: "unstructured", "N:M" (e.g. "2:4"), "neurons" or "heads".
        sparsity: share to prune in [0, 1] (per layer; per row for Wanda; per block's units when structured);
            ignored for N:M, whose sparsity is 1 − N/M.
        kinds: layer kinds to prune (``layers.ALL_KINDS``); embeddings cannot be calibrated.
        calibration: a :class:`CalibrationBatch`, a text (cut into sequences of 128 tokens), or None for the
            built-in calibration text of the model's text set. Used by wanda and sparsegpt only.
        seed: random method's seed (per layer: seed + layer index).
        sequential: prune block by block on the already-pruned model's activations. Default: True for
            sparsegpt (the paper), False for wanda (one dense pass, cached per calibration batch).
        blocksize, percdamp: SparseGPT's B and λ.
        progress: called with the share done, in (0, 1].
    Returns:
        :class:`PruneResult`; ``weights`` is set for sparsegpt only.
    Raises:
        ValueError: unknown method or pattern, N:M out of range, sparsity outside [0, 1], a structured
            sparsity that removes every unit, sparsegpt with a structured pattern, calibration text that is
            empty or too short, embeddings with a calibrated method.
    """
    start = time.perf_counter()
    dense = _dense(dense_or_state)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    pat = parse_pattern(pattern)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be between 0 and 1, got {sparsity}")
    if method == "sparsegpt" and pat.structured:
        raise ValueError(
            "SparseGPT prunes unstructured or N:M patterns; for neurons or heads use magnitude or wanda"
        )
    if sequential and pat.structured:
        raise ValueError(
            "structured pruning scores units on one pass of the dense model; sequential is not offered"
        )
    if sequential and method not in CALIBRATED:
        raise ValueError(f"sequential pruning needs calibration data; {method} uses none")
    layers = select(dense.layers, kinds)
    if not layers:
        raise ValueError(f"no prunable layers of kinds {list(kinds)} in this model")
    sequential = (method == "sparsegpt") if sequential is None else sequential
    messages: list[str] = []
    calib = _resolve_calibration(dense, calibration) if method in CALIBRATED else None
    asked = pat.fixed_sparsity if pat.kind == "n:m" else sparsity
    if pat.kind == "n:m":
        if sparsity != asked:
            messages.append(
                f"{pat.n}:{pat.m} fixes the sparsity at {asked:.0%}; the sparsity asked is ignored"
            )
        for layer in layers:
            tail = n_m_tail(layer.shape[1], pat.m)
            if tail:
                messages.append(
                    f"{layer.name}: the last {tail} of {layer.shape[1]} input columns form no full "
                    f"group of {pat.m} and stay dense"
                )

    weights = None
    if pat.structured:
        masks = _structured(dense, layers, method, pat, sparsity, calib, seed, progress)
    elif method == "sparsegpt":
        n_m = (pat.n, pat.m) if pat.kind == "n:m" else None
        if n_m is not None and blocksize % pat.m:
            blocksize = max(pat.m, blocksize - blocksize % pat.m)  # N:M groups must not straddle blocks

        def prune_layer(layer, weight, stats):
            out = sparsegpt_prune(weight, stats.gram, stats.n_tokens, sparsity, n_m, blocksize, percdamp)
            if out.message:
                messages.append(f"{layer.name}: {out.message}")
            return out.mask, out.weight

        if sequential:
            masks, weights = _sequential(dense, layers, calib, prune_layer, True, progress)
        else:
            masks, weights = {}, {}
            groups = _block_groups(layers)
            model = working_copy(dense.model)
            for g, group in enumerate(groups):
                if progress:
                    progress(g / len(groups))
                stats = collect_stats(model, group, calib.ids, gram=True)
                for layer in group:
                    masks[layer.name], weights[layer.name] = prune_layer(
                        layer, layer.weight(dense.model), stats.pop(layer.name)
                    )
    elif method == "wanda" and sequential:

        def wanda_layer(layer, weight, stats):
            return _layer_mask("wanda", pat, sparsity, weight, stats, seed), None

        masks, _ = _sequential(dense, layers, calib, wanda_layer, False, progress)
    elif method == "magnitude" and pat.kind == "unstructured":
        # The dense model's cached ranking: the same weights (ties included) as the slider's uniform policy.
        masks = {layer.name: _magnitude_mask(dense, layer, sparsity) for layer in layers}
    else:
        stats = activation_stats(dense, layers, calib, progress) if method == "wanda" else {}
        index = {layer.name: i for i, layer in enumerate(dense.layers)}
        masks = {
            layer.name: _layer_mask(
                method,
                pat,
                sparsity,
                layer.weight(dense.model),
                stats.get(layer.name),
                seed + index[layer.name],
            )
            for layer in layers
        }
    if progress:
        progress(1.0)

    total = sum(m.numel() for m in masks.values())
    pruned = sum(int(m.numel() - m.sum()) for m in masks.values())
    formula = f"structured_{method}" if pat.structured else method
    info = {
        "method": method,
        "pattern": pattern,
        "sparsity_asked": asked,
        "sparsity": pruned / total if total else 0.0,
        "layer_sparsity": {name: sparsity_of(m) for name, m in masks.items()},
        "formula": formula,
        "variant": VARIANTS[formula],
        "sequential": bool(sequential),
        "calibration": None
        if calib is None
        else {
            "source": calib.source,
            "n_sequences": calib.n_sequences,
            "seq_len": calib.seq_len,
            "tokens": calib.n_tokens,
            "text_tokens": calib.text_tokens,
        },
        "messages": messages,
        "seconds": time.perf_counter() - start,
    }
    for message in messages:
        log.info(message)
    return PruneResult(masks=masks, weights=weights or None, info=info)


def reconstruction_errors(
    dense_or_state: DenseModel | PruningState,
    result: PruneResult | dict[str, torch.Tensor],
    calibration: CalibrationBatch | str | None = None,
    relative: bool = True,
    progress: Progress = None,
) -> dict[str, float]:
    """Per-layer output error of a pruning on the *dense* model's calibration inputs X of each layer.

    relative: ‖WX − W'X‖_F / ‖WX‖_F; else the squared ‖WX − W'X‖_F² summed over tokens. W' is the result's new
    weight where it has one, else where(mask, W, 0). Computed block by block (one Gram matrix per layer of a
    block at a time), so the memory stays that of one block.

    Args:
        result: a :class:`PruneResult` or a {name: bool (out, in)} mask dict.
    """
    dense = _dense(dense_or_state)
    masks = result.masks if isinstance(result, PruneResult) else result
    new_weights = (result.weights or {}) if isinstance(result, PruneResult) else {}
    calib = _resolve_calibration(dense, calibration)
    layers = [dense.by_name[name] for name in masks]
    groups = _block_groups(layers)
    model = working_copy(dense.model)
    errors = {}
    for g, group in enumerate(groups):
        stats = collect_stats(model, group, calib.ids, gram=True)
        for layer in group:
            w = layer.weight(dense.model).detach()
            new = new_weights.get(layer.name)
            if new is None:
                new = torch.where(masks[layer.name], w, torch.zeros((), dtype=w.dtype))
            gram = stats.pop(layer.name).gram
            errors[layer.name] = (relative_reconstruction_error if relative else reconstruction_error)(
                w, new, gram
            )
        if progress:
            progress((g + 1) / len(groups))
    return errors


def mask_overlap(masks_a: dict[str, torch.Tensor], masks_b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per-layer Jaccard overlap of the weights two methods prune (1 = the same weights, 0 = disjoint).

    A layer missing from one dict counts as unpruned there (an all-True mask).
    """
    out = {}
    for name in list(dict.fromkeys([*masks_a, *masks_b])):
        a, b = masks_a.get(name), masks_b.get(name)
        ref = a if a is not None else b
        a = torch.ones_like(ref) if a is None else a
        b = torch.ones_like(ref) if b is None else b
        out[name] = jaccard_pruned(a, b)
    return out
