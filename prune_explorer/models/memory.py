"""Will a model fit? Its float32 weights, the shared rankings and cache, and headroom, against free memory.

The check runs *before* any weight is read, from the parameter count of a model built on the meta device.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prune_explorer.models.errors import ModelLoadError

# Headroom on top of the weights: activations, the session copies of pruned layers, the Python process.
MEMORY_HEADROOM = 1.5
# The shared magnitude rankings per prunable weight: int32 order + float32 sorted |w| + uint8 bucket.
RANKING_BYTES = 9
# What each model's shared cache (models.cache.SharedCache) may hold beyond its rankings.
DEFAULT_CACHE_BYTES = 1 << 30


def available_memory_bytes() -> int:
    """Memory the OS could give this process now (MemAvailable), or a large number where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def memory_needed(
    n_parameters: int, bytes_per_parameter: int = 4, cache_bytes: int = DEFAULT_CACHE_BYTES
) -> int:
    """Bytes a model of ``n_parameters`` needs here: weights with headroom, rankings, and its shared cache."""
    return int(n_parameters * (bytes_per_parameter * MEMORY_HEADROOM + RANKING_BYTES)) + cache_bytes


def check_memory(
    n_parameters: int,
    bytes_per_parameter: int = 4,
    available: int | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> None:
    """Refuse a model whose float32 weights, rankings, shared cache and headroom do not fit in free memory.

    Raises:
        ModelLoadError: with the sizes and what to do.
    """
    need = memory_needed(n_parameters, bytes_per_parameter, cache_bytes)
    free = available_memory_bytes() if available is None else available
    if need > free:
        raise ModelLoadError(
            f"this model has {n_parameters / 1e6:,.1f}M parameters and needs about {need / 2**30:.1f} GiB "
            f"for its float32 weights, pruning rankings, shared cache and headroom, "
            f"but only {free / 2**30:.1f} GiB of memory is free; "
            "choose a smaller model or free memory"
        )


def count_parameters(config) -> int:
    """Parameters of the causal LM a transformers ``config`` describes (tied weights once), without
    allocating them (built on the meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
