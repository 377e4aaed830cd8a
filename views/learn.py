"""Learn: four short ideas behind pruning, each beside a live view of the session's own model."""

from functools import partial

import streamlit as st

from prune_explorer.measure.divergence import agreement
from ui import (
    background,
    charts,
    data,
    defaults,
    downloads,
    formats,
    light_charts,
    model_mark,
    outputs,
    pickers,
    protocol,
    session,
    sweeps,
)

state = session.state()
dense = state.dense
applied = session.applied()
small = defaults.is_small(dense)
layers = data.shown_layers(dense, applied)
ids = outputs.prompt_ids(dense, st.session_state.get("prune_prompt") or defaults.default_prompt(dense))

st.title("Learn")
st.caption(
    "Each idea sits next to the model you are pruning. Move the sparsity slider in the sidebar and watch "
    "the view on the right change."
)

st.subheader("1 · A weight, and a zero")
text, live = st.columns([2, 3])
with text:
    st.markdown(
        "A language model is mostly big tables of numbers. Each table turns one list of numbers into "
        "another: every output is a sum of inputs, each multiplied by its **weight**. Pruning a weight means "
        "writing a **0** in its place, so that input no longer counts for that output.\n\n"
        "On the right is a corner of one table, before and after your pruning. Blue and red are positive and "
        "negative weights; the paler the colour, the closer the weight is to zero. Black marks a weight "
        "pruned to exactly 0."
    )
    layer = pickers.layer_picker(layers, key="learn_layer", label="Table (layer) to look at")
with live:
    dense_patch, pruned_patch = data.weight_patch(state, layer.name)
    st.plotly_chart(charts.weight_patch(dense_patch, pruned_patch), key="learn_patch")
    downloads.csv_button(
        partial(downloads.patch_table, layer.name, dense_patch, pruned_patch),
        downloads.csv_name(dense.name, "weights", layer.name),
        key="learn_patch_csv",
    )
    zeros = int((pruned_patch == 0).sum())
    st.caption(f"{zeros} of {pruned_patch.size} weights in this corner are zero now (black).")

st.subheader("2 · Why the smallest |w| go first")
text, live = st.columns([2, 3])
with text:
    st.markdown(
        "A weight near zero adds almost nothing to its sum, so removing it changes the output least. "
        "Magnitude pruning sorts the weights by their size |w| and removes from the small end. Most trained "
        "weights are small, so a large share can go before the answers move much.\n\n"
        "The histogram counts the weights of the table above by size; the red part is what your setting "
        "removes. "
        "The KL number says how far the next-token probabilities have moved (0 = not at all)."
    )
with live:
    log_x, log_y = pickers.histogram_scales("learn", log_y=True)
    hist = data.magnitude_histogram(dense, layer.name, log_x=log_x)
    by_magnitude = state.pruned_by_magnitude(layer.name)
    pruned_bins = None if by_magnitude else data.pruned_counts(state, layer.name, hist.edges)
    st.plotly_chart(
        charts.magnitude_histogram(
            hist.edges,
            hist.counts,
            data.layer_threshold(state, layer.name) if by_magnitude else 0.0,
            log_x=log_x,
            log_y=log_y,
            height=260,
            pruned=pruned_bins,
            tail_to=hist.largest if hist.cut else None,
        ),
        key="learn_hist",
    )
    downloads.csv_button(
        partial(downloads.histogram_table, layer.name, hist, pruned_bins, state.pruned_count(layer.name)),
        downloads.csv_name(dense.name, "histogram", layer.name, "log" if log_x else None),
        key="learn_hist_csv",
    )
    agree = agreement(*outputs.next_token_logits(state, ids))
    a, b = st.columns(2)
    a.metric("Weights removed here", f"{state.sparsity(layer.name):.0%}")
    b.metric("KL(dense ‖ pruned), next token", f"{formats.small_number(agree.kl_last)} nats")
    st.caption(protocol.prompt_card(dense, len(ids), applied))

st.subheader("3 · Why zeros do not make it faster (here)")
text, live = st.columns([2, 3])
with text:
    st.markdown(
        "The processor multiplies whole tables at once. It does not look at each number first, so a 0 costs "
        "the same time as any other value: half the weights at zero is still the full amount of work. "
        "Pruned models get faster only with help — a storage format that lists only the non-zeros and a "
        "kernel that uses it (which pays off at very high sparsity), a hardware pattern such as 2 zeros in "
        "every 4, or removing whole rows so the tables really shrink."
    )
with live:
    timed = background.ask(
        outputs.latency_task(state, ids),
        auto=small,
        button="Time both models",
        key="learn_time",
        hint="Press the button to time one forward pass of each model.",
    )
    if timed is not None:
        dense_t, pruned_t = timed
        st.metric("Pruned / dense forward time", formats.latency_ratio(dense_t, pruned_t))
        st.caption(
            f"{formats.latency_measured(dense_t, pruned_t)} Median of 15 runs after warm-up. "
            f"{formats.latency_verdict(dense_t, pruned_t)} What ran: {pruned_t.kernel}."
        )

st.subheader("4 · Pruning during training recovers more")
text, live = st.columns([2, 3])
with text:
    st.markdown(
        "Here the model is pruned **once, after training**, and nothing adjusts. The remaining weights were "
        "tuned to work alongside the ones now gone, so quality falls off a cliff past some sparsity: the "
        "curve on the right is that one-shot curve.\n\n"
        "When pruning happens during training (or is followed by more training), the remaining weights "
        "re-learn to cover for the missing ones, and the same sparsity costs far less. Methods that look at "
        "real activations (Wanda, SparseGPT) also do better than plain |w|. The Train page does both kinds "
        "of training on this model and draws one-shot, recovered and gradual pruning on one chart."
    )
    st.page_link("views/train.py", label="Recover or prune while training", icon=":material/model_training:")
with live:
    points = background.ask(
        sweeps.sweep_task(dense, applied),
        auto=small,
        button="Run the sweep",
        key="learn_sweep",
        hint="Press the button to score 0–90% sparsity (one pass over the held-out text per point).",
    )
    if small:  # the model's own point walks along the curve
        ppl = background.ask(outputs.perplexity_task(state))
        if ppl is not None:
            model_mark.remember(state, ppl)
    if points is not None:
        dense_ppl = outputs.cached_dense_perplexity(dense)
        mark = model_mark.current(state)
        current, earlier = model_mark.points(mark)
        dense_level = dense_ppl.ppl if dense_ppl else None
        st.html(
            light_charts.sweep_html(
                [p.achieved for p in points],
                [p.ppl for p in points],
                dense_level,
                current,
                earlier=earlier,
                width=480,  # the narrower column: labels keep their size
            ),
        )
        downloads.csv_button(
            partial(downloads.sweep_table, points, "sweep", applied, dense_level, current, earlier),
            downloads.sweep_file(dense.name, applied),
            key="learn_sweep_csv",
        )
        st.caption(
            "The diamond is your model now: move the sparsity slider and it walks along the curve."
            if small
            else model_mark.caption(mark, "diamond", "press Compute perplexity on the Prune page")
            + " On a model this size the diamond moves only when its perplexity is computed."
        )
        st.caption(sweeps.card(dense, applied))
