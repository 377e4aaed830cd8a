"""Pruning methods in the sidebar: method and pattern pickers, calibration settings, and applying a choice.

Which path a choice takes (the slider path, or a method from the registry) is decided in one place,
``prune_explorer.pruning.settings``; here a method gets a progress bar, and SparseGPT on a big model runs only
when the user presses Apply. Wanda's activation statistics are shared per calibration batch, so a slider
move only re-ranks.

What was applied is a ``pruning.settings.PruneSettings`` (magnitude settings + method, pattern, calibration),
kept by ``ui.session`` so cached pruned outputs are keyed by all of it.
"""

from __future__ import annotations

import hashlib
import logging
import re

import streamlit as st

from prune_explorer import texts, threads
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.pruning.calibration import DEFAULT_SEQ_LEN, CalibrationBatch, calibration_batch
from prune_explorer.pruning.methods import METHODS, get_method, supported_patterns
from prune_explorer.pruning.patterns import PATTERNS, parse_pattern
from prune_explorer.pruning.settings import PruneSettings
from ui import defaults, describe, jobs, results, session
from ui.describe import METHOD_LABELS, PATTERN_LABELS

log = logging.getLogger(__name__)

SOURCES = {"builtin": "Built-in text", "paste": "Paste", "upload": "Upload .txt"}
CALIB_SOURCE = "sidebar_calib_source"
CALIB_TEXT = "sidebar_calib_text"
CALIB_FILE = "sidebar_calib_file"
CALIB_SEQUENCES = "sidebar_calib_sequences"
CALIB_SEQ_LEN = "sidebar_calib_seq_len"
DEFAULT_SEQUENCES = 32
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


def calibration_controls(dense: DenseModel, needed: bool) -> tuple[CalibrationBatch | None, str | None]:
    """Calibration text source, number of sequences and their length, in an expander.

    Returns (batch, None), or (None, the user-facing reason) when the text cannot make a batch. The batch is
    also kept for the pages (:func:`ui.session.calibration`).
    """
    text_set = dense.info.get("text_set", "stories")
    context = context_length(dense.model)
    label = "Calibration text" + ("" if needed else " (Wanda, SparseGPT, Compare)")
    with st.expander(label, expanded=needed and st.session_state.get(CALIB_SOURCE, "builtin") != "builtin"):
        source = st.segmented_control(
            "Source",
            list(SOURCES),
            format_func=SOURCES.get,
            default="builtin",
            key=CALIB_SOURCE,
            required=True,
        )
        upload, text, name = None, "", "pasted text"
        if source == "paste":
            text = st.text_area("Calibration text", key=CALIB_TEXT, height=120, persist_state="session") or ""
        elif source == "upload":
            upload = st.file_uploader("A .txt file", type=["txt"], key=CALIB_FILE)
            name = f"uploaded {upload.name}" if upload is not None else "uploaded file"
        else:
            text, name = texts.calibration_text(text_set), f"built-in {text_set} text"
        left, right = st.columns(2)
        n_sequences = left.number_input(
            "Sequences (at most)", 1, 128, DEFAULT_SEQUENCES, key=CALIB_SEQUENCES, persist_state="session",
            help="As many as the text holds, up to this number. The papers use 128 × 2048 tokens of C4.",
        )  # fmt: skip
        seq_len = right.number_input(
            "Tokens each",
            8,
            context,
            key=CALIB_SEQ_LEN,
            persist_state="session",
        )
        try:
            if upload is not None:
                text = _read_upload(upload.getvalue())
            batch = _batch(dense, text, name, int(seq_len), int(n_sequences))
        except ValueError as exc:
            result: tuple[CalibrationBatch | None, str | None] = (None, f"Calibration: {_field_words(exc)}")
            if not needed:  # a method that needs it reports the error where the sidebar shows errors
                st.warning(result[1])
        else:
            result = (batch, None)
            st.caption(
                f"Using {batch.n_sequences} × {batch.seq_len} = {batch.n_tokens:,} tokens of the "
                f"{batch.text_tokens:,} in the {name}."
                + (" The built-in text never overlaps the evaluation text." if source == "builtin" else "")
            )
    st.session_state[session.CALIBRATION] = result
    return result


def _field_words(exc: ValueError) -> str:
    """A calibration error in the words of the fields above it ("Tokens each", not the library's seq_len)."""
    text = re.sub(r"\bseq_len=(\d+)", r"\1 tokens (Tokens each)", str(exc))
    text = re.sub(r"\bn_sequences=(\d+)", r"\1 (Sequences)", text)
    return text.replace("choose shorter sequences", "lower Tokens each")


def _read_upload(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("the uploaded file is not UTF-8 text") from exc


def default_batch(dense: DenseModel) -> CalibrationBatch:
    """The batch a new session's sidebar starts with (the built-in text at the default size), shared."""
    text_set = dense.info.get("text_set", "stories")
    seq_len = min(DEFAULT_SEQ_LEN, context_length(dense.model))
    return _batch(
        dense, texts.calibration_text(text_set), f"built-in {text_set} text", seq_len, DEFAULT_SEQUENCES
    )


def _batch(dense: DenseModel, text: str, source: str, seq_len: int, n_sequences: int) -> CalibrationBatch:
    """The calibration batch, tokenized once per process for every session that picks the same text."""
    digest = hashlib.sha1(text.encode()).hexdigest()
    return results.shared(
        dense,
        ("calibration", digest, source, seq_len, n_sequences),
        lambda: calibration_batch(dense.tokenizer, text, seq_len, n_sequences, source=source),
    )


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
