"""The Sensitivity page's pieces: the measurement as a background task, and its three views (a heatmap of
groups x sparsity, the most fragile groups, chosen groups' curves with the instant estimate beside them)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from prune_explorer.measure.sensitivity import Sensitivity, measure_sensitivity
from prune_explorer.models.dense import DenseModel
from prune_explorer.pruning.calibration import CalibrationBatch
from ui import background
from ui.charts import layout

# Okabe & Ito's palette, as on the Speed page: distinct on a projector and for colour-blind readers.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


def task(
    dense: DenseModel, method: str, mode: str, kinds: tuple[str, ...], calibration: CalibrationBatch | None
) -> background.Task:
    """Measure in the background (a scratch copy of the dense model: the session's model stays free).

    The on-disk cache makes a second request for the same plan instant, in any session or process.
    """
    return background.Task(
        "sensitivity",
        ("sensitivity", id(dense), method, mode, kinds, None if calibration is None else calibration.key),
        f"Measuring {mode} sensitivity ({method})",
        lambda progress: measure_sensitivity(
            dense, method, mode=mode, kinds=kinds, calibration=calibration, progress=progress
        ),
        on_session_model=False,
    )


def table(result: Sensitivity) -> pd.DataFrame:
    """One row per group and sparsity: KL, perplexity, estimate and the sparsity reached."""
    rows = [
        {
            "group": g,
            "sparsity_percent": round(100 * s, 1),
            "achieved_percent": round(100 * result.achieved[g][i], 2),
            "kl_nats": result.kl[g][i],
            "perplexity": result.ppl[g][i],
            "estimate_share": result.estimate[g][i],
        }
        for g in result.groups
        for i, s in enumerate(result.sparsities)
    ]
    return pd.DataFrame(rows)


def heatmap(result: Sensitivity) -> go.Figure:
    """KL(dense‖pruned) of pruning each group alone (rows, in model order) at each sparsity (columns)."""
    fig = go.Figure(
        go.Heatmap(
            z=[result.kl[g] for g in result.groups],
            x=[f"{s:.0%}" for s in result.sparsities],
            y=result.groups,
            colorscale="Viridis",
            colorbar=dict(title="KL (nats)"),
            hovertemplate="%{y} at %{x}: KL %{z:.4f} nats<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title_text=None)
    fig.update_xaxes(title_text="sparsity of the one group pruned", type="category")
    return layout(fig, max(320, 14 * len(result.groups) + 80))


def curves(result: Sensitivity, chosen: list[str]) -> go.Figure:
    """Measured KL (solid, left axis) and the instant estimate (dashed, right axis) of the chosen groups."""
    fig = go.Figure()
    x = [100 * s for s in result.sparsities]
    for i, g in enumerate(chosen):
        colour = PALETTE[i % len(PALETTE)]
        fig.add_scatter(x=x, y=result.kl[g], name=f"{g} · KL", line=dict(color=colour), mode="lines+markers")
        fig.add_scatter(
            x=x,
            y=result.estimate[g],
            name=f"{g} · estimate",
            line=dict(color=colour, dash="dash"),
            yaxis="y2",
            mode="lines",
        )
    fig.update_layout(
        yaxis=dict(title_text="KL(dense ‖ pruned), nats"),
        yaxis2=dict(title_text="estimate: share of Σ w²‖x‖² pruned", overlaying="y", side="right"),
    )
    fig.update_xaxes(title_text="sparsity of the one group pruned (%)")
    return layout(fig, 380)
