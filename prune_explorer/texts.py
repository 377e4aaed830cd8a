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


def training_text(text_set: str = "shakespeare") -> str:
    """Training text for recovery fine-tuning, disjoint from :func:`eval_text` and :func:`calibration_text`.

    Only the Shakespeare set ships one; the stories model trains on text sampled from itself
    (``prune_explorer.training.data``), since no TinyStories text ships with the project.

    Raises:
        ValueError: an unknown text set, or one without a training text.
    """
    if text_set not in TEXT_SETS:
        raise ValueError(f"unknown text set {text_set!r}; choose one of {TEXT_SETS}")
    if text_set != "shakespeare":
        raise ValueError(
            f"the {text_set} text set has no built-in training text; train on text sampled from the dense "
            "model, or give your own text"
        )
    return _read("shakespeare_train.txt")
