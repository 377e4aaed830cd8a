"""The Train page's charts: the schedule drawn before a run, a job's curves (loss, held-out perplexity,
sparsity against step), and the comparison of this session's runs (with the dense line) and its table."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from prune_explorer.training.result import CurvePoint
from prune_explorer.training.schedule import GradualSchedule, cubic_sparsity
from ui import train_job, train_plan
from ui.charts import layout
from ui.sensitivity_view import PALETTE

REFERENCE_COLOURS = ("#7f7f7f", "#8c564b", "#bcbd22")  # one-shot references: muted, beside the runs' palette


def schedule_chart(plan: train_plan.Plan, held: float) -> go.Figure:
    """Sparsity against step before the run: the masks' (a step at every update) and Zhu & Gupta's cubic
    s_t (dotted); one-shot: the session's sparsity ``held`` fixed.

    Raises:
        ValueError: a schedule parameter out of range (``GradualSchedule``).
    """
    fig = go.Figure()
    if plan.schedule == "gradual":
        schedule = GradualSchedule(plan.target, 0.0, plan.start_step, plan.updates, plan.every)
        updates = [s for s in schedule.update_steps() if s < plan.steps]
        x = [0, *updates, plan.steps]
        y = [
            0.0,
            *(cubic_sparsity(s, schedule) for s in updates),
            cubic_sparsity(updates[-1], schedule) if updates else 0.0,
        ]
        smooth = [
            schedule.start_step + i * (schedule.end_step - schedule.start_step) / 100 for i in range(101)
        ]
        fig.add_scatter(x=x, y=[100 * v for v in y], mode="lines+markers", line_shape="hv", name="masks")
        fig.add_scatter(
            x=smooth,
            y=[100 * cubic_sparsity(int(s), schedule) for s in smooth],
            mode="lines",
            name="cubic s_t",
            line=dict(dash="dot", color="gray"),
        )
    else:
        fig.add_scatter(x=[0, plan.steps], y=[100 * held] * 2, mode="lines", name="masks (held fixed)")
    fig.update_xaxes(title_text="training step", range=[0, plan.steps])
    units = plan.schedule == "gradual" and plan.pattern in ("neurons", "heads")
    title = f"{plan.pattern} pruned per block (%)" if units else "sparsity of the trained layers (%)"
    fig.update_yaxes(title_text=title, range=[-2, 100])
    return layout(fig, 260)


def curves_chart(points: list[CurvePoint], steps_planned: int | None = None) -> go.Figure:
    """Training loss, held-out perplexity and sparsity against step, one above the other (x up to
    ``steps_planned`` while a run trains, so the curves grow across the chart)."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    steps = [p.step for p in points]
    losses = [(p.step, p.loss) for p in points if p.loss is not None]
    fig.add_scatter(x=[s for s, _ in losses], y=[v for _, v in losses], name="training loss", row=1, col=1)
    fig.add_scatter(x=steps, y=[p.ppl for p in points], name="held-out perplexity", row=2, col=1)
    fig.add_scatter(x=steps, y=[100 * p.sparsity for p in points], name="sparsity (%)", row=3, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="perplexity", type="log", row=2, col=1)
    fig.update_yaxes(title_text="sparsity (%)", row=3, col=1)
    fig.update_xaxes(title_text="training step", row=3, col=1)
    if steps_planned:
        fig.update_xaxes(range=[0, steps_planned])
    return layout(fig, 480)


def comparison_chart(runs: list[train_job.Run], references: list[tuple[str, float]] = ()) -> go.Figure:
    """Held-out perplexity against training steps of every run, one-shot starts marked, dense dotted, and
    ``references`` ((label, perplexity) of models not trained) dashed across the steps."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        x, y = [p.step for p in run.curve], [p.ppl for p in run.curve]
        fig.add_scatter(x=x, y=y, mode="lines+markers", name=f"#{i + 1} {run.label}", line=dict(color=colour))
        if run.kind == "oneshot":
            fig.add_scatter(
                x=x[:1],
                y=y[:1],
                mode="markers",
                name=f"#{i + 1} one-shot, before recovery",
                marker=dict(symbol="diamond", size=12, color=colour),
            )
    last = max((run.curve[-1].step for run in runs), default=1)
    for j, (label, ppl) in enumerate(references):
        colour = REFERENCE_COLOURS[j % len(REFERENCE_COLOURS)]
        fig.add_scatter(
            x=[0, last], y=[ppl, ppl], mode="lines", name=label, line=dict(color=colour, dash="dash", width=1)
        )
    dense = runs[-1].dense_ppl
    fig.add_scatter(
        x=[0, last], y=[dense, dense], mode="lines", name="dense", line=dict(color="gray", dash="dot")
    )
    fig.update_xaxes(title_text="training steps")
    fig.update_yaxes(title_text="held-out perplexity (log)", type="log")
    return layout(fig, 380)


def curves_table(runs: list[train_job.Run], references: list[tuple[str, float]] = ()) -> pd.DataFrame:
    """One row per run and curve point: what the comparison chart draws, with loss, time and lr; then one
    row per one-shot reference (step 0, no run number)."""
    rows = [
        {
            "run": i + 1,
            "label": run.label,
            "schedule": run.kind,
            "step": p.step,
            "training_loss": p.loss,
            "perplexity": p.ppl,
            "dense_perplexity": run.dense_ppl,
            "sparsity_percent": 100 * p.sparsity,
            "train_seconds": p.seconds,
            "lr": p.lr,
            "stopped": run.stopped,
        }
        for i, run in enumerate(runs)
        for p in run.curve
    ]
    dense = runs[-1].dense_ppl if runs else None
    rows += [
        {
            "label": label,
            "schedule": "one-shot, no training",
            "step": 0,
            "perplexity": ppl,
            "dense_perplexity": dense,
        }
        for label, ppl in references
    ]
    return pd.DataFrame(rows)
