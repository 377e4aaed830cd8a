"""How large a pruned model is in each form it could be stored or run in: dense, bitmask, CSR, compacted."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from prune_explorer.execution.backends import restore, running_on
from prune_explorer.execution.labels import COMPACTED, CSR, DENSE_ZEROS
from prune_explorer.execution.modules import csr_bytes
from prune_explorer.state import PruningState


def _parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())


@dataclass(frozen=True)
class Size:
    form: str
    memory_bytes: int  # to run it
    disk_bytes: int  # tensor data in a file (a safetensors header adds a few KB)
    kernel: str


def model_sizes(state: PruningState) -> list[Size]:
    """Bytes of the session's pruned model as dense, bitmask, CSR and compacted (undoes any backend).

    The bitmask form (kept values + 1 bit per weight) is a storage format: it is expanded to dense to run.
    """
    with state.lock:
        restore(state)
        total = _parameter_bytes(state.model)
        bitmask, csr = total, total
        for layer in state.dense.layers:
            if not state.is_pruned(layer.name):
                continue
            numel, kept = layer.numel, layer.numel - state.pruned_count(layer.name)
            bitmask += kept * 4 + math.ceil(numel / 8) - numel * 4
            csr += min(0, csr_bytes(kept, layer.shape[0]) - numel * 4)
        with running_on(state, "compact", verify=False):
            compact = _parameter_bytes(state.model)
    return [
        Size("dense", total, total, DENSE_ZEROS),
        Size("bitmask", total, bitmask, "expanded to dense, then " + DENSE_ZEROS),
        Size("CSR", csr, csr, CSR),
        Size("compacted", compact, compact, f"{COMPACTED} (smaller matrices)"),
    ]
