"""A recipe: the whole pruning plan in one YAML file; here its pydantic schema.

A recipe names the model (its id and the sha256 of its dense weights, so it is never applied to another
model), the method, the pattern, the allocation and its per-layer sparsities by layer name, the layer kinds,
the calibration protocol (text source and sha256, sequences, tokens each, the token batch's own hash) and the
project version. :mod:`.recipe_io` reads (validates) and writes its YAML; :mod:`.recipe_capture` writes down
what a session applied; ``plans.apply`` brings a model back to it, mask for mask.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prune_explorer.models.layers import ALL_KINDS
from prune_explorer.pruning import allocation
from prune_explorer.pruning.methods import METHODS, get_method
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import POLICIES
from prune_explorer.pruning.settings import uses_slider_path

FORMAT = "prune-explorer-recipe/1"
# Allocation names: the slider path's policies, the per-layer allocations, and "custom" for hand-set layers.
ALLOCATIONS = tuple(dict.fromkeys((*POLICIES, *allocation.ALLOCATIONS, "custom")))

# Finite numbers only: NaN passes no range check in words a reader understands, and inf is no threshold.
Sparsity = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
SEED_MAX = 2**63 - 1  # torch's generator takes seed + layer index; larger seeds overflow it
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class RecipeError(ValueError):
    """A recipe that cannot be read, is not valid, or does not fit the model it is applied to."""


def project_version() -> str:
    """The installed project's version, else the one in the source tree's pyproject.toml."""
    try:
        return importlib.metadata.version("prune-explorer")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Strict):
    """Which model the plan is for: what the user loaded (``id``) and the sha256 of its dense weights."""

    id: str = Field(min_length=1)
    sha256: Sha256


class Calibration(_Strict):
    """The calibration protocol: which text (built-in set, or a user text known by its sha256), how it
    was cut (``n_sequences`` consecutive slices of ``seq_len`` tokens, no randomness) and the batch's sha1."""

    source: str
    builtin: Literal["stories", "shakespeare"] | None = None
    text_sha256: Sha256
    n_sequences: int = Field(ge=1)
    seq_len: int = Field(ge=2)
    ids_sha1: str = Field(pattern=r"^[0-9a-f]{40}$")


class Allocation(_Strict):
    """How the sparsity is spread: its name, the average asked, and the sparsity of every layer by name.

    ``bounds``: the budget's (lowest, highest) per-layer sparsity given to its solver (the app's average ±
    the largest deviation chosen); the layers' sparsities reproduce the masks, the bounds how they were found.
    """

    name: str
    sparsity: Sparsity
    threshold: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    bounds: tuple[Sparsity, Sparsity] | None = None
    layers: dict[str, Sparsity] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {value!r}; choose one of {', '.join(ALLOCATIONS)}")
        return value

    @model_validator(mode="after")
    def _bounded(self) -> Allocation:
        if self.bounds is None:
            return self
        lo, hi = self.bounds
        if self.name != "budget":
            raise ValueError(f"bounds: only the budget allocation has bounds, not {self.name}")
        if not lo <= self.sparsity <= hi:
            raise ValueError(f"bounds: the average sparsity {self.sparsity} must lie within [{lo}, {hi}]")
        return self


class Recipe(_Strict):
    """The whole plan (see the module docstring); ``seed`` seeds the random method's draws."""

    format: Literal["prune-explorer-recipe/1"] = FORMAT
    project_version: str
    model: ModelRef
    method: str
    pattern: str = "unstructured"
    sequential: bool | None = None
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    layer_kinds: list[str] = Field(min_length=1)
    allocation: Allocation
    calibration: Calibration | None = None

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}; choose one of {', '.join(METHODS)}")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        parse_pattern(value)  # its ValueError says what a pattern may be
        return value

    @field_validator("layer_kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        unknown = [kind for kind in value if kind not in ALL_KINDS]
        if unknown:
            raise ValueError(f"unknown layer kinds {unknown}; known kinds are {', '.join(ALL_KINDS)}")
        return value

    @model_validator(mode="after")
    def _fits(self) -> Recipe:
        method = get_method(self.method)
        kind = parse_pattern(self.pattern).kind
        if kind not in method.patterns:
            raise ValueError(f"pattern: {method.label} cannot prune the {self.pattern} pattern")
        if method.calibrated and self.calibration is None:
            raise ValueError(f"calibration: {method.label} needs calibration data and the recipe gives none")
        return self

    @property
    def slider_path(self) -> bool:
        return uses_slider_path(self.method, self.pattern)
