"""The Prune page's pruned text while it grows: when it is redrawn (``ui.generation``'s cadence)."""

from __future__ import annotations

from ui.generation import STREAM_FIRST_SECONDS, STREAM_SECONDS, _Streamer


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
    from prune_explorer.state import PruningState

    slot, charts = _Slot(), []
    streamer = _Streamer(PruningState(stories), [1, 2], [5, 6, 7], slot, charts.append, clock=clock)
    return streamer, slot, charts


def test_a_text_done_within_the_first_wait_is_never_redrawn_while_it_grows(stories):
    clock = _Clock()
    streamer, slot, charts = _streamer(stories, clock)
    streamer.on_prompt("logits")
    assert charts == ["logits"]  # the next-token view does not wait for the text
    for i in range(8):  # 8 tokens, 35 ms each: SmolLM2's default text
        clock.now += 0.035
        streamer.on_token(100 + i)
    assert clock.now < STREAM_FIRST_SECONDS and slot.drawn == []


def test_a_long_text_is_redrawn_after_the_first_wait_then_at_the_cadence(stories):
    clock = _Clock()
    streamer, slot, _ = _streamer(stories, clock)
    streamer.on_prompt("logits")
    redraw_times = []
    for i in range(48):  # 3 s of tokens, 62.5 ms each (exact in binary, so the times compare exactly)
        clock.now += 0.0625
        before = len(slot.drawn)
        streamer.on_token(100 + i)
        if len(slot.drawn) > before:
            redraw_times.append(clock.now)
    assert redraw_times[0] == STREAM_FIRST_SECONDS
    gaps = [b - a for a, b in zip(redraw_times, redraw_times[1:])]
    assert gaps and all(gap == STREAM_SECONDS for gap in gaps)
    assert all("pe-gen-partial" in body for body in slot.drawn)
    assert len(streamer.tokens) == 48
