"""The Train page's controls: every setting of a run, returned as a ``train_plan.Plan``, and kept while
another page is shown (Streamlit forgets the value of a widget a run does not draw)."""

from __future__ import annotations

import streamlit as st

from prune_explorer.execution.cpu_features import fast_bfloat16
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.training.masking import GRADUAL_METHODS
from prune_explorer.training.schedule import fit_schedule
from prune_explorer.training.settings import MAX_STEPS, PRECISIONS
from ui import defaults, train_plan

SCHEDULES = {"oneshot": "One-shot + recovery (masks fixed)", "gradual": "Gradual from dense"}
RECOVER = {"distill": "Distill from dense", "text": "Next-token on text"}
SOURCES = {"builtin": "Built-in text", "upload": "Upload .txt", "sampled": "Sampled from the dense model"}
PATTERNS = ("unstructured", "2:4", "4:8", "neurons", "heads")
PRECISION_LABELS = {"float32": "float32", "bfloat16": "bfloat16 mixed"}
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 5e-3, 1e-2, 2e-2, 5e-2)
# stories260K at 70%, 60 s (bench/train.py, 2026-12-04): one-shot + distillation 1.55x dense at 1e-2, 1.67x
# at 2e-2; gradual 1.47x at 5e-3, 3.3x at 2e-2 (a dense start is hurt by a large step). 1e-2 serves both.
# The controls' values while another page is shown: Streamlit forgets a widget's value in a run that does
# not draw it, and a user checks other pages while a run trains. (id of the dense model, {key: value}).
SAVED = "train_controls"
_KEYS: set[str] = set()


def _choice(
    where, label: str, labels: dict[str, str], key: str, default: str, hint: str | None = None
) -> str:
    """One of ``labels``' keys, chosen on a segmented control (shown by their labels) in ``where``."""
    return where.segmented_control(
        label, list(labels), format_func=labels.get, key=_key(key, default), required=True, help=hint
    )


def _key(key: str, default: object) -> str:
    """A widget key whose first value comes from session state (never ``value=``, see session)."""
    _KEYS.add(key)
    st.session_state.setdefault(key, default)
    return key


def _restore(dense: DenseModel) -> None:
    """The values the controls had when this page was last shown on this model."""
    model, saved = st.session_state.get(SAVED, (None, {}))
    if model == id(dense):
        for key, value in saved.items():
            st.session_state.setdefault(key, value)


def _save(dense: DenseModel) -> None:
    """Keep the controls' values (those not drawn this run, the gradual ones under one-shot, as they were)."""
    model, saved = st.session_state.get(SAVED, (None, {}))
    drawn = {k: st.session_state[k] for k in _KEYS if k in st.session_state}
    st.session_state[SAVED] = (id(dense), (saved if model == id(dense) else {}) | drawn)


