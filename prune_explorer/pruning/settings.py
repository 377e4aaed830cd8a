"""A user's whole pruning choice, and the one place that decides how it is applied.

Magnitude + unstructured runs on the *slider path*: per-layer counts over the shared precomputed rankings,
with policies (uniform, global, threshold) and per-layer overrides, updated in place on every move. Every
other choice runs a method from the registry (``prune_masks``) and applies its masks (and new weights). The
app's sidebar and the CLI both call :func:`apply_settings`, so they cannot disagree on which path runs.

An *allocation* (:mod:`.allocation`: uniform, OWL, the budget solver) shares the one sparsity among the
selected layers; its :class:`~.allocation.Basis` (OWL's ratios, the budget's curves) is found once
(:func:`with_basis`), so each move computes ``layer_sparsity`` by arithmetic and, on the slider path, turns it
into per-layer counts over the precomputed rankings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.progress import Progress
from prune_explorer.pruning import allocation as alloc
from prune_explorer.pruning import outliers
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
    ``allocation``: how the sparsity is shared among the selected layers (``allocation.ALLOCATIONS``; see
    :attr:`allocation_applies`), with OWL's M and λ, the budget's optional per-layer ``budget_bounds``, and
    the ``basis`` found for it (:func:`with_basis`); :attr:`layer_sparsity` is the result.
    """

    method: str = "magnitude"
    pattern: str = "unstructured"
    calibration: CalibrationSpec | None = None
    seed: int = 0
    sequential: bool | None = None
    allocation: str = "uniform"
    owl_m: float = outliers.OWL_M
    owl_lam: float = alloc.OWL_LAMBDA
    budget_bounds: tuple[float, float] | None = None
    basis: alloc.Basis | None = field(default=None, repr=False)

    @property
    def slider_path(self) -> bool:
        return uses_slider_path(self.method, self.pattern)

    @property
    def allocation_applies(self) -> bool:
        """Whether the sparsity is shared by the allocation: the slider path's same-sparsity policy (the
        global and typed thresholds decide per layer themselves), or any method's pattern but N:M (fixed)."""
        if self.slider_path:
            return self.policy == "uniform"
        return parse_pattern(self.pattern).kind != "n:m"

    @cached_property
    def layer_sparsity(self) -> dict[str, float] | None:
        """{layer name: share} of the allocation at ``sparsity`` (parameter-weighted average = ``sparsity``);
        None for the uniform allocation, or before :func:`with_basis` found the basis."""
        if self.allocation == "uniform" or self.basis is None or not self.allocation_applies:
            return None
        return self.basis.shares(self.sparsity, lam=self.owl_lam, bounds=self.budget_bounds)

    @property
    def allocation_key(self) -> tuple:
        """What the allocation adds to a cache key of these settings."""
        if self.allocation == "uniform":
            return ()
        return (self.allocation, self.owl_m, self.owl_lam, self.budget_bounds, self.basis)

    def check_allocation(self) -> None:
        """Raise ValueError with a user-facing message for an allocation setting out of range."""
        if self.allocation not in alloc.ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}; choose one of {alloc.ALLOCATIONS}")
        if not self.owl_m > 0:
            raise ValueError(f"OWL's M must be positive, got {self.owl_m}")
        if not 0.0 <= self.owl_lam <= alloc.OWL_LAMBDA_MAX:
            raise ValueError(
                f"OWL's λ must be between 0 and {alloc.OWL_LAMBDA_MAX} (sparsities span target ± λ), "
                f"got {self.owl_lam}"
            )

    @property
    def method_key(self) -> tuple:
        key = self.calibration.key if self.calibration else None
        return (self.method, self.pattern, key, self.seed, self.sequential)

    def normalised(self) -> PruneSettings:
        """The same choice with the fields its path ignores reset (equal choices compare equal)."""
        if self.allocation != "uniform" and not self.allocation_applies:
            return replace(self, allocation="uniform").normalised()
        fields: dict = {}
        if self.allocation != "owl":
            fields.update(owl_m=outliers.OWL_M, owl_lam=alloc.OWL_LAMBDA)
        if self.allocation != "budget":
            fields["budget_bounds"] = None
        if self.allocation == "uniform":
            fields["basis"] = None
        if self.slider_path:
            return replace(self, sequential=None, **fields)
        return replace(self, policy="uniform", threshold=0.0, overrides={}, **fields)


