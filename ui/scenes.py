"""Scenes in the app: a link restores one (model, page, sidebar settings), the address bar always holds the
current one, and the sidebar's Scenes expander jumps to a built-in scene in one click.

The scene itself (fields, query string, validation, the built-in list) is plain data in
``prune_explorer.scenes``; here it meets ``st.query_params`` and the sidebar's widget keys (``ui.session``).
Widget values are set in ``st.session_state`` before the widgets of the run exist, as ``ui.session`` does on a
model change. A link is read on a session's first run only: later runs' query strings can lag behind what
this module wrote (a slider moved twice quickly), and reading them would undo the user's own moves.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from streamlit.navigation.page import StreamlitPage

from prune_explorer.models.layers import DEFAULT_KINDS, EXTRA_KINDS
from prune_explorer.models.loading import BUILTINS
from prune_explorer.pruning.allocation import OWL_LAMBDA
from prune_explorer.pruning.budget_bounds import DEVIATION
from prune_explorer.pruning.outliers import OWL_M
from prune_explorer.scenes import (
    BUILTIN_SCENES,
    KEYS,
    PAGES,
    Scene,
    SceneError,
    has_scene,
    scene_from_query,
    scene_to_query,
)
from ui import allocation_view, defaults, held_widgets, model_switch, session

ROOT = Path(__file__).resolve().parents[1]
URL_READ = "scenes_url_read"  # set once the session's first run has read the link
PENDING_PAGE = "scenes_pending_page"  # the page a scene button asked for, switched to early in the next run
PICK_ERROR = "scenes_pick_error"  # why a scene button could not apply its scene, shown in the expander
SCENE_WIDGETS = (
    session.METHOD,
    session.PATTERN,
    session.POLICY,
    session.SPARSITY,
    session.KINDS,
    session.EXTRAS,
)


def page_name(page: StreamlitPage) -> str:
    """The name a scene gives ``page`` (as ``scenes.PAGES``): its URL path ("train" for /train, "export" for
    Save & export), or for the default page, whose path is the root, its title in lower case ("prune")."""
    return page.url_path or page.title.lower()


def _page_file(name: str) -> str | None:
    """The page's script relative to explorer.py, or None when this app has no such page (yet)."""
    path = f"views/{name}.py"
    return path if (ROOT / path).is_file() else None


def restore(current: StreamlitPage) -> None:
    """Call early in every run, before the sidebar's widgets: apply the link's scene on a session's first run,
    and go to the page a scene (link or button) names when it is not ``current``.

    A bad link shows a warning naming the field and why, and the app keeps its defaults.
    """
    target = st.session_state.pop(PENDING_PAGE, None)
    if not st.session_state.get(URL_READ):
        st.session_state[URL_READ] = True
        before = session.dense()
        target = _restore_from_url(page_name(current)) or target
        if session.dense() is not before and target in (None, page_name(current)):
            # The link's model was loaded in this run, its progress drawn at the top of the page: the page
            # drawn after it would sit one place lower than in every later run, and the next run would show
            # its elements beside this run's stale ones until it ends. Draw the page anew, in its usual shape.
            st.rerun()
    if target is None or target == page_name(current):
        return
    path = _page_file(target)
    if path is None:
        st.warning(f"This app has no {target.title()} page, so the scene is shown on this one.")
        return
    st.switch_page(path, query_params=st.query_params.to_dict())  # stops this run; the page runs next


def _restore_from_url(opened: str) -> str | None:
    """Apply the scene in the query string; returns its page, or None (no scene, or a warning shown).

    A link without a ``page`` field stays on the page its path ``opened`` (``/speed?method=wanda``).
    """
    params = st.query_params.to_dict()
    if not has_scene(params):
        return None
    if "page" not in params and opened in PAGES:
        params["page"] = opened
    try:
        scene = scene_from_query(params)
    except SceneError as exc:
        st.warning(f"The link's scene was not applied ({exc}). The app starts at its defaults.")
        return None
    error = apply_scene(scene)
    if error:
        st.warning(f"The link's scene was not applied ({error}). The app starts at its defaults.")
        return None
    return scene.page


