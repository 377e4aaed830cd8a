"""Exports: the transformers folder loads and gives the session's logits, the masks file round-trips bit for
bit, the llm-compressor recipe uses its modifiers' fields, sizes are measured on written files, and every
export is written all or nothing."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch
import yaml
from safetensors import SafetensorError

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import ATTENTION_KINDS
from prune_explorer.plans import atomic, export, llmcompressor, masks, sizes
from prune_explorer.plans.apply import apply_recipe
from prune_explorer.plans.recipe import RecipeError
from prune_explorer.plans.recipe_io import parse_recipe, recipe_yaml
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.settings import PruneSettings, prune_settings
from prune_explorer.state import PruningState
from tests.support.models import tiny_model
from tests.support.plans import assert_same_state, pruned


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("which", ["stories", "folder"])
def test_the_transformers_folder_loads_and_gives_the_same_logits(which, stories, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prune_explorer.measure.evaluate import calibration_words
    from prune_explorer.models.loading import load_pretrained
    from prune_explorer.models.tokenizers import Llama2cTokenizer
    from tests.support.models import saved_model

    if which == "folder":
        saved_model(tmp_path / "src")
        dense = load_pretrained(str(tmp_path / "src"))
    else:
        dense = stories
    state, plan = pruned(dense)
    evaluation = export.evaluate(state)
    out = export.export_hf(state, tmp_path / "out", plan, evaluation)
    loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False).eval()
    ids = torch.tensor([dense.tokenizer.encode("Once upon a time there was a cat")])
    torch.testing.assert_close(logits(loaded, ids), logits(state.model, ids), rtol=0, atol=1e-5)
    card = (out / "README.md").read_text()
    calib = plan.calibration
    protocol = evaluation.protocol(calibration_words(calib.source, calib.n_sequences, calib.seq_len))
    assert "Wanda" in card and protocol in card and f"{evaluation.pruned_ppl:.4f}" in card
    assert (
        f"{evaluation.tokens:,} predicted tokens" in protocol and f"{calib.n_sequences} sequences" in protocol
    )
    assert "| `model.layers.0.mlp.down_proj` | mlp_down | " in card
    assert parse_recipe((out / export.RECIPE_FILE).read_text()) == plan
    if which == "folder":
        assert AutoTokenizer.from_pretrained(out).encode("to be") == dense.tokenizer.inner.encode("to be")
    else:
        again = Llama2cTokenizer.from_file(out / export.LLAMA2C_TOKENIZER_FILE)
        assert again.encode("Once upon a time") == dense.tokenizer.encode("Once upon a time")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def refuse(**kwargs):
    raise PermissionError(errno.EACCES, "Permission denied")


def test_an_export_target_that_exists_or_cannot_be_written_is_refused(llama_dense, tmp_path, monkeypatch):
    state, plan = pruned(llama_dense, MagnitudeSettings(0.5))
    (tmp_path / "taken").mkdir()
    with pytest.raises(atomic.ExportError, match="already exists"):
        export.export_hf(state, tmp_path / "taken", plan)
    with pytest.raises(atomic.ExportError, match="does not exist"):
        masks.export_masks(state, tmp_path / "no" / "masks.safetensors")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.geteuid() != 0:  # root writes anywhere: the refusal is then tested below, by mkdtemp failing
            with pytest.raises(atomic.ExportError, match="not writable"):
                export.export_hf(state, locked / "out", plan)
        monkeypatch.setattr(atomic.os, "access", lambda *args: True)  # past the check, as root is
        monkeypatch.setattr(atomic.tempfile, "mkdtemp", refuse)
        with pytest.raises(atomic.ExportError, match="Permission denied"):
            export.export_hf(state, locked / "out", plan)
    finally:
        locked.chmod(stat.S_IRWXU)
    assert list(locked.iterdir()) == []


def test_a_write_that_fails_half_way_leaves_nothing(llama_dense, tmp_path, monkeypatch):
    state, plan = pruned(llama_dense, MagnitudeSettings(0.5))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "model_card", full)  # the weights are written, the card is not
    with pytest.raises(atomic.ExportError, match="No space left on device"):
        export.export_hf(state, tmp_path / "out", plan)
    assert list(tmp_path.iterdir()) == []


def full_disk_writer(error: type[Exception]):
    """A safetensors ``save_file`` that writes part of the file, then fails as a full disk does: safetensors'
    own writer reports it as a SafetensorError (its I/O runs in Rust), a Python writer as OSError(ENOSPC)."""

    def save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 1000)  # half-written
        if error is OSError:
            raise OSError(errno.ENOSPC, "No space left on device")
        raise error("Error while serializing: I/O error: No space left on device (os error 28)")

    return save_file


@pytest.mark.parametrize("error", [OSError, SafetensorError], ids=["OSError", "SafetensorError"])
def test_a_full_disk_in_any_writer_leaves_nothing_and_says_so(llama_dense, tmp_path, monkeypatch, error):
    import transformers.modeling_utils

    state, plan = pruned(llama_dense, MagnitudeSettings(0.5))
    writer = full_disk_writer(error)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", writer)  # save_pretrained's
    monkeypatch.setattr(masks, "save_file", writer)
    monkeypatch.setattr(sizes, "save_file", writer)
    writes = {
        "transformers folder": lambda: export.export_hf(state, tmp_path / "hf", plan),
        "masks file": lambda: masks.export_masks(state, tmp_path / "masks.safetensors"),
        "sizes": lambda: sizes.disk_sizes(state, tmp_path / "sizes"),
    }
    for what, write in writes.items():
        with pytest.raises(atomic.ExportError, match="failed: No space left on device") as info:
            write()
        assert "(nothing was left there)" in str(info.value), what
        assert list(tmp_path.iterdir()) == [], what  # no target, no temporary folder


def test_a_target_that_appears_while_writing_is_kept(tmp_path, monkeypatch):
    target = tmp_path / "out.yaml"
    with pytest.raises(atomic.ExportError, match="appeared while the export was written"):
        with atomic.atomic_file(target) as tmp:
            tmp.write_text("new")
            target.write_text("someone else's")  # made between the check and the move
    assert target.read_text() == "someone else's"
    target.unlink()

    def no_links(*args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_links)  # a file system without hard links
    with pytest.raises(atomic.ExportError, match="appeared"):
        with atomic.atomic_file(target) as tmp:
            tmp.write_text("new")
            target.write_text("someone else's")
    assert target.read_text() == "someone else's"
    folder = tmp_path / "folder"
    with pytest.raises(atomic.ExportError, match="appeared"):
        with atomic.atomic_folder(folder) as tmp:
            (tmp / "a").write_text("new")
            folder.mkdir()  # empty: os.rename alone would replace it
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "out.yaml"]  # no temporary folder


def test_masks_round_trip_bit_for_bit(llama_dense, char_tokenizer, tmp_path):
    state, _ = pruned(llama_dense, MagnitudeSettings(0.55, policy="global"))
    path = masks.export_masks(state, tmp_path / "masks.safetensors")
    pruned_numel = sum(layer.numel for layer in llama_dense.layers if state.is_pruned(layer.name))
    assert path.stat().st_size < pruned_numel / 8 + 4096  # one bit per weight plus the header
    fresh = PruningState(llama_dense)
    fresh.apply_counts({"model.layers.1.mlp.up_proj": 5})  # replaced by the file's masks
    masks.apply_masks_file(fresh, path)
    assert_same_state(state, fresh)
    other = DenseModel(tiny_model("llama", seed=2), char_tokenizer)
    with pytest.raises(RecipeError, match="other weights"):
        masks.load_masks(path, other)
    odd = torch.rand(7, 13) > 0.5
    assert torch.equal(masks.unpack_mask(masks.pack_mask(odd), (7, 13)), odd)


def test_the_llmcompressor_recipe_uses_its_modifier_fields(llama_dense, gpt2_dense, tmp_path):
    for method, fields in (
        ("wanda", {"sparsity", "mask_structure", "targets", "ignore"}),
        ("sparsegpt", {"sparsity", "mask_structure", "targets", "ignore", "block_size", "dampening_frac"}),
    ):
        state, plan = pruned(llama_dense, prune_settings(MagnitudeSettings(0.5), method, "unstructured"))
        text = llmcompressor.llmcompressor_yaml(plan, llama_dense)
        modifier = yaml.safe_load(text)["sparsity_stage"]["sparsity_modifiers"][
            llmcompressor.MODIFIERS[method]
        ]
        assert set(modifier) == fields
        assert modifier["targets"] == list(plan.allocation.layers) and modifier["sparsity"] == [0.5] * 14
        assert modifier["mask_structure"] == "0:0"
        parse_with_llmcompressor(text, tmp_path / f"{method}.yaml")
    state, plan = pruned(llama_dense, MagnitudeSettings(0.5, kinds=ATTENTION_KINDS, policy="global"))
    stage = yaml.safe_load(llmcompressor.llmcompressor_yaml(plan, llama_dense))["sparsity_stage"]
    groups = [group["MagnitudePruningModifier"] for group in stage.values()]
    assert sum(len(g["targets"]) for g in groups) == 8
    assert all(
        g["init_sparsity"] == g["final_sparsity"] == plan.allocation.layers[g["targets"][0]] for g in groups
    )
    with pytest.raises(RecipeError, match="no random pruning modifier"):
        llmcompressor.llmcompressor_recipe(
            pruned(llama_dense, PruneSettings(0.5, method="random"))[1], llama_dense
        )
    with pytest.raises(RecipeError, match="Conv1D"):
        llmcompressor.llmcompressor_recipe(pruned(gpt2_dense, MagnitudeSettings(0.5))[1], gpt2_dense)


def parse_with_llmcompressor(text: str, path) -> None:
    """Where llm-compressor is installed, its own recipe loader must read the file."""
    try:
        from llmcompressor.recipe import Recipe
    except ImportError:
        return
    path.write_text(text)
    parsed = Recipe.create_instance(str(path))
    assert len(parsed.modifiers) == 1


def test_sizes_are_measured_on_written_files(llama_dense, tmp_path):
    state, _ = pruned(llama_dense, MagnitudeSettings(0.75))
    measured = sizes.disk_sizes(state, tmp_path / "sizes")
    for form, nbytes in measured.items():
        base, _, compressor = form.partition(".")
        name = f"{base}.safetensors" + (f".{compressor}" if compressor else "")
        assert (tmp_path / "sizes" / name).stat().st_size == nbytes
    assert measured["pruned_zeros"] == measured["dense"]
    assert measured["pruned_zeros.zlib"] < measured["dense.zlib"] < measured["dense"]
    assert measured["pruned_zeros.lzma"] < measured["dense.lzma"]
    assert measured["bitmask"] < measured["csr"] < measured["dense"]
    assert sizes.disk_sizes(state, compressors=()).keys() == {"dense", "pruned_zeros", "bitmask", "csr"}


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_recipe_round_trip_and_transformers_export(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prune_explorer.models import smollm2

    dense = smollm2.load_smollm2()
    state, plan = pruned(dense, MagnitudeSettings(0.5, policy="global"))
    again = parse_recipe(recipe_yaml(plan))
    fresh = PruningState(dense)
    apply_recipe(fresh, again)
    for layer in dense.layers:
        assert torch.equal(state.mask(layer.name), fresh.mask(layer.name)), layer.name
    out = export.export_hf(state, tmp_path / "hf", plan)
    loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False).eval()
    ids = torch.tensor([dense.tokenizer.encode("Shall I compare thee to a summer's day?")])
    torch.testing.assert_close(logits(loaded, ids), logits(state.model, ids), rtol=0, atol=1e-5)
    assert AutoTokenizer.from_pretrained(out).encode("to be") == dense.tokenizer.inner.encode("to be")
