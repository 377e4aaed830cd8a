"""Loading models from the sidebar through AppTest: a saved folder of either architecture loads; a wrong id,
a missing folder, a corrupt file or a model too big for memory is refused and the session goes on."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.apptest import (
    PRUNED,
    ROOT,
    captions,
    errors,
    generation,
    metric,
    set_sparsity,
    start,
)
from tests.support.models import saved_model

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no-such-org/no-such-model-xyz", "hub id"),
        ("/no/such/folder/anywhere", "does not exist"),
        (str(ROOT / "README.md"), "is a file, not a model folder"),
    ],
)
def test_failed_load_keeps_previous_model(source, message):
    at = start()
    set_sparsity(at, 20)
    at.text_input(key="sidebar_source").input(source)
    at.button(key="sidebar_load").click().run()
    assert not at.exception, at.exception
    assert (
        "Could not load" in errors(at) and message in errors(at) and "Still using stories260K" in errors(at)
    )
    assert "Active model: **stories260K**" in captions(at)
    assert metric(at, PRUNED) == "20.0%"

    set_sparsity(at, 40)
    assert metric(at, PRUNED) == "40.0%"
    assert generation(at, "dense") != generation(at, "pruned")
    assert "Could not load" not in errors(at)  # the error was that attempt's; a later success clears it


def _assert_load_refused(at: AppTest, source: str, message: str) -> None:
    at.text_input(key="sidebar_source").input(source)
    at.button(key="sidebar_load").click().run()
    assert not at.exception, at.exception
    assert (
        "Could not load" in errors(at) and message in errors(at) and "Still using stories260K" in errors(at)
    )
    assert metric(at, PRUNED) == "20.0%"
    set_sparsity(at, 40)
    assert metric(at, PRUNED) == "40.0%"


def test_corrupt_checkpoint_is_refused_and_the_session_goes_on(tmp_path):
    folder = tmp_path / "corrupt"
    saved_model(folder, "llama")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    at = start()
    set_sparsity(at, 20)
    _assert_load_refused(at, str(folder), "could not load the weights")


def test_model_too_big_for_free_memory_is_refused_before_loading(tmp_path, monkeypatch):
    from prune_explorer.models import memory

    folder = tmp_path / "big"
    saved_model(folder, "llama")
    at = start()
    set_sparsity(at, 20)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)
    _assert_load_refused(at, str(folder), "of memory is free")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_load_a_saved_folder_from_the_sidebar(tmp_path, arch):
    folder = tmp_path / arch
    saved_model(folder, arch, chat=arch == "llama")  # the Llama twin also tries the chat-template path

    at = start()
    set_sparsity(at, 25)
    at.text_input(key="sidebar_source").input(str(folder))
    at.button(key="sidebar_load").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert f"Active model: **{folder}**" in captions(at)
    assert at.slider(key="sidebar_sparsity").value == 0  # a model change starts dense
    at.run()  # the next run sends the new model's defaults again (ui.held_widgets), whatever the browser held
    assert at.slider(key="sidebar_sparsity").proto.set_value
    assert at.text_area(key="prune_prompt").proto.set_value
    assert metric(at, PRUNED) == "0.0%"
    assert at.selectbox(key="sidebar_model").value is None

    assert ("chat template" in captions(at)) == (arch == "llama")
    set_sparsity(at, 50)
    assert metric(at, PRUNED) == "50.0%"
    assert float(metric(at, "KL(dense ‖ pruned), next token").split()[0]) > 0
    kinds = set(at.pills(key="sidebar_kinds").value)
    assert ("attn_qkv" in kinds) == (arch == "gpt2")
    for page in ("views/layers.py", "views/learn.py", "views/prune.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)

    at.selectbox(key="sidebar_model").set_value("stories260K").run()
    assert not at.exception, at.exception
    assert "Active model: **stories260K**" in captions(at)
