"""Prune: the dense model beside the session's pruned one — text, next token, latency, perplexity, sweep."""

import streamlit as st

from prune_explorer.measure.evaluate import agreement, token_diff
from ui import charts, data, defaults, describe, formats, outputs, session, sweeps

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
gen = outputs.generations(state, ids, max_new)
tok = dense.tokenizer
col_dense, col_pruned = st.columns(2)
with col_dense:
    st.markdown("**Dense** (as trained)")
    st.html(data.tokens_html(tok.token_pieces(gen.dense), token_diff(gen.pruned, gen.dense), "dense"))
with col_pruned:
    st.markdown("**Pruned** (your settings)")
    st.html(data.tokens_html(tok.token_pieces(gen.pruned), token_diff(gen.dense, gen.pruned), "pruned"))
diverge = data.first_divergence(gen.dense, gen.pruned)
st.caption(
    "Greedy decoding, so the two differ only because of the weights. "
    + (
        "Identical continuations."
        if diverge is None
        else f"They part at new token {diverge + 1}; "
        "tokens the other side does not have, once the two are aligned, are highlighted."
    )
    + (
        " The prompt is wrapped in the model's chat template; generation stops at end of turn."
        if dense.info.get("chat")
        else ""
    )
)

# ----- next token
dense_logits, pruned_logits = outputs.next_token_logits(state, ids)
agree = agreement(dense_logits, pruned_logits)
st.subheader("Next token")
chart_col, metric_col = st.columns([3, 1])
with chart_col:
    table = data.topk_table(tok, dense_logits[-1], pruned_logits[-1], k=10)
    st.plotly_chart(charts.next_token_bars(table), key="prune_topk_chart")
with metric_col:
    st.metric("KL(dense ‖ pruned), next token", f"{formats.small_number(agree.kl_last)} nats")
    st.metric("KL, mean over the prompt", f"{formats.small_number(agree.kl)} nats")
    st.metric("Top-1 agreement over the prompt", f"{agree.top1:.0%}")
    st.caption("KL is 0 when the two next-token distributions are the same; it grows as pruning bends them.")

# ----- latency
st.subheader("Forward latency")
timed = outputs.cached_latency(state, ids)
if small or st.button("Time a forward pass", key="prune_time"):
    with st.spinner("Timing dense and pruned forward passes…"):
        timed = outputs.latency(state, ids)
if timed is None:
    st.caption("Press the button to time both models (warm-up, then the median of 15 interleaved runs).")
else:
    dense_t, pruned_t = timed
    st.metric("Pruned / dense", formats.latency_ratio(dense_t, pruned_t))
    st.caption(formats.latency_measured(dense_t, pruned_t))
    st.info(formats.latency_reading(dense_t, pruned_t))
    if not small:
        st.caption("Measured for the settings shown; press the button again after moving a slider.")

# ----- perplexity
st.subheader("Perplexity on held-out text")
text_set = dense.info.get("text_set", "stories")
ppl = outputs.cached_pruned_perplexity(state)
if small or st.button("Compute perplexity", key="prune_ppl"):
    bar = st.progress(0.0, text="Scoring the held-out text…")
    outputs.dense_perplexity(dense, progress=lambda f: bar.progress(f / 2, text="Dense model…"))
    ppl = outputs.pruned_perplexity(state, progress=lambda f: bar.progress(0.5 + f / 2, text="Pruned model…"))
    bar.empty()
dense_ppl = outputs.cached_dense_perplexity(dense)
if ppl is None or dense_ppl is None:
    st.caption(f"Press the button to score the {text_set!r} evaluation text with both models.")
else:
    a, b, c = st.columns(3)
    a.metric("Dense perplexity", formats.perplexity_text(dense_ppl.ppl))
    b.metric(
        "Pruned perplexity",
        formats.perplexity_text(ppl.ppl),
        delta=formats.perplexity_text(ppl.ppl - dense_ppl.ppl, signed=True),
        delta_color="inverse",
    )
    c.metric("Tokens scored", f"{ppl.tokens:,}")
    st.caption(f"Held-out {text_set!r} text, never used for calibration. Lower is better.")

# ----- sweep
st.subheader("Sparsity sweep")
points = sweeps.cached_sweep(dense, applied)
if small or st.button("Run the sweep", key="prune_sweep"):
    bar = st.progress(0.0, text="Pruning to each sparsity and scoring…")
    points = sweeps.perplexity_sweep(dense, applied, progress=lambda f: bar.progress(f, text="Sweep…"))
    bar.empty()
if points is None:
    st.caption(
        "Press the button to score 0–90% sparsity with your layer kinds and policy (one model pass each)."
    )
else:
    mark = outputs.model_mark(state)
    current, earlier = outputs.mark_points(mark)
    st.plotly_chart(
        charts.sweep_chart(
            [p.achieved for p in points],
            [p.ppl for p in points],
            dense_ppl.ppl if dense_ppl else None,
            current,
            name=describe.sweep_name(applied),
            earlier=earlier,
        ),
        key="prune_sweep_chart",
    )
    how = "press Compute perplexity above"
    st.caption(f"{describe.sweep_caption(applied)} {outputs.mark_caption(mark, 'diamond', how)}")
