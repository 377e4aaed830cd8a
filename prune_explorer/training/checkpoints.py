"""Training checkpoints: the trained layers' (out, in) weights and bool masks, one safetensors file a step.

A file holds ``weight/<layer>`` (float) and ``mask/<layer>`` (uint8, 1 = keep) tensors and the step in its
metadata; :func:`load_checkpoint` gives back a :class:`~prune_explorer.training.student.Start`, so a cancelled
or crashed job resumes from (or a session takes) its last checkpoint. Files are written to a temporary name
and renamed, so a checkpoint on disk is always whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prune_explorer.training.student import Start

PREFIX = "step-"


def save_checkpoint(folder: Path | str, step: int, start: Start) -> Path:
    """Write the weights and masks after ``step`` steps to ``folder/step-<step>.safetensors``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"weight/{name}": w.contiguous() for name, w in start.weights.items()}
    tensors |= {f"mask/{name}": m.to(torch.uint8).contiguous() for name, m in start.masks.items()}
    path = folder / f"{PREFIX}{step:07d}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"step": str(step)})
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path | str) -> tuple[Start, int]:
    """(weights and masks, step) from a checkpoint file."""
    weights, masks = {}, {}
    with safe_open(str(path), framework="pt") as f:
        step = int(f.metadata()["step"])
        for key in f.keys():
            kind, name = key.split("/", 1)
            if kind == "weight":
                weights[name] = f.get_tensor(key)
            else:
                masks[name] = f.get_tensor(key).to(torch.bool)
    return Start(weights, masks), step


def latest_checkpoint(folder: Path | str) -> Path | None:
    """The checkpoint of the highest step in ``folder``, or None."""
    files = sorted(Path(folder).glob(f"{PREFIX}*.safetensors"))
    return files[-1] if files else None
