"""The budget's damage curves: the Sensitivity page's layer-mode result for a method and layer kinds, found
on disk by any session and then shared by all (``pruning.allocation.budget_basis`` solves over them)."""

from __future__ import annotations

from prune_explorer.measure import sensitivity_cache
from prune_explorer.measure.sensitivity import cached_sensitivity
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS, select
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.methods import get_method
from ui import results

MEASURED = ("magnitude", "wanda")  # the methods the Sensitivity page measures curves for


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
