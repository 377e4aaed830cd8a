"""Widgets the pages share: a layer picker that keeps the user's choice across option changes, and the
scale toggles of a |w| histogram."""

from __future__ import annotations

import streamlit as st

from prune_explorer.models.layers import PrunableLayer
from ui import data


def layer_picker(layers: list[PrunableLayer], key: str, label: str = "Layer") -> PrunableLayer:
    """A selectbox over ``layers`` (short names); returns the chosen layer."""
    by_name = {layer.name: layer for layer in layers}
    # A new option list makes a new widget; carry the user's choice over to it when it is still offered.
    remembered = st.session_state.get(key, st.session_state.get(f"{key}_chosen"))
    if remembered in by_name:
        st.session_state[key] = remembered
    else:
        st.session_state.pop(key, None)
    name = st.selectbox(
        label,
        list(by_name),
        format_func=lambda n: data.short_name(by_name[n]),
        key=key,
        persist_state="session",
    )
    st.session_state[f"{key}_chosen"] = name
    return by_name[name]


def histogram_scales(prefix: str, log_y: bool = False) -> tuple[bool, bool]:
    """Log-x and log-y switches for a histogram (``log_y``: where the count axis starts); returns
    (log_x, log_y). A log |w| axis spreads the bulk of small weights a linear one squeezes to the left."""
    left, right = st.columns(2)
    log_x = left.toggle("log |w| axis", key=f"{prefix}_log_x")
    log_y = right.toggle("log count axis", value=log_y, key=f"{prefix}_log_y")
    return log_x, log_y
