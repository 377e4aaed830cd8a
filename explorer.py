"""Prune Explorer's Streamlit script: page config, the shared sidebar (model + pruning controls) drawn
once, and navigation.

Served by ``streamlit run app.py``, which warms the process up first (see app.py). Pages live in ``views/``,
not ``pages/``: Streamlit would take a ``pages/`` folder for its legacy multipage mode and open a link to a
page (``/layers``) without this file's sidebar. Every page reads the same session state.
"""

from pathlib import Path

import streamlit as st

from prune_explorer import threads
from prune_explorer.pruning.methods import get_method
from ui import (
    allocation_view,
    background,
    calibration_view,
    controls,
    held_widgets,
    methods,
    page_style,
    scenes,
    session,
)

# A Material icon, not an emoji: Streamlit checks an emoji icon with a regex it compiles once per process,
# 0.4 s of a fresh server's first view.
st.set_page_config(page_title="Prune Explorer", page_icon=":material/content_cut:", layout="wide")

HERE = Path(__file__).parent
pages = [
    st.Page("views/prune.py", title="Prune", icon=":material/content_cut:", default=True),
    st.Page("views/layers.py", title="Layers", icon=":material/stacked_bar_chart:"),
    st.Page("views/learn.py", title="Learn", icon=":material/school:"),
]
# Pages owned by other parts of the project join the menu once their files exist.
for path, title, icon in (
    ("views/compare.py", "Compare", ":material/compare_arrows:"),
    ("views/speed.py", "Speed", ":material/speed:"),
    ("views/sensitivity.py", "Sensitivity", ":material/troubleshoot:"),
    ("views/allocation.py", "Allocation", ":material/equalizer:"),
    ("views/train.py", "Train", ":material/model_training:"),
    ("views/export.py", "Save & export", ":material/download:"),
):
    if (HERE / path).is_file():
        pages.append(st.Page(path, title=title, icon=icon))
navigation = st.navigation(pages)
page_style.steady()  # no page-wide dimming while a run updates the page (see ui.page_style)

# One run of a session at a time: a new run waits until the previous one has stopped (see session.exclusive).
# Slow measurements the page asks for run after it, in the background (ui.background).
threads.use_all_cores()  # a script thread may inherit a narrowed count (see prune_explorer.threads)
background.begin_run()
with session.exclusive():
    held_widgets.send_again()  # values the server set lately, before any widget exists in this run
    try:
        state = session.ensure_state()
    except Exception as exc:  # without a first model there is nothing to show
        st.error(f"The built-in model could not be loaded: {exc}")
        st.stop()
    scenes.restore(navigation)  # a link's scene on the first run, a scene button's page: before the widgets
    state = session.state()  # the link's scene may have loaded another model

    with st.sidebar:
        scenes_slot = st.container()  # the Scenes expander, on top; filled last, when the link is known
        controls.model_picker(state.dense)
        st.divider()
        method, pattern, sequential = methods.method_picker()
        magnitude, slider_slot = controls.pruning_controls(state.dense, method, pattern)
        batch, calib_error = calibration_view.calibration_controls(
            state.dense, needed=get_method(method).calibrated
        )
        settings = allocation_view.chosen_settings(state.dense, magnitude, method, pattern, batch, sequential)
        error = methods.apply(settings, calib_error)
        if error:
            st.error(error)
        controls.threshold_slider(slider_slot, state)
        controls.pruning_summary(state, session.applied())
        allocation_view.sidebar_chart(state, session.applied())
        methods.details(settings)
        st.button(
            "Reset to dense",
            key="sidebar_reset",
            on_click=session.reset_to_dense,
            icon=":material/restart_alt:",
        )
        scenes.picker(navigation, scenes_slot)
    scenes.write_url(navigation)  # the address bar holds the scene shown

    try:
        navigation.run()
        background.poll()  # at the page's foot: a refresh in the sidebar would close an open dropdown there
    finally:
        background.end_run()
