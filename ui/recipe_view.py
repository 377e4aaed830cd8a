"""The recipe on the Save & export page: download the plan the session applied, upload one to apply.

An uploaded recipe is read, validated and checked against the loaded model (``prune_explorer.plans``) in the
uploader's callback, before any widget of the rerun exists; a refused recipe changes nothing and its reason
(field and why) is shown. An accepted one is applied mask for mask (``plans.apply.apply_recipe``), the
sidebar's widgets are set to the recipe's method, pattern, sparsity and kinds, and the settings those widgets
make are recorded as applied, so the sidebar neither re-applies nor shows another pruning. A recipe the
sidebar cannot express (per-layer sparsities, a seed, a user calibration text) is still applied exactly;
the page says that the sidebar shows its closest setting and that moving a control replaces it.
"""

from __future__ import annotations

import streamlit as st

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS, EXTRA_KINDS, select
from prune_explorer.plans.apply import apply_recipe, check_recipe, recipe_calibration, recipe_counts
from prune_explorer.plans.recipe import Recipe, RecipeError
from prune_explorer.plans.recipe_capture import recipe_from_state
from prune_explorer.plans.recipe_io import parse_recipe, recipe_yaml
from prune_explorer.plans.trained import NO_RECIPE, TRAINING_FILE
from prune_explorer.pruning import budget_bounds
from prune_explorer.pruning.methods import get_method
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import POLICIES, MagnitudeSettings, magnitude_counts
from prune_explorer.pruning.settings import PruneSettings, prune_settings
from ui import allocation_view, calibration_view, defaults, describe, results, session

UPLOAD = "export_recipe_upload"
NOTE = "export_recipe_note"  # (kind, message) of the last upload, shown once on the next run
ALLOCATION = "sidebar_allocation"  # ui.allocation_view's selectbox


def current_recipe() -> tuple[Recipe | None, str | None]:
    """The recipe of what the session applied (None and why when nothing can be written down: nothing
    pruned, or a trained model, whose weights no recipe gives back)."""
    trained = session.trained()
    if trained is not None:
        return None, trained_why(trained)
    settings = session.applied()
    if settings is None or session.nothing_pruned():
        return None, "Nothing is pruned yet: the recipe would be the dense model."
    deviation = budget_bounds.deviation_in(settings)
    bounds = None if deviation is None else budget_bounds.budget_bounds(settings.sparsity, deviation)
    try:
        return recipe_from_state(session.state(), settings, bounds=bounds), None
    except (ValueError, RecipeError) as exc:
        return None, f"This pruning cannot be written as a recipe: {exc}"


def trained_why(trained) -> str:
    """Why a trained model (``ui.train_job.Trained``) has no recipe, and what holds it instead."""
    record = trained.record
    words = f"No recipe for the trained model in use ({trained.label}): {NO_RECIPE}."
    if record is not None and not record.gradual:
        words += f" Its masks are those of {record.start}, held fixed in training: the masks file has them."
    return words + (
        " The transformers folder below holds the trained weights and records the training (model card and "
        f"`{TRAINING_FILE}`); to make the model again, train again on the Train page."
    )


def download(recipe: Recipe | None, why: str | None, dense: DenseModel) -> None:
    if recipe is None:
        st.info(why)
        return
    st.download_button(
        "Download recipe (YAML)",
        lambda: recipe_yaml(recipe),  # deferred: written when clicked, not on every rerun
        file_name=f"{dense.name}-{recipe.method}-recipe.yaml",
        mime="application/x-yaml",
        key="export_recipe_download",
        on_click="ignore",
        icon=":material/description:",
    )


def uploader() -> None:
    st.file_uploader(
        "Load a recipe (YAML) and apply it",
        type=["yaml", "yml"],
        key=UPLOAD,
        on_change=_on_upload,
        help="A recipe for another model, a layer the model lacks or a field out of range is refused, and "
        "the pruning you have is kept.",
    )
    note = st.session_state.pop(NOTE, None)
    if note:
        kind, message = note
        {"error": st.error, "warning": st.warning}.get(kind, st.success)(message)


def _on_upload() -> None:
    upload = st.session_state.get(UPLOAD)
    if upload is None:
        return
    st.session_state[NOTE] = load(upload.getvalue().decode("utf-8", errors="replace"), upload.name)


