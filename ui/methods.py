"""Pruning methods in the sidebar: method and pattern pickers, and applying a choice (the calibration text's
controls are ``ui.calibration_view``).

Which path a choice takes (the slider path, or a method from the registry) is decided in one place,
``prune_explorer.pruning.settings``; here a method gets a progress bar, and SparseGPT on a big model runs only
when the user presses Apply. Wanda's activation statistics are shared per calibration batch, so a slider
move only re-ranks.

What was applied is a ``pruning.settings.PruneSettings`` (magnitude settings + method, pattern, calibration),
kept by ``ui.session`` so cached pruned outputs are keyed by all of it.
"""

from __future__ import annotations

import logging

import streamlit as st

from prune_explorer import threads
from prune_explorer.pruning.methods import METHODS, get_method, supported_patterns
from prune_explorer.pruning.patterns import PATTERNS, parse_pattern
from prune_explorer.pruning.settings import PruneSettings
from ui import defaults, describe, jobs, session
from ui.describe import METHOD_LABELS, PATTERN_LABELS

log = logging.getLogger(__name__)

PATTERN_NOTE = "sidebar_pattern_note"  # why the pattern went back to unstructured, shown on the next run


# ----- widgets


def _on_pattern() -> None:
    """N:M fixes the sparsity: move the (then disabled) slider there so it shows what is pruned."""
    fixed = parse_pattern(st.session_state.get(session.PATTERN, "unstructured")).fixed_sparsity
    if fixed is not None:
        st.session_state[session.SPARSITY] = round(100 * fixed)


def _on_method() -> None:
    """A pattern the new method cannot prune is not kept: back to unstructured, and the sidebar says so."""
    method = st.session_state.get(session.METHOD, "magnitude")
    pattern = st.session_state.get(session.PATTERN, "unstructured")
    if pattern not in supported_patterns(method):
        st.session_state[session.PATTERN] = "unstructured"
        st.session_state[PATTERN_NOTE] = (
            f"{get_method(method).label} cannot prune {describe.pattern_words(pattern)}: the pattern is "
            "back at unstructured."
        )


def method_picker() -> tuple[str, str, bool | None]:
    """Method and pattern selectboxes (only the patterns the method supports), and the block-by-block choice
    where the method offers one; returns (method, pattern, sequential or None for the method's default)."""
    method = st.selectbox(
        "Method",
        METHODS,
        format_func=METHOD_LABELS.get,
        key=session.METHOD,
        on_change=_on_method,
        help="Magnitude keeps the live slider path. Random is the baseline; Wanda and SparseGPT read "
        "activations on calibration text (see Calibration below).",
    )
    offered = supported_patterns(method)
    # Another method offers other patterns, so the browser gets a new widget: carry the choice over to it.
    chosen = st.session_state.get(session.PATTERN)
    st.session_state[session.PATTERN] = chosen if chosen in offered else "unstructured"
    pattern = st.selectbox(
        "Pattern",
        offered,
        format_func=PATTERN_LABELS.get,
        key=session.PATTERN,
        on_change=_on_pattern,
        help="Unstructured: any weight may go. N:M: N kept in every M consecutive inputs of a row (hardware "
        "sparse kernels). Neurons/heads: whole rows and columns go, so matrices could shrink.",
    )
    note = st.session_state.pop(PATTERN_NOTE, None)
    if note:
        st.info(note)
    hidden = [describe.pattern_words(p) for p in PATTERNS if p not in offered]
    if hidden:
        st.caption(f"{get_method(method).label} does not offer {' or '.join(hidden)}.")
    spec = get_method(method)
    sequential = None
    if spec.offers_sequential and not parse_pattern(pattern).structured:
        sequential = st.toggle(
            "Block by block",
            value=spec.sequential_default,
            key=f"sidebar_sequential_{method}",
            help="Each transformer block decided on the activations of the already-pruned earlier blocks, as "
            "the paper's code runs it (slower; better at 2:4). Off: one pass of the dense model.",
        )
    return method, pattern, sequential


# ----- applying


def request_apply(method: str, pattern: str, percent: int) -> None:
    """Callback for pages: set the sidebar to a method, pattern and sparsity and apply it on this rerun."""
    st.session_state[session.METHOD] = method
    st.session_state[session.PATTERN] = pattern
    st.session_state[session.SPARSITY] = int(percent)
    if method == "magnitude" and pattern == "unstructured":
        st.session_state[session.POLICY] = "uniform"
        st.session_state[session.OVERRIDE_LAYERS] = []
    st.session_state[session.APPLY_REQUESTED] = True


