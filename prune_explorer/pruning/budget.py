"""The budget allocation (``allocation.budget``): per-layer sparsities that meet an average target with the
least predicted damage.

Input: per-layer damage curves, ``{layer: [(sparsity, damage), ...]}``, measured by a sensitivity run (one
layer pruned at a time; damage such as KL(dense‖pruned) or a perplexity increase, one unit for all layers).
Predicted total damage is the sum of the layers' damages (layers taken as independent, as sensitivity
analysis assumes). Constraint: Σ n_l s_l = target · Σ n_l, n_l the layer's weights.

Solver: a Lagrangian sweep, exact for convex curves (otherwise for their convex hulls). Each curve is
replaced by its lower convex hull (a point above it is never worth stopping at); every hull segment costs
Δdamage / (Δs · n_l) per pruned weight. Segments are taken cheapest first (within a layer they come in order,
because the hull is convex) until the next price level would overshoot the target; that level (every segment
tied at it together) is then taken in one common fraction, so the average is exact. Layers stop on their
curve's grid points except those at the last price level, which stop between two. Equal curves on
equal-sized layers tie at every price, so the result is uniform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Curve = Sequence[tuple[float, float]]
_TIE = 1e-9


def _points(name: str, curve: Curve, origin: bool) -> list[tuple[float, float]]:
    """The curve sorted by sparsity, checked, one point per sparsity (the lowest damage), (0, 0) added when
    ``origin`` and it has no point at 0."""
    best: dict[float, float] = {}
    for point in curve:
        s, d = float(point[0]), float(point[1])
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"damage curve of {name}: sparsity {s} is outside [0, 1]")
        if not math.isfinite(d):
            raise ValueError(f"damage curve of {name}: damage at sparsity {s} is {d}")
        best[s] = min(d, best.get(s, d))
    if origin and 0.0 not in best:
        best[0.0] = 0.0
    if not best:
        raise ValueError(f"damage curve of {name} has no points")
    return sorted(best.items())


def _bounded(
    points: list[tuple[float, float]], bounds: tuple[float, float] | None
) -> list[tuple[float, float]]:
    """The points within ``bounds``, with the curve's (interpolated) values at the bounds it spans."""
    if bounds is None:
        return points
    lo, hi = bounds
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"bounds must satisfy 0 <= lowest <= highest <= 1, got {bounds}")
    inside = [p for p in points if lo <= p[0] <= hi]
    ends = [(x, interpolate(points, x, origin=False)) for x in (lo, hi) if points[0][0] <= x <= points[-1][0]]
    kept = sorted(dict(inside + ends).items())
    if not kept:
        raise ValueError(
            f"a damage curve from {points[0][0]} to {points[-1][0]} has no point within {bounds}"
        )
    return kept


def lower_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Lower convex hull of points sorted by sparsity (monotone chain): the curve the solver follows."""
    hull: list[tuple[float, float]] = []
    for p in points:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0:  # hull[-1] on or above the chord
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def interpolate(curve: Curve, sparsity: float, origin: bool = True) -> float:
    """A curve's damage at ``sparsity``, linear between its points (constant beyond its ends)."""
    points = _points("curve", curve, origin)
    if sparsity <= points[0][0]:
        return points[0][1]
    for (x1, y1), (x2, y2) in zip(points, points[1:]):
        if sparsity <= x2:
            return y1 + (y2 - y1) * (sparsity - x1) / (x2 - x1)
    return points[-1][1]


def predicted_damage(
    curves: Mapping[str, Curve], allocation: Mapping[str, float], origin: bool = True
) -> float:
    """Σ over layers of each curve's damage at its allocated sparsity (:func:`interpolate`)."""
    return sum(interpolate(curves[name], s, origin) for name, s in allocation.items())


def budget(
    curves: Mapping[str, Curve],
    target: float,
    sizes: Mapping[str, int] | None = None,
    *,
    origin: bool = True,
    bounds: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Per-layer sparsities meeting the parameter-weighted average ``target`` with the least total damage
    predicted by the (convex-hulled, linearly interpolated) curves.

    Args:
        curves: {layer name: [(sparsity, damage), ...]}, any order, any grid per layer.
        target: average sparsity, in [0, 1], weighted by ``sizes``.
        sizes: {layer name: weights}; None weighs every layer the same.
        origin: damage is measured against the dense model, so a curve without a point at sparsity 0 gets
            (0, 0); False: each curve starts at its lowest measured sparsity.
        bounds: (lowest, highest) sparsity any layer may get, e.g. target ± 0.2: curves measured one layer
            at a time miss how damage adds up, and the unbounded optimum tends to push layers to the ends of
            their curves. Curves are cut there (interpolated at the bounds).
    Returns:
        {layer name: sparsity} for every layer of ``curves``; the average equals ``target`` (to rounding).
    Raises:
        ValueError: no curves, a point outside [0, 1] or a damage not finite, a size missing or not positive,
            or a target the curves cannot reach (below where they start, above where they end).
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"the target average sparsity must be between 0 and 1, got {target}")
    if not curves:
        raise ValueError("no damage curves to allocate over")
    weights = {name: 1 for name in curves} if sizes is None else dict(sizes)
    for name in curves:
        if weights.get(name, 0) <= 0:
            raise ValueError(f"layer {name!r} needs a positive size to be weighted")
    hulls = {
        name: lower_hull(_bounded(_points(name, curve, origin), bounds)) for name, curve in curves.items()
    }
    total = sum(weights[name] for name in curves)
    at = {name: hull[0][0] for name, hull in hulls.items()}
    need = target * total - sum(weights[name] * s for name, s in at.items())
    if need < -_TIE * total:
        low = sum(weights[name] * s for name, s in at.items()) / total
        raise ValueError(f"the curves start at an average sparsity of {low:.4f}, above the target {target}")
    # (price per pruned weight, layer, from, to) for every hull segment, cheapest first.
    segments = sorted(
        ((y2 - y1) / ((x2 - x1) * weights[name]), name, x1, x2)
        for name, hull in hulls.items()
        for (x1, y1), (x2, y2) in zip(hull, hull[1:])
    )
    i = 0
    while need > 0 and i < len(segments):
        price = segments[i][0]
        span: dict[str, tuple[float, float]] = {}  # one price level; a layer's tied segments merge
        while i < len(segments) and segments[i][0] <= price + _TIE * abs(price):
            _, name, x1, x2 = segments[i]
            lo, hi = span.get(name, (x1, x2))
            span[name] = (min(lo, x1), max(hi, x2))
            i += 1
        capacity = sum(weights[name] * (hi - lo) for name, (lo, hi) in span.items())
        share = min(1.0, need / capacity)
        for name, (lo, hi) in span.items():
            at[name] = hi if share == 1.0 else lo + share * (hi - lo)
        need -= share * capacity
    if need > _TIE * total:
        top = sum(weights[name] * hull[-1][0] for name, hull in hulls.items()) / total
        raise ValueError(
            f"the curves reach an average sparsity of {top:.4f} at most, below the target {target}"
        )
    return at
