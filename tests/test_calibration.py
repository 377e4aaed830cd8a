"""Calibration: sequences cut from a text, input statistics against a hook-free reference, hooks removed,
and calibration text kept apart from evaluation text."""

import logging
import re

import pytest
import torch

from prune_explorer import texts
from prune_explorer.models.layers import select
from prune_explorer.pruning.calibration import calibration_batch, collect_stats


def test_batch_is_consecutive_slices_of_the_encoded_text(char_tokenizer):
    text = "the cat sat on the mat. " * 10
    batch = calibration_batch(char_tokenizer, text, seq_len=16, n_sequences=3)
    ids = char_tokenizer.encode(text)
    assert batch.ids.dtype == torch.long and tuple(batch.ids.shape) == (3, 16)
    assert batch.ids.reshape(-1).tolist() == ids[:48]
    assert batch.text_tokens == len(ids) and batch.n_tokens == 48


def test_batch_takes_what_fits_and_says_so(char_tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        batch = calibration_batch(char_tokenizer, "x" * 40, seq_len=16, n_sequences=10)
    assert batch.n_sequences == 2  # 41 tokens with BOS
    assert "2 sequences of 16 fit" in caplog.text
    assert calibration_batch(char_tokenizer, "x" * 40, seq_len=16).n_sequences == 2


@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_is_refused(char_tokenizer, text):
    with pytest.raises(ValueError, match="empty"):
        calibration_batch(char_tokenizer, text)


def test_too_short_text_names_both_counts(char_tokenizer):
    with pytest.raises(ValueError, match=r"has 6 tokens.*needs 128"):
        calibration_batch(char_tokenizer, "hello", seq_len=128)


@pytest.mark.parametrize("kwargs", [{"seq_len": 1}, {"n_sequences": 0}])
def test_bad_sizes_are_refused(char_tokenizer, kwargs):
    with pytest.raises(ValueError):
        calibration_batch(char_tokenizer, "some text " * 50, **kwargs)


def _ids(n=3, t=11, seed=0):
    return torch.randint(3, 259, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stop_early", [True, False])
def test_llama_stats_equal_a_hook_free_reference(llama_dense, stop_early):
    model = llama_dense.model
    layers = [
        llama_dense.by_name["model.layers.0.self_attn.q_proj"],
        llama_dense.by_name["model.layers.1.mlp.up_proj"],
    ]
    ids = _ids()
    stats = collect_stats(model, layers, ids, gram=True, batch_size=2, stop_early=stop_early)
    with torch.no_grad():
        x = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids)).reshape(-1, 32).double()
    s = stats["model.layers.0.self_attn.q_proj"]
    assert s.n_tokens == 33
    torch.testing.assert_close(s.sq_norms, (x * x).sum(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.gram, x.T @ x, rtol=1e-5, atol=1e-5)
    assert stats["model.layers.1.mlp.up_proj"].n_tokens == 33


def test_gpt2_conv1d_stats_equal_a_hook_free_reference(gpt2_dense):
    model = gpt2_dense.model
    layer = gpt2_dense.by_name["transformer.h.0.attn.c_attn"]
    assert layer.transposed
    ids = _ids(2, 9)
    stats = collect_stats(model, [layer], ids)
    with torch.no_grad():
        h = model.transformer.wte(ids) + model.transformer.wpe(torch.arange(9))
        x = model.transformer.h[0].ln_1(h).reshape(-1, 32).double()
    assert stats[layer.name].gram is None
    torch.testing.assert_close(stats[layer.name].sq_norms, (x * x).sum(0), rtol=1e-5, atol=1e-6)


def test_hooks_are_removed_even_when_the_model_fails(llama_dense):
    model = llama_dense.model
    layers = select(llama_dense.layers)
    collect_stats(model, layers, _ids())
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(IndexError):
        collect_stats(model, layers, torch.full((1, 4), 10_000, dtype=torch.long))
    assert all(not m._forward_hooks for m in model.modules())


def test_embeddings_and_bad_ids_are_refused(llama_dense):
    with pytest.raises(ValueError, match="embedding"):
        collect_stats(llama_dense.model, [llama_dense.by_name["model.embed_tokens"]], _ids())
    with pytest.raises(ValueError, match="int64"):
        collect_stats(llama_dense.model, select(llama_dense.layers), _ids().float())


def test_progress_reaches_one(llama_dense):
    seen = []
    collect_stats(llama_dense.model, select(llama_dense.layers), _ids(5), batch_size=2, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 3


def _sentences(text):
    return {s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()}


@pytest.mark.parametrize("text_set", texts.TEXT_SETS)
def test_shipped_calibration_and_eval_texts_share_no_sentence(text_set):
    shared = _sentences(texts.calibration_text(text_set)) & _sentences(texts.eval_text(text_set))
    assert not shared


@pytest.mark.parametrize("text_set", texts.TEXT_SETS)
def test_calibration_sequences_are_not_in_the_eval_text(stories, char_tokenizer, text_set):
    for tokenizer in (stories.tokenizer, char_tokenizer):
        batch = calibration_batch(tokenizer, texts.calibration_text(text_set), seq_len=32)
        eval_ids = tokenizer.encode(texts.eval_text(text_set), bos=False)
        # Token ids as one string each, so "is a contiguous run of" becomes substring search.
        haystack = "," + ",".join(map(str, eval_ids)) + ","
        for seq in batch.ids.tolist():
            assert "," + ",".join(map(str, seq)) + "," not in haystack
            assert tokenizer.decode(seq).strip() not in texts.eval_text(text_set)
