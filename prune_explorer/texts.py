"""The text that ships with the project: held-out evaluation text and separate calibration text."""

from __future__ import annotations

from pathlib import Path

TEXT_DIR = Path(__file__).parent / "assets" / "text"
# Which text suits which model: the TinyStories model only knows a child's vocabulary.
TEXT_SETS = ("stories", "shakespeare")


def _read(name: str) -> str:
    return (TEXT_DIR / name).read_text(encoding="utf-8")


def eval_text(text_set: str = "stories") -> str:
    """Held-out evaluation text (never used for calibration)."""
    if text_set not in TEXT_SETS:
        raise ValueError(f"unknown text set {text_set!r}; choose one of {TEXT_SETS}")
    return _read(f"{text_set}_eval.txt")


def calibration_text(text_set: str = "stories") -> str:
    """Calibration text, disjoint from :func:`eval_text` of the same set."""
    if text_set not in TEXT_SETS:
        raise ValueError(f"unknown text set {text_set!r}; choose one of {TEXT_SETS}")
    return _read(f"{text_set}_calibration.txt")
