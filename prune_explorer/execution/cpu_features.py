"""What this CPU computes natively, where that decides which arithmetic a job takes."""

from __future__ import annotations

import torch


def fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles), so a bfloat16 matmul is
    faster than a float32 one (2.5x on this project's AMD EPYC) rather than emulated (slower)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
