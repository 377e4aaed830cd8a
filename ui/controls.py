"""Widgets that return what the user chose. Keys are prefixed by where the widget lives (sidebar_, ...)."""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS, EXTRA_KINDS, PrunableLayer, select
from prune_explorer.models.loading import LOADERS
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import POLICIES, MagnitudeSettings, magnitude_counts
from prune_explorer.pruning.settings import uses_slider_path
from prune_explorer.state import PruningState
from ui import allocation_view, data, defaults, formats, loading, model_switch, session

POLICY_LABELS = {
    "uniform": "Same sparsity in every layer",
    "global": "One global |w| threshold",
    "threshold": "Typed |w| threshold",
}
POLICY_HELP = (
    "Same sparsity: every selected layer loses the same share of its smallest weights. "
    "Global threshold: one |w| cut-off over all selected layers, placed so the total share is the slider's; "
    "layers with many small weights lose more. Typed threshold: every weight with |w| at or below the number "
    "you type goes, in every selected layer. (Magnitude, unstructured only: other methods and patterns "
    "have their own comparison groups.)"
)
SPARSITY_HELP = {
    "unstructured": "Share of the selected weights set to zero.",
    "neurons": "Share of each block's MLP neurons removed whole.",
    "heads": "Share of each block's attention heads removed whole.",
    "n:m": "N:M patterns fix the sparsity at 1 − N/M; the slider does not apply.",
}
KINDS_LAST = "sidebar_kinds_last"  # the last layer-kind pills that chose something, for _on_kinds
KINDS_WARNING = "sidebar_kinds_warning"  # why an empty layer-kind choice was refused, shown on the next run
THRESHOLD_ERROR = "sidebar_threshold_error"  # why a typed threshold was rejected, shown on the next run
SPARSITY_CAPTIONS = {
    "random": "Random: the same share of every selected layer, chosen at random (seeded).",
    "wanda": "Wanda: the same share of every output row, lowest |W|·‖X‖ first.",
    "sparsegpt": "SparseGPT: the same share of every layer, the rest of the row updated to compensate.",
    "neurons": "Whole MLP neurons: the slider is the share of neurons removed in each block.",
    "heads": "Whole attention heads: the slider is the share of heads removed in each block.",
}


def _on_builtin() -> None:
    choice = st.session_state.get(session.MODEL)
    if choice is not None and choice != session.active_source():
        model_switch.switch_model(choice)


def _on_load() -> None:
    model_switch.switch_model(st.session_state.get(session.SOURCE, ""))


def _on_policy() -> None:
    """Entering the typed-threshold policy starts from a cut-off close to the pruning the user has now."""
    if st.session_state.get(session.POLICY) != "threshold":
        return
    st.session_state[session.THRESHOLD] = _threshold_in_use()


