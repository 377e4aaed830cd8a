"""A recipe as YAML: read and validated (every error names the field and says why in plain words), or
written (all or nothing). The schema is :mod:`.recipe`.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from prune_explorer.plans.atomic import atomic_file
from prune_explorer.plans.recipe import Recipe, RecipeError


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
