"""Apply a recipe to a model: check that it fits, decide the masks, then write them, so a refused recipe
changes nothing.

The slider path (magnitude, unstructured) comes back as per-layer counts k = round(sparsity · numel) over the
shared |w| rankings, exactly the counts the recipe recorded; a method runs again on the dense model with the
recorded pattern, seed, sequential choice and calibration batch (rebuilt from its text and checked against
the recorded token hash), so both paths reproduce the same masks bit for bit.
"""

from __future__ import annotations

import hashlib

from prune_explorer import texts
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.digest import weights_digest
from prune_explorer.models.layers import select
from prune_explorer.plans.recipe import Recipe, RecipeError
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch, calibration_batch
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.ranking import count_for_sparsity
from prune_explorer.pruning.result import PruneResult
from prune_explorer.pruning.settings import apply_result
from prune_explorer.state import PruningState


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_recipe(recipe: Recipe, dense: DenseModel) -> None:
    """Refuse a recipe made for other weights, or naming layers the model lacks.

    Raises:
        RecipeError: the weights' sha256 differs, a layer name is unknown, or (for a method) a layer is not
            of the recipe's kinds.
    """
    actual = weights_digest(dense)
    if actual != recipe.model.sha256:
        raise RecipeError(
            f"this recipe is for {recipe.model.id!r} with weights sha256 {recipe.model.sha256[:12]}…, but "
            f"the loaded model {dense.name!r} has sha256 {actual[:12]}…: it was made for another model (or "
            "other weights); load that model to apply it"
        )
    unknown = [name for name in recipe.allocation.layers if name not in dense.by_name]
    if unknown:
        raise RecipeError(
            f"allocation.layers names {len(unknown)} layer(s) {dense.name!r} does not have: {_names(unknown)}"
        )
    if not recipe.slider_path:
        wanted = {layer.name for layer in select(dense.layers, recipe.layer_kinds)}
        other = [name for name in recipe.allocation.layers if name not in wanted]
        if other:
            raise RecipeError(
                f"allocation.layers names layer(s) outside layer_kinds {recipe.layer_kinds}: {_names(other)}"
            )


def recipe_calibration(
    recipe: Recipe, dense: DenseModel, calibration_text: str | None = None
) -> CalibrationBatch | None:
    """The recipe's calibration batch, rebuilt from its text and checked against the recorded hashes.

    Args:
        calibration_text: the text, needed when the recipe was calibrated on a user's own text.
    Raises:
        RecipeError: the text is missing or differs from the recorded one, or its tokens differ.
    """
    calib = recipe.calibration
    if calib is None:
        return None
    if calibration_text is None:
        if calib.builtin is None:
            raise RecipeError(
                f"calibration: the recipe was calibrated on a user text ({calib.source}, sha256 "
                f"{calib.text_sha256[:12]}…); give that text (--calib-text)"
            )
        calibration_text = texts.calibration_text(calib.builtin)
    digest = hashlib.sha256(calibration_text.encode("utf-8")).hexdigest()
    if digest != calib.text_sha256:
        raise RecipeError(
            f"calibration: the text given has sha256 {digest[:12]}…, the recipe's text "
            f"{calib.text_sha256[:12]}…"
        )
    try:
        batch = calibration_batch(
            dense.tokenizer, calibration_text, calib.seq_len, calib.n_sequences, source=calib.source
        )
    except ValueError as exc:
        raise RecipeError(f"calibration: {exc}") from exc
    if batch.n_sequences != calib.n_sequences:  # the text is too short: calibration_batch took fewer
        raise RecipeError(
            f"calibration.n_sequences: the calibration text gives {batch.n_sequences} sequences of "
            f"{calib.seq_len} tokens, the recipe asks {calib.n_sequences}"
        )
    if batch.key[1] != calib.ids_sha1:
        raise RecipeError(
            f"calibration.ids_sha1: the {calib.n_sequences} × {calib.seq_len} tokens cut from the text have "
            f"sha1 {batch.key[1][:12]}…, the recipe records {calib.ids_sha1[:12]}… (another tokenizer, or "
            "calibration fields changed by hand)"
        )
    return batch


def recipe_counts(recipe: Recipe, dense: DenseModel) -> dict[str, int]:
    """Slider path: weights to prune per layer (every layer; 0 where the recipe names none)."""
    counts = {layer.name: 0 for layer in dense.layers}
    for name, sparsity in recipe.allocation.layers.items():
        counts[name] = count_for_sparsity(dense.by_name[name].numel, sparsity)
    return counts


def recipe_result(
    recipe: Recipe,
    dense: DenseModel,
    calibration_text: str | None = None,
    progress: Progress = None,
) -> PruneResult:
    """A method's decision for the recipe on the dense model (nothing is written).

    Raises:
        RecipeError: the recipe does not fit (see :func:`check_recipe`), its calibration cannot be rebuilt,
            or the method refuses it (the message says why).
    """
    check_recipe(recipe, dense)
    batch = recipe_calibration(recipe, dense, calibration_text)
    layers = recipe.allocation.layers
    selected = [layer.name for layer in select(dense.layers, recipe.layer_kinds)]
    values = set(layers.values())
    # One sparsity for every selected layer runs as the app ran it; anything else per layer (N:M ignores it).
    uniform = set(layers) == set(selected) and len(values) == 1
    per_layer = not uniform and parse_pattern(recipe.pattern).fixed_sparsity is None
    try:
        return prune_masks(
            dense,
            recipe.method,
            recipe.pattern,
            next(iter(values)) if uniform else recipe.allocation.sparsity,
            kinds=tuple(recipe.layer_kinds),
            calibration=batch,
            seed=recipe.seed,
            sequential=recipe.sequential,
            progress=progress,
            layer_sparsity=dict(layers) if per_layer else None,
        )
    except ValueError as exc:
        raise RecipeError(str(exc)) from exc


def apply_recipe(
    state: PruningState,
    recipe: Recipe,
    calibration_text: str | None = None,
    progress: Progress = None,
) -> dict:
    """Bring ``state`` to the recipe; on any error nothing is written. Returns what ran (``info``).

    Raises:
        RecipeError: as :func:`recipe_result` (also on the slider path, for the checks that apply).
    """
    if recipe.slider_path:
        check_recipe(recipe, state.dense)
        counts = recipe_counts(recipe, state.dense)
        state.apply_counts(counts)
        layers = [state.dense.by_name[name] for name in recipe.allocation.layers]
        return {
            "method": recipe.method,
            "pattern": recipe.pattern,
            "sparsity": state.overall_sparsity(layers),
            "variant": "magnitude slider path (shared |w| ranking)",
        }
    return apply_result(state, recipe_result(recipe, state.dense, calibration_text, progress))
