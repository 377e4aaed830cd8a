"""The Allocation page's comparison: held-out perplexity against average sparsity for each allocation
(uniform, OWL, the budget where sensitivity curves exist) with one method, at equal total sparsity.

Measured in the background on scratch copies (the session's model stays free) and shared by every session:
each finished point is stored at once on the dense model (``ui.sweeps.small_store``), so a stopped run keeps
what it finished and no point is computed twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from prune_explorer.measure import sweep
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.progress import Progress
from prune_explorer.pruning import allocation, outliers
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.methods import get_method
from ui import background
from ui.charts import LEGEND_BELOW, add_dense_line, layout
from ui.outputs import dense_perplexity, eval_ids
from ui.sweeps import small_store

TARGETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
COLORS = {"uniform": "#0072B2", "owl": "#D55E00", "budget": "#009E73"}
NAMES = {"uniform": "uniform", "owl": "OWL", "budget": "budget"}


@dataclass(frozen=True)
class Plan:
    """What the comparison measures: one method (unstructured) over ``kinds``, the allocations ``names``
    (OWL with ``m`` and ``lam``; the budget over ``budget``'s curves, within its bounds if it has them:
    ``pruning.budget_bounds.BoundedBudget``), at each of ``targets``."""

    method: str
    kinds: tuple[str, ...]
    calibration: CalibrationBatch | None
    m: float = outliers.OWL_M
    lam: float = allocation.OWL_LAMBDA
    budget: allocation.Basis | None = None
    targets: tuple[float, ...] = TARGETS

    @property
    def names(self) -> tuple[str, ...]:
        return ("uniform", "owl") + (("budget",) if self.budget is not None else ())

    @property
    def key(self) -> tuple:
        calib = None if self.calibration is None else self.calibration.key
        return (self.method, self.kinds, calib, self.m, self.lam, self.budget, self.targets)

    def point_key(self, name: str, target: float) -> tuple:
        return ("allocation", name, target, *self.key[:3], *((self.m, self.lam) if name == "owl" else ()),
                self.budget if name == "budget" else None)  # fmt: skip


def points(dense: DenseModel, plan: Plan) -> dict[str, list] | None:
    """{allocation: [SweepPoint or the error text, ...] over the targets} if every point is measured."""
    store = small_store(dense, "allocation_points")
    keys = {name: [plan.point_key(name, t) for t in plan.targets] for name in plan.names}
    if any(k not in store for ks in keys.values() for k in ks):
        return None
    return {name: [store[k] for k in ks] for name, ks in keys.items()}


def measure(dense: DenseModel, plan: Plan, progress: Progress = None) -> dict[str, list]:
    """Measure the plan's missing points (OWL's ratios first, once per model, layers and calibration)."""
    store = small_store(dense, "allocation_points")
    layers = select(dense.layers, plan.kinds)
    todo = [(n, t) for n in plan.names for t in plan.targets if plan.point_key(n, t) not in store]
    bases = {"budget": plan.budget}
    if any(n == "owl" for n, _ in todo):
        bases["owl"] = allocation.owl_basis(dense, layers, plan.calibration, plan.m)
    ids = eval_ids(dense)
    dense_perplexity(dense)  # the chart's dotted line, shared
    for i, (name, target) in enumerate(todo):
        try:
            shares = None if name == "uniform" else bases[name].shares(target, lam=plan.lam)
            point = sweep.method_point(
                dense,
                ids,
                plan.method,
                target,
                kinds=plan.kinds,
                calibration=plan.calibration,
                layer_sparsity=shares,
                progress=(lambda f, i=i: progress((i + f) / len(todo))) if progress else None,
            )
        except ValueError as exc:
            point = str(exc)
        store[plan.point_key(name, target)] = point
    return points(dense, plan) or {}


def task(dense: DenseModel, plan: Plan) -> background.Task:
    label = get_method(plan.method).label
    return background.Task(
        "allocation_compare",
        (id(dense), plan.key),
        f"Comparing allocations with {label}",
        lambda progress: measure(dense, plan, progress),
        on_session_model=False,
        cached=lambda: points(dense, plan),
    )


def table(measured: dict[str, list]) -> pd.DataFrame:
    """One row per allocation and target: sparsity asked and reached, perplexity (empty where it failed)."""
    rows = []
    for name, found in measured.items():
        for point in found:
            if isinstance(point, sweep.SweepPoint):
                rows.append(
                    {
                        "allocation": name,
                        "asked_sparsity_percent": round(100 * point.sparsity, 2),
                        "sparsity_percent": 100 * point.achieved,
                        "perplexity": point.ppl,
                    }
                )
    return pd.DataFrame(
        rows, columns=["allocation", "asked_sparsity_percent", "sparsity_percent", "perplexity"]
    )


def errors(measured: dict[str, list]) -> list[str]:
    return sorted({f"{NAMES[n]}: {p}" for n, found in measured.items() for p in found if isinstance(p, str)})


def chart(
    measured: dict[str, list], dense_ppl: float | None, targets: Sequence[float] = TARGETS
) -> go.Figure:
    """Perplexity (log axis) against the average sparsity reached, one line per allocation."""
    fig = go.Figure()
    rows = table(measured)
    for name in measured:
        mine = rows[rows["allocation"] == name]
        fig.add_scatter(
            x=mine["sparsity_percent"],
            y=mine["perplexity"],
            name=NAMES[name],
            mode="lines+markers",
            line=dict(color=COLORS[name]),
            hovertemplate=f"{NAMES[name]}: %{{x:.1f}}% pruned, perplexity %{{y:.2f}}<extra></extra>",
        )
    add_dense_line(fig, dense_ppl)
    fig.update_xaxes(title_text="average sparsity of the selected layers (%)")
    fig.update_yaxes(title_text="perplexity (log)", type="log", dtick=1, exponentformat="power")
    fig.update_layout(legend=LEGEND_BELOW)
    return layout(fig, 380)
