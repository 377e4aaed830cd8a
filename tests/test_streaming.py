"""The Prune page's pruned text while it grows: when it is redrawn (``ui.generation``'s cadence)."""

from __future__ import annotations

import re

import pytest

from prune_explorer.state import PruningState
from ui.generation import STREAM_SECONDS, _Streamer


class _Slot:
    def __init__(self) -> None:
        self.drawn: list[str] = []

    def html(self, body: str) -> None:
        self.drawn.append(body)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _streamer(stories, clock: _Clock) -> tuple[_Streamer, _Slot, list]:
    slot, charts = _Slot(), []
    streamer = _Streamer(PruningState(stories), [1, 2], [5, 6, 7], slot, charts.append, clock=clock)
    return streamer, slot, charts


def test_the_first_token_shows_at_once_then_the_text_at_the_cadence(stories):
    """The next-token view and the new text's first token come together, right after the prompt's pass; then
    the growing text is redrawn every ``STREAM_SECONDS``, never as ``pe-gen-partial`` (the previous text)."""
    clock = _Clock()
    streamer, slot, charts = _streamer(stories, clock)
    streamer.on_prompt("logits")
    assert charts == ["logits"] and slot.drawn == []  # the next-token view does not wait for the text
    redraw_times = []
    for i in range(48):  # 3 s of tokens, 62.5 ms each (exact in binary, so the times compare exactly)
        before = len(slot.drawn)
        streamer.on_token(100 + i)
        if len(slot.drawn) > before:
            redraw_times.append(clock.now)
        clock.now += 0.0625
    assert redraw_times[0] == 0.0  # the first token, at once
    gaps = [b - a for a, b in zip(redraw_times, redraw_times[1:])]
    assert gaps and all(gap == STREAM_SECONDS for gap in gaps)
    assert all("pe-gen-growing" in body and "pe-gen-partial" not in body for body in slot.drawn)
    assert len(streamer.tokens) == 48


def test_a_short_text_is_drawn_once_while_it_grows(stories):
    """SmolLM2's default text (8 tokens, ~35 ms each) is drawn at its first token, and then only when done:
    each redraw costs the browser CPU the generation needs."""
    clock = _Clock()
    streamer, slot, _ = _streamer(stories, clock)
    streamer.on_prompt("logits")
    for i in range(8):
        streamer.on_token(100 + i)
        clock.now += 0.035
    assert clock.now < STREAM_SECONDS + 0.035 and len(slot.drawn) == 1


def test_the_growing_text_replaces_the_previous_one_from_its_start(stories):
    """The new words come first, then the previous text's remaining words (``pe-old``), which turn grey when
    the whole previous text would have: 0.4 s after it was drawn, so a quick step does not flicker."""
    from ui.page_style import WAIT_SECONDS

    clock = _Clock()
    slot = _Slot()
    tok = stories.tokenizer
    before = tok.encode("Once upon a time there was a little girl")
    streamer = _Streamer(PruningState(stories), [1], before, slot, lambda logits: None, before, clock=clock)
    clock.now = 0.125  # the prompt's pass
    streamer.on_prompt("logits")
    streamer.on_token(before[0])
    first = slot.drawn[-1]
    assert "pe-gen-growing" in first
    old = re.search(r'<span class="pe-old" style="animation-delay: ([0-9.]+)s">(.*?)</span>', first)
    assert old is not None and float(old.group(1)) == pytest.approx(WAIT_SECONDS - 0.125, abs=0.005)
    assert old.group(2) == "".join(tok.token_pieces(before[1:]))
    clock.now = 1.0  # long after: the rest is grey at once
    streamer.on_token(before[1])
    later = re.search(r'class="pe-old" style="animation-delay: ([0-9.]+)s">(.*?)</span>', slot.drawn[-1])
    assert float(later.group(1)) == 0.0 and later.group(2) == "".join(tok.token_pieces(before[2:]))
    for token in before[2:]:
        clock.now += STREAM_SECONDS
        streamer.on_token(token)
    assert "pe-old" not in slot.drawn[-1]  # nothing of the previous text is left
