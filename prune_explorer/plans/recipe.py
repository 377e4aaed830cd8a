"""A recipe: the whole pruning plan in one YAML file, validated by a pydantic schema.

A recipe names the model (its id and the sha256 of its dense weights, so it is never applied to another
model), the method, the pattern, the allocation and its per-layer sparsities by layer name, the layer kinds,
the calibration protocol (text source and sha256, sequences, tokens each, the token batch's own hash) and the
project version. :func:`recipe_from_state` writes down what a session applied; ``plans.apply`` brings a
model back to it, mask for mask. Every validation error names the field and says why in plain words.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prune_explorer import texts
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.digest import weights_digest
from prune_explorer.models.layers import ALL_KINDS, select
from prune_explorer.plans.atomic import atomic_file
from prune_explorer.pruning import allocation
from prune_explorer.pruning.calibration import CalibrationBatch, calibration_batch, resolve_calibration
from prune_explorer.pruning.methods import METHODS, get_method
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import POLICIES, MagnitudeSettings
from prune_explorer.pruning.settings import uses_slider_path
from prune_explorer.state import PruningState

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


def _where(loc: tuple) -> str:
    """A field's path as a reader writes it: ``allocation.layers['model.layers.0.mlp.up_proj']``."""
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif "." in item:
            out += f"[{item!r}]"
        else:
            out += f".{item}" if out else item
    return out


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a recipe field (check its spelling)"
        elif error["type"] == "missing":
            message = "is missing (it is required)"
        where = _where(error["loc"])
        inner = re.match(r"(\w+): ", message)  # a model check naming its own field: "bounds: ..."
        if where and inner:
            where, message = f"{where}.{inner[1]}", message[inner.end() :]
        lines.append(f"{where}: {message}" if where else message)
    return "the recipe is not valid: " + "; ".join(lines)


def parse_recipe(text: str) -> Recipe:
    """Read a recipe from YAML text (``yaml.safe_load``) and validate it.

    Raises:
        RecipeError: not YAML, not a mapping, or a field missing, unknown or out of range (the message names
            every such field and the reason).
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"the recipe is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"the recipe must be a YAML mapping of fields, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_explain(exc)) from None


def load_recipe(path: Path | str) -> Recipe:
    """Read and validate the recipe file at ``path``.

    Raises:
        RecipeError: the file cannot be read, or as :func:`parse_recipe`.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read the recipe {path}: {exc}") from exc
    return parse_recipe(text)


def recipe_yaml(recipe: Recipe) -> str:
    """The recipe as YAML text (fields in schema order; floats written so they read back exactly)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def save_recipe(recipe: Recipe, path: Path | str) -> Path:
    """Write the recipe to a new file at ``path`` (all or nothing). Raises ``atomic.ExportError``."""
    with atomic_file(path) as tmp:
        tmp.write_text(recipe_yaml(recipe), encoding="utf-8")
    return Path(path)


def calibration_record(dense: DenseModel, batch: CalibrationBatch, text: str) -> Calibration:
    """The protocol of ``batch`` cut from ``text``; checks the batch really is that text's first slices."""
    again = calibration_batch(dense.tokenizer, text, batch.seq_len, batch.n_sequences, source=batch.source)
    if again.key != batch.key:
        raise ValueError(
            "the calibration batch does not come from the text given (or from the built-in text): pass the "
            "text it was cut from"
        )
    builtin = next((s for s in texts.TEXT_SETS if text == texts.calibration_text(s)), None)
    return Calibration(
        source=batch.source,
        builtin=builtin,
        text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        n_sequences=batch.n_sequences,
        seq_len=batch.seq_len,
        ids_sha1=batch.key[1],
    )


def _calibration(dense: DenseModel, settings: MagnitudeSettings, text: str | None) -> Calibration:
    spec = getattr(settings, "calibration", None)
    batch = resolve_calibration(dense, text) if spec is None else None  # the CLI's path: a text, or None
    text = text if text is not None else texts.calibration_text(dense.info.get("text_set", "stories"))
    if spec is not None:  # the app's path: the batch applied is known by its key; rebuilt from the text
        batch = calibration_batch(dense.tokenizer, text, spec.seq_len, spec.n_sequences, source=spec.source)
        if batch.key != spec.key:
            raise ValueError("the calibration batch applied is not cut from the built-in text: pass its text")
    return calibration_record(dense, batch, text)


def recipe_from_state(
    state: PruningState,
    settings: MagnitudeSettings,
    calibration_text: str | None = None,
    model_id: str | None = None,
    layer_sparsity: Mapping[str, float] | None = None,
    allocation: str | None = None,
    bounds: tuple[float, float] | None = None,
) -> Recipe:
    """The recipe of what ``settings`` applied to ``state`` (the sidebar's ``PruneSettings`` or the CLI's).

    On the slider path (magnitude, unstructured) the per-layer sparsities are read from the state (every
    selected or pruned layer: k / numel, so the counts come back exactly); for a method they are the
    sparsities asked (``layer_sparsity`` where given, else the one sparsity; N:M: 1 − N/M).

    Args:
        calibration_text: the text the calibration batch was cut from (None: the model's built-in text).
        model_id: the name to record (default: the dense model's name).
        layer_sparsity: a method's per-layer sparsities, as given to ``prune_masks`` (default: the
            settings' ``layer_sparsity`` if they have one).
        allocation: its name, e.g. "owl" or "budget" (default: "uniform", or "custom" for per-layer ones).
        bounds: the budget's (lowest, highest) per-layer sparsity at this sparsity (default: the settings'
            ``budget_bounds``); recorded for the budget only.
    Raises:
        ValueError: the calibration batch does not come from the text given.
    """
    dense = state.dense
    method = getattr(settings, "method", "magnitude")
    pattern = getattr(settings, "pattern", "unstructured")
    selected = select(dense.layers, settings.kinds)
    threshold = None
    if uses_slider_path(method, pattern):
        chosen = {layer.name for layer in selected}
        layers = {
            layer.name: state.pruned_count(layer.name) / layer.numel
            for layer in dense.layers
            if layer.name in chosen or state.is_pruned(layer.name)
        }
        allocated = getattr(settings, "allocation", "uniform")  # OWL, budget: on the uniform slider
        name = allocated if settings.policy == "uniform" and allocated != "uniform" else settings.policy
        threshold = settings.threshold if settings.policy == "threshold" else None
    else:
        fixed = parse_pattern(pattern).fixed_sparsity
        asked = fixed if fixed is not None else settings.sparsity
        per_layer = dict(layer_sparsity or getattr(settings, "layer_sparsity", None) or {})
        layers = {layer.name: float(per_layer.get(layer.name, asked)) for layer in selected}
        name = allocation or getattr(settings, "allocation", None) or ("custom" if per_layer else "uniform")
    calibrated = get_method(method).calibrated
    bounds = (bounds or getattr(settings, "budget_bounds", None)) if name == "budget" else None
    return Recipe(
        project_version=project_version(),
        model=ModelRef(id=model_id or dense.name, sha256=weights_digest(dense)),
        method=method,
        pattern=pattern,
        sequential=getattr(settings, "sequential", None),
        seed=getattr(settings, "seed", 0),
        layer_kinds=list(settings.kinds),
        allocation=Allocation(
            name=name, sparsity=settings.sparsity, threshold=threshold, bounds=bounds, layers=layers
        ),
        calibration=_calibration(dense, settings, calibration_text) if calibrated else None,
    )
