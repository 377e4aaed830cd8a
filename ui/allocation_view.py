"""Per-layer allocation in the sidebar (Sparsify's one average-sparsity slider): which allocation shares the
slider among the selected layers (uniform, OWL, the least-damage budget), OWL's M and λ, the budget's largest
deviation from the average, and a compact per-layer sparsity chart of what is applied, redrawn on every
move. Its full-size twin is on the Allocation page.

A move costs no statistics and no sort: the allocation's basis (OWL's block outlier ratios, the budget's
sensitivity curves) is found once per model, layers and calibration and shared by every session, and the
slider then shares its value by arithmetic (``pruning.settings.PruneSettings.layer_sparsity``).
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from prune_explorer.measure import sensitivity_cache
from prune_explorer.measure.sensitivity import cached_sensitivity
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS, select
from prune_explorer.pruning import allocation
from prune_explorer.pruning.budget_bounds import DEVIATION, bounded, check_deviation
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.methods import get_method
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.settings import PruneSettings, find_basis, prune_settings
from prune_explorer.state import PruningState
from ui import background, data, defaults, light_charts, results, session
from ui.charts import SpecFigure

ALLOCATION = "sidebar_allocation"
OWL_M = "sidebar_owl_m"
OWL_LAM = "sidebar_owl_lam"
BUDGET_DEVIATION = "sidebar_budget_deviation"
LAST = "sidebar_allocation_last"  # the last valid (allocation, M, λ, deviation), restored when refused
NOTE = "sidebar_allocation_note"  # why a choice was refused, shown on the next run
MEASURED = ("magnitude", "wanda")  # the methods the Sensitivity page measures curves for
LABELS = {
    "uniform": "Uniform: same share per layer",
    "owl": "OWL: fewer outliers, pruned more",
    "budget": "Budget: least predicted damage",
}
HELP = (
    "How the slider's average is shared among the selected layers (parameter-weighted, so the share of all "
    "their weights pruned is the slider's). OWL (Yin et al. 2024): blocks whose |W|·‖X‖ scores hold more "
    "outliers (above M × their mean) are pruned less, within the average ± λ. Budget: the least total damage "
    "the Sensitivity page's per-layer curves predict, each layer within the average ± its largest deviation. "
    "With magnitude it applies to the same-sparsity policy."
)
DEVIATION_HELP = (
    "No layer's sparsity leaves the average ± this. The curves are measured one layer at a time and miss how "
    "damage adds up, so an unbounded budget drives layers to the ends of their curves (on SmolLM2 it did "
    "worse than uniform); ± 0.1 did better. 1 leaves it unbounded."
)
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


# ----- widgets


def _last() -> dict:
    last = st.session_state.setdefault(
        LAST, {ALLOCATION: "uniform", OWL_M: allocation.OWL_M, OWL_LAM: allocation.OWL_LAMBDA}
    )
    last.setdefault(BUDGET_DEVIATION, DEVIATION)
    return last


def _refuse(why: str) -> None:
    """Put the widgets back at the last valid choice and say why (set in a callback, before the widgets)."""
    last = _last()
    for key, value in last.items():
        st.session_state[key] = value
    st.session_state[NOTE] = why


def _on_allocation() -> None:
    choice = st.session_state.get(ALLOCATION, "uniform")
    if choice == "budget":
        settings = session.applied() or MagnitudeSettings()
        method = st.session_state.get(session.METHOD, "magnitude")
        if curves(session.dense(), method, settings.kinds, session.calibration()[0]) is None:
            stays = LABELS[_last()[ALLOCATION]].split(":")[0]
            _refuse(f"{no_curves(session.dense(), method)} Then choose Budget again; it stays {stays} now.")
            return
    _last()[ALLOCATION] = choice


def _on_owl() -> None:
    m = st.session_state.get(OWL_M)
    lam = st.session_state.get(OWL_LAM)
    try:
        PruneSettings(allocation="owl", owl_m=float(m), owl_lam=float(lam)).check_allocation()
    except (TypeError, ValueError) as exc:
        last = _last()
        _refuse(f"{exc}. M and λ stay {last[OWL_M]:g} and {last[OWL_LAM]:g}; the pruning is unchanged.")
        return
    _last().update({OWL_M: float(m), OWL_LAM: float(lam)})


def _on_deviation() -> None:
    value = st.session_state.get(BUDGET_DEVIATION)
    try:
        check_deviation(float(value))
    except (TypeError, ValueError) as exc:
        _refuse(f"{exc}. It stays {_last()[BUDGET_DEVIATION]:g}; the pruning is unchanged.")
        return
    remember_deviation(float(value))


def remember_deviation(deviation: float) -> None:
    """Keep ``deviation`` as the last valid one (what a refused choice restores), e.g. from a recipe."""
    _last()[BUDGET_DEVIATION] = float(deviation)


def picker(method: str, pattern: str, policy: str) -> None:
    """The allocation selectbox and, for OWL, M and λ in a small expander (for the budget, its largest
    deviation from the average); values are read back by :func:`chosen_settings`. Disabled where the
    allocation does not apply (the thresholds, N:M)."""
    st.session_state.setdefault(ALLOCATION, _last()[ALLOCATION])
    st.session_state.setdefault(OWL_M, _last()[OWL_M])
    st.session_state.setdefault(OWL_LAM, _last()[OWL_LAM])
    st.session_state.setdefault(BUDGET_DEVIATION, _last()[BUDGET_DEVIATION])
    applies = PruneSettings(method=method, pattern=pattern, policy=policy).allocation_applies
    choice = st.selectbox(
        "Allocation across layers",
        allocation.ALLOCATIONS,
        format_func=LABELS.get,
        key=ALLOCATION,
        on_change=_on_allocation,
        disabled=not applies,
        help=HELP,
    )
    note = st.session_state.pop(NOTE, None)
    if note:
        st.warning(note)
    if choice == "owl" and applies:
        with st.expander("OWL: M and λ"):
            left, right = st.columns(2)
            left.number_input("M (× mean)", step=0.5, format="%.1f", key=OWL_M, on_change=_on_owl)
            right.number_input(
                f"λ (0–{allocation.OWL_LAMBDA_MAX})", step=0.01, format="%.2f", key=OWL_LAM, on_change=_on_owl
            )
            st.caption("Outliers: scores above M × their block's mean. Sparsities span the average ± λ.")
    elif choice == "budget" and applies:
        st.number_input(
            "Budget: largest deviation from the average",
            min_value=0.0,
            max_value=1.0,
            step=0.01,
            format="%.2f",
            key=BUDGET_DEVIATION,
            on_change=_on_deviation,
            help=DEVIATION_HELP,
        )
    elif not applies:
        st.caption("The allocation shares the same-sparsity policy's slider (not thresholds, not N:M).")


def chosen_settings(
    dense: DenseModel,
    magnitude: MagnitudeSettings,
    method: str,
    pattern: str,
    batch: CalibrationBatch | None,
    sequential: bool | None,
) -> PruneSettings:
    """The sidebar's settings with the allocation chosen and its basis, found once per model, layers,
    calibration and M and shared by every session. OWL's ratios need a calibration pass: on a big model it
    runs in the background (:func:`owl_task`) and the pruning follows the uniform allocation until it is
    done (the sidebar says so). Where no basis can be found (the budget without curves, a bad setting) the
    settings carry none, and applying them says why (the previous pruning is kept)."""
    chosen = prune_settings(
        magnitude,
        method,
        pattern,
        batch,
        sequential,
        allocation=st.session_state.get(ALLOCATION, "uniform"),
        owl_m=float(st.session_state.get(OWL_M, allocation.OWL_M)),
        owl_lam=float(st.session_state.get(OWL_LAM, allocation.OWL_LAMBDA)),
    )
    if chosen.allocation == "uniform":
        return chosen
    try:
        if chosen.allocation == "owl":
            chosen.check_allocation()
            basis = _owl(dense, chosen, batch)
            if basis is None:
                return replace(chosen, allocation="uniform").normalised()
        else:
            found = curves(dense, method, chosen.kinds, batch)
            basis = find_basis(dense, chosen, batch, found.curves() if found else None)
            basis = bounded(basis, float(st.session_state.get(BUDGET_DEVIATION, DEVIATION)))
    except ValueError:
        return chosen  # applying says why
    return replace(chosen, basis=basis)


def _owl(dense: DenseModel, chosen: PruneSettings, batch: CalibrationBatch | None) -> allocation.Basis | None:
    """OWL's basis: at once when its ratios are known or the model is small, else asked of the background
    (None until it is there)."""
    layers = select(dense.layers, chosen.kinds)
    basis = allocation.cached_owl_basis(dense, layers, batch, chosen.owl_m)
    if basis is None and defaults.is_small(dense):
        basis = allocation.owl_basis(dense, layers, batch, chosen.owl_m)
    if basis is None:
        basis = background.ask(owl_task(dense, chosen.kinds, batch, chosen.owl_m))
        if basis is None:
            st.caption("Until OWL's outlier ratios are in, the pruning follows the uniform allocation.")
    return basis


def owl_task(
    dense: DenseModel, kinds: tuple[str, ...], batch: CalibrationBatch | None, m: float
) -> background.Task:
    """OWL's outlier ratios of every block (a calibration pass of the dense model, then the Wanda scores),
    in the background; the result is shared through the dense model's cache."""
    layers = select(dense.layers, kinds)
    return background.Task(
        "owl_basis",
        (id(dense), kinds, None if batch is None else batch.key, m),
        "OWL: outlier ratios of every block, once for this model",
        lambda progress: allocation.owl_basis(dense, layers, batch, m, progress),
        on_session_model=False,
    )