def load(text: str, name: str = "the recipe") -> tuple[str, str]:
    """Apply a recipe's text to the session (in a callback); returns (kind, message) for the page."""
    dense = session.dense()
    try:
        recipe = parse_recipe(text)
        check_recipe(recipe, dense)  # before anything reads its layers
        shown, exact = sidebar_settings(recipe, dense)
        with session.exclusive():
            info = apply_recipe(session.state(), recipe)
    except (RecipeError, ValueError, RuntimeError) as exc:
        return "error", f"{name} was refused: {exc}. The pruning you had is kept."
    session.cancel_job("The background run was dropped: a recipe was applied meanwhile.")
    _set_widgets(recipe, shown)
    st.session_state[session.APPLIED] = shown
    messages = [f"From the recipe {name}."]
    st.session_state[session.APPLIED_INFO] = (
        None if recipe.slider_path else {**info, "messages": [*info.get("messages", []), *messages]}
    )
    st.session_state[results.MEMO] = {}  # results of the pruning before are not this one's
    words = f"{name} applied: {describe.describe(shown)}."
    if exact:
        return "success", words + " The sidebar shows it."
    return "warning", (
        f"{name} applied exactly ({recipe.allocation.name} allocation, "
        f"{len(recipe.allocation.layers)} layers with their own sparsity). The sidebar cannot express all "
        "of it and shows the closest setting; moving any control there replaces the recipe's pruning."
    )


def sidebar_settings(recipe: Recipe, dense: DenseModel) -> tuple[PruneSettings, bool]:
    """The settings the sidebar's widgets make when set to the recipe's method, pattern, sparsity and
    kinds, and whether they prune exactly what the recipe does."""
    pattern = parse_pattern(recipe.pattern)
    method = get_method(recipe.method)
    kinds = _kinds(dense, recipe.layer_kinds)
    name = recipe.allocation.name
    policy = name if recipe.slider_path and name in ("global", "threshold") else "uniform"
    threshold = float(recipe.allocation.threshold or 0.0) if policy == "threshold" else 0.0
    fixed = pattern.fixed_sparsity
    sparsity = (
        0.0
        if policy == "threshold"
        else fixed
        if fixed is not None
        else round(100 * recipe.allocation.sparsity) / 100
    )
    selected = {layer.name for layer in select(dense.layers, kinds)}
    exact = set(kinds) == set(recipe.layer_kinds) and recipe.seed == 0
    magnitude = MagnitudeSettings(sparsity=sparsity, policy=policy, threshold=threshold, kinds=kinds)
    if (
        recipe.slider_path
    ):  # the counts the widgets make, against the recipe's (both from layer sizes/rankings)
        exact &= name in POLICIES and magnitude_counts(dense, magnitude) == recipe_counts(recipe, dense)
    elif fixed is None:
        exact &= name == "uniform" and set(recipe.allocation.layers) == selected
        exact &= set(recipe.allocation.layers.values()) <= {sparsity}
    batch = None
    if method.calibrated:
        batch = recipe_calibration(recipe, dense)
        text_set = dense.info.get("text_set", "stories")
        exact &= recipe.calibration.builtin == text_set and batch.source == f"built-in {text_set} text"
    sequential = None
    if method.offers_sequential and not pattern.structured:
        sequential = method.sequential_default if recipe.sequential is None else recipe.sequential
    return prune_settings(magnitude, recipe.method, recipe.pattern, batch, sequential), exact


def _kinds(dense: DenseModel, asked: list[str]) -> tuple[str, ...]:
    """The kinds the sidebar's pills and extras toggle can pick closest to ``asked``, in model order."""
    present = defaults.present_kinds(dense, DEFAULT_KINDS)
    extras = defaults.present_kinds(dense, EXTRA_KINDS)
    chosen = [k for k in present if k in asked] or list(present)
    if any(k in asked for k in extras):
        chosen += list(extras)
    return tuple(chosen)


def _set_widgets(recipe: Recipe, shown: PruneSettings) -> None:
    """The sidebar's widgets at ``shown`` (set in a callback: before the widgets of the rerun exist)."""
    dense = session.dense()
    present = defaults.present_kinds(dense, DEFAULT_KINDS)
    st.session_state.update(
        {
            session.METHOD: shown.method,
            session.PATTERN: shown.pattern,
            session.POLICY: shown.policy,
            session.SPARSITY: round(100 * shown.sparsity),
            session.THRESHOLD: float(shown.threshold),
            session.KINDS: [k for k in present if k in shown.kinds],
            session.EXTRAS: any(k in shown.kinds for k in EXTRA_KINDS),
            session.OVERRIDE_LAYERS: [],
            ALLOCATION: "uniform",
        }
    )
    bounds = recipe.allocation.bounds
    if bounds is not None:  # the budget's bound, for when Budget is chosen again
        deviation = budget_bounds.deviation_of(recipe.allocation.sparsity, bounds)
        st.session_state[allocation_view.BUDGET_DEVIATION] = deviation
        allocation_view.remember_deviation(deviation)
    if shown.sequential is not None:
        st.session_state[f"sidebar_sequential_{shown.method}"] = shown.sequential
    if shown.calibration is not None and recipe.calibration is not None:
        st.session_state[calibration_view.CALIB_SOURCE] = "builtin"
        st.session_state[calibration_view.CALIB_SEQUENCES] = recipe.calibration.n_sequences
        st.session_state[calibration_view.CALIB_SEQ_LEN] = recipe.calibration.seq_len