def _threshold_in_use() -> float:
    """The typed threshold applied now, else the median per-layer cut-off of the pruning applied now."""
    state, settings = session.state(), session.applied()
    if settings is not None and getattr(settings, "slider_path", True) and settings.policy == "threshold":
        return float(settings.threshold)
    cuts = sorted(data.layer_threshold(state, layer.name) for layer in data.selected(state.dense, settings))
    return float(cuts[len(cuts) // 2]) if cuts else 0.0


def _on_threshold() -> None:
    """A typed threshold no layer can take is rejected here, before the run: the box goes back to the value
    in use and the sidebar says why (a rejected number left in the box would look applied)."""
    dense = session.dense()
    typed = float(st.session_state.get(session.THRESHOLD) or 0.0)
    kinds = _chosen_kinds(dense, st.session_state.get(session.KINDS), st.session_state.get(session.EXTRAS))
    try:
        magnitude_counts(dense, MagnitudeSettings(policy="threshold", threshold=typed, kinds=kinds))
    except ValueError as exc:
        in_use = _threshold_in_use()
        st.session_state[session.THRESHOLD] = in_use
        st.session_state[THRESHOLD_ERROR] = (
            f"{session.error_message(exc)} The box is back at {in_use:.5f}, the threshold in use."
        )


def model_picker(dense: DenseModel) -> None:
    """Built-in models, and a local folder or hub id with a Load button. Loads happen in the callbacks."""
    if session.MODEL not in st.session_state:
        source = session.active_source()
        st.session_state[session.MODEL] = source if source in LOADERS else None
    st.selectbox(
        "Model",
        list(LOADERS),
        key=session.MODEL,
        on_change=_on_builtin,
        placeholder="(a model loaded from a folder or hub id)",
    )
    st.text_input(
        "…or a local folder / Hugging Face hub id",
        key=session.SOURCE,
        placeholder="./my-model or HuggingFaceTB/SmolLM2-135M",
    )
    st.button("Load", key="sidebar_load", on_click=_on_load)
    error = model_switch.pop_load_error()  # said once: a later success must not find it still on screen
    if error:
        st.error(error)
    st.caption(
        f"Active model: **{dense.name}** · {dense.num_parameters():,} parameters · "
        f"{formats.plural(len(dense.layers), 'layer')}",
        help=f"Source: {dense.info.get('source', 'unknown')}",
    )


def pruning_controls(
    dense: DenseModel, method: str = "magnitude", pattern: str = "unstructured"
) -> tuple[MagnitudeSettings, DeltaGenerator | None]:
    """The global pruning controls; returns the settings they describe (not yet validated or applied) and,
    under the typed-threshold policy, the place of the sparsity slider for :func:`threshold_slider`.

    Policies and per-layer overrides belong to the magnitude slider path (magnitude + unstructured); for any
    other method or pattern they are shown disabled. An N:M pattern fixes the sparsity, so the slider is
    disabled too (the pattern picker moves it to 1 − N/M). A typed threshold decides the sparsity itself:
    the slider is drawn after applying, disabled, at the share actually pruned.
    """
    slider_path = uses_slider_path(method, pattern)
    fixed = parse_pattern(pattern).fixed_sparsity
    policy = st.radio(
        "Policy",
        POLICIES,
        format_func=POLICY_LABELS.get,
        key=session.POLICY,
        help=POLICY_HELP,
        on_change=_on_policy,
        disabled=not slider_path,
    )
    allocation_view.picker(method, pattern, policy)
    by_threshold = slider_path and policy == "threshold"
    slot = st.empty()
    percent = 0 if by_threshold else _sparsity_slider(slot, pattern, disabled=fixed is not None)
    ranked = loading.ranking_progress(dense)
    if ranked < 1.0:
        st.caption(
            f"Sorting every layer's |w| once for this model, in the background ({ranked:.0%} done); a move "
            "before it ends waits for the layers it needs."
        )
    if fixed is not None:
        n, m = pattern.split(":")
        st.caption(
            f"{pattern} keeps {n} of every {m} consecutive weights of a row: sparsity fixed at {fixed:.0%}."
        )
    elif not slider_path:
        st.caption(SPARSITY_CAPTIONS.get(pattern if pattern in SPARSITY_CAPTIONS else method, ""))
    threshold_note = st.empty()
    threshold = _threshold_input() if by_threshold else 0.0
    chosen = _kind_pickers(dense)
    if by_threshold:
        top = data.largest_magnitude(dense, select(dense.layers, chosen))
        threshold_note.caption(f"Largest |w| in the selected layers: {top:.5f}")
    overrides = _overrides(select(dense.layers, chosen), disabled=not slider_path)
    settings = MagnitudeSettings(
        sparsity=(percent / 100.0) if fixed is None else fixed,
        policy=policy,
        threshold=float(threshold),
        kinds=chosen,
        overrides=overrides,
    )
    return settings, slot if by_threshold else None


def _sparsity_slider(slot: DeltaGenerator, pattern: str, disabled: bool, hint: str | None = None) -> int:
    fixed = parse_pattern(pattern).fixed_sparsity
    return slot.slider(
        "Global sparsity",
        min_value=0,
        max_value=100,
        step=1,
        format="%d%%",
        key=session.SPARSITY,
        disabled=disabled,
        help=hint or SPARSITY_HELP.get(pattern if fixed is None else "n:m", SPARSITY_HELP["unstructured"]),
    )


def _threshold_input() -> float:
    """The typed |w| threshold, validated in its callback; a rejection is reported here."""
    value = st.number_input(
        "Prune every |w| at or below",
        step=0.001,
        format="%.5f",
        key=session.THRESHOLD,
        on_change=_on_threshold,
        persist_state="session",
        help="Starts at the median per-layer cut-off of the pruning you had when you chose this policy.",
    )
    rejected = st.session_state.pop(THRESHOLD_ERROR, None)
    if rejected:
        st.error(rejected)
    return value


def threshold_slider(slot: DeltaGenerator | None, state: PruningState) -> None:
    """Under a typed threshold: the (disabled) sparsity slider at the share of the selected weights actually
    pruned, so it never shows a sparsity that is not applied. Set before the widget exists in this run."""
    if slot is None:
        return
    share = state.overall_sparsity(data.selected(state.dense, session.applied()))
    st.session_state[session.SPARSITY] = round(100 * share)
    hint = f"Set by the typed threshold (and any overrides): {share:.1%} of the selected weights are pruned."
    _sparsity_slider(slot, "unstructured", disabled=True, hint=hint)


def _chosen_kinds(dense: DenseModel, kinds: list[str] | None, include_extras: bool | None) -> tuple[str, ...]:
    """The kinds taking part, in model order: the picked default kinds, then embeddings/LM head if on."""
    present = defaults.present_kinds(dense, DEFAULT_KINDS)
    extras = defaults.present_kinds(dense, EXTRA_KINDS) if include_extras else []
    return tuple(k for k in present if k in (kinds or ())) + tuple(extras)


def _on_kinds() -> None:
    """A choice with no layer kind at all is refused: the pills go back to the last choice that had one."""
    dense = session.dense()
    kinds, extras = st.session_state.get(session.KINDS), st.session_state.get(session.EXTRAS)
    if _chosen_kinds(dense, kinds, extras):
        return
    present = defaults.present_kinds(dense, DEFAULT_KINDS)
    last = [k for k in st.session_state.get(KINDS_LAST) or () if k in present]
    st.session_state[session.KINDS] = last or present
    st.session_state[KINDS_WARNING] = (
        "At least one layer kind must take part, so the last choice is kept. To prune nothing, set the "
        "sparsity to 0% or press Reset to dense."
    )


def _kind_pickers(dense: DenseModel) -> tuple[str, ...]:
    """Layer-kind pills and the embeddings/LM-head toggle; returns the kinds chosen, in model order (never
    none: :func:`_on_kinds` refuses an empty choice)."""
    present = defaults.present_kinds(dense, DEFAULT_KINDS)
    kinds = st.pills(
        "Layer kinds that take part",
        present,
        selection_mode="multi",
        format_func=lambda k: data.KIND_LABELS.get(k, k),
        key=session.KINDS,
        on_change=_on_kinds,
    )
    refused = st.session_state.pop(KINDS_WARNING, None)
    if refused:
        st.warning(refused)
    extras = defaults.present_kinds(dense, EXTRA_KINDS)
    include_extras = st.toggle(
        "Include embeddings and LM head",
        key=session.EXTRAS,
        disabled=not extras,
        on_change=_on_kinds,
        help="Off by default: these layers are small in number but every token passes through them.",
    )
    if kinds:
        st.session_state[KINDS_LAST] = list(kinds)
    return _chosen_kinds(dense, kinds, include_extras)


def _overrides(candidates: list[PrunableLayer], disabled: bool = False) -> dict[str, float]:
    names = [layer.name for layer in candidates]
    by_name = {layer.name: layer for layer in candidates}
    # Layers that left the selection leave the overrides too (set before the widget exists).
    if session.OVERRIDE_LAYERS in st.session_state:
        st.session_state[session.OVERRIDE_LAYERS] = [
            n for n in st.session_state[session.OVERRIDE_LAYERS] if n in by_name
        ]
    with st.expander("Per-layer overrides", expanded=bool(st.session_state.get(session.OVERRIDE_LAYERS))):
        chosen = st.multiselect(
            "Layers with their own sparsity",
            names,
            format_func=lambda n: data.short_name(by_name[n]),
            key=session.OVERRIDE_LAYERS,
            disabled=disabled,
        )
        percent = st.slider(
            "Sparsity of these layers",
            0,
            100,
            50,
            step=1,
            format="%d%%",
            key="sidebar_override_percent",
            disabled=disabled,
        )
        if disabled:
            st.caption("Overrides apply to magnitude pruning with the unstructured pattern.")
    return {name: percent / 100.0 for name in chosen}


def pruning_summary(state: PruningState, settings: MagnitudeSettings | None) -> None:
    """What the session's model looks like now: share of the selected weights that are zero."""
    layers = data.selected(state.dense, settings)
    total = sum(layer.numel for layer in layers)
    pruned = sum(state.pruned_count(layer.name) for layer in layers)
    share = pruned / total if total else 0.0
    st.metric("Pruned (selected layers)", f"{share:.1%}")
    in_layers = formats.plural(len(layers), "layer")
    st.caption(f"{pruned:,} of {formats.plural(total, 'weight')} are zero in {in_layers}.")