def curves(dense: DenseModel, method: str, kinds: tuple[str, ...], batch: CalibrationBatch | None):
    """The Sensitivity page's layer-mode result for ``method`` and ``kinds`` if one is stored (any session,
    on disk), else None. A found result is kept for every session; a missing one is looked up again."""
    calib = None if batch is None else batch.key
    key = ("allocation_curves", method, tuple(kinds), calib, str(sensitivity_cache.cache_dir()))
    found = results.peek_shared(dense, key)
    if found is not None:
        return found
    # The Sensitivity page names the sidebar's kinds, or all default kinds before anything was applied:
    # the same layers when the model has no layer of the kinds missing.
    same = [
        k for k in (tuple(kinds), DEFAULT_KINDS) if select(dense.layers, k) == select(dense.layers, kinds)
    ]
    for candidate in dict.fromkeys(same):
        found = cached_sensitivity(dense, method, mode="layer", kinds=candidate, calibration=batch)
        if found is not None:
            return results.shared(dense, key, lambda found=found: found)
    return None


def no_curves(dense: DenseModel, method: str) -> str:
    """Why the budget cannot run for ``method`` yet, and where to get its curves."""
    label = get_method(method).label
    if method not in MEASURED:
        return (
            f"The budget needs sensitivity curves, and the Sensitivity page measures them for magnitude and "
            f"Wanda only, not {label}."
        )
    return (
        f"No sensitivity curves for {label} on {dense.name} with these layer kinds and calibration yet: "
        f"measure them on the Sensitivity page (Prune one… layer, method {method})."
    )


# ----- the chart


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


def sidebar_chart(state: PruningState, settings: MagnitudeSettings | None) -> None:
    """The compact chart under the sidebar's summary: every selected layer's pruned share, and the average."""
    table = layer_shares(state, settings)
    name = (
        getattr(settings, "allocation", "uniform") if getattr(settings, "allocation_applies", True) else None
    )
    words = LABELS[name].split(":")[0].lower() if name else "its own comparison group"
    st.caption(f"Per layer ({words}); dashed: the average, {average_percent(table):.1f}%.")
    percents = table["pruned_percent"].round(2).tolist()
    st.html(
        light_charts.layer_bars_html(
            percents, kind_colors(table), table["short"].tolist(), average_percent(table)
        )
    )
