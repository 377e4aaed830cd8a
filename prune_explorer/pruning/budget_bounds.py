"""The budget allocation's bound: every layer within the average sparsity ± a largest deviation.

The budget solver (``pruning.allocation.budget``) meets a target with the least damage its per-layer curves
predict. Those curves are measured one layer at a time and miss how damage adds up, so an unbounded budget
drives layers to the ends of their curves: on SmolLM2 at 60% it pushed layers to 0.3 and 0.9 and did worse
than uniform; within ± 0.1 of the average it did better. The bound is therefore a deviation from the
target, which moves with the target (the slider, a sweep), and is what a link, the CLI and a recipe carry.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from prune_explorer.pruning import allocation

DEVIATION = 0.1  # the default largest deviation from the average (1: unbounded)


def check_deviation(deviation: float) -> None:
    """Raise ValueError with a user-facing message unless the budget's largest deviation is in [0, 1]."""
    if not 0.0 <= deviation <= 1.0:
        raise ValueError(
            f"the budget's largest deviation from the average must be between 0 and 1, got {deviation}"
        )


def budget_bounds(target: float, deviation: float) -> tuple[float, float]:
    """The budget solver's (lowest, highest) per-layer sparsity: the average ± ``deviation``, within [0, 1]
    (rounded to 6 decimals: the slider moves by 1% and the deviation by 0.01, so nothing is lost)."""
    check_deviation(deviation)
    return round(max(0.0, target - deviation), 6), round(min(1.0, target + deviation), 6)


def deviation_of(target: float, bounds: tuple[float, float]) -> float:
    """The largest deviation that :func:`budget_bounds` turned into ``bounds`` at ``target`` (where both ends
    were clipped to [0, 1], the smallest that gives the same bounds)."""
    return round(max(target - bounds[0], bounds[1] - target), 6)


@dataclass(frozen=True)
class BoundedBudget(allocation.Basis):
    """The budget's basis with every layer held within the target ± ``deviation`` at whatever target it is
    asked for: the slider, the sweep and the look-ahead move the target (``replace(settings, sparsity=…)``)
    and the bound moves with it, where ``PruneSettings.budget_bounds`` (absolute) would stay behind. Part
    of the settings' cache keys, as any basis."""

    deviation: float = DEVIATION

    def shares(
        self, target: float, lam: float = allocation.OWL_LAMBDA, bounds: tuple[float, float] | None = None
    ) -> dict[str, float]:
        """:meth:`Basis.shares` within ``bounds``, by default :func:`budget_bounds` of ``target``."""
        return super().shares(target, lam, bounds or budget_bounds(target, self.deviation))


def bounded(basis: allocation.Basis, deviation: float) -> BoundedBudget:
    """``basis`` (the budget's) with its layers held within the target ± ``deviation``.

    Raises:
        ValueError: a deviation outside [0, 1].
    """
    check_deviation(deviation)
    found = {f.name: getattr(basis, f.name) for f in fields(allocation.Basis)}
    return BoundedBudget(**found, deviation=deviation)


def deviation_in(settings: object) -> float | None:
    """The largest deviation of the budget the settings apply, or None (another allocation, or unbounded)."""
    return getattr(getattr(settings, "basis", None), "deviation", None)
