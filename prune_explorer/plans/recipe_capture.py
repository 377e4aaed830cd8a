"""Writing down what a session applied as a :class:`.recipe.Recipe`: the per-layer sparsities, the model's
digest and the calibration protocol (checked against the text the batch was cut from). ``plans.apply``
brings a model back to it, mask for mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from prune_explorer import texts
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.digest import weights_digest
from prune_explorer.models.layers import select
from prune_explorer.plans.recipe import Allocation, Calibration, ModelRef, Recipe, project_version
from prune_explorer.pruning.calibration import CalibrationBatch, calibration_batch, resolve_calibration
from prune_explorer.pruning.methods import get_method
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.settings import uses_slider_path
from prune_explorer.state import PruningState


def calibration_record(dense: DenseModel, batch: CalibrationBatch, text: str) -> Calibration:
    """The protocol of ``batch`` cut from ``text``; checks the batch really is that text's first slices."""
    again = calibration_batch(dense.tokenizer, text, batch.seq_len, batch.n_sequences, source=batch.source)
    if again.key != batch.key:
        raise ValueError(
            "the calibration batch does not come from the text given (or from the built-in text): pass the "
            "text it was cut from"
        )
    builtin = next((s for s in texts.TEXT_SETS if text == texts.calibration_text(s)), None)
    return Calibration(
        source=batch.source,
        builtin=builtin,
        text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        n_sequences=batch.n_sequences,
        seq_len=batch.seq_len,
        ids_sha1=batch.key[1],
    )


def _calibration(dense: DenseModel, settings: MagnitudeSettings, text: str | None) -> Calibration:
    spec = getattr(settings, "calibration", None)
    batch = resolve_calibration(dense, text) if spec is None else None  # the CLI's path: a text, or None
    text = text if text is not None else texts.calibration_text(dense.info.get("text_set", "stories"))
    if spec is not None:  # the app's path: the batch applied is known by its key; rebuilt from the text
        batch = calibration_batch(dense.tokenizer, text, spec.seq_len, spec.n_sequences, source=spec.source)
        if batch.key != spec.key:
            raise ValueError("the calibration batch applied is not cut from the built-in text: pass its text")
    return calibration_record(dense, batch, text)


def recipe_from_state(
    state: PruningState,
    settings: MagnitudeSettings,
    calibration_text: str | None = None,
    model_id: str | None = None,
    layer_sparsity: Mapping[str, float] | None = None,
    allocation: str | None = None,
    bounds: tuple[float, float] | None = None,
) -> Recipe:
    """The recipe of what ``settings`` applied to ``state`` (the sidebar's ``PruneSettings`` or the CLI's).

    On the slider path (magnitude, unstructured) the per-layer sparsities are read from the state (every
    selected or pruned layer: k / numel, so the counts come back exactly); for a method they are the
    sparsities asked (``layer_sparsity`` where given, else the one sparsity; N:M: 1 − N/M).

    Args:
        calibration_text: the text the calibration batch was cut from (None: the model's built-in text).
        model_id: the name to record (default: the dense model's name).
        layer_sparsity: a method's per-layer sparsities, as given to ``prune_masks`` (default: the
            settings' ``layer_sparsity`` if they have one).
        allocation: its name, e.g. "owl" or "budget" (default: "uniform", or "custom" for per-layer ones).
        bounds: the budget's (lowest, highest) per-layer sparsity at this sparsity (default: the settings'
            ``budget_bounds``); recorded for the budget only.
    Raises:
        ValueError: the calibration batch does not come from the text given.
    """
    dense = state.dense
    method = getattr(settings, "method", "magnitude")
    pattern = getattr(settings, "pattern", "unstructured")
    selected = select(dense.layers, settings.kinds)
    threshold = None
    if uses_slider_path(method, pattern):
        chosen = {layer.name for layer in selected}
        layers = {
            layer.name: state.pruned_count(layer.name) / layer.numel
            for layer in dense.layers
            if layer.name in chosen or state.is_pruned(layer.name)
        }
        allocated = getattr(settings, "allocation", "uniform")  # OWL, budget: on the uniform slider
        name = allocated if settings.policy == "uniform" and allocated != "uniform" else settings.policy
        threshold = settings.threshold if settings.policy == "threshold" else None
    else:
        fixed = parse_pattern(pattern).fixed_sparsity
        asked = fixed if fixed is not None else settings.sparsity
        per_layer = dict(layer_sparsity or getattr(settings, "layer_sparsity", None) or {})
        layers = {layer.name: float(per_layer.get(layer.name, asked)) for layer in selected}
        name = allocation or getattr(settings, "allocation", None) or ("custom" if per_layer else "uniform")
    calibrated = get_method(method).calibrated
    bounds = (bounds or getattr(settings, "budget_bounds", None)) if name == "budget" else None
    return Recipe(
        project_version=project_version(),
        model=ModelRef(id=model_id or dense.name, sha256=weights_digest(dense)),
        method=method,
        pattern=pattern,
        sequential=getattr(settings, "sequential", None),
        seed=getattr(settings, "seed", 0),
        layer_kinds=list(settings.kinds),
        allocation=Allocation(
            name=name, sparsity=settings.sparsity, threshold=threshold, bounds=bounds, layers=layers
        ),
        calibration=_calibration(dense, settings, calibration_text) if calibrated else None,
    )
