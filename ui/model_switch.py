"""Switching the session to another model: load it (the dense copy is shared, ``ui.loading``), give the
session a fresh pruning state on it, forget the widgets whose options belong to the old model and set the
others to the new model's defaults. A model that cannot be loaded changes nothing; why goes to the model
picker, once.
"""

from __future__ import annotations

import logging

import streamlit as st

from prune_explorer.models.errors import ModelLoadError
from prune_explorer.models.loading import LOADERS
from ui import held_widgets, loading, session

log = logging.getLogger(__name__)

LOAD_ERROR = "load_error"
# Page widgets whose options depend on the model: forgotten on a model change (their option lists change, so
# the browser gets new widgets). Widgets whose *values* depend on it are set anew (session.widget_defaults).
MODEL_DEPENDENT_KEYS = (
    "layers_layer",
    "layers_layer_chosen",
    "learn_layer",
    "learn_layer_chosen",
    "compare_point",
    "sidebar_kinds_last",
    "train_lr",  # the Train page's defaults differ between models
    "train_batch",
    "train_seq_len",
    "train_source",
)


def pop_load_error() -> str | None:
    """The last load's error, forgotten once read: it belongs to that attempt only."""
    return st.session_state.pop(LOAD_ERROR, None)


def switch_model(source: str) -> bool:
    """Load ``source`` and give the session a fresh state on it; on failure keep everything as it was.

    Runs inside widget callbacks, before any widget of the rerun exists, so widget values may be reset here.
    Returns whether the model changed; the error message (if any) is kept for :func:`pop_load_error`.
    """
    with session.exclusive():
        return _switch_model(source.strip())


def _switch_model(source: str) -> bool:
    previous, previous_source = session.dense(), session.active_source()
    try:
        new = loading.load_dense(source)
    except ModelLoadError as exc:
        st.session_state[LOAD_ERROR] = (
            f"Could not load {source!r}: {session.sentence(exc)}. Still using {previous.name}."
        )
    except Exception as exc:  # a loader bug must not take the working session down with it
        log.exception("loading %r failed", source)
        st.session_state[LOAD_ERROR] = (
            f"Could not load {source!r} ({type(exc).__name__}: {session.sentence(exc)}). "
            f"Still using {previous.name}."
        )
    else:
        st.session_state[LOAD_ERROR] = None
        if new is not previous:
            session.start(new, source)
            for key in MODEL_DEPENDENT_KEYS:
                st.session_state.pop(key, None)
            defaults = session.widget_defaults(new)
            st.session_state.update(defaults)
            held_widgets.hold(defaults)
        st.session_state[session.MODEL] = source if source in LOADERS else None
        return new is not previous
    st.session_state[session.MODEL] = previous_source if previous_source in LOADERS else None
    return False
