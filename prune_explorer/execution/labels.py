"""The names of the kernels a pruned layer can run on: one set, used by every timing and report."""

from __future__ import annotations

import re

DENSE = "dense matmul (F.linear)"
DENSE_ZEROS = "dense matmul with zeros (F.linear)"
CSR = "CSR torch.addmm int32 (MKL sparse × dense)"
SEMI = "2:4 semi-structured (torch.sparse.to_sparse_semi_structured, CUDA)"
COMPACTED = "compacted dense"
ROW_DOT = "numba row-dot kernel for decoding steps of a few tokens in the big layers (F.linear elsewhere)"
TOKEN_FASTEST = "residual stream stored token-fastest (column-major) so CSR layers need no input transpose"
DENSE_LABELS = frozenset({DENSE, DENSE_ZEROS})


def dense_label(sparsity: float) -> str:
    """A dense matmul, saying whether pruned zeros are multiplied too."""
    return DENSE_ZEROS if sparsity > 0 else DENSE


def compacted_label(before: int, after: int, what: str) -> str:
    """A compacted layer: ``what`` is rows, columns or heads."""
    return f"{COMPACTED} {before}→{after} {what}"


def family(label: str) -> str:
    """The kernel without the sizes of a compaction ("compacted dense 64→32 rows" -> "compacted dense")."""
    return re.sub(r" \d+→\d+ (rows|columns|heads)", "", label)
