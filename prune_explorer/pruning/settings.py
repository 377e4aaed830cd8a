"""A user's whole pruning choice, and the one place that decides how it is applied.

Magnitude + unstructured runs on the *slider path*: per-layer counts over the shared precomputed rankings,
with policies (uniform, global, threshold) and per-layer overrides, updated in place on every move. Every
other choice runs a method from the registry (``prune_masks``) and applies its masks (and new weights). The
app's sidebar and the CLI both call :func:`apply_settings`, so they cannot disagree on which path runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from prune_explorer.models.dense import DenseModel
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch, CalibrationSpec
from prune_explorer.pruning.methods import get_method
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.result import PruneResult
from prune_explorer.pruning.target import Target


def uses_slider_path(method: str, pattern: str) -> bool:
    """Whether ``method`` + ``pattern`` runs on the slider path (magnitude, unstructured) or as a method."""
    return method == "magnitude" and parse_pattern(pattern).kind == "unstructured"


@dataclass(frozen=True)
class PruneSettings(MagnitudeSettings):
    """Magnitude settings plus the method, the pattern and (for calibrated methods) the calibration batch.

    For anything but the slider path, ``policy`` is "uniform" and ``overrides`` empty (they belong to the
    slider path, see :func:`normalised`); for N:M ``sparsity`` is the fixed 1 − N/M.
    ``sequential``: None for the method's own default.
    """

    method: str = "magnitude"
    pattern: str = "unstructured"
    calibration: CalibrationSpec | None = None
    seed: int = 0
    sequential: bool | None = None

    @property
    def slider_path(self) -> bool:
        return uses_slider_path(self.method, self.pattern)

    @property
    def method_key(self) -> tuple:
        key = self.calibration.key if self.calibration else None
        return (self.method, self.pattern, key, self.seed, self.sequential)

    def normalised(self) -> PruneSettings:
        """The same choice with the fields its path ignores reset (equal choices compare equal)."""
        if self.slider_path:
            return replace(self, sequential=None)
        return replace(self, policy="uniform", threshold=0.0, overrides={})


def prune_settings(
    settings: MagnitudeSettings,
    method: str,
    pattern: str,
    batch: CalibrationBatch | None = None,
    sequential: bool | None = None,
) -> PruneSettings:
    """Combine magnitude settings with a method choice (ignored fields normalised away)."""
    calib = CalibrationSpec.of(batch) if get_method(method).calibrated and batch is not None else None
    fields = {**vars(settings), "method": method, "pattern": pattern, "calibration": calib}
    fields["sequential"] = sequential
    return PruneSettings(**fields).normalised()


def apply_settings(
    state: Target,
    settings: MagnitudeSettings,
    calibration: CalibrationBatch | str | None = None,
    progress: Progress = None,
) -> dict | None:
    """Bring ``state`` to ``settings`` on the path they call for; on any error nothing is written.

    Plain :class:`MagnitudeSettings` (or magnitude + unstructured) take the slider path and return None.
    Anything else runs its method on the dense model; layers the method does not name go back to dense, and
    the method's ``PruneResult.info`` is returned.

    Raises:
        ValueError: a setting out of range, a pattern the method does not support, a bad calibration text.
    """
    method = getattr(settings, "method", "magnitude")
    pattern = getattr(settings, "pattern", "unstructured")
    if uses_slider_path(method, pattern):
        apply_magnitude(state, settings)
        return None
    return apply_result(state, method_result(state.dense, settings, calibration, progress))


def method_result(
    dense: DenseModel,
    settings: MagnitudeSettings,
    calibration: CalibrationBatch | str | None = None,
    progress: Progress = None,
) -> PruneResult:
    """What the method of ``settings`` decides on the dense model; nothing is written (so a slow method can
    run apart from the state it will be applied to, e.g. in a background thread).

    Raises:
        ValueError: as :func:`apply_settings`.
    """
    method = getattr(settings, "method", "magnitude")
    return prune_masks(
        dense,
        method,
        getattr(settings, "pattern", "unstructured"),
        settings.sparsity,
        kinds=settings.kinds,
        calibration=calibration if get_method(method).calibrated else None,
        seed=getattr(settings, "seed", 0),
        sequential=getattr(settings, "sequential", None),
        progress=progress,
    )


def apply_result(state: Target, result: PruneResult) -> dict:
    """Write a method's decision into ``state``; layers it does not name go back to dense. Returns info."""
    state.reset([layer.name for layer in state.dense.layers if layer.name not in result.masks])
    result.apply(state)
    return result.info
