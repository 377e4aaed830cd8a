"""The session's model on a perplexity chart (the Prune and Learn sweeps, Compare's curves): where it sits
now, or, once the settings have moved on and a big model's perplexity waits for a button, where it was last
measured (a hollow mark), and the caption that says which."""

from __future__ import annotations

from dataclasses import dataclass, replace

import streamlit as st

from prune_explorer.measure import evaluate
from prune_explorer.state import PruningState
from ui import data, outputs, session

LAST_MARK = "last_model_mark"  # session_state: (pruned key, ModelMark) of the last perplexity measured


@dataclass(frozen=True)
class ModelMark:
    """The session's model on a perplexity chart: its sparsity (selected layers, [0, 1]) and perplexity;
    ``now`` False when they were measured for earlier settings (``label``), as a big model's perplexity
    waits for a button after every move."""

    sparsity: float
    ppl: float
    now: bool
    label: str = ""


def _measured(state: PruningState, ppl: float, now: bool) -> ModelMark:
    applied = session.applied()
    label = "the dense model" if session.nothing_pruned() else session.applied_words()
    return ModelMark(state.overall_sparsity(data.selected(state.dense, applied)), ppl, now, label)


def current(state: PruningState) -> ModelMark | None:
    """Where the chart puts the session's model: now, or as last measured (hollow), or None if never."""
    ppl = outputs.cached_pruned_perplexity(state)
    if ppl is not None:
        return _measured(state, ppl.ppl, now=True)
    last = st.session_state.get(LAST_MARK)
    if last is not None and last[0][0] == id(state.dense):
        return replace(last[1], now=False)
    return None


def points(
    mark: ModelMark | None,
) -> tuple[tuple[float, float] | None, tuple[float, float, str] | None]:
    """(current, earlier) as ``light_charts.sweep_html`` and ``charts.method_curves`` take them."""
    if mark is None:
        return None, None
    if mark.now:
        return (mark.sparsity, mark.ppl), None
    return None, (mark.sparsity, mark.ppl, mark.label)


def caption(mark: ModelMark | None, symbol: str, how: str) -> str:
    """What the chart's mark of the session's model means, so words and chart agree.

    Args:
        symbol: how the chart draws it ("diamond", "star"); how: where its perplexity comes from when it
            waits for a button ("press Compute perplexity above").
    """
    if mark is None:
        return f"Your model is not on the chart: it has no perplexity yet ({how})."
    if not mark.now:
        return (
            f"The hollow {symbol} is your model as last measured ({mark.label}); the model now has no "
            f"perplexity yet ({how})."
        )
    return f"The {symbol} is your model now."


def remember(state: PruningState, ppl: evaluate.Perplexity) -> None:
    """Keep the session's model as measured now, for the hollow mark once the settings move on."""
    st.session_state[LAST_MARK] = (session.pruned_key(), _measured(state, ppl.ppl, now=True))
