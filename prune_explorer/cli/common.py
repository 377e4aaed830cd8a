"""What the command line's subcommands share: reading a user's text file, the model's held-out text."""

from __future__ import annotations

from prune_explorer.models.dense import DenseModel
from prune_explorer.texts import eval_text


def read_text(path: str) -> str:
    """A text file's contents (UTF-8)."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def eval_of(dense: DenseModel) -> str:
    """The model's built-in held-out evaluation text."""
    return eval_text(dense.info.get("text_set", "stories"))
