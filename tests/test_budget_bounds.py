"""The budget's bound (``pruning.budget_bounds``): every layer within the average ± the deviation at any
target, and the deviation read back from a recipe's absolute bounds."""

from __future__ import annotations

import pytest

from prune_explorer.pruning import allocation, budget_bounds


def test_the_bound_follows_any_target():
    basis = allocation.Basis(
        name="budget",
        layers=("a", "b"),
        sizes=(10, 10),
        curves=(((0.0, 0.0), (1.0, 1.0)), ((0.0, 0.0), (1.0, 9.0))),
    )
    held = budget_bounds.bounded(basis, 0.1)
    for target in (0.05, 0.5, 0.97):
        shares = held.shares(target)
        lo, hi = budget_bounds.budget_bounds(target, 0.1)
        assert lo <= min(shares.values()) and max(shares.values()) <= hi
        assert allocation.average_sparsity(shares, {"a": 10, "b": 10}) == pytest.approx(target)
    assert basis.shares(0.5) == {"a": 1.0, "b": 0.0}  # unbounded: to the ends of the curves
    assert budget_bounds.deviation_of(0.6, budget_bounds.budget_bounds(0.6, 0.1)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        budget_bounds.bounded(basis, -0.5)
    assert budget_bounds.deviation_in(object()) is None
    assert budget_bounds.deviation_in(type("S", (), {"basis": held})()) == 0.1


def test_the_bounds_clip_to_zero_and_one():
    assert budget_bounds.budget_bounds(0.05, 0.1) == (0.0, 0.15)
    assert budget_bounds.budget_bounds(0.95, 0.1) == (0.85, 1.0)
    assert budget_bounds.deviation_of(0.95, (0.85, 1.0)) == pytest.approx(0.1)
