"""Per-layer allocation in the sidebar (Sparsify's one average-sparsity slider): which allocation shares the
slider among the selected layers (uniform, OWL, the least-damage budget), OWL's M and λ, the budget's largest
deviation from the average, and a compact per-layer sparsity chart of what is applied, redrawn on every
move (drawn by :mod:`ui.allocation_chart`; its full-size twin is on the Allocation page). The budget's
curves are found by :mod:`ui.budget_curves`.

A move costs no statistics and no sort: the allocation's basis (OWL's block outlier ratios, the budget's
sensitivity curves) is found once per model, layers and calibration and shared by every session, and the
slider then shares its value by arithmetic (``pruning.settings.PruneSettings.layer_sparsity``).
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.pruning import allocation, outliers
from prune_explorer.pruning.budget_bounds import DEVIATION, bounded, check_deviation
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.settings import PruneSettings, find_basis, prune_settings
from prune_explorer.state import PruningState
from ui import allocation_chart, background, budget_curves, defaults, light_charts, session

ALLOCATION = "sidebar_allocation"
OWL_M = "sidebar_owl_m"
OWL_LAM = "sidebar_owl_lam"
BUDGET_DEVIATION = "sidebar_budget_deviation"
LAST = "sidebar_allocation_last"  # the last valid (allocation, M, λ, deviation), restored when refused
NOTE = "sidebar_allocation_note"  # why a choice was refused, shown on the next run
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


# ----- widgets


def _last() -> dict:
    last = st.session_state.setdefault(
        LAST, {ALLOCATION: "uniform", OWL_M: outliers.OWL_M, OWL_LAM: allocation.OWL_LAMBDA}
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
        if budget_curves.curves(session.dense(), method, settings.kinds, session.calibration()[0]) is None:
            stays = LABELS[_last()[ALLOCATION]].split(":")[0]
            why = budget_curves.no_curves(session.dense(), method)
            _refuse(f"{why} Then choose Budget again; it stays {stays} now.")
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
        owl_m=float(st.session_state.get(OWL_M, outliers.OWL_M)),
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
            found = budget_curves.curves(dense, method, chosen.kinds, batch)
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


# ----- the sidebar's chart


def sidebar_chart(state: PruningState, settings: MagnitudeSettings | None) -> None:
    """The compact chart under the sidebar's summary: every selected layer's pruned share, and the average."""
    table = allocation_chart.layer_shares(state, settings)
    name = (
        getattr(settings, "allocation", "uniform") if getattr(settings, "allocation_applies", True) else None
    )
    words = LABELS[name].split(":")[0].lower() if name else "its own comparison group"
    st.caption(f"Per layer ({words}); dashed: the average, {allocation_chart.average_percent(table):.1f}%.")
    percents = table["pruned_percent"].round(2).tolist()
    st.html(
        light_charts.layer_bars_html(
            percents,
            allocation_chart.kind_colors(table),
            table["short"].tolist(),
            allocation_chart.average_percent(table),
        )
    )
