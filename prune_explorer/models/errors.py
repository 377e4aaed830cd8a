"""The one error a model loader raises, and how a library error becomes one line for a user."""

from __future__ import annotations


class ModelLoadError(Exception):
    """A model could not be loaded; the message says why and what to try."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), or its type when it has none."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
