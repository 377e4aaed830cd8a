"""Prune: the dense model beside the session's pruned one — text, next token, latency, perplexity, sweep."""

from functools import partial

import streamlit as st

from prune_explorer.execution import few_rows
from prune_explorer.execution.labels import ROW_DOT
from ui import (
    background,
    data,
    defaults,
    describe,
    downloads,
    formats,
    generation,
    light_charts,
    model_mark,
    outputs,
    pin,
    protocol,
    session,
    sweeps,
)

state = session.state()
dense = state.dense
applied = session.applied()
small = defaults.is_small(dense)

st.title("Prune")
st.caption(
    "Choose a method and move the sliders in the sidebar: the dense model stays as trained, the pruned one "
    "loses the weights the method picks. Everything below compares the two on the same input."
)

# ----- generation
left, right = st.columns([3, 1])
# Defaults come through session state (session.ensure_state), so a model change can set them anew.
prompt = left.text_area("Prompt", key="prune_prompt", height=80, persist_state="session")
max_new = right.slider(
    "New tokens",
    8,
    120,
    step=4,
    key="prune_new_tokens",
    help="Both texts are greedy continuations. The pruned one is generated again after every slider move, "
    "one pass of the model per token, so more tokens make each move slower on a big model.",
    persist_state="session",
)
ids = outputs.prompt_ids(dense, prompt)
if len(ids) < 1:
    st.warning("Type a prompt.")
    st.stop()
if not (prompt or "").strip():
    st.warning(
        "The prompt is empty, so both models continue from the start-of-text token alone. Type a prompt to "
        "see how each continues your text."
    )
# A pin keeps one setting's outputs to compare the next with (ui.pin); another model drops it.
pinned = pin.stored(state)
fits = pinned is not None and pinned.fits(ids, max_new)
pin_area = st.container()
text_area = st.container()
st.subheader("Next token")
gen, now = generation.show(state, ids, max_new, text_area, st.container(), pinned if fits else None)
pin.controls(pin_area, now, pinned, fits)
diverge = data.first_divergence(gen.dense, gen.pruned)
text_area.caption(
    "Greedy decoding, so the two differ only because of the weights. "
    + (
        "Identical continuations."
        if diverge is None
        else f"They part at new token {diverge + 1}; "
        "tokens the other side does not have, once the two are aligned, are highlighted."
    )
    + (" The pinned text is highlighted against the dense one the same way." if fits else "")
    + (
        f" Both decode their new tokens with the same kernel: {ROW_DOT}."
        if few_rows.installed(state.model)
        else ""
    )
    + (
        " The prompt is wrapped in the model's chat template; generation stops at end of turn."
        if dense.info.get("chat")
        else ""
    )
)

# ----- latency
st.subheader("Forward latency")
timed = background.ask(
    outputs.latency_task(state, ids),
    auto=small,
    button="Time a forward pass",
    key="prune_time",
    hint="Press the button to time both models (warm-up, then the median of 15 interleaved runs).",
)
if timed is not None:
    dense_t, pruned_t = timed
    st.metric("Pruned / dense", formats.latency_ratio(dense_t, pruned_t))
    st.caption(formats.latency_measured(dense_t, pruned_t))
    st.info(formats.latency_reading(dense_t, pruned_t))

# ----- perplexity
st.subheader("Perplexity on held-out text")
text_set = dense.info.get("text_set", "stories")
ppl = background.ask(
    outputs.perplexity_task(state),
    auto=small,
    button="Compute perplexity",
    key="prune_ppl",
    hint=f"Press the button to score the {text_set!r} evaluation text with both models.",
)
dense_ppl = outputs.cached_dense_perplexity(dense)
if ppl is not None and dense_ppl is not None:
    model_mark.remember(state, ppl)
    pinned = pin.remember_perplexity(pinned, ppl.ppl)
    compared = fits and pinned is not None and pinned.ppl is not None
    columns = st.columns(4 if compared else 3)
    a, b = columns[:2]
    a.metric("Dense perplexity", formats.perplexity_text(dense_ppl.ppl))
    b.metric(
        "Pruned perplexity",
        formats.perplexity_text(ppl.ppl),
        delta=formats.perplexity_text(ppl.ppl - dense_ppl.ppl, signed=True),
        delta_color="inverse",
    )
    against = pin.perplexity(columns[2], pinned, ppl.ppl, dense_ppl.ppl) + " " if compared else ""
    columns[-1].metric("Tokens scored", f"{ppl.tokens:,}")
    st.caption(f"{against}Held-out {text_set!r} text, never used for calibration. Lower is better.")
    st.caption(protocol.perplexity_card(dense, ppl.tokens, applied))

# ----- sweep
st.subheader("Sparsity sweep")
points = background.ask(
    sweeps.sweep_task(dense, applied),
    auto=small,
    button="Run the sweep",
    key="prune_sweep",
    hint="Press the button to score 0–90% sparsity with your layer kinds and policy (one model pass each).",
)
if points is not None:
    mark = model_mark.current(state)
    current, earlier = model_mark.points(mark)
    st.html(
        light_charts.sweep_html(
            [p.achieved for p in points],
            [p.ppl for p in points],
            dense_ppl.ppl if dense_ppl else None,
            current,
            name=describe.sweep_name(applied),
            earlier=earlier,
        ),
    )
    downloads.csv_button(
        partial(
            downloads.sweep_table,
            points,
            describe.sweep_name(applied),
            applied,
            dense_ppl.ppl if dense_ppl else None,
            current,
            earlier,
        ),
        downloads.sweep_file(dense.name, applied),
        key="prune_sweep_csv",
    )
    how = "press Compute perplexity above"
    st.caption(f"{describe.sweep_caption(applied)} {model_mark.caption(mark, 'diamond', how)}")
    st.caption(sweeps.card(dense, applied))
