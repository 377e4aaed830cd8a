"""Speed: is the pruned model faster or smaller on this machine, and why? Every number names its kernel."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import pandas as pd
import streamlit as st

from prune_explorer.execution.labels import DENSE_LABELS
from prune_explorer.measure import layer_speed, sizes, speed
from prune_explorer.state import PruningState
from ui import downloads, formats, results, session, speed_charts

state = session.ensure_state()
dense = state.dense
RESULTS = "speed_results"  # session_state: finished measurements, kept across reruns and Stop
finished: dict = st.session_state.setdefault(RESULTS, {})

st.title("Speed")
st.markdown(
    "**Why a pruned model is usually no faster.** Pruning writes zeros into the weight matrices, but a dense "
    "matrix multiply still multiplies every zero: masked dense runs in exactly the dense time at any "
    "sparsity. Speed needs a different kernel. A *sparse* kernel (CSR) stores only the kept weights, at "
    "8 bytes each (value + int32 column index) instead of 4, and skips the rest; its irregular memory access "
    "makes it lose to dense until roughly 60–90% sparsity, depending on the shape and the token count. "
    "*Compaction* removes whole neurons or heads and leaves a smaller dense matrix, which is faster in "
    "proportion. Generating one token at a time mostly "
    "streams weights from memory, so there the bytes read decide (the memory-bound line), not the FLOPs "
    "(the ideal line)."
)
st.caption(
    f"Measured on this machine, {dense.name}; warm-up, repeated runs, median. "
    "Other work on the machine makes timings noisy: read differences against the spread."
)


@contextmanager
def running(stop_column, stop_key: str) -> Iterator:
    """A progress bar and a Stop button while a measurement loop runs (a click reruns the page, which stops
    the loop); both go when it ends, leaving a short "done" line."""
    bar = st.progress(0.0, text="timing…")
    stop = stop_column.empty()
    stop.button("Stop", key=stop_key, icon=":material/stop:")
    started = time.perf_counter()
    yield bar
    bar.empty()
    stop.empty()
    st.caption(f"Done in {time.perf_counter() - started:.1f} s.")


# ----- your model now
@st.fragment
def session_model() -> None:
    st.subheader("Your pruned model, end to end")
    key = ("session", session.pruned_key())
    if st.button("Measure my model", key="speed_session_run"):
        # The session lock: no slider move of this session runs while its model is on other modules.
        with session.exclusive(), st.status("Calibrating the auto backend and timing…") as status:
            finished[key] = speed.measure(state, "auto", warmup=2, repeats=7)  # restores masked dense itself
            status.update(label="Done", state="complete")
    if key not in finished:
        st.caption("Times the current pruning with the auto backend against the dense model (a few seconds).")
        return
    r = finished[key]
    # Every layer on a dense matmul (zeros multiplied or not): the same work as dense, so any gap is noise.
    same_kernels = set(r.report.kernels()) <= DENSE_LABELS
    if same_kernels:
        st.info(
            "Every layer still runs a dense matmul (the auto backend found no faster kernel at this "
            "sparsity), so the pruned model does exactly the dense model's work: any gap below is noise "
            "from other work on the machine."
        )
    cols = st.columns(2)
    for col, phase in zip(cols, ("prefill", "decode"), strict=True):
        d, a = r.timings[f"dense {phase}"], r.timings[f"case {phase}"]
        what = f"{speed.PREFILL.tokens}-token prefill" if phase == "prefill" else "one-token decode"
        # The same kernel, or a gap within the spreads, is no speedup: the headline says so itself.
        headline = formats.latency_ratio(d, a, same=same_kernels)
        col.metric(what, headline if headline.startswith("~") else f"{r.speedup(phase):.2f}×")
        bound = f", memory-bound {r.memory_bound():.2f}×" if phase == "decode" else ""
        col.caption(
            f"Speedup over dense: pruned {a.median_ms:.1f} ± {a.spread_ms:.1f} ms against dense "
            f"{d.median_ms:.1f} ± {d.spread_ms:.1f} ms; ideal (FLOPs) {r.ideal(phase):.2f}×{bound}."
        )
    st.caption(
        f"Kernels: {formats.kernel_summary(r.report.kernels())}"
        + (" (residual stream stored token-fastest)" if r.report.layout else "")
        + "; the dense model runs dense in every layer. Each layer's kernel in full: below."
    )
    with st.expander("Backend chosen for each layer"):
        st.caption(f"In full: {r.report.summary()}.")
        st.dataframe(pd.DataFrame(r.report.rows()), hide_index=True, key="speed_session_table")


# ----- one layer
@st.fragment
def one_layer() -> None:
    st.subheader("One layer: latency against sparsity")
    shapes = sorted({layer.shape for layer in dense.layers if layer.kind not in ("embedding", "lm_head")})
    shape = st.selectbox(
        "Layer shape (out × in)", shapes, format_func=lambda s: f"{s[0]} × {s[1]}", key="speed_layer_shape"
    )
    tokens = st.segmented_control("Tokens", [128, 1], default=128, key="speed_layer_tokens") or 128
    sparsities = [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98]
    key = ("layer", dense.name, shape, tokens)
    run, stop = st.columns(2)
    if run.button("Measure this shape", key="speed_layer_run"):
        layer = next(layer for layer in dense.layers if layer.shape == shape)
        points = finished[key] = []
        total = len(sparsities) * 3
        with running(stop, "speed_layer_stop") as bar:
            for point in layer_speed.layer_points(layer.weight(dense.model), sparsities, tokens):
                points.append(point)
                text = f"{point.backend} at {point.sparsity:.0%}: {point.median_ms:.3f} ms"
                bar.progress(len(points) / total, text=text)
    points = finished.get(key)
    if not points:
        st.caption(
            "Times dense (zeros multiplied), CSR and a compacted matrix for this shape at 8 sparsities."
        )
        return
    show_layer_points(points, shape, tokens)


def show_layer_points(points: list, shape: tuple[int, int], tokens: int) -> None:
    by = {b: {p.sparsity: p for p in points if p.backend == b} for b in ("dense", "csr", "compact")}
    xs = sorted(by["dense"])
    series = {
        "dense (zeros multiplied)": [by["dense"][s].median_ms for s in xs],
        "CSR int32": [by["csr"][s].median_ms for s in xs if s in by["csr"]],
        "compacted (rows removed)": [by["compact"][s].median_ms for s in xs if s in by["compact"]],
    }
    d0 = by["dense"][xs[0]].median_ms
    series["ideal (FLOPs)"] = [layer_speed.ideal_ms(d0, s) for s in xs]
    series["memory-bound (CSR bytes)"] = [layer_speed.memory_bound_ms(d0, shape, s) for s in xs]
    st.plotly_chart(
        speed_charts.speed_lines(xs, series, "ms per call", {"ideal (FLOPs)", "memory-bound (CSR bytes)"}),
        key="speed_layer_chart",
    )
    downloads.csv_button(
        partial(downloads.series_table, "sparsity_percent", xs, series, "ms_per_call", x_scale=100),
        downloads.csv_name(dense.name, "speed-layer", f"{shape[0]}x{shape[1]}", f"{tokens}tokens"),
        key="speed_layer_csv",
    )
    even = layer_speed.break_even(points)
    st.markdown(
        f"**Break-even for CSR** at {tokens} token{'s' * (tokens != 1)}: "
        + (f"{even:.0%} sparsity." if even is not None else "not reached up to 98% sparsity.")
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "sparsity": p.sparsity,
                    "backend": p.backend,
                    "median ms": p.median_ms,
                    "spread ms": p.timing.spread_ms,
                    "kernel": p.timing.kernel,
                }
                for p in points
            ]
        ),
        hide_index=True,
        key="speed_layer_table",
    )


# ----- end to end against sparsity
@st.fragment
def end_to_end() -> None:
    st.subheader("Whole model: speedup against sparsity")
    sparsities = [0.5, 0.7, 0.9, 0.95]
    # sparsity by sparsity, so a stopped run still has every curve up to the same point
    cases = [
        case
        for s in sparsities
        for case in (
            speed.Case(f"CSR {s:.0%}", s, "unstructured", "csr"),
            speed.Case(f"auto {s:.0%}", s, "unstructured", "auto"),
            speed.Case(f"structured MLP {s:.0%}", s, "mlp_neurons", "compact"),
        )
    ]
    key = ("e2e", dense.name)
    run, stop = st.columns(2)
    if run.button("Measure (about a minute on a 135M model)", key="speed_e2e_run"):
        scratch = PruningState(dense)  # never the session's own pruning
        done = finished[key] = []
        with running(stop, "speed_e2e_stop") as bar:
            for i, case in enumerate(cases):
                done.append(speed.measure_case(scratch, case, warmup=1, repeats=5))
                text = f"{case.label}: {done[-1].speedup('prefill'):.2f}× prefill"
                bar.progress((i + 1) / len(cases), text=text)
    done = finished.get(key)
    if not done:
        st.caption(
            "Unstructured magnitude pruning on CSR and on auto, and whole MLP neurons compacted (the same "
            "neurons the sidebar's whole-neuron pattern removes), each timed against dense, prefill of 128 "
            "tokens and one-token decode."
        )
        return
    show_cases(done, sparsities)


def show_cases(done: list, sparsities: list[float]) -> None:
    for phase in ("prefill", "decode"):
        series: dict[str, list[float]] = {"dense": [1.0] * len(sparsities)}
        for family in ("CSR", "auto", "structured MLP"):
            series[family] = [r.speedup(phase) for r in done if r.case.label.startswith(family + " ")]
        series["ideal (FLOPs, unstructured)"] = [
            r.ideal(phase) for r in done if r.case.label.startswith("CSR")
        ]
        if phase == "decode":
            series["memory-bound (CSR bytes)"] = [
                r.memory_bound() for r in done if r.case.label.startswith("CSR")
            ]
        n = min(len(v) for v in series.values())
        st.markdown(f"**{phase}**")
        dashed = {"dense", "ideal (FLOPs, unstructured)", "memory-bound (CSR bytes)"}
        shown = {k: v[:n] for k, v in series.items()}
        st.plotly_chart(
            speed_charts.speed_lines(sparsities[:n], shown, "speedup over dense", dashed),
            key=f"speed_e2e_{phase}",
        )
        table = partial(downloads.series_table, "sparsity_percent", sparsities[:n], shown, "speedup_x", 100)
        downloads.csv_button(
            table,
            downloads.csv_name(dense.name, "speed", phase),
            key=f"speed_e2e_{phase}_csv",
        )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "case": r.case.label,
                    "prefill ×": r.speedup("prefill"),
                    "decode ×": r.speedup("decode"),
                    "ideal prefill ×": r.ideal("prefill"),
                    "memory-bound decode ×": r.memory_bound(),
                    "kernels": formats.kernel_summary(r.report.kernels()),
                }
                for r in done
            ]
        ),
        hide_index=True,
        key="speed_e2e_table",
    )
    with st.expander("Kernels in full"):
        for r in done:
            st.caption(f"**{r.case.label}**: {r.report.summary()}.")


# ----- size
@st.fragment
def model_size() -> None:
    st.subheader("Size of your pruned model")
    with session.exclusive():
        found = results.memo("speed_sizes", session.pruned_key(), lambda: sizes.model_sizes(state))
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "form": s.form,
                    "in memory": formats.megabytes(s.memory_bytes),
                    "on disk": formats.megabytes(s.disk_bytes),
                    "runs as": s.kernel,
                }
                for s in found
            ]
        ),
        hide_index=True,
        key="speed_sizes_table",
    )
    st.caption(
        "Masked dense keeps every zero, so it is as large as dense. A bitmask file stores the kept values "
        "plus one bit per weight, but must be expanded to run. CSR pays 8 bytes per kept weight, so it only "
        "shrinks layers above 50% sparsity. Compaction shrinks only where whole neurons or heads are gone. "
        "On disk: tensor data as in a safetensors file (its header adds a few KB). This page keeps your "
        "masked weights as well, so the app itself does not shrink."
    )


session_model()
one_layer()
end_to_end()
model_size()
