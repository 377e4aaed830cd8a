"""The masks alone, bit-packed in one safetensors file, and a loader that applies them to the dense model.

Each pruned layer is stored as uint8 ``numpy.packbits`` of its bool (out, in) keep-mask flattened row-major
(big bit order, 1 = keep), one bit per weight; the file's metadata holds the format, the layers' shapes and
the dense model's sha256, so masks are never applied to another model. Masks carry no new weights: for a
method that updates weights (SparseGPT) the loader reproduces the masks over the *dense* weights, not the
reconstructed ones (export the transformers folder for those).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.digest import weights_digest
from prune_explorer.plans.atomic import atomic_file
from prune_explorer.plans.recipe import RecipeError
from prune_explorer.state import PruningState

FORMAT = "prune-explorer-masks/1"


def pack_mask(mask: torch.Tensor) -> np.ndarray:
    """uint8 (ceil(out·in / 8),) bits of a bool (out, in) mask, row-major, big bit order (1 = keep)."""
    return np.packbits(mask.contiguous().numpy().reshape(-1), bitorder="big")


def unpack_mask(bits: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """The bool (out, in) mask that :func:`pack_mask` packed."""
    numel = shape[0] * shape[1]
    flat = np.unpackbits(bits, count=numel, bitorder="big").astype(bool)
    return torch.from_numpy(flat.reshape(shape))


def export_masks(state: PruningState, target: Path | str, model_id: str | None = None) -> Path:
    """Write the masks of the session's pruned layers to a new safetensors file at ``target``.

    Raises:
        ExportError: ``target`` exists or cannot be written, or writing failed (nothing is left there).
    """
    dense = state.dense
    with state.lock:
        names = [layer.name for layer in dense.layers if state.is_pruned(layer.name)]
        tensors = {name: pack_mask(state.mask(name)) for name in names}
    metadata = {
        "format": FORMAT,
        "model_id": model_id or dense.name,
        "model_sha256": weights_digest(dense),
        "shapes": json.dumps({name: list(dense.by_name[name].shape) for name in names}),
    }
    with atomic_file(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(target)


def load_masks(path: Path | str, dense: DenseModel) -> dict[str, torch.Tensor]:
    """The bool (out, in) masks in a file written by :func:`export_masks`, checked against ``dense``.

    Raises:
        RecipeError: the file cannot be read or is not a masks file, it was made for other weights, or a
            layer is unknown or of another shape.
    """
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            bits = {name: f.get_tensor(name) for name in f.keys()}
    except (OSError, SafetensorError) as exc:
        raise RecipeError(f"cannot read the masks file {path}: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise RecipeError(f"{path} is not a Prune Explorer masks file (format {metadata.get('format')!r})")
    if metadata.get("model_sha256") != weights_digest(dense):
        raise RecipeError(
            f"the masks in {path} were made for {metadata.get('model_id')!r} with other weights than the "
            f"loaded {dense.name!r}: load that model to apply them"
        )
    shapes = json.loads(metadata["shapes"])
    masks = {}
    for name, packed in bits.items():
        layer = dense.by_name.get(name)
        shape = tuple(shapes.get(name, ()))
        if layer is None or layer.shape != shape:
            raise RecipeError(f"{path}: layer {name!r} of shape {shape} is not in {dense.name!r}")
        needed = -(-layer.numel // 8)
        if packed.dtype != np.uint8 or packed.size != needed:
            raise RecipeError(f"{path}: layer {name!r} holds {packed.size} bytes, its mask needs {needed}")
        masks[name] = unpack_mask(packed, shape)
    return masks


def apply_masks_file(state: PruningState, path: Path | str) -> dict[str, torch.Tensor]:
    """Bring ``state`` to the masks in ``path`` over the dense weights (other layers back to dense).

    Everything is checked before anything is written. Returns the masks applied.
    """
    masks = load_masks(path, state.dense)
    with state.lock:
        state.reset([layer.name for layer in state.dense.layers if layer.name not in masks])
        state.apply_masks(masks)
    return masks