def controls(dense: DenseModel) -> train_plan.Plan:
    """Every control of a run; returns what they are set to."""
    _restore(dense)
    small = defaults.is_small(dense)
    left, right = st.columns(2)
    schedule = _choice(left, "Schedule", SCHEDULES, "train_schedule", "oneshot")
    recover = _choice(right, "Recovery loss", RECOVER, "train_recover", "distill")
    source, text = _data_controls(dense)
    a, b, c = st.columns(3)
    steps = a.number_input("Steps", 1, MAX_STEPS, step=10, key=_key("train_steps", 200))
    lr = b.select_slider(
        "Learning rate",
        LEARNING_RATES,
        format_func="{:g}".format,
        key=_key("train_lr", 1e-2 if small else 3e-4),
    )
    seconds = c.number_input(
        "Time budget (s)", 0, 86_400, step=10, key=_key("train_seconds", 60), help="0: no limit"
    )
    gradual = _gradual_controls(int(steps)) if schedule == "gradual" else {}
    with st.expander("More settings"):
        d, e, f = st.columns(3)
        batch = d.number_input("Batch size", 1, 4096, key=_key("train_batch", 16 if small else 4))
        seq_len = e.number_input(
            "Sequence length", 2, context_length(dense.model), key=_key("train_seq_len", 128)
        )
        points = f.number_input("Points on the curves", 0, 1000, key=_key("train_points", 10))
        g, h, i = st.columns(3)
        eval_tokens = g.number_input(
            "Held-out tokens", 0, 10**9, step=256, key=_key("train_eval_tokens", 0), help="0: all of it"
        )
        hidden = h.number_input(
            "Hidden-state weight",
            0.0,
            1e6,
            step=0.1,
            key=_key("train_hidden", 0.0),
            help="distillation: weight of the per-layer hidden-state MSE beside the logit KL",
        )
        sampled = i.number_input("Sampled tokens", 512, 10**7, step=1024, key=_key("train_sampled", 8192))
        precision = _choice(
            st,
            "Arithmetic",
            {p: PRECISION_LABELS[p] for p in PRECISIONS},
            "train_precision",
            "bfloat16" if fast_bfloat16() and not small else "float32",
            hint="bfloat16: mixed precision (the forward's matmuls in bfloat16; weights, optimizer and "
            "losses in float32): more steps a second on a CPU with AVX512-BF16 or AMX; perplexity is "
            "measured in float32 either way",
        )
    _save(dense)
    return train_plan.Plan(
        schedule=schedule,
        recover=recover,
        source=source,
        text=text,
        steps=int(steps),
        lr=float(lr),
        seconds=float(seconds),
        batch_size=int(batch),
        seq_len=int(seq_len),
        points=int(points),
        eval_tokens=int(eval_tokens),
        hidden_weight=float(hidden),
        precision=precision or "float32",
        sampled_tokens=int(sampled),
        **gradual,
    )


def _data_controls(dense: DenseModel) -> tuple[str, str | None]:
    """The training text's source and, for an upload, its text (None until one is uploaded)."""
    has_builtin = dense.info.get("text_set", "stories") == "shakespeare"
    source = _choice(st, "Training data", SOURCES, "train_source", "builtin" if has_builtin else "sampled")
    text = None
    if source == "upload":
        upload = st.file_uploader("Training text (.txt)", type=["txt"], key="train_upload")
        if upload is not None:
            text = upload.getvalue().decode("utf-8", errors="replace")
    st.caption(
        "Training text never overlaps the evaluation or calibration text (a text that repeats 32 tokens of "
        "either is refused; sampled sequences that do are dropped)."
    )
    return source, text


def _fit(steps: int) -> None:
    """Button callback: interval and updates so the masks reach the target at about 70% of the run."""
    fitted = fit_schedule(st.session_state["train_target"] / 100, max(2, steps))
    st.session_state.update(train_t0=fitted.start_step, train_dt=fitted.every, train_updates=fitted.updates)


def _gradual_controls(steps: int) -> dict:
    """Zhu & Gupta's parameters: s_f, t0, dt, n, and how the masks are chosen."""
    a, b = st.columns(2)
    method = a.selectbox("Gradual method", GRADUAL_METHODS, key=_key("train_method", "magnitude"))
    pattern = b.selectbox(
        "Pattern",
        PATTERNS,
        key=_key("train_pattern", "unstructured"),
        help="neurons, heads: whole units go, the lowest scored in each block at every mask update (the "
        "target is the share of units); layers of other kinds train but keep all their weights",
    )
    fixed = parse_pattern(pattern).fixed_sparsity  # N:M fixes the final sparsity (2:4 at 50%)
    if fixed is not None:
        st.session_state["train_target"] = round(100 * fixed)
    c, d, e, f = st.columns(4)
    target = c.slider(
        "Target sparsity (%)", 0, 95, step=5, key=_key("train_target", 70), disabled=fixed is not None
    )
    t0 = d.number_input("Start step", 0, MAX_STEPS, key=_key("train_t0", 0))
    dt = e.number_input("Interval dt", 1, MAX_STEPS, key=_key("train_dt", 7))
    n = f.number_input("Mask updates", 1, 100_000, key=_key("train_updates", 20))
    st.button("Fit the schedule to the steps", key="train_fit", on_click=_fit, args=(steps,))
    return dict(
        target=target / 100, start_step=int(t0), every=int(dt), updates=int(n), method=method, pattern=pattern
    )
