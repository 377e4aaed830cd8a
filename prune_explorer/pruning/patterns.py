"""Sparsity patterns: which weights may go together (any weight, N of every M inputs, whole units)."""

from __future__ import annotations

from dataclasses import dataclass

from prune_explorer.pruning.masks import parse_n_m

PATTERNS = ("unstructured", "2:4", "4:8", "neurons", "heads")
# What a method declares it supports (``Method.patterns``): the pattern kinds.
PATTERN_KINDS = ("unstructured", "n:m", "neurons", "heads")


@dataclass(frozen=True)
class Pattern:
    """A parsed sparsity pattern: ``kind`` is "unstructured", "n:m", "neurons" or "heads"."""

    kind: str
    n: int = 0
    m: int = 0

    @property
    def fixed_sparsity(self) -> float | None:
        """1 − N/M for N:M (the sparsity argument is then ignored), else None."""
        return 1.0 - self.n / self.m if self.kind == "n:m" else None

    @property
    def structured(self) -> bool:
        return self.kind in ("neurons", "heads")


def parse_pattern(pattern: str) -> Pattern:
    """Read "unstructured", "neurons", "heads" or an N:M such as "2:4" (N kept per M).

    Raises:
        ValueError: an unknown pattern, N < 1 or N >= M.
    """
    text = pattern.strip().lower()
    if text in ("unstructured", "neurons", "heads"):
        return Pattern(text)
    if ":" in text:
        n, m = parse_n_m(text)
        return Pattern("n:m", n, m)
    raise ValueError(
        f"unknown pattern {pattern!r}; choose unstructured, N:M (e.g. 2:4, 4:8), neurons or heads"
    )
