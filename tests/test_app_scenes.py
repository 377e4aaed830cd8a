"""Scenes in the app through AppTest: a link restores the sidebar and the page, a bad link warns and keeps the
defaults, the address bar follows the sidebar, and a built-in scene's button jumps there."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from prune_explorer.scenes import BUILTIN_SCENES, Scene, scene_to_query
from tests.support.apptest import APP, PRUNED, TIMEOUT, captions, metric, set_sparsity, start

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


def opened(params: dict[str, str]) -> AppTest:
    """The app's first run in a session whose URL holds ``params``."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.run()
    assert not at.exception, at.exception
    return at


def warnings(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning)


def sidebar(at: AppTest) -> tuple:
    return (
        at.selectbox(key="sidebar_method").value,
        at.selectbox(key="sidebar_pattern").value,
        at.radio(key="sidebar_policy").value,
        at.slider(key="sidebar_sparsity").value,
    )


def test_a_link_restores_the_sidebar_and_the_applied_settings():
    at = opened({"method": "wanda", "sparsity": "30"})
    assert sidebar(at) == ("wanda", "unstructured", "uniform", 30)
    applied = at.session_state["pruning_applied"]
    assert (applied.method, applied.pattern, applied.sparsity) == ("wanda", "unstructured", 0.3)
    assert float(metric(at, PRUNED).rstrip("%")) == pytest.approx(30, abs=0.5)  # per row: k rounds per row
    assert not at.warning
    # The address bar holds the whole scene now, on the page it was opened on.
    assert at.query_params == scene_to_query(Scene(method="wanda", sparsity=30))


def test_a_link_goes_to_its_page_with_its_kinds():
    query = scene_to_query(Scene(page="layers", policy="global", sparsity=40, kinds=("mlp_up", "mlp_down")))
    at = opened(query)
    assert "Current threshold for" in captions(at)  # the Layers page ran, not Prune
    assert sidebar(at) == ("magnitude", "unstructured", "global", 40)
    assert at.pills(key="sidebar_kinds").value == ["mlp_up", "mlp_down"]
    state = at.session_state["pruning_state"]
    pruned = {layer.kind for layer in state.dense.layers if state.is_pruned(layer.name)}
    assert pruned == {"mlp_up", "mlp_down"}
    assert at.query_params == query


@pytest.mark.parametrize(
    ("path", "page", "title"),
    [
        ("views/learn.py", "learn", "Learn"),
        ("views/train.py", "train", "Train"),
        ("views/sensitivity.py", "sensitivity", "Sensitivity"),
        ("views/export.py", "export", "Save & export"),
    ],
)
def test_a_link_without_a_page_stays_on_the_page_of_its_path(path, page, title):
    at = start()
    # As if /learn?method=wanda&sparsity=20 were opened: a first run (the link not read yet) on Learn.
    at.session_state["scenes_url_read"] = False
    at.query_params.clear()
    at.query_params.update({"method": "wanda", "sparsity": "20"})
    at.switch_page(path).run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == [title]  # still that page
    assert sidebar(at) == ("wanda", "unstructured", "uniform", 20)
    assert at.query_params == scene_to_query(Scene(page=page, method="wanda", sparsity=20))


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"method": "obs", "sparsity": "30"}, ["method", "obs", "magnitude, random, wanda, sparsegpt"]),
        ({"method": "wanda", "sparsity": "130"}, ["sparsity", "between 0 and 100"]),
        ({"method": "wanda", "kinds": "attn_qkv"}, ["kinds", "stories260K has none of attn_qkv"]),
    ],
)
def test_a_bad_link_warns_and_keeps_the_defaults(params, words):
    at = opened(params)
    said = warnings(at)
    assert "The link's scene was not applied" in said
    for word in words:
        assert word in said, (word, said)
    assert sidebar(at) == ("magnitude", "unstructured", "uniform", 0)
    assert at.session_state["pruning_applied"] is None or at.session_state["pruning_applied"].sparsity == 0
    assert at.query_params == scene_to_query(Scene())  # the address bar shows what is shown
    at.run()
    assert not at.warning  # said once, on the run that read the link


