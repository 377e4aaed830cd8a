"""Scenes: one view of the app (model, page, method, pattern, policy, sparsity, allocation) as plain data and
as a URL query string, plus the built-in scenes that make the project's points in one click.

A scene names only built-in models (``models.loading.BUILTINS``): a link must never make the server read a
folder or download a hub model that its author chose. Parsing a query validates every field and raises a
:class:`SceneError` naming the field, so a bad link says what is wrong instead of half-applying.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prune_explorer.models.layers import DEFAULT_KINDS
from prune_explorer.models.loading import BUILTINS, STORIES260K
from prune_explorer.models.smollm2 import NAME as SMOLLM2
from prune_explorer.pruning import allocation as alloc
from prune_explorer.pruning import outliers
from prune_explorer.pruning.budget_bounds import DEVIATION, check_deviation
from prune_explorer.pruning.methods import METHODS, supported_patterns
from prune_explorer.pruning.patterns import PATTERNS, parse_pattern
from prune_explorer.pruning.policies import POLICIES

# The app's pages, by the name a link gives them (the page's URL path, as in /train).
PAGES = ("prune", "layers", "learn", "compare", "speed", "allocation", "sensitivity", "train", "export")
# Query keys a scene reads and writes; any other key (utm_source, Streamlit's embed) is left alone.
KEYS = (
    "model",
    "page",
    "method",
    "pattern",
    "policy",
    "sparsity",
    "threshold",
    "kinds",
    "extras",
    "allocation",
    "owl_m",
    "owl_lam",
    "budget_dev",
)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SceneError(ValueError):
    """A scene field that cannot be used; ``field`` is its query key, the message says why."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


@dataclass(frozen=True)
class Scene:
    """One view of the app, validated on construction.

    Attributes:
        model: a built-in model name (``models.loading.BUILTINS``).
        page: one of ``PAGES``.
        method: a registered method name (``pruning.methods.METHODS``).
        pattern: one of ``pruning.patterns.PATTERNS`` that the method supports.
        policy: one of ``pruning.policies.POLICIES`` (it acts on magnitude + unstructured only, as in the
            sidebar, but is kept for any method so a link restores exactly what the sidebar showed).
        sparsity: percent, 0 to 100, as the sidebar slider; for N:M set to the fixed 100·(1 − N/M).
        threshold: the typed |w| threshold, only with the ``threshold`` policy (else 0.0).
        kinds: the layer kinds taking part, from ``DEFAULT_KINDS``; None: all the model has (the default).
        extras: whether embeddings and the LM head take part too.
        allocation: how the sparsity is shared among layers (``pruning.allocation.ALLOCATIONS``), with OWL's
            ``owl_m`` (positive) and ``owl_lam`` (0 to ``OWL_LAMBDA_MAX``), and the budget's largest
            deviation from the average ``budget_dev`` (0 to 1), each kept at its default otherwise.

    Raises:
        SceneError: any field out of range; the message names the field and the values allowed.
    """

    model: str = STORIES260K
    page: str = "prune"
    method: str = "magnitude"
    pattern: str = "unstructured"
    policy: str = "uniform"
    sparsity: int = 0
    threshold: float = 0.0
    kinds: tuple[str, ...] | None = None
    extras: bool = False
    allocation: str = "uniform"
    owl_m: float = outliers.OWL_M
    owl_lam: float = alloc.OWL_LAMBDA
    budget_dev: float = DEVIATION

    def __post_init__(self) -> None:
        _one_of("model", self.model, BUILTINS)
        _one_of("page", self.page, PAGES)
        _one_of("method", self.method, tuple(METHODS))
        _one_of("pattern", self.pattern, PATTERNS)
        offered = supported_patterns(self.method)
        if self.pattern not in offered:
            label = METHODS[self.method].label
            why = f"{label} cannot prune {self.pattern}; choose one of {', '.join(offered)}"
            raise SceneError("pattern", why)
        _one_of("policy", self.policy, POLICIES)
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, int):
            raise SceneError("sparsity", f"a whole percent is needed, got {self.sparsity!r}")
        if not 0 <= self.sparsity <= 100:
            raise SceneError("sparsity", f"must be between 0 and 100 (percent), got {self.sparsity}")
        fixed = parse_pattern(self.pattern).fixed_sparsity
        if fixed is not None:  # N:M decides the sparsity itself, as the sidebar's disabled slider shows
            object.__setattr__(self, "sparsity", round(100 * fixed))
        if not math.isfinite(self.threshold) or self.threshold < 0:
            raise SceneError("threshold", f"must be a finite |w| of 0 or more, got {self.threshold}")
        if self.threshold and self.policy != "threshold":
            raise SceneError("threshold", f"only applies with policy=threshold, not policy={self.policy}")
        if self.kinds is not None:
            if not self.kinds:
                raise SceneError("kinds", "at least one layer kind must take part")
            for kind in self.kinds:
                _one_of("kinds", kind, DEFAULT_KINDS, what="layer kind")
            if len(set(self.kinds)) != len(self.kinds):
                raise SceneError("kinds", f"a kind is named twice in {','.join(self.kinds)}")
        _one_of("allocation", self.allocation, alloc.ALLOCATIONS)
        if not (math.isfinite(self.owl_m) and self.owl_m > 0):
            raise SceneError("owl_m", f"OWL's M must be a positive number, got {self.owl_m}")
        if not 0.0 <= self.owl_lam <= alloc.OWL_LAMBDA_MAX:
            raise SceneError(
                "owl_lam", f"OWL's λ must be between 0 and {alloc.OWL_LAMBDA_MAX}, got {self.owl_lam}"
            )
        if self.allocation != "owl" and (self.owl_m, self.owl_lam) != (outliers.OWL_M, alloc.OWL_LAMBDA):
            raise SceneError(
                "owl_m" if self.owl_m != outliers.OWL_M else "owl_lam", "only applies with allocation=owl"
            )
        try:
            check_deviation(self.budget_dev)
        except ValueError as exc:
            raise SceneError("budget_dev", str(exc)) from None
        if self.allocation != "budget" and self.budget_dev != DEVIATION:
            raise SceneError("budget_dev", "only applies with allocation=budget")