def apply_scene(scene: Scene) -> str | None:
    """Load the scene's model if another is active, then set the sidebar widgets to the scene.

    Runs before the sidebar's widgets exist in the run (early in explorer.py, or in a button callback).
    Nothing changes when the model cannot be loaded or has none of the scene's layer kinds. Per-layer
    overrides are cleared: a scene has none.

    Returns:
        None when applied, else why not, starting with the field at fault ("model: ...").
    """
    if scene.model != session.active_source():
        model_switch.switch_model(scene.model)
        if scene.model != session.active_source():  # ui.session keeps the load error for the model picker
            return f"model: {scene.model} could not be loaded"
    dense = session.dense()
    present = defaults.present_kinds(dense, DEFAULT_KINDS)
    kinds = present if scene.kinds is None else [k for k in present if k in scene.kinds]
    if not kinds:
        return f"kinds: {dense.name} has none of {', '.join(scene.kinds or ())}; it has {', '.join(present)}"
    state = st.session_state
    state[session.METHOD] = scene.method
    state[session.PATTERN] = scene.pattern
    state[session.POLICY] = scene.policy
    state[session.SPARSITY] = scene.sparsity
    if scene.policy == "threshold":
        state[session.THRESHOLD] = scene.threshold
    state[session.KINDS] = kinds
    state[session.EXTRAS] = scene.extras and bool(defaults.present_kinds(dense, EXTRA_KINDS))
    state[session.OVERRIDE_LAYERS] = []
    chosen = {allocation_view.ALLOCATION: scene.allocation}
    chosen.update({allocation_view.OWL_M: scene.owl_m, allocation_view.OWL_LAM: scene.owl_lam})
    chosen[allocation_view.BUDGET_DEVIATION] = scene.budget_dev
    state.update(chosen)
    state[allocation_view.LAST] = chosen  # the valid choice a refused one goes back to
    held = (*SCENE_WIDGETS, *chosen, *([session.THRESHOLD] if scene.policy == "threshold" else []))
    held_widgets.hold({key: state[key] for key in held})  # a browser still loading may miss them once
    return None


def current_scene(current: StreamlitPage) -> Scene | None:
    """The scene the sidebar shows now on ``current``; None when the model is not a built-in one (a link
    names built-in models only) or the widgets hold something a scene cannot say."""
    source = session.active_source()
    if source not in BUILTINS:
        return None
    state = st.session_state
    present = defaults.present_kinds(session.dense(), DEFAULT_KINDS)
    kinds = list(state.get(session.KINDS) or present)
    policy = state.get(session.POLICY, "uniform")
    try:
        return Scene(
            model=source,
            page=page_name(current),
            method=state.get(session.METHOD, "magnitude"),
            pattern=state.get(session.PATTERN, "unstructured"),
            policy=policy,
            sparsity=int(state.get(session.SPARSITY, 0)),
            threshold=float(state.get(session.THRESHOLD, 0.0)) if policy == "threshold" else 0.0,
            kinds=None if kinds == present else tuple(kinds),
            extras=bool(state.get(session.EXTRAS, False)),
            **_allocation(state),
        )
    except SceneError:
        return None


def _allocation(state) -> dict:
    """The scene's allocation fields from the sidebar's widgets (OWL's M and λ only under OWL, the budget's
    largest deviation only under the budget)."""
    name = state.get(allocation_view.ALLOCATION, "uniform")
    if name == "budget":
        deviation = state.get(allocation_view.BUDGET_DEVIATION, DEVIATION)
        return {"allocation": name, "budget_dev": float(deviation)}
    if name != "owl":
        return {"allocation": name}
    m, lam = state.get(allocation_view.OWL_M, OWL_M), state.get(allocation_view.OWL_LAM, OWL_LAMBDA)
    return {"allocation": name, "owl_m": float(m), "owl_lam": float(lam)}


def write_url(current: StreamlitPage) -> None:
    """Put the current scene in the address bar (call after the sidebar, before the page runs).

    Written only when it changed: each write is a message to the browser (which adds a history entry, and
    does not rerun the script). Query keys that are not a scene's (``utm_source``...) are kept.
    """
    scene = current_scene(current)
    params = st.query_params.to_dict()
    wanted = {key: value for key, value in params.items() if key not in KEYS}
    if scene is not None:
        wanted.update(scene_to_query(scene))
    if wanted != params:
        st.query_params.from_dict(wanted)


def _on_scene(index: int) -> None:
    """Scene button callback: apply the built-in scene now; the next run goes to its page."""
    scene = BUILTIN_SCENES[index].scene
    error = apply_scene(scene)
    if error:
        st.session_state[PICK_ERROR] = f"{BUILTIN_SCENES[index].name} was not applied ({error})."
    else:
        st.session_state[PENDING_PAGE] = scene.page


def picker(current: StreamlitPage, where: DeltaGenerator) -> None:
    """The sidebar's Scenes expander, drawn into ``where``: one button per built-in scene with what it shows,
    and the link to the scene shown now, as copyable text.

    Call it after the sidebar's widgets (the link is then what they hold), with ``where`` a container placed
    where the expander belongs (the top of the sidebar).
    """
    error = st.session_state.pop(PICK_ERROR, None)
    with where, st.expander("Scenes", expanded=bool(error), icon=":material/bookmark:"):
        if error:
            st.warning(error)
        for index, builtin in enumerate(BUILTIN_SCENES):
            st.button(
                builtin.name,
                key=f"sidebar_scene_{index}",
                on_click=_on_scene,
                args=(index,),
                width="stretch",
            )
            st.caption(builtin.shows)
        st.caption("Link to this scene (it is also in the address bar):")
        scene = current_scene(current)
        if scene is None:
            st.caption("Links name built-in models only: this model cannot be linked.")
            return
        query = "?" + urlencode(scene_to_query(scene), safe=":,")  # "2:4" reads better than "2%3A4"
        st.code((st.context.url or "") + query, language=None, wrap_lines=True)
