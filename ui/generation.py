"""The Prune page's live outputs: dense and pruned text side by side, and the next-token view, drawn while
the pruned model computes them.

After a slider move the pruned model's prompt logits come first (one forward pass): the next-token chart, the
KL and the new text's first token show together then, and the text grows below, redrawn every
``STREAM_SECONDS`` until it is done. So every output shows the new setting after one forward pass, however
long the text: in a burst of moves on SmolLM2 (8 tokens, one memory-bound pass each) that is about 300 ms
before the whole text (browser bench, ten bursts each, alternating with the text drawn only when done, in one
hour: chart, KL and first words 501-556 ms against the whole text at 825-975; the whole text came as soon
either way: 829-893). Each redraw makes the browser render the page while the generation wants the same two
cores, so the text is not redrawn at every token (every 0.1 s cost 90 ms of a SmolLM2 burst). A newer slider
move stops this run before the pruned model's next transformer block (``ui.interrupt``), so a burst of moves
never waits for a stale generation.

Until the first token comes, the slot keeps the text shown before as ``pe-gen-partial``, which turns grey if
it is still there 0.4 s into the run. The text being generated (``pe-gen-growing``, ended by an ellipsis)
replaces it from its start: the new words, then the old text's remaining words (``pe-old``), which turn grey
at that same moment (``ui.page_style``); only the finished text is ``pe-gen-pruned``. Neighbouring settings
write nearly the same text, so a step mostly rewrites words in place, with no flicker and no change of height.

With a pin (``ui.pin``) that fits the prompt, a third column shows the pinned text (``pe-gen-pinned``) between
dense and pruned, the chart gets the pinned probabilities and the KL metrics their difference from the
pinned values: all drawn from what the pin stores, so it adds no model computation.

A setting whose outputs were computed before, by this session, another one or the look-ahead
(``ui.lookahead``: the slider's neighbouring positions, while the page is idle), is drawn from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import streamlit as st
import torch
from streamlit.delta_generator import DeltaGenerator

from prune_explorer import threads
from prune_explorer.measure.divergence import Agreement, agreement
from prune_explorer.measure.evaluate import token_diff
from prune_explorer.state import PruningState
from ui import (
    data,
    downloads,
    formats,
    interrupt,
    light_charts,
    lookahead,
    outputs,
    page_style,
    pin,
    protocol,
    session,
)

STREAM_SECONDS = 0.25  # the redraws of a growing text after its first token


@dataclass
class _Streamer:
    """Draws the next-token view as soon as the prompt is scored, the pruned text's first token with it, and
    the text as it grows."""

    state: PruningState
    ids: list[int]
    dense_tokens: list[int]
    pruned_slot: DeltaGenerator
    show_next: Callable[[torch.Tensor], None]
    before: list[int] = field(default_factory=list)  # the previous text, shown until replaced
    tokens: list[int] = field(default_factory=list)
    drawn_at: float = 0.0
    redraws: int = 0
    clock: Callable[[], float] = time.perf_counter
    before_at: float = field(init=False)  # when the previous text was drawn (it turns grey from then on)

    def __post_init__(self) -> None:
        self.before_at = self.clock()

    def on_prompt(self, pruned_logits: torch.Tensor) -> None:
        self.show_next(pruned_logits)
        self.drawn_at = self.clock()

    def on_token(self, token: int) -> None:
        self.tokens.append(token)
        if not self.redraws or self.clock() - self.drawn_at >= STREAM_SECONDS:
            tok = self.state.dense.tokenizer
            same = token_diff(self.dense_tokens, self.tokens)
            rest = tok.token_pieces(self.before[len(self.tokens) :])
            grey_in = max(0.0, page_style.WAIT_SECONDS - (self.clock() - self.before_at))
            self.pruned_slot.html(
                data.tokens_html(tok.token_pieces(self.tokens), same, "growing", rest, grey_in)
            )
            self.redraws += 1
            self.drawn_at = self.clock()


def show(
    state: PruningState,
    ids: list[int],
    max_new: int,
    text_area: DeltaGenerator,
    next_area: DeltaGenerator,
    pinned: pin.Pinned | None = None,
) -> tuple[outputs.Generation, pin.Pinned]:
    """Draw both continuations (and ``pinned``'s, for this prompt, between them) into ``text_area`` and the
    next-token view into ``next_area``.

    Returns:
        the two continuations, and what the pruned side shows now as a pin (what "Pin" keeps).
    """
    dense = state.dense
    tok = dense.tokenizer
    if pinned is None:
        col_dense, col_pruned = text_area.columns(2)
    else:
        col_dense, col_pinned, col_pruned = text_area.columns(3)
    col_dense.markdown("**Dense** (as trained)")
    dense_slot = col_dense.empty()
    col_pruned.markdown("**Pruned** (your settings)" if pinned is None else "**Pruned now** (your settings)")
    pruned_slot = col_pruned.empty()
    with threads.interactive():
        dense_tokens = outputs.dense_generation(dense, ids, max_new)
        dense_logits = outputs.dense_logits(dense, ids)
    # Until the new text grows, the slots hold the dense text and the pruned text shown before.
    dense_slot.html(data.tokens_html(tok.token_pieces(dense_tokens), [True] * len(dense_tokens), "dense"))
    if pinned is not None:
        pin.text_column(col_pinned, tok, pinned, dense_tokens)
    before = outputs.last_pruned_tokens()
    if before is not None:
        pruned_slot.html(data.tokens_html(tok.token_pieces(before), [True] * len(before), "partial"))
    shown: list[tuple[torch.Tensor, Agreement]] = []

    def show_next(pruned_logits: torch.Tensor) -> None:
        with next_area:
            card = protocol.prompt_card(dense, len(ids), session.applied())
            agree = _next_token(tok, dense_logits, pruned_logits, dense.name, pinned, card)
        shown.append((pruned_logits, agree))

    streamer = _Streamer(state, ids, dense_tokens, pruned_slot, show_next, before or [])
    lookahead.prime(state, ids, max_new)  # a setting computed before (the look-ahead, another session)
    with threads.interactive(), interrupt.between_blocks(state):  # a newer slider move stops it at once
        gen = outputs.generations(
            state, ids, max_new, on_token=streamer.on_token, on_prompt=streamer.on_prompt
        )
        if not shown:
            show_next(outputs.next_token_logits(state, ids)[1])
    lookahead.remember(state, ids, max_new)
    lookahead.ask(state, ids, max_new)  # the neighbouring slider positions, while the page is idle
    dense_slot.html(data.tokens_html(tok.token_pieces(gen.dense), token_diff(gen.pruned, gen.dense), "dense"))
    pruned_slot.html(
        data.tokens_html(tok.token_pieces(gen.pruned), token_diff(gen.dense, gen.pruned), "pruned")
    )
    pruned_logits, agree = shown[-1]
    now = pin.snapshot(state, ids, max_new, gen.pruned, dense_logits[-1], pruned_logits[-1], agree)
    return gen, now


def _next_token(
    tok,
    dense_logits: torch.Tensor,
    pruned_logits: torch.Tensor,
    model: str,
    pinned: pin.Pinned | None,
    card: str,
) -> Agreement:
    agree = agreement(dense_logits, pruned_logits)
    chart_col, metric_col = st.columns([3, 1])
    with chart_col:
        if pinned is None:
            table = data.topk_table(tok, dense_logits[-1], pruned_logits[-1], k=10)
        else:
            table = pin.topk_table(tok, dense_logits[-1], pruned_logits[-1], pinned, k=10)
        st.html(light_charts.next_token_html(table))
        downloads.csv_button(
            partial(downloads.next_token_table, table),
            downloads.csv_name(model, "next-token"),
            key="prune_topk_csv",
        )
    with metric_col:
        kl_last = kl = top1 = (None, "normal")
        if pinned is not None:
            kl_last, kl = pin.kl_delta(agree.kl_last, pinned.kl_last), pin.kl_delta(agree.kl, pinned.kl)
            top1 = pin.top1_delta(agree.top1, pinned.top1)
        st.metric(
            "KL(dense ‖ pruned), next token",
            f"{formats.small_number(agree.kl_last)} nats",
            delta=kl_last[0],
            delta_color=kl_last[1],
        )
        st.metric(
            "KL, mean over the prompt",
            f"{formats.small_number(agree.kl)} nats",
            delta=kl[0],
            delta_color=kl[1],
        )
        st.metric("Top-1 agreement over the prompt", f"{agree.top1:.0%}", delta=top1[0], delta_color=top1[1])
        st.caption(
            "KL is 0 when the two next-token distributions are the same; it grows as pruning bends them."
        )
        st.caption(card)
        if pinned is not None:
            st.caption(pin.metrics_caption(pinned))
    return agree