def apply(settings: PruneSettings, calib_error: str | None) -> str | None:
    """Bring the session's state to ``settings``; on any error keep the previous state and return why.

    Draws a progress bar while a method runs. SparseGPT on a big model waits for its Apply button and then
    runs in the background (``ui.jobs``), so moving a slider meanwhile does not throw the run away; its
    progress shows whatever the sidebar is set to until it is applied.
    """
    error = _apply(settings, calib_error)
    jobs.progress()
    return error


def _apply(settings: PruneSettings, calib_error: str | None) -> str | None:
    requested = st.session_state.pop(session.APPLY_REQUESTED, False)
    error = jobs.finish()
    if error:
        return error
    if settings == session.applied():
        return None
    if settings.slider_path:
        with threads.interactive():  # a few ms of scattered writes: one thread, whatever else wants a core
            return session.apply(settings)
    if get_method(settings.method).calibrated and settings.calibration is None:
        return f"{calib_error or 'No calibration text'}. The previous pruning is kept."
    if settings.sparsity == 0.0:  # no method prunes anything at 0% (N:M's sparsity is never 0)
        with session.exclusive():
            session.state().reset()
        running = jobs.current()
        if running is not None:
            session.cancel_job(f"The background {running.label} run was dropped: 0% was applied meanwhile.")
        st.session_state[session.APPLIED] = settings
        st.session_state[session.APPLIED_INFO] = None
        return None
    if settings.method == "sparsegpt" and not defaults.is_small(session.dense()):
        _in_background(settings, requested)
        return None
    label = METHOD_LABELS[settings.method]
    bar = st.progress(0.0, text=f"{label}: pruning…")
    try:
        return session.apply(
            settings,
            session.calibration()[0],
            progress=lambda f: bar.progress(min(1.0, f), text=f"{label}: pruning… {f:.0%}"),
        )
    finally:
        bar.empty()


def _in_background(settings: PruneSettings, requested: bool) -> None:
    """The Apply button for a slow method, or the progress of its run; the run itself is in ``ui.jobs``."""
    job = jobs.current()
    if job is None or job.settings != settings:
        slot = st.empty()
        shown = "none (dense)" if session.nothing_pruned() else session.applied_short()
        asked = describe.short(settings)
        with slot.container():
            st.caption(
                f"SparseGPT takes a minute or two on this model: press Apply to run {asked} "
                f"(in the background). Until it finishes the pruning shown is {shown}."
            )
            pressed = st.button(
                "Apply SparseGPT", key="sidebar_apply", type="primary", icon=":material/play_arrow:"
            )
        if requested or pressed:
            slot.empty()
            jobs.start(settings, describe.short(settings), session.calibration()[0])


def details(chosen: PruneSettings) -> None:
    """What is applied and what its method reported; the chosen method's formula and paper variant."""
    info = session.applied_info()
    note = st.session_state.pop(session.JOB_NOTE, None)
    if note:
        st.warning(note)
    st.caption(f"Applied: {session.applied_words()}.")
    if info is not None:
        st.caption(f"Ran: {info['variant']}")
    messages = (info or {}).get("messages", [])
    for message in messages[:4]:
        st.caption(f"· {message}")
    if len(messages) > 4:
        st.caption(f"· …and {len(messages) - 4} more like these.")
    method = get_method(chosen.method)
    pattern = parse_pattern(chosen.pattern)
    sequential = method.sequential_default if chosen.sequential is None else chosen.sequential
    with st.expander(f"How {method.label} decides"):
        formula(method.formula_for(pattern), method.variant_for(pattern, sequential))
        if chosen.slider_path and chosen.policy != "uniform":
            st.caption(
                "With this policy the comparison group is all selected layers together, not each layer."
            )
        if info is not None:
            st.caption(
                f"Last run: {info['seconds']:.2f} s; {info['sparsity']:.1%} of its layers' weights pruned."
            )


def formula(latex: str, variant: str) -> None:
    """A method's formula (LaTeX, one statement a line so it fits the sidebar) and which variant runs."""
    parts = [part.strip().rstrip(",;") for part in latex.split(r"\quad")]
    st.latex(r"\begin{gathered}" + r" \\ ".join(p for p in parts if p) + r"\end{gathered}")
    st.caption(variant)