def test_the_address_bar_follows_the_sidebar_and_the_page():
    at = start()
    assert at.query_params == scene_to_query(Scene())
    set_sparsity(at, 45)
    at.selectbox(key="sidebar_pattern").set_value("2:4").run()
    assert at.query_params["sparsity"] == "50" and at.query_params["pattern"] == "2:4"
    at.switch_page("views/learn.py").run()
    assert not at.exception, at.exception
    assert at.query_params == scene_to_query(Scene(page="learn", pattern="2:4", sparsity=50))
    (link,) = [c.value for c in at.code if "page=learn" in c.value]
    assert "pattern=2:4" in link  # readable, not 2%3A4
    assert {k: v for k, (v,) in parse_qs(urlsplit(link).query).items()} == at.query_params


def test_a_builtin_scene_button_jumps_there():
    index, builtin = next((i, b) for i, b in enumerate(BUILTIN_SCENES) if b.scene.model == "stories260K")
    at = start()
    set_sparsity(at, 10)
    at.button(key=f"sidebar_scene_{index}").click().run()
    assert not at.exception, at.exception
    scene = builtin.scene
    assert sidebar(at) == (scene.method, scene.pattern, scene.policy, scene.sparsity)
    assert at.session_state["pruning_applied"].policy == scene.policy
    assert at.query_params == scene_to_query(scene)
    if scene.page == "layers":
        assert "Current threshold for" in captions(at)


@pytest.mark.real_model
def test_the_smollm2_scenes_load_their_model():
    """Wanda holds at 50% on SmolLM2: the link loads the model and applies Wanda there (slow: SmolLM2)."""
    (wanda,) = [b.scene for b in BUILTIN_SCENES if b.name == "Wanda holds at 50%"]
    at = opened(scene_to_query(wanda))
    assert at.session_state["model_source"] == "smollm2-135m"
    assert sidebar(at) == ("wanda", "unstructured", "uniform", 50)
    assert at.session_state["pruning_applied"].method == "wanda"
    assert not at.warning


def test_a_links_widget_values_are_sent_again_until_the_user_changes_them(monkeypatch):
    """Streamlit sends a value the script set once; a browser still loading the app can miss it and show the
    widget's default over the link's pruning. For a while after a link, every run sends the values again,
    and a widget the user moved keeps the user's value."""
    from ui import held_widgets

    at = opened({"method": "wanda", "sparsity": "30"})
    at.run()  # a later run (the background measurements' rerun, say)
    assert at.slider(key="sidebar_sparsity").proto.set_value  # the value goes to the browser again
    assert at.selectbox(key="sidebar_method").proto.set_value
    assert sidebar(at)[::3] == ("wanda", 30)

    set_sparsity(at, 45)  # the user's move
    at.run()
    assert at.slider(key="sidebar_sparsity").value == 45  # never put back to the link's 30
    assert not at.slider(key="sidebar_sparsity").proto.set_value
    assert at.selectbox(key="sidebar_method").proto.set_value  # the untouched ones still held

    monkeypatch.setattr(held_widgets, "HOLD_SECONDS", 0.0)  # once the hold is over, nothing is sent again
    at = opened({"method": "wanda", "sparsity": "30"})
    at.run()
    assert not at.slider(key="sidebar_sparsity").proto.set_value and sidebar(at)[::3] == ("wanda", 30)


def test_a_first_views_widget_defaults_are_sent_again():
    """The same for the values a session starts from (stories260K: 40 new tokens, where the slider's own
    default is 8); a model switch's are checked in test_app_loading."""
    at = start()
    at.run()
    tokens = at.slider(key="prune_new_tokens")
    assert tokens.value == 40 and tokens.proto.set_value and at.text_area(key="prune_prompt").proto.set_value
    tokens.set_value(60).run()
    moved = at.slider(key="prune_new_tokens")
    assert moved.value == 60 and not moved.proto.set_value  # the user's value, never put back
