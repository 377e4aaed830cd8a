"""Loading other models: saved folders (Llama and GPT-2), safe formats, and each bad input a user can give."""

import pytest
import torch

from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.errors import ModelLoadError
from prune_explorer.models.layers import select
from prune_explorer.models.loading import load_model, load_pretrained
from prune_explorer.models.memory import (
    DEFAULT_CACHE_BYTES,
    MEMORY_HEADROOM,
    RANKING_BYTES,
    check_memory,
    memory_needed,
)
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.state import PruningState
from tests.support.models import save_tokenizer, saved_model, tiny_model


@pytest.fixture(params=["llama", "gpt2"])
def saved_folder(request, tmp_path):
    return tmp_path, saved_model(tmp_path, request.param)


def test_saved_folders_load_with_identical_weights_and_prune(saved_folder):
    folder, original = saved_folder
    dense = load_pretrained(str(folder))
    for key, value in original.state_dict().items():
        assert torch.equal(dense.model.state_dict()[key], value), key
    assert (folder / "model.safetensors").exists()
    kinds = {layer.kind for layer in select(dense.layers)}
    assert kinds & {"attn_q", "attn_qkv"} and "mlp_down" in kinds
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.5))
    assert state.overall_sparsity(select(dense.layers)) == pytest.approx(0.5, abs=0.01)
    ids = dense.tokenizer.encode("hello there, friend")
    assert perplexity(state.model, ids).ppl != perplexity(dense.model, ids).ppl


def test_pytorch_bin_checkpoint_loads_with_weights_only(tmp_path):
    model = tiny_model("llama")
    # transformers 5 always writes safetensors: write the legacy .bin checkpoint by hand.
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    save_tokenizer(tmp_path)
    assert (tmp_path / "pytorch_model.bin").exists() and not (tmp_path / "model.safetensors").exists()
    dense = load_pretrained(str(tmp_path))
    assert torch.equal(dense.model.lm_head.weight, model.lm_head.weight)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nothing-here"))


def test_a_file_is_not_taken_for_a_missing_folder(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("not a model")
    with pytest.raises(ModelLoadError, match="is a file, not a model folder"):
        load_model(str(readme))


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="hub id 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def test_corrupt_safetensors_is_a_clear_error(saved_folder):
    folder, _ = saved_folder
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="could not load the weights"):
        load_pretrained(str(folder))


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="config"):
        load_pretrained(str(tmp_path))


def test_model_too_big_for_free_memory_is_refused_before_loading(saved_folder):
    folder, _ = saved_folder
    with pytest.raises(ModelLoadError, match="only 0.0 GiB of memory is free"):
        load_pretrained(str(folder), available=1000)
    # weights with headroom, the shared rankings, and the shared cache's budget (1 GiB by default)
    need = memory_needed(135_000_000)
    assert need == int(135_000_000 * (4 * MEMORY_HEADROOM + RANKING_BYTES)) + DEFAULT_CACHE_BYTES
    with pytest.raises(ModelLoadError, match="135.0M parameters"):
        check_memory(135_000_000, available=need - 1)
    check_memory(135_000_000, available=need)
    with pytest.raises(ModelLoadError, match="135.0M parameters"):
        check_memory(135_000_000, available=need, cache_bytes=DEFAULT_CACHE_BYTES + 1)
    check_memory(135_000_000, available=need - DEFAULT_CACHE_BYTES, cache_bytes=0)


def test_remote_code_is_never_trusted(tmp_path):
    import json

    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "custom-remote", "auto_map": {"AutoConfig": "evil.Config"}})
    )
    (tmp_path / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError):
        load_pretrained(str(tmp_path))


class _Payload:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_pickle_checkpoint_with_code_is_refused(tmp_path, capsys):
    model = tiny_model("llama")
    model.config.save_pretrained(tmp_path)
    state = dict(model.state_dict())
    state["evil"] = _Payload()
    torch.save(state, tmp_path / "pytorch_model.bin")
    save_tokenizer(tmp_path)
    with pytest.raises(ModelLoadError, match="could not load the weights"):
        load_pretrained(str(tmp_path))
    assert "pickle code ran" not in capsys.readouterr().out