def _one_of(field: str, value: object, allowed: tuple[str, ...], what: str | None = None) -> None:
    if value not in allowed:
        raise SceneError(field, f"unknown {what or field} {value!r}; choose one of {', '.join(allowed)}")


def scene_to_query(scene: Scene) -> dict[str, str]:
    """The query parameters of ``scene``: the six main fields always, the others only when not default.

    Returns:
        ``{key: value}`` in ``KEYS`` order; ``scene_from_query`` of it gives ``scene`` back.
    """
    query = {
        "model": scene.model,
        "page": scene.page,
        "method": scene.method,
        "pattern": scene.pattern,
        "policy": scene.policy,
        "sparsity": str(scene.sparsity),
    }
    if scene.policy == "threshold":
        query["threshold"] = repr(float(scene.threshold))  # repr: the shortest text that reads back exact
    if scene.kinds is not None:
        query["kinds"] = ",".join(scene.kinds)
    if scene.extras:
        query["extras"] = "1"
    if scene.allocation != "uniform":
        query["allocation"] = scene.allocation
    if scene.owl_m != outliers.OWL_M:
        query["owl_m"] = repr(float(scene.owl_m))
    if scene.owl_lam != alloc.OWL_LAMBDA:
        query["owl_lam"] = repr(float(scene.owl_lam))
    if scene.budget_dev != DEVIATION:
        query["budget_dev"] = repr(float(scene.budget_dev))
    return query


def has_scene(params: Mapping[str, str]) -> bool:
    """Whether a query names any scene field (a link without one leaves the app at its defaults)."""
    return any(key in params for key in KEYS)


def scene_from_query(params: Mapping[str, str]) -> Scene:
    """The scene a query describes; missing fields take ``Scene``'s defaults, unknown keys are ignored.

    Args:
        params: query parameters, one string per key (``st.query_params.to_dict()``).

    Raises:
        SceneError: the first field that cannot be used, named, with why and what is allowed.
    """
    fields: dict[str, object] = {
        key: params[key].strip()
        for key in ("model", "page", "method", "pattern", "policy", "allocation")
        if key in params
    }
    if "pattern" in fields:
        fields["pattern"] = str(fields["pattern"]).lower()
    if "sparsity" in params:
        text = params["sparsity"].strip().removesuffix("%")
        if not text.isdigit():
            raise SceneError(
                "sparsity", f"a whole percent from 0 to 100 is needed, got {params['sparsity']!r}"
            )
        fields["sparsity"] = int(text)
    for key in ("threshold", "owl_m", "owl_lam", "budget_dev"):
        if key in params:
            try:
                fields[key] = float(params[key])
            except ValueError:
                raise SceneError(key, f"a number is needed, got {params[key]!r}") from None
    if "kinds" in params:
        fields["kinds"] = tuple(k.strip() for k in params["kinds"].split(",") if k.strip())
    if "extras" in params:
        flag = params["extras"].strip().lower()
        if flag not in _TRUE + _FALSE:
            raise SceneError("extras", f"1 or 0 is needed, got {params['extras']!r}")
        fields["extras"] = flag in _TRUE
    return Scene(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BuiltinScene:
    """A scene with a name for its button and one line on what it shows."""

    name: str
    shows: str
    scene: Scene


BUILTIN_SCENES: tuple[BuiltinScene, ...] = (
    BuiltinScene(
        "Magnitude collapses at 50%",
        "SmolLM2 with its smallest half of every layer gone: perplexity blows up, the text falls apart.",
        Scene(model=SMOLLM2, page="prune", method="magnitude", sparsity=50),
    ),
    BuiltinScene(
        "Wanda holds at 50%",
        "The same 50% chosen by |w|·‖x‖ on calibration text: perplexity stays near the dense model's.",
        Scene(model=SMOLLM2, page="prune", method="wanda", sparsity=50),
    ),
    BuiltinScene(
        "Zeros in a dense matmul buy no time",
        "Half of SmolLM2's weights are zero, yet a dense matmul multiplies them all: measure, no speedup.",
        Scene(model=SMOLLM2, page="speed", method="magnitude", sparsity=50),
    ),
    BuiltinScene(
        "Whole neurons do",
        "Half of every MLP's neurons removed whole: the matrices shrink, and the measured time with them.",
        Scene(model=SMOLLM2, page="speed", method="magnitude", pattern="neurons", sparsity=50),
    ),
    BuiltinScene(
        "One global cut-off, uneven layers",
        "stories260K at 50% under one |w| threshold for all layers: layers with small weights lose more.",
        Scene(model=STORIES260K, page="layers", method="magnitude", policy="global", sparsity=50),
    ),
)
