"""The sidebar's calibration text (Wanda, SparseGPT, Compare): its source, how many sequences of how many
tokens, and the batch they make, tokenized once per process for every session that picks the same text."""

from __future__ import annotations

import hashlib
import re

import streamlit as st

from prune_explorer import texts
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.pruning.calibration import DEFAULT_SEQ_LEN, CalibrationBatch, calibration_batch
from ui import results, session

SOURCES = {"builtin": "Built-in text", "paste": "Paste", "upload": "Upload .txt"}
CALIB_SOURCE = "sidebar_calib_source"
CALIB_TEXT = "sidebar_calib_text"
CALIB_FILE = "sidebar_calib_file"
CALIB_SEQUENCES = "sidebar_calib_sequences"
CALIB_SEQ_LEN = "sidebar_calib_seq_len"
DEFAULT_SEQUENCES = 32


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
