"""Pinned outputs: what the pruned side showed for one setting, kept so a second setting can be compared with
it side by side on the Prune page (issue 10).

A pin is small and lives in the session (``st.session_state[PIN]``): the pruned continuation's token ids, the
next-token probabilities of the tokens a chart can show, the KL numbers, the perplexity if it was measured,
and a label of the settings. Drawing it recomputes nothing with a model, so a slider move costs what it did
without a pin. A pin belongs to one model and one prompt: another model drops it; another prompt or token
count keeps it, said to be for another prompt, and never silently compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st
import torch
from streamlit.delta_generator import DeltaGenerator

from prune_explorer.measure.divergence import Agreement
from prune_explorer.measure.evaluate import probabilities, token_diff, top_k
from prune_explorer.models.dense import DenseModel
from prune_explorer.state import PruningState
from ui import data, formats, outputs, protocol, session

PIN = "prune_pinned"  # session_state: the Pinned outputs, or absent
STORED = 64  # next-token probabilities kept: the pinned model's most likely tokens (plus the dense top k)
TOP_K = 10  # tokens per model on the next-token chart, as ``data.topk_table``


@dataclass(frozen=True)
class Pinned:
    """The pruned side's outputs for one setting, as shown when pinned.

    ``next_ids``: the pinned model's ``STORED`` most likely next tokens, most likely first, then the dense
    model's top ``TOP_K`` not among them; ``next_probs``: the pinned model's probability of each.
    ``key``: ``session.pruned_key()`` of the pinned settings, so a perplexity measured later still joins.
    """

    model: tuple[int, str]  # (id, name) of the dense model
    ids: tuple[int, ...]  # the prompt
    max_new: int
    key: tuple
    label: str  # session.applied_short: "Magnitude · unstructured · 30%", "trained · 70%"
    details: str  # session.applied_words: everything applied (or how it was trained)
    tokens: tuple[int, ...]  # the pinned continuation
    next_ids: tuple[int, ...]
    next_probs: tuple[float, ...]
    kl_last: float
    kl: float
    top1: float
    ppl: float | None = None
    kl_card: str = ""  # the protocol of the pinned KL numbers (``protocol.prompt_card``)
    ppl_card: str = ""  # the protocol of the pinned perplexity (``protocol.perplexity_card``)

    def fits(self, ids: Sequence[int], max_new: int) -> bool:
        """Whether the pin is for this prompt and number of new tokens (so comparing it means something)."""
        return self.ids == tuple(ids) and self.max_new == max_new


def _model(dense: DenseModel) -> tuple[int, str]:
    return (id(dense), dense.name)


def snapshot(
    state: PruningState,
    ids: Sequence[int],
    max_new: int,
    tokens: Sequence[int],
    dense_row: torch.Tensor,
    pruned_row: torch.Tensor,
    agree: Agreement,
) -> Pinned:
    """What the pruned side shows now, as a pin (a softmax of rows already computed: no model runs).

    Args:
        tokens: the pruned continuation shown; dense_row, pruned_row: float32 (vocab,) next-token logits of
            the dense and the pruned model after the prompt; agree: the KL numbers shown.
    """
    ranked = [i for i, _ in top_k(pruned_row, STORED)]
    next_ids = list(dict.fromkeys(ranked + [i for i, _ in top_k(dense_row, TOP_K)]))
    ppl = outputs.cached_pruned_perplexity(state)
    applied = session.applied()
    return Pinned(
        model=_model(state.dense),
        ids=tuple(ids),
        max_new=max_new,
        key=session.pruned_key(),
        label=session.applied_short(),
        details=session.applied_words(),
        tokens=tuple(tokens),
        next_ids=tuple(next_ids),
        next_probs=tuple(probabilities(pruned_row, next_ids)),
        kl_last=agree.kl_last,
        kl=agree.kl,
        top1=agree.top1,
        ppl=None if ppl is None else ppl.ppl,
        kl_card=protocol.prompt_card(state.dense, len(ids), applied),
        ppl_card=protocol.perplexity_card(state.dense, protocol.held_out_tokens(state.dense), applied),
    )


def stored(state: PruningState) -> Pinned | None:
    """The session's pin, dropped (and None) when it was made on another model."""
    pinned = st.session_state.get(PIN)
    if pinned is not None and pinned.model != _model(state.dense):
        st.session_state.pop(PIN, None)
        return None
    return pinned


def keep(pinned: Pinned) -> None:
    """Pin ``pinned`` (a button callback: the run that drew the button made it, so it is what was shown)."""
    st.session_state[PIN] = pinned


def unpin() -> None:
    st.session_state.pop(PIN, None)


def remember_perplexity(pinned: Pinned | None, ppl: float) -> Pinned | None:
    """The pin with the perplexity of its own settings, when it was pinned before that was measured and the
    model computes those settings now (``ppl`` is the model's perplexity now)."""
    if pinned is None or pinned.ppl is not None or pinned.key != session.pruned_key():
        return pinned
    pinned = replace(pinned, ppl=ppl)
    st.session_state[PIN] = pinned
    return pinned


