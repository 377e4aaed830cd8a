"""Protocol cards: every perplexity and KL on the Prune page states its protocol (text, tokens, window,
stride, calibration), in the words the exported model card uses."""

from __future__ import annotations

import pytest

from prune_explorer.measure.evaluate import protocol_text
from tests.support.apptest import captions, choose, metric, set_sparsity, start

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


def _cards(at) -> list[str]:
    return [line for line in captions(at).split("\n") if line.startswith("Protocol:")]


def test_perplexity_and_kl_carry_their_protocol():
    at = set_sparsity(start(), 50)
    tokens = int(metric(at, "Tokens scored").replace(",", ""))
    cards = _cards(at)
    ppl = [c for c in cards if "evaluation text" in c]
    kl = [c for c in cards if "prompt" in c]
    assert ppl and kl, cards
    assert f"{tokens:,} predicted tokens of the built-in stories evaluation text" in ppl[0]
    assert "calibration: none" in ppl[0]  # magnitude reads no activations
    assert "window" in kl[0] and "stride" in kl[0]


def test_a_calibrated_method_names_its_calibration():
    at = choose(start(), method="wanda")
    set_sparsity(at, 50)
    ppl = [c for c in _cards(at) if "evaluation text" in c]
    assert ppl and "sequences ×" in ppl[0] and "calibration: none" not in ppl[0]


def test_the_words_are_the_model_cards():
    assert protocol_text("x", 10, 5).startswith("Protocol: 10 predicted tokens of the x; window 5 tokens")
