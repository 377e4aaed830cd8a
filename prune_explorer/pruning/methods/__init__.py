"""The pruning methods, one module each, and the registry ``prune_masks`` looks them up in.

To add a method: write ``methods/<name>.py`` exposing ``METHOD = Method(...)`` (see
:mod:`prune_explorer.pruning.method`), and add it to the tuple below.
"""

from __future__ import annotations

from prune_explorer.pruning.method import Method
from prune_explorer.pruning.methods import magnitude, random, sparsegpt, wanda
from prune_explorer.pruning.patterns import PATTERNS, parse_pattern

METHODS: dict[str, Method] = {
    module.METHOD.name: module.METHOD for module in (magnitude, random, wanda, sparsegpt)
}


def get_method(name: str) -> Method:
    """The registered method called ``name``.

    Raises:
        ValueError: no such method; the message lists the known ones.
    """
    method = METHODS.get(name)
    if method is None:
        raise ValueError(f"unknown method {name!r}; choose one of {tuple(METHODS)}")
    return method


def calibrated_methods() -> tuple[str, ...]:
    """Names of the methods that need calibration text."""
    return tuple(name for name, method in METHODS.items() if method.calibrated)


def supported_patterns(method: str) -> tuple[str, ...]:
    """The patterns ``method`` can prune, as the registry declares them (``Method.patterns``), in the order
    of ``patterns.PATTERNS``."""
    return tuple(p for p in PATTERNS if parse_pattern(p).kind in get_method(method).patterns)
