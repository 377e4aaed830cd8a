"""A trained model in use, on the sidebar and the Save & export page (AppTest, stories260K): the sidebar's
"Applied:" says it was trained and how sparse its weights are, until a slider move or a reset replaces it;
the transformers folder holds the trained weights (same logits) and a card and JSON that say how they were
trained; the masks file holds its masks; no recipe nor llm-compressor recipe is offered, with why; the
sizes are measured. A gradual run from dense, with no one-shot plan at all, exports the same way, and a pin
of it is named as trained."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch

from prune_explorer.models.layers import select
from prune_explorer.plans.masks import apply_masks_file
from prune_explorer.plans.trained import NO_RECIPE, TRAINING_FILE
from prune_explorer.state import PruningState
from tests.support.apptest import captions, errors, measured, set_sparsity, start
from tests.support.downloads import record_downloads
from tests.test_app_export import downloaded, masks, same_masks
from tests.test_app_train import finished, press_start, stop_jobs, train_page  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")
EXPORT = "views/export.py"


@pytest.fixture
def payloads(monkeypatch) -> dict:
    return record_downloads(monkeypatch)


def use_trained(at, **values):
    """Train with the Train page's quick settings (and ``values``) and use the result; back on Prune."""
    finished(press_start(train_page(at, **values)))
    at.button(key="train_apply").click().run()
    assert not at.exception, at.exception
    return measured(at.switch_page("views/prune.py").run())


def applied_line(at) -> str:
    (line,) = [c.value for c in at.sidebar.caption if c.value.startswith("Applied:")]
    return line


def trained_share(at) -> float:
    """The share of the trained layers' weights that are zero in the session's model, counted here."""
    trained = at.session_state["train_applied"]
    state = at.session_state["pruning_state"]
    layers = select(state.dense.layers, trained.record.settings.kinds)
    zeros = sum(int((state.weight(layer.name) == 0).sum()) for layer in layers)
    return zeros / sum(layer.numel for layer in layers)


def export_page(at):
    at.switch_page(EXPORT).run()
    assert not at.exception, at.exception
    return at


def hf_folder(at, payloads, tmp_path):
    """Prepare and download the transformers folder; its files unzipped under ``tmp_path``."""
    at.button(key="export_prepare_hf").click().run()
    assert not at.exception and not errors(at), errors(at)
    with zipfile.ZipFile(io.BytesIO(downloaded(at, payloads, "export_download_hf"))) as zf:
        zf.extractall(tmp_path)
    (folder,) = tmp_path.iterdir()
    return folder


def assert_same_logits(at, folder) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    state = at.session_state["pruning_state"]
    ids = torch.tensor([state.dense.tokenizer.encode("Once upon a time there was a cat")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, state.model(ids).logits)
        assert not torch.equal(model(ids).logits, state.dense.model(ids).logits)


def no_one_shot_exports(at) -> None:
    """No recipe and no llm-compressor recipe, each with its reason; nothing of the sidebar's settings."""
    shown = " ".join(i.value for i in at.info)
    assert "No recipe for the trained model in use" in shown and NO_RECIPE in shown
    assert "Not offered for a trained model" in shown
    ids = [b.proto.id for b in at.get("download_button")] + [b.proto.id for b in at.button]
    assert not [i for i in ids if i.endswith("export_recipe_download") or i.endswith("export_prepare_llmc")]
    assert "Prune something in the sidebar first" not in shown


def test_a_recovered_model_is_the_one_the_sidebar_names_and_the_exports_hold(payloads, tmp_path):
    at = start()
    set_sparsity(at, 60)
    assert "trained" not in applied_line(at)
    use_trained(at)
    line = applied_line(at)
    assert line.startswith("Applied: trained — recovery of Magnitude |w| · uniform policy · 60%"), line
    assert "distillation, 4 steps" in line
    assert f"{trained_share(at):.1%} of the trained layers' weights are zero" in line

    export_page(at)
    assert "What is applied: trained — recovery of" in captions(at)
    no_one_shot_exports(at)
    folder = hf_folder(at, payloads, tmp_path / "hf")
    assert folder.name == "stories260K-trained"
    assert_same_logits(at, folder)
    card = (folder / "README.md").read_text()
    assert "## Training" in card and "| Schedule | recovery with the masks of" in card
    assert "| Loss | distillation" in card and "| Steps | 4 steps" in card and "| Data | " in card
    assert "Protocol:" in card and "trained " in card.split("## Perplexity")[1]
    assert "| `model.layers.0.mlp.down_proj` | mlp_down | " in card
    assert not (folder / "prune_explorer_recipe.yaml").exists()
    assert json.loads((folder / TRAINING_FILE).read_text())["report"]["steps_done"] == 4

    at.button(key="export_prepare_masks").click().run()
    assert "trained model's final masks" in captions(at)
    path = tmp_path / "masks.safetensors"
    path.write_bytes(downloaded(at, payloads, "export_download_masks"))
    fresh = PruningState(at.session_state["pruning_state"].dense)
    apply_masks_file(fresh, path)
    assert same_masks({n: fresh.mask(n) for n in masks(at)}, masks(at))
    at.button(key="export_prepare_sizes").click().run()
    assert not errors(at) and "the trained weights" in captions(at)
    assert len(at.dataframe[0].value) > 0

    set_sparsity(at, 50)  # a slider move replaces the trained model: the summary and exports follow
    assert applied_line(at) == "Applied: Magnitude |w| · uniform policy · 50%."
    assert [b for b in at.get("download_button") if b.proto.id.endswith("export_recipe_download")]
    assert "Press Prepare to build it" in captions(at)  # the trained model's files are stale now


def test_a_gradual_run_from_dense_exports_as_trained_and_reset_ends_it(payloads, tmp_path):
    at = start()
    use_trained(at, train_schedule="gradual", train_target=50, train_dt=1, train_updates=2, train_t0=0)
    line = applied_line(at)
    assert line.startswith("Applied: trained — gradual magnitude unstructured to 50%, distillation"), line
    assert f"{trained_share(at):.1%} of the trained layers' weights are zero" in line
    at.button(key="prune_pin").click().run()  # a pin of it is named as trained, not by the sidebar's 0%
    assert f"**Pinned:** trained · {trained_share(at):.0%}" in [m.value for m in at.markdown]

    export_page(at)
    no_one_shot_exports(at)
    folder = hf_folder(at, payloads, tmp_path)
    assert_same_logits(at, folder)
    card = (folder / "README.md").read_text()
    assert "trained: gradual magnitude unstructured to 50%" in card and "| Start | the dense model |" in card

    at.button(key="sidebar_reset").click().run()
    assert not at.exception, at.exception
    assert "trained" not in applied_line(at)
    assert "Nothing is pruned yet" in " ".join(i.value for i in at.info)
