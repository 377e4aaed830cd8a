"""Evaluation functions against direct computations with transformers and torch."""

import math

import pytest
import torch
import torch.nn.functional as F

from prune_explorer.measure.divergence import agreement
from prune_explorer.measure.evaluate import (
    continue_greedily,
    greedy_generate,
    next_token_logits,
    perplexity,
    probabilities,
    token_diff,
    top_k,
)
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.state import PruningState


def test_greedy_continuation_matches_transformers_generate(stories):
    ids = stories.tokenizer.encode("Once upon a time, there was a")
    ref = stories.model.generate(torch.tensor([ids]), max_new_tokens=25, do_sample=False)[
        0, len(ids) :
    ].tolist()
    cont = continue_greedily(stories.model, ids, max_new_tokens=25)
    assert cont.tokens == ref
    assert greedy_generate(stories.model, ids, max_new_tokens=25) == ref
    assert torch.allclose(cont.prompt_logits, next_token_logits(stories.model, ids), atol=1e-5)


def test_generation_stops_at_a_stop_token_and_on_request(stories):
    ids = stories.tokenizer.encode("Once upon a time")
    free = greedy_generate(stories.model, ids, max_new_tokens=20)
    stop = free[5]
    assert (
        greedy_generate(stories.model, ids, max_new_tokens=20, stop_ids=(stop,))
        == free[: free.index(stop) + 1]
    )
    seen = []
    assert (
        len(greedy_generate(stories.model, ids, 20, on_token=lambda t: seen.append(t) or len(seen) == 3)) == 3
    )


@pytest.mark.parametrize("sparsity", [0.0, 0.2, 0.4, 0.6, 0.8])
def test_a_draft_changes_nothing_but_the_number_of_forward_passes(stories, sparsity):
    """Speculative decoding with the dense continuation as the draft gives the pruned model's own greedy
    tokens and prompt logits, whatever the draft."""
    ids = stories.tokenizer.encode("Once upon a time, there was a little girl")
    dense = continue_greedily(stories.model, ids, max_new_tokens=30).tokens
    state = PruningState(stories)
    apply_magnitude(state, MagnitudeSettings(sparsity=sparsity))
    plain = continue_greedily(state.model, ids, max_new_tokens=30)
    calls = {"n": 0}
    hook = state.model.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        passes = {}
        for name, draft in (
            ("dense", dense),
            ("own", plain.tokens),
            ("wrong", [3] * 30),
            ("short", dense[:4]),
        ):
            calls["n"] = 0
            guessed = continue_greedily(state.model, ids, max_new_tokens=30, draft=draft)
            assert guessed.tokens == plain.tokens, (sparsity, name)
            assert torch.allclose(guessed.prompt_logits, plain.prompt_logits, atol=1e-5)
            passes[name] = calls["n"]
        assert passes["wrong"] == 30  # nothing agreed: one pass per token, as without a draft
        assert passes["own"] <= 5  # all agreed: 4, 8, 16 draft tokens, then the rest
        assert passes["own"] <= passes["dense"] <= passes["wrong"]
    finally:
        hook.remove()


def test_a_draft_stops_at_a_stop_token_and_on_request(stories):
    ids = stories.tokenizer.encode("Once upon a time")
    free = greedy_generate(stories.model, ids, max_new_tokens=20)
    stop = free[5]
    assert (
        greedy_generate(stories.model, ids, 20, stop_ids=(stop,))
        == continue_greedily(stories.model, ids, 20, stop_ids=(stop,), draft=free).tokens
    )
    seen = []
    cont = continue_greedily(
        stories.model, ids, 20, on_token=lambda t: seen.append(t) or len(seen) == 3, draft=free
    )
    assert cont.tokens == free[:3] == seen


def test_perplexity_equals_the_mean_cross_entropy(stories):
    ids = stories.tokenizer.encode("One day, a clever fox found a shiny key under the old oak tree.")
    result = perplexity(stories.model, ids)
    logits = stories.model(torch.tensor([ids])).logits[0, :-1]
    nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
    assert result.tokens == len(ids) - 1
    assert result.nll == pytest.approx(nll, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(nll / (len(ids) - 1)), rel=1e-5)


def test_windows_score_every_token_but_each_window_start(stories):
    ids = list(range(3, 203))
    assert perplexity(stories.model, ids, window=64).tokens == 200 - math.ceil(199 / 64)
    with pytest.raises(ValueError, match="two tokens"):
        perplexity(stories.model, [1])


def test_agreement_is_zero_kl_for_identical_and_grows_with_pruning(stories):
    ids = stories.tokenizer.encode("The little dog ran to the park")
    dense = next_token_logits(stories.model, ids)
    same = agreement(dense, dense.clone())
    assert same.kl == 0.0 and same.kl_last == 0.0 and same.top1 == 1.0  # exactly: "0 nats" on the page
    state = PruningState(stories)
    kls = []
    for s in (0.2, 0.6, 0.9):
        apply_magnitude(state, MagnitudeSettings(sparsity=s))
        kls.append(agreement(dense, next_token_logits(state.model, ids)).kl)
    assert 0 < kls[0] < kls[1] < kls[2]


def _float64_agreement(dense: torch.Tensor, pruned: torch.Tensor) -> tuple[float, float, float]:
    p_log, q_log = F.log_softmax(dense.double(), -1), F.log_softmax(pruned.double(), -1)
    kl = (p_log.exp() * (p_log - q_log)).sum(-1)
    return float(kl.mean()), float(kl[-1]), float((dense.argmax(-1) == pruned.argmax(-1)).double().mean())


@pytest.mark.parametrize("noise", [1e-3, 1e-2, 0.3, 3.0])
def test_agreement_matches_a_float64_reference_from_tiny_to_large_divergence(noise):
    gen = torch.Generator().manual_seed(3)
    dense = torch.randn(7, 5003, generator=gen) * 4
    pruned = dense + noise * torch.randn(7, 5003, generator=gen)
    kl, kl_last, top1 = _float64_agreement(dense, pruned)
    got = agreement(dense, pruned)
    assert got.kl == pytest.approx(kl, rel=2e-3) and got.kl_last == pytest.approx(kl_last, rel=2e-3)
    assert got.top1 == pytest.approx(top1)


def test_agreement_refuses_logits_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        agreement(torch.zeros(3, 5), torch.zeros(2, 5))


def test_top_k_probabilities_and_token_diff():
    logits = torch.tensor([0.0, 2.0, 1.0, -1.0])
    probs = F.softmax(logits, -1)
    assert top_k(logits, 2) == [(1, pytest.approx(probs[1].item())), (2, pytest.approx(probs[2].item()))]
    assert probabilities(logits, [3, 0]) == [pytest.approx(probs[3].item()), pytest.approx(probs[0].item())]
    assert token_diff([1, 2, 3], [1, 5, 3, 4]) == [True, False, True, False]


def test_token_diff_aligns_instead_of_comparing_positions():
    dense = [7, 1, 2, 3, 4, 5]
    inserted = [7, 1, 9, 2, 3, 4, 5]  # one extra token: only it differs, not everything after it
    assert token_diff(dense, inserted) == [True, True, False, True, True, True, True]
    assert token_diff(inserted, dense) == [True] * 6  # every dense token is found in the other
    assert token_diff(dense, [7, 1, 3, 4, 5]) == [True] * 5  # a dropped token leaves the rest matched
    assert token_diff([1, 2, 3], []) == [] and token_diff([], [4, 4]) == [False, False]
