"""The Save & export page through AppTest: the recipe downloaded is the session's plan, an uploaded one gives
the same masks bit for bit (and a bad one changes nothing), and each export, downloaded, loads back to the
session's pruned model."""

from __future__ import annotations

import errno
import io
import tempfile
import zipfile

import pytest
import torch
import yaml
from safetensors import SafetensorError

from prune_explorer.plans.masks import apply_masks_file
from prune_explorer.plans.recipe_capture import recipe_from_state
from prune_explorer.plans.recipe_io import parse_recipe
from prune_explorer.state import PruningState
from tests.support.apptest import choose, errors, set_sparsity, start
from tests.support.downloads import record_downloads

pages = pytest.mark.usefixtures("one_thread", "app_navigation")
PAGE = "views/export.py"
UPLOAD = "export_recipe_upload"


@pytest.fixture
def payloads(monkeypatch) -> dict:
    return record_downloads(monkeypatch)


def masks(at) -> dict[str, torch.Tensor]:
    state = at.session_state["pruning_state"]
    return {
        layer.name: state.mask(layer.name).clone()
        for layer in state.dense.layers
        if state.is_pruned(layer.name)
    }


def same_masks(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def downloaded(at, payloads: dict, key: str) -> bytes:
    button = at.get("download_button")
    (found,) = [b for b in button if b.proto.id.endswith(key)]
    build, _ = payloads[found.proto.deferred_file_id]
    data = build()
    return data.encode("utf-8") if isinstance(data, str) else data


def export_page(at, percent: int = 50):
    set_sparsity(at, percent)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def upload(at, text: str, name: str = "recipe.yaml"):
    at.file_uploader(key=UPLOAD).upload(name, text.encode("utf-8"), "application/x-yaml").run()
    assert not at.exception, at.exception
    return at


@pages
def test_recipe_download_parses_back_to_the_sessions_plan(payloads):
    at = export_page(start())
    text = downloaded(at, payloads, "export_recipe_download").decode("utf-8")
    state = at.session_state["pruning_state"]
    assert parse_recipe(text) == recipe_from_state(state, at.session_state["pruning_applied"])
    layers = parse_recipe(text).allocation.layers
    assert layers and all(v == pytest.approx(0.5, abs=0.01) for v in layers.values())


@pages
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_uploaded_recipe_gives_the_same_masks_bit_for_bit_and_the_sidebar_keeps_them(payloads, method):
    at = start()
    if method != "magnitude":
        choose(at, method=method)
    at = export_page(at, 40)
    text = downloaded(at, payloads, "export_recipe_download").decode("utf-8")
    wanted = masks(at)
    assert wanted
    at.button(key="sidebar_reset").click().run()
    choose(at, method="random")  # another pruning in between
    assert not same_masks(masks(at), wanted)
    upload(at, text)
    assert same_masks(masks(at), wanted)
    assert "The sidebar shows it" in " ".join(s.value for s in at.success), [w.value for w in at.warning]
    at.run()  # the sidebar, set to the recipe, applies nothing else
    assert not at.exception, at.exception
    assert same_masks(masks(at), wanted)
    assert at.selectbox(key="sidebar_method").value == method
    assert at.slider(key="sidebar_sparsity").value == 40


def _bad_recipes(text: str) -> dict[str, tuple[str, str]]:
    data = yaml.safe_load(text)
    name = next(iter(data["allocation"]["layers"]))
    out_of_range = yaml.safe_load(text)
    out_of_range["allocation"]["layers"][name] = 1.5
    other_model = yaml.safe_load(text)
    other_model["model"]["sha256"] = "0" * 64
    unknown = yaml.safe_load(text)
    unknown["allocation"]["layers"]["no.such.layer"] = 0.5
    not_finite = yaml.safe_load(text)
    not_finite["allocation"]["sparsity"] = float("nan")
    return {
        "malformed": ("model: [unclosed\n  method: :", "not valid YAML"),
        "empty": ("", "must be a YAML mapping"),
        "not a mapping": ("- a\n- list\n", "must be a YAML mapping"),
        "out of range": (yaml.safe_dump(out_of_range), "allocation.layers"),
        "not finite": (yaml.safe_dump(not_finite), "allocation.sparsity: Input should be a finite number"),
        "other model": (yaml.safe_dump(other_model), "another model"),
        "unknown layer": (yaml.safe_dump(unknown), "no.such.layer"),
    }


@pages
def test_bad_recipes_are_refused_with_the_reason_and_keep_the_masks(payloads):
    at = export_page(start(), 50)
    text = downloaded(at, payloads, "export_recipe_download").decode("utf-8")
    set_sparsity(at, 30)
    before, applied = masks(at), at.session_state["pruning_applied"]
    for case, (bad, reason) in _bad_recipes(text).items():
        at.file_uploader(key=UPLOAD).set_value(None).run()
        upload(at, bad, f"{case}.yaml")
        shown = errors(at)
        assert "refused" in shown and reason in shown, (case, shown)
        assert same_masks(masks(at), before), case
        assert at.session_state["pruning_applied"] == applied, case


@pages
def test_transformers_zip_loads_with_the_sessions_logits(payloads, tmp_path):
    from transformers import AutoModelForCausalLM

    at = export_page(start(), 50)
    at.button(key="export_prepare_hf").click().run()
    assert not at.exception and not errors(at)
    with zipfile.ZipFile(io.BytesIO(downloaded(at, payloads, "export_download_hf"))) as zf:
        zf.extractall(tmp_path)
    (folder,) = tmp_path.iterdir()
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    assert "Protocol:" in (folder / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    state = at.session_state["pruning_state"]
    ids = torch.tensor([state.dense.tokenizer.encode("Once upon a time there was a cat")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, state.model(ids).logits)


@pages
def test_masks_file_reapplied_gives_the_same_masks(payloads, tmp_path):
    at = export_page(start(), 60)
    at.button(key="export_prepare_masks").click().run()
    assert "apply_masks_file" in " ".join(m.value for m in at.markdown) + " ".join(
        c.value for c in at.caption
    )
    path = tmp_path / "masks.safetensors"
    path.write_bytes(downloaded(at, payloads, "export_download_masks"))
    state = at.session_state["pruning_state"]
    fresh = PruningState(state.dense)
    apply_masks_file(fresh, path)
    assert same_masks({n: fresh.mask(n) for n in masks(at)}, masks(at))


@pages
def test_llmcompressor_recipe_and_sizes_table(payloads):
    at = export_page(start(), 50)
    at.button(key="export_prepare_llmc").click().run()
    body = yaml.safe_load(downloaded(at, payloads, "export_download_llmc"))
    assert "MagnitudePruningModifier" in str(body)
    at.button(key="export_prepare_sizes").click().run()
    table = at.dataframe[0].value
    by_form = dict(zip(table["form"], table["bytes"], strict=True))
    assert by_form["bitmask (1 bit a weight + kept values)"] < by_form["dense (as loaded)"]


@pages
def test_export_errors_leave_the_session_as_it_was(payloads, monkeypatch):
    at = export_page(start(), 50)
    before = masks(at)
    monkeypatch.setattr(
        "tempfile.mkdtemp", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left"))
    )
    at.button(key="export_prepare_masks").click().run()
    assert not at.exception
    assert "could not be made" in errors(at) and "No space left" in errors(at)
    assert same_masks(masks(at), before)
    monkeypatch.undo()
    choose(at, method="random")  # llm-compressor has no random modifier: refused, with why
    before = masks(at)
    at.button(key="export_prepare_llmc").click().run()
    assert "llm-compressor has no random" in errors(at)
    assert same_masks(masks(at), before)


def full_disk(filename) -> None:
    """A writer failing as a full disk does, after writing part of its file (safetensors reports the OS
    error as its own SafetensorError; see tests/test_export.py)."""
    with open(filename, "wb") as f:
        f.write(b"\0" * 1000)
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pages
def test_a_full_disk_or_a_folder_not_writable_says_so_and_leaves_nothing(payloads, monkeypatch, tmp_path):
    import transformers.modeling_utils

    from prune_explorer.plans import masks as masks_module
    from prune_explorer.plans import sizes

    at = export_page(start(), 50)
    before, applied = masks(at), at.session_state["pruning_applied"]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the page's temporary folders, watched
    writer = lambda tensors, filename, metadata=None: full_disk(filename)  # noqa: E731
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", writer)
    monkeypatch.setattr(masks_module, "save_file", writer)
    monkeypatch.setattr(sizes, "save_file", writer)
    for name in ("hf", "masks", "sizes"):
        at.button(key=f"export_prepare_{name}").click().run()
        assert not at.exception, (name, at.exception)
        shown = errors(at)
        assert "could not be made" in shown and "No space left on device" in shown, (name, shown)
        assert "Nothing of your session changed" in shown
        assert list(tmp_path.iterdir()) == [], name  # the temporary folder and its half file are gone
        assert same_masks(masks(at), before) and at.session_state["pruning_applied"] == applied
        assert not [b for b in at.get("download_button") if b.proto.id.endswith(f"export_download_{name}")]

    def not_writable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", not_writable)
    at.button(key="export_prepare_masks").click().run()
    assert "no temporary folder can be made: Permission denied" in errors(at)
    assert same_masks(masks(at), before)
