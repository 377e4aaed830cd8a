"""Training streams never overlap evaluation or calibration text; losses against hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prune_explorer import texts
from prune_explorer.models.dense import DenseModel
from prune_explorer.training.data import (
    OVERLAP_TOKENS,
    TrainingData,
    builtin_data,
    sampled_data,
    text_data,
    training_data,
)
from prune_explorer.training.losses import distill_kl, hidden_mse, next_token_ce
from tests.support.models import tiny_model


def _contains_run(haystack_ids, ids, n):
    """Whether any run of ``n`` of ``ids`` occurs in ``haystack_ids`` (substring search on joined ids)."""
    haystack = "," + ",".join(map(str, haystack_ids)) + ","
    return any("," + ",".join(map(str, ids[i : i + n])) + "," in haystack for i in range(len(ids) - n + 1))


@pytest.fixture
def shakespeare_dense(char_tokenizer):
    return DenseModel(tiny_model("llama"), char_tokenizer, name="tiny", text_set="shakespeare")


def test_builtin_training_text_shares_no_run_with_held_out_text(stories, char_tokenizer):
    train = texts.training_text("shakespeare")
    for held_out in (texts.eval_text("shakespeare"), texts.calibration_text("shakespeare")):
        assert train not in held_out and held_out[:200] not in train and held_out[-200:] not in train
    # Token level, with two tokenizers and an independent search (llama2.c's pure-Python BPE is slow on
    # 200k characters: it reads the text's two ends).
    for tokenizer, text in ((stories.tokenizer, train[:1500] + train[-1500:]), (char_tokenizer, train)):
        ids = tokenizer.encode(text, bos=False)
        for held_out in (texts.eval_text("shakespeare"), texts.calibration_text("shakespeare")):
            other = tokenizer.encode(held_out, bos=False)
            probe = ids[:3000] + ids[-3000:]
            assert not _contains_run(other, probe, OVERLAP_TOKENS)


def test_builtin_data_for_shakespeare_and_none_for_stories(shakespeare_dense, llama_dense):
    data = builtin_data(shakespeare_dense, seq_len=64)
    assert data.tokens > 100_000 and "shakespeare" in data.source
    with pytest.raises(ValueError, match="no built-in training text"):
        builtin_data(llama_dense, seq_len=64)
    assert "sampled" in training_data(llama_dense, "auto", tokens=2 * 128, seq_len=64).source


def test_a_users_text_that_repeats_held_out_text_is_refused(llama_dense):
    own = "The cat sat on the mat and looked at the rain for a long time. " * 20
    assert text_data(llama_dense, own, seq_len=64).tokens == len(own.encode()) + 1
    for name, held_out in (
        ("evaluation", texts.eval_text("stories")),
        ("calibration", texts.calibration_text()),
    ):
        with pytest.raises(ValueError, match=f"text: .*{name} text"):
            text_data(llama_dense, own + held_out[100:300] + own, seq_len=64)


@pytest.mark.parametrize(
    "text, match", [("", "empty"), ("   \n", "empty"), ("short text", "needs at least 128")]
)
def test_empty_or_short_text_is_refused(llama_dense, text, match):
    with pytest.raises(ValueError, match=match):
        text_data(llama_dense, text, seq_len=64)


def test_bad_sources(llama_dense):
    with pytest.raises(ValueError, match="source"):
        training_data(llama_dense, "wikipedia")
    with pytest.raises(ValueError, match="needs a text"):
        training_data(llama_dense, "text")


def test_sampled_text_is_seeded_and_held_out_free(stories):
    a = sampled_data(stories, tokens=4 * 128, seq_len=128, seed=3)
    b = sampled_data(stories, tokens=4 * 128, seq_len=128, seed=3)
    c = sampled_data(stories, tokens=4 * 128, seq_len=128, seed=4)
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    assert a.tokens == 4 * 128 and int(a.ids.max()) < 512
    text = stories.tokenizer.decode(a.ids[1:128].tolist())
    assert len(text) > 200 and text.count(" ") > 30  # words, not noise
    for held_out in (texts.eval_text("stories"), texts.calibration_text("stories")):
        other = stories.tokenizer.encode(held_out, bos=False)
        assert not _contains_run(other, a.ids.tolist(), OVERLAP_TOKENS)


def test_batches_are_windows_of_the_stream():
    data = TrainingData(torch.arange(1000), "test")
    batch = data.batch(5, 16, torch.Generator().manual_seed(0))
    assert batch.shape == (5, 16)
    assert all(torch.equal(row, torch.arange(int(row[0]), int(row[0]) + 16)) for row in batch)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        TrainingData(torch.arange(10), "x").batch(1, 16, torch.Generator())


def test_distill_kl_against_a_hand_computation():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    p, q = F.softmax(t / 2, -1), F.softmax(s / 2, -1)
    by_hand = (p * (p.log() - q.log())).sum(-1).mean() * 4
    assert distill_kl(s, t, temperature=2.0).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert distill_kl(t, t).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        distill_kl(s, t, 0.0)
    with pytest.raises(ValueError, match="shape"):
        distill_kl(s, t[:, :2])


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_distill_kl_gradient_matches_autograd_through_the_plain_formula(temperature, dtype):
    torch.manual_seed(1)
    s = (3 * torch.randn(2, 5, 11)).to(dtype).requires_grad_(True)
    t = 3 * torch.randn(2, 5, 11)
    reference = s.detach().double().requires_grad_(True)
    log_q = F.log_softmax(reference / temperature, -1)
    log_p = F.log_softmax(t.double() / temperature, -1)
    want = (log_p.exp() * (log_p - log_q)).sum(-1).mean() * temperature**2
    want.backward()
    got = distill_kl(s, t.to(dtype), temperature)
    got.backward()
    assert s.grad.dtype == dtype and s.grad.shape == s.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert got.item() == pytest.approx(want.item(), rel=tol)
    torch.testing.assert_close(
        s.grad.double(), reference.grad, rtol=tol, atol=tol * float(reference.grad.abs().max())
    )
    # the loss scales the gradient it is given (chain rule through a weighted sum)
    s.grad = None
    (3.0 * distill_kl(s, t.to(dtype), temperature)).backward()
    torch.testing.assert_close(
        s.grad.double(), 3 * reference.grad, rtol=tol, atol=3 * tol * float(reference.grad.abs().max())
    )


def test_hidden_mse_and_next_token_ce():
    torch.manual_seed(0)
    t = [torch.randn(2, 3, 4), 10 * torch.randn(2, 3, 4)]
    assert hidden_mse(t, t).item() == 0.0
    # normalised per layer: the same relative error weighs the same in a layer 10x larger
    assert hidden_mse([1.1 * x for x in t], t).item() == pytest.approx(0.01, rel=1e-4)
    with pytest.raises(ValueError, match="same"):
        hidden_mse(t, t[:1])
    logits, ids = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
    assert next_token_ce(logits, ids).item() == pytest.approx(ce.item())
