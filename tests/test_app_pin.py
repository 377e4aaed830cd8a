"""Pinning on the Prune page (``ui.pin``): one setting's outputs kept and compared side by side with the next,
through AppTest; a pin belongs to one model and one prompt, and drawing it runs no model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.support.apptest import (
    array,
    captions,
    generation,
    metric,
    next_token_bars,
    set_sparsity,
    start,
)
from tests.support.downloads import csv_under_charts, numbers, record_downloads, trace
from tests.support.models import CharTokenizer, saved_model
from ui import downloads, pin

pages = pytest.mark.usefixtures("one_thread", "app_navigation")
KL_LAST = "KL(dense ‖ pruned), next token"


def bars(at: AppTest, name: str) -> dict[str, float]:
    """The next-token chart's bars of one series: token label -> probability (NaN: no bar)."""
    return {t: float("nan") if p is None else p for t, p in next_token_bars(at)[name].items()}


def delta(at: AppTest, label: str) -> str:
    (found,) = [m for m in at.metric if m.label == label]
    return found.delta or ""


def pinned_html(at: AppTest) -> list[str]:
    return [h.value for h in at.html if "pe-gen-pinned" in h.value]


def pin_at(at: AppTest, percent: int) -> AppTest:
    set_sparsity(at, percent)
    at.button(key="prune_pin").click().run()
    assert not at.exception, at.exception
    return at


@pages
def test_pin_keeps_one_setting_beside_the_next_until_unpinned():
    at = start()
    set_sparsity(at, 30)
    text_30, bars_30 = generation(at, "pruned"), bars(at, "pruned")
    kl_30, ppl_30 = float(metric(at, KL_LAST).split()[0]), metric(at, "Pruned perplexity")
    pin_at(at, 30)
    assert "**Pinned:** Magnitude · unstructured · 30%" in [m.value for m in at.markdown]

    set_sparsity(at, 60)
    assert generation(at, "pinned") == text_30 != generation(at, "pruned")
    assert [h.value for h in at.html if "pe-gen-" in h.value][1].count("pe-gen-pinned") == 1  # the middle
    assert list(next_token_bars(at)) == ["dense", "pruned", "pinned"]
    pinned = bars(at, "pinned")
    assert set(bars_30) <= set(pinned)  # every token the 30% chart showed, with its 30% probability
    assert [pinned[t] for t in bars_30] == pytest.approx(list(bars_30.values()))
    assert bars(at, "pruned") != pytest.approx(pinned)
    kl_60 = float(metric(at, KL_LAST).split()[0])
    assert delta(at, KL_LAST).endswith(" vs pinned")
    assert float(delta(at, KL_LAST).split()[0]) == pytest.approx(kl_60 - kl_30, abs=2e-4)
    assert "pts vs pinned" in delta(at, "Top-1 agreement over the prompt")
    assert metric(at, "Pinned perplexity") == ppl_30 != metric(at, "Pruned perplexity")
    assert "against pinned" in captions(at)

    at.button(key="prune_unpin").click().run()
    assert not at.exception, at.exception
    assert not pinned_html(at) and pin.PIN not in at.session_state
    assert list(next_token_bars(at)) == ["dense", "pruned"]
    assert delta(at, KL_LAST) == "" and not [m for m in at.metric if m.label == "Pinned perplexity"]


@pages
def test_a_model_switch_drops_the_pin(tmp_path):
    folder = tmp_path / "llama"
    saved_model(folder, "llama")
    at = pin_at(start(), 40)
    assert pinned_html(at)
    at.text_input(key="sidebar_source").input(str(folder))
    at.button(key="sidebar_load").click().run()
    assert not at.exception, at.exception
    assert pin.PIN not in at.session_state and not pinned_html(at)
    assert not at.warning and "prune_unpin" not in {b.key for b in at.button}
    assert list(next_token_bars(at)) == ["dense", "pruned"]


