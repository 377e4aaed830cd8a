"""Protocol cards: every perplexity and KL the app shows (Prune, Learn, Compare, Allocation, Sensitivity, the
pin) states its protocol (text, tokens, window, stride, calibration), in the words the exported model card
uses."""

from __future__ import annotations

import pytest
import torch

from prune_explorer.measure.evaluate import protocol_text
from prune_explorer.pruning.calibration import CalibrationBatch
from tests.support.apptest import captions, choose, measured, metric, set_sparsity, start
from ui.protocol import held_out_tokens, methods_calibration

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
    assert len(ppl) == 2, ppl  # the perplexity metrics' card and the sweep's


def test_a_calibrated_method_names_its_calibration():
    at = choose(start(), method="wanda")
    set_sparsity(at, 50)
    ppl = [c for c in _cards(at) if "evaluation text" in c]
    assert ppl and "sequences ×" in ppl[0] and "calibration: none" not in ppl[0]


def test_the_words_are_the_model_cards():
    assert protocol_text("x", 10, 5).startswith("Protocol: 10 predicted tokens of the x; window 5 tokens")


# ----- every other page's perplexity and KL (issue 11, item 5)


def _card_of(at, needle: str) -> str:
    found = [c for c in _cards(at) if needle in c]
    assert found, f"no protocol card with {needle!r}; cards: {_cards(at)}"
    return found[0]


def _held_out(at) -> str:
    tokens = held_out_tokens(at.session_state["pruning_state"].dense)
    return f"Protocol: {tokens:,} predicted tokens of the built-in stories evaluation text"


def test_learn_page_cards_its_kl_and_its_sweep():
    at = set_sparsity(start(), 40)
    at.switch_page("views/learn.py").run()
    at = measured(at)
    assert not at.exception, at.exception
    kl = _card_of(at, "prompt")
    assert "KL(dense ‖ pruned)" in kl and "stride" in kl
    assert _card_of(at, "evaluation text").startswith(_held_out(at))


def test_compare_page_cards_its_curves_and_token_losses():
    at = set_sparsity(start(), 40)
    at.switch_page("views/compare.py").run()
    at.button_group(key="compare_methods").set_value(["magnitude", "wanda"])
    at.button_group(key="compare_patterns").set_value(["unstructured"])
    at.button_group(key="compare_grid").set_value([30])
    at.run()
    assert not at.exception, at.exception
    curves = _card_of(at, "evaluation text;")
    assert curves.startswith(_held_out(at))
    assert "(read by Wanda); none for Magnitude" in curves and "sequences ×" in curves
    losses = _card_of(at, "(its first window)")
    assert "calibration: none" in losses  # the model now: magnitude at 40%


def test_allocation_comparison_cards_its_chart(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_EXPLORER_CACHE", str(tmp_path))
    at = start()
    at.switch_page("views/allocation.py").run()
    measured(at)
    card = _card_of(at, "evaluation text")
    assert card.startswith(_held_out(at)) and "(read by OWL's outlier ratios)" in card


def test_sensitivity_states_tokens_window_and_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_EXPLORER_CACHE", str(tmp_path))
    at = start()
    at.switch_page("views/sensitivity.py").run()
    measured(at.button(key="sensitivity_run").click().run())
    (line,) = [c for c in at.caption if c.value.startswith("Protocol: built-in")]
    card = line.proto.help  # the full card, as a tooltip on the page's protocol line
    assert card.startswith("Protocol: 255 predicted tokens of the built-in stories evaluation text")
    assert "window 256 tokens, stride 256" in card
    assert "calibration: none" in card  # magnitude reads no activations; the estimate does:
    assert "The instant estimate reads" in card
    assert "bfloat16" not in card  # stories260K's 512 x 64 head keeps float32 logits


def test_the_sensitivity_card_says_when_logits_took_the_bfloat16_head_delta(stories):
    from prune_explorer.measure.sensitivity import FLOAT32, HEAD_DELTA, measure_sensitivity
    from ui.protocol import sensitivity_card

    result = measure_sensitivity(stories, "magnitude", [0.5], cache=False)
    assert result.logits == FLOAT32 and "bfloat16" not in sensitivity_card(result)
    result.logits = HEAD_DELTA
    assert "LM head applied in bfloat16" in sensitivity_card(result)


def test_the_pins_deltas_carry_the_pinned_protocol():
    at = set_sparsity(start(), 30)
    at.button(key="prune_pin").click().run()
    set_sparsity(at, 50)
    pinned = [line for line in captions(at).split("\n") if line.startswith("Pinned (")]
    assert pinned and "Pinned protocol: " in pinned[0] and "predicted tokens of the prompt" in pinned[0]
    assert any("against pinned" in c and "Pinned protocol: " in c for c in captions(at).split("\n"))


def test_points_calibration_words():
    batch = CalibrationBatch(ids=torch.zeros(4, 16, dtype=torch.long), text_tokens=64)
    assert methods_calibration(["magnitude"], batch) is None
    assert methods_calibration(["wanda", "magnitude"], batch) == (
        "text, 4 sequences × 16 tokens (read by Wanda); none for Magnitude"
    )
    assert methods_calibration(["magnitude"], None, readers=["OWL"]) is None
