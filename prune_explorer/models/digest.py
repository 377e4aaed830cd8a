"""A content hash of a model's weights: results computed on one model are found again only for that model."""

from __future__ import annotations

import hashlib

import torch

from prune_explorer.models.dense import DenseModel


def weights_digest(dense: DenseModel) -> str:
    """sha256 (hex) over the dense model's parameters: names, dtypes, shapes and bytes, in module order.

    A tied tensor is hashed once, under its first name (``named_parameters`` drops duplicates). Computed once
    per loaded model (about 1 s for SmolLM2-135M's 540 MB) and kept in its shared cache; a recipe records it
    as the weights it was made on.
    """
    return dense.cache.get(("weights_sha256",), lambda: _digest(dense.model), pin=True)


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, param in model.named_parameters():
        t = param.detach().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(param.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()
