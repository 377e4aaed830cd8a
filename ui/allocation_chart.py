"""The per-layer allocation chart: each selected layer's asked and pruned share (a table), and the bars of
the pruned shares coloured by layer kind with their parameter-weighted average, for the Allocation page's
full-size chart and the sidebar's compact one."""

from __future__ import annotations

import pandas as pd

from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.state import PruningState
from ui import data
from ui.charts import SpecFigure

# One colour per layer kind (Okabe & Ito's palette, as on the Speed and Sensitivity pages).
KIND_COLORS = {
    "attn_q": "#0072B2",
    "attn_k": "#56B4E9",
    "attn_v": "#009E73",
    "attn_qkv": "#0072B2",
    "attn_o": "#CC79A7",
    "mlp_gate": "#E69F00",
    "mlp_up": "#D55E00",
    "mlp_down": "#000000",
}
OTHER_COLOR = "#999999"
AVERAGE_COLOR = "#e45756"


def layer_shares(state: PruningState, settings: MagnitudeSettings | None) -> pd.DataFrame:
    """One row per selected layer: name, kind, weights, the share asked (the allocation's, else the
    slider's) and the share pruned now in the session's model."""
    layers = data.selected(state.dense, settings)
    asked = getattr(settings, "layer_sparsity", None) or {}
    default = settings.sparsity if settings is not None else 0.0
    return pd.DataFrame(
        {
            "layer": [layer.name for layer in layers],
            "short": [data.short_name(layer) for layer in layers],
            "kind": [layer.kind for layer in layers],
            "weights": [layer.numel for layer in layers],
            "asked_percent": [100 * asked.get(layer.name, default) for layer in layers],
            "pruned_percent": [100 * state.pruned_count(layer.name) / layer.numel for layer in layers],
        }
    )


def average_percent(table: pd.DataFrame) -> float:
    """The parameter-weighted average of the pruned shares (the share of all these weights pruned)."""
    total = table["weights"].sum()
    return float((table["pruned_percent"] * table["weights"]).sum() / total) if total else 0.0


def kind_colors(table: pd.DataFrame) -> list[str]:
    """Each layer's colour, by its kind (the Allocation page's chart and the sidebar's)."""
    return [KIND_COLORS.get(kind, OTHER_COLOR) for kind in table["kind"]]


def bars(table: pd.DataFrame, height: int, names: bool = False) -> SpecFigure:
    """Pruned share per layer (bars in model order, coloured by kind) and their average (a dashed line).

    ``names``: layer names on the axis (the full-size chart); else bare positions (the sidebar's). A spec
    of plain lists, drawn without Plotly's validation (``ui.charts.SpecFigure``): redrawn on every slider
    move, 210 layers on SmolLM2."""
    average = average_percent(table)
    labels = table["short"].tolist()
    bar = dict(
        type="bar",
        x=labels if names else list(range(len(table))),
        y=table["pruned_percent"].round(2).tolist(),
        marker=dict(color=kind_colors(table)),
        hovertext=labels,
        hovertemplate="%{hovertext}: %{y:.1f}%<extra></extra>",
        name="pruned",
    )
    line = dict(type="line", xref="paper", x0=0, x1=1, y0=average, y1=average)
    line["line"] = dict(color=AVERAGE_COLOR, width=1.5, dash="dash")
    return SpecFigure(
        [bar],
        dict(
            height=height,
            margin=dict(l=10, r=10, t=10, b=10),
            showlegend=False,
            bargap=0.1,
            shapes=[line],
            yaxis=dict(range=[0, 100], ticksuffix="%", **({"title": dict(text="pruned")} if names else {})),
            xaxis=dict(showticklabels=names),
        ),
    )