def controls(slot: DeltaGenerator, now: Pinned | None, pinned: Pinned | None, fits: bool) -> None:
    """The Pin / Unpin buttons in ``slot``, and a warning when the pin is for another prompt.

    ``now``: the outputs shown in this run (None when they could not be shown), which "Pin" keeps.
    """
    with slot:
        if pinned is not None and not fits:
            st.warning(
                f"Pinned for another prompt or number of new tokens ({pinned.label}), so it is not compared "
                "with these outputs. Go back to that prompt, unpin, or pin these outputs instead.",
                icon=":material/push_pin:",
            )
        left, right, rest = st.columns([1, 1, 3], vertical_alignment="center")
        if now is not None:
            left.button(
                "Pin these outputs",
                key="prune_pin",
                on_click=keep,
                args=(now,),
                icon=":material/push_pin:",
                help="Keep the pruned text, next-token probabilities, KL and perplexity of these settings, "
                "to compare another setting with them side by side.",
            )
        if pinned is not None:
            right.button("Unpin", key="prune_unpin", on_click=unpin, icon=":material/close:")
            if fits:
                rest.caption(f"Pinned: {pinned.details}.")


def text_column(column: DeltaGenerator, tokenizer, pinned: Pinned, dense_tokens: Sequence[int]) -> None:
    """The pinned continuation in ``column``, highlighted against the dense one as the pruned one is."""
    column.markdown(f"**Pinned:** {pinned.label}", help=pinned.details)
    same = token_diff(dense_tokens, pinned.tokens)
    column.html(data.tokens_html(tokenizer.token_pieces(list(pinned.tokens)), same, "pinned"))


def topk_table(
    tokenizer, dense_row: torch.Tensor, pruned_row: torch.Tensor, pinned: Pinned, k: int = TOP_K
) -> pd.DataFrame:
    """``data.topk_table`` with the pinned model's top ``k`` tokens joined and a ``pinned`` column: NaN for a
    token the pin did not keep (below the pinned model's ``STORED``-th most likely). Dense and pruned
    probabilities come from the rows given."""
    kept = dict(zip(pinned.next_ids, pinned.next_probs))
    ids = [i for i, _ in top_k(dense_row, k)] + [i for i, _ in top_k(pruned_row, k)]
    ids = list(dict.fromkeys(ids + list(pinned.next_ids[:k])))
    dense_p = dict(zip(ids, probabilities(dense_row, ids)))
    ids.sort(key=lambda i: -dense_p[i])
    labels = [f"{piece!r}" for piece in tokenizer.token_pieces(ids)]
    return pd.DataFrame(
        {
            "token": labels,
            "dense": [dense_p[i] for i in ids],
            "pruned": probabilities(pruned_row, ids),
            "pinned": [kept.get(i, math.nan) for i in ids],
        }
    )


def kl_delta(now: float, then: float) -> tuple[str, str]:
    """(delta text, delta colour) of a KL now against the pinned one: less KL is better."""
    diff = now - then
    text = ("+" if diff >= 0 else "") + formats.small_number(diff) + " vs pinned"
    return text, "off" if diff == 0 else "inverse"


def top1_delta(now: float, then: float) -> tuple[str, str]:
    """(delta text, delta colour) of a top-1 agreement now against the pinned one, in percentage points."""
    points = round(100 * (now - then))
    return f"{points:+d} pts vs pinned", "off" if points == 0 else "normal"


def metrics_caption(pinned: Pinned) -> str:
    """The pinned KL numbers in words, beside the metrics whose deltas compare with them."""
    return (
        f"Pinned ({pinned.label}): KL {formats.small_number(pinned.kl_last)} nats at the next token, "
        f"{formats.small_number(pinned.kl)} nats over the prompt, top-1 agreement {pinned.top1:.0%}. "
        f"{pinned_protocol(pinned.kl_card)}"
    )


def pinned_protocol(card: str) -> str:
    """A pinned number's protocol card, marked as the pin's: the deltas compare two measurements, and the
    pin's calibration may differ from the one now."""
    return "Pinned protocol: " + card.removeprefix("Protocol: ") + "."


def perplexity(column: DeltaGenerator, pinned: Pinned, now: float, dense_ppl: float) -> str:
    """The pinned perplexity as a metric in ``column`` (its delta against dense, like the pruned one's);
    returns a caption comparing it with the perplexity now."""
    assert pinned.ppl is not None
    column.metric(
        "Pinned perplexity",
        formats.perplexity_text(pinned.ppl),
        delta=formats.perplexity_text(pinned.ppl - dense_ppl, signed=True),
        delta_color="inverse",
        help=f"Pinned: {pinned.details}. {pinned.ppl_card}",
    )
    return (
        f"Pruned now {formats.perplexity_text(now)} against pinned {formats.perplexity_text(pinned.ppl)} "
        f"({formats.perplexity_text(now - pinned.ppl, signed=True)}; pinned: {pinned.label}). "
        f"{pinned_protocol(pinned.ppl_card)}"
    )
