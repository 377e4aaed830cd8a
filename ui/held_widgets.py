"""Widget values the server sets (a link's scene, a model's defaults) are sent to the browser again on every
run for a few seconds, while the user leaves them alone.

Streamlit sends a value set through ``st.session_state`` once, with the widget in the run that set it. A
browser that had not drawn the widget yet when the next run's copy arrived (a first view, while the page
still loads the app) started the widget from its declared default instead, and sent that back: a link at 40%
showed the sparsity slider at 0% over a model pruned at 40%. Setting the value again before the widget
exists makes each run send it.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

HELD = "held_widget_values"  # session_state: {widget key: (value, until when: time.monotonic())}
HOLD_SECONDS = 15.0


def hold(values: dict[str, Any]) -> None:
    """Send these widget values again on every run for :data:`HOLD_SECONDS` (call where they are set)."""
    until = time.monotonic() + HOLD_SECONDS
    st.session_state.setdefault(HELD, {}).update({key: (value, until) for key, value in values.items()})


def send_again() -> None:
    """Call at the start of every run, before any widget: set each held value once more, unless the widget
    holds another value now (the user's) or its time is over; those are forgotten."""
    held = st.session_state.get(HELD)
    if not held:
        return
    now = time.monotonic()
    for key, (value, until) in list(held.items()):
        if now > until or st.session_state.get(key) != value:
            del held[key]
        else:
            st.session_state[key] = value