def prune_settings(
    settings: MagnitudeSettings,
    method: str,
    pattern: str,
    batch: CalibrationBatch | None = None,
    sequential: bool | None = None,
    allocation: str = "uniform",
    owl_m: float = outliers.OWL_M,
    owl_lam: float = alloc.OWL_LAMBDA,
    basis: alloc.Basis | None = None,
) -> PruneSettings:
    """Combine magnitude settings with a method and allocation choice (ignored fields normalised away).

    The calibration batch is recorded for a calibrated method and for OWL (whose ratios read activations).
    """
    fields = {k: v for k, v in vars(settings).items() if k in MagnitudeSettings.__dataclass_fields__}
    fields.update(method=method, pattern=pattern, sequential=sequential)
    fields.update(allocation=allocation, owl_m=float(owl_m), owl_lam=float(owl_lam), basis=basis)
    chosen = PruneSettings(**fields).normalised()
    wanted = get_method(method).calibrated or chosen.allocation == "owl"
    return replace(chosen, calibration=CalibrationSpec.of(batch) if wanted and batch is not None else None)


def find_basis(
    dense: DenseModel,
    settings: PruneSettings,
    calibration: CalibrationBatch | str | None = None,
    curves: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    progress: Progress = None,
) -> alloc.Basis | None:
    """The allocation's basis over the settings' selected layers (None for uniform): OWL's block ratios on
    ``calibration`` (computed once per model, layers, calibration and M), or the budget's damage ``curves``
    by layer name (a sensitivity run's: ``measure.sensitivity.Sensitivity.curves``).

    Raises:
        ValueError: an allocation setting out of range, the budget without curves or with a layer lacking
            one, an embedding among OWL's layers, a calibration text too short.
    """
    settings.check_allocation()
    layers = select(dense.layers, settings.kinds)
    if settings.allocation == "owl":
        return alloc.owl_basis(dense, layers, calibration, settings.owl_m, progress)
    if settings.allocation == "budget":
        if not curves:
            raise ValueError(
                "the budget allocation needs per-layer damage curves: measure them on the Sensitivity page "
                f"(layer mode, {get_method(settings.method).label})"
            )
        return alloc.budget_basis(layers, curves)
    return None


def with_basis(
    dense: DenseModel,
    settings: PruneSettings,
    calibration: CalibrationBatch | str | None = None,
    curves: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    progress: Progress = None,
) -> PruneSettings:
    """``settings`` with the basis of their allocation (:func:`find_basis`), kept when it already covers
    the selected layers.

    Raises:
        ValueError: as :func:`find_basis`.
    """
    names = tuple(layer.name for layer in select(dense.layers, settings.kinds))
    basis = settings.basis
    if settings.allocation == "uniform" or not settings.allocation_applies:
        return settings
    if basis is not None and basis.name == settings.allocation and basis.layers == names:
        settings.check_allocation()
        return settings
    return replace(settings, basis=find_basis(dense, settings, calibration, curves, progress))


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
    if isinstance(settings, PruneSettings):
        settings = with_basis(state.dense, settings, calibration, progress=progress)
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
    if isinstance(settings, PruneSettings):
        settings = with_basis(dense, settings, calibration, progress=progress)
    return prune_masks(
        dense,
        method,
        getattr(settings, "pattern", "unstructured"),
        settings.sparsity,
        kinds=settings.kinds,
        calibration=calibration if get_method(method).calibrated else None,
        seed=getattr(settings, "seed", 0),
        sequential=getattr(settings, "sequential", None),
        layer_sparsity=getattr(settings, "layer_sparsity", None),
        progress=progress,
    )


def apply_result(state: Target, result: PruneResult) -> dict:
    """Write a method's decision into ``state``; layers it does not name go back to dense. Returns info."""
    state.reset([layer.name for layer in state.dense.layers if layer.name not in result.masks])
    result.apply(state)
    return result.info