@pages
def test_a_pin_for_another_prompt_is_said_so_and_not_compared():
    at = pin_at(start(), 40)
    prompt = at.text_area(key="prune_prompt").value
    at.text_area(key="prune_prompt").input("The dog ran").run()
    assert not at.exception, at.exception
    assert "Pinned for another prompt" in " ".join(w.value for w in at.warning)
    assert not pinned_html(at) and list(next_token_bars(at)) == ["dense", "pruned"]
    assert delta(at, KL_LAST) == ""

    at.slider(key="prune_new_tokens").set_value(at.slider(key="prune_new_tokens").value + 4)
    at.text_area(key="prune_prompt").input(prompt).run()  # the prompt back, another token count
    assert "Pinned for another prompt" in " ".join(w.value for w in at.warning)
    at.button(key="prune_unpin").click().run()
    assert not at.warning and pin.PIN not in at.session_state


@pages
def test_the_next_token_csv_holds_the_pinned_series(monkeypatch):
    payloads = record_downloads(monkeypatch)
    at = pin_at(start(), 30)
    set_sparsity(at, 70)
    figure, _, header, rows = csv_under_charts(at, payloads)["prune_topk_csv"]
    assert header == ["token", "model", "probability"]
    for model in ("dense", "pruned", "pinned"):
        mine = [r for r in rows if r["model"] == model]
        assert [r["token"] for r in mine] == list(trace(figure, model)["x"])
        drawn = array(trace(figure, model)["y"])
        assert np.allclose(numbers(mine, "probability"), drawn, equal_nan=True)


@pages
def test_pinning_adds_no_model_computation_to_a_slider_move(monkeypatch):
    from ui import defaults, lookahead

    monkeypatch.setattr(defaults, "SMALL_MODEL", 0)  # nothing measured in the background: only the live path
    monkeypatch.setattr(lookahead, "prime", lambda *_: False)  # each session computes its own move
    pinned, plain = pin_at(start(), 30), start()
    set_sparsity(plain, 30)
    calls = {}
    for name, at in (("pinned", pinned), ("plain", plain)):
        model = at.session_state["pruning_state"].model
        calls[name] = 0

        def count(*_, name=name):
            calls[name] += 1

        handle = model.register_forward_hook(count)
        try:
            set_sparsity(at, 60)
        finally:
            handle.remove()
    assert calls["pinned"] == calls["plain"] > 0
    assert generation(pinned, "pruned") == generation(plain, "pruned")


def test_pinned_probabilities_join_the_table_and_missing_ones_stay_empty():
    tok = CharTokenizer()
    vocab = len(tok)
    dense_row, pruned_row = torch.linspace(0, 4, vocab), torch.linspace(4, 0, vocab)
    kept = tuple(range(vocab - 1, vocab - 13, -1))  # the pin's most likely tokens: the dense model's too
    pinned = pin.Pinned(
        model=(0, "m"), ids=(1,), max_new=8, key=(), label="x", details="x", tokens=(),
        next_ids=kept, next_probs=tuple(0.01 * (i + 1) for i in range(len(kept))),
        kl_last=0.0, kl=0.0, top1=1.0,
    )  # fmt: skip
    table = pin.topk_table(tok, dense_row, pruned_row, pinned, k=3)
    assert list(table.columns) == ["token", "dense", "pruned", "pinned"]
    assert table["pinned"].iloc[:3].tolist() == pytest.approx([0.01, 0.02, 0.03])
    assert table["pinned"].iloc[3:].isna().all()  # the pruned model's top tokens, not kept by the pin
    assert len(table) == 6 and table["dense"].is_monotonic_decreasing

    one = pd.DataFrame({"token": ["'a'"], "dense": [0.5], "pruned": [0.4], "pinned": [math.nan]})
    rows = downloads.next_token_table(one)
    assert rows["model"].tolist() == ["dense", "pruned", "pinned"] and math.isnan(rows["probability"][2])
