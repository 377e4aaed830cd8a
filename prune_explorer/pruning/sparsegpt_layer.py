"""SparseGPT for one layer: OBS mask selection and weight reconstruction from the calibration Gram matrix.

Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
Algorithm 1, as in the authors' ``SparseGPT.fasterprune``:

* Hessian of the layer-wise least-squares objective ‖WX − ŴX‖²: H = 2XXᵀ/N (in, in), dampened by
  λ = 1% of its mean diagonal; U = upper Cholesky factor of H⁻¹ (retried with 10× more dampening when a
  factorisation fails).
* Columns are visited left to right in blocks of B = 128. At the start of a block the mask of the whole
  block is chosen from the *current* (already updated) weights, score w²/[U]_cc² ("adaptive mask
  selection", comparison group: the (out, B) block); for N:M the choice is made every M columns inside
  the block, per row (comparison group: block of M).
* Each column is then pruned and the error is spread over the columns to its right with the OBS update
  W[:, c:] −= (w_c − ŵ_c)/U_cc · U[c, c:], within the block and, lazily, for the later blocks.

Deviations, on purpose: exactly ``round(sparsity · rows · cols)`` weights go per layer (the block counts are
cumulative roundings, ties by flat index) where the reference prunes every score <= the k-th; inputs that
never fire (zero diagonal) keep their weights where the reference zeroes them, so the sparsity asked is the
sparsity obtained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from prune_explorer.pruning.ranking import count_for_sparsity

log = logging.getLogger(__name__)

DEFAULT_BLOCKSIZE = 128
DEFAULT_PERCDAMP = 0.01
DAMPING_RETRIES = 4


@dataclass(frozen=True)
class SparseGPTLayerResult:
    """One layer pruned by SparseGPT.

    Attributes:
        weight: float (out, in) in the input weight's dtype, the reconstructed weight; exactly 0 where pruned.
        mask: bool (out, in), True = keep.
        damping: the relative dampening used (0.01 = 1% of the mean Hessian diagonal).
        message: why more dampening was needed, or None.
    """

    weight: torch.Tensor
    mask: torch.Tensor
    damping: float
    message: str | None = None


def hessian(gram: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """H = 2XᵀX/N, float64 (in, in), from the summed Gram matrix of N calibration tokens."""
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"the Gram matrix must be square (in, in), got shape {tuple(gram.shape)}")
    if n_tokens < 1:
        raise ValueError("the Gram matrix comes from no calibration tokens")
    return 2.0 * gram.detach().to(torch.float64) / n_tokens


def inverse_cholesky(
    h: torch.Tensor, percdamp: float = DEFAULT_PERCDAMP, retries: int = DAMPING_RETRIES
) -> tuple[torch.Tensor, float, str | None]:
    """Upper Cholesky factor U of (H + λI)⁻¹, λ = ``percdamp`` · mean(diag H), as SparseGPT and GPTQ use it.

    When a factorisation fails the dampening is multiplied by 10, up to ``retries`` times.

    Args:
        h: float64 (in, in) Hessian.
    Returns:
        (U float64 (in, in), the relative dampening used, a message when it had to be raised or None).
    Raises:
        ValueError: no dampening up to ``percdamp · 10**retries`` gives a positive-definite matrix.
    """
    if percdamp <= 0:
        raise ValueError(f"dampening must be positive, got {percdamp}")
    mean_diag = float(h.diagonal().mean())
    scale = mean_diag if mean_diag > 0 else 1.0
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    damp = percdamp
    for _ in range(retries + 1):
        chol, info = torch.linalg.cholesky_ex(h + damp * scale * eye)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol), upper=True)
            if int(info) == 0 and bool(torch.isfinite(upper).all()):
                message = None
                if damp != percdamp:
                    message = (
                        f"Cholesky failed with dampening {percdamp:g} of the mean Hessian diagonal; "
                        f"used {damp:g} instead (more calibration text makes the Hessian better conditioned)"
                    )
                    log.warning(message)
                return upper, damp, message
        damp *= 10.0
    raise ValueError(
        f"the layer's Hessian is not positive definite even with dampening {damp / 10:g} of its mean "
        "diagonal: use more (or more varied) calibration text"
    )


def _block_counts(rows: int, cols: int, blocksize: int, sparsity: float) -> list[int]:
    """Weights to prune per block of columns: cumulative roundings, adding up to round(s · rows · cols)."""
    counts, done = [], 0
    for end in range(blocksize, cols + blocksize, blocksize):
        total = count_for_sparsity(rows * min(end, cols), sparsity)
        counts.append(total - done)
        done = total
    return counts


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    gram: torch.Tensor,
    n_tokens: int,
    sparsity: float = 0.5,
    n_m: tuple[int, int] | None = None,
    blocksize: int = DEFAULT_BLOCKSIZE,
    percdamp: float = DEFAULT_PERCDAMP,
) -> SparseGPTLayerResult:
    """Prune one (out, in) weight with SparseGPT (unstructured, or N:M with N kept per M).

    Args:
        weight: float (out, in), the dense weight (not modified).
        gram: float (in, in), Σ_t x_t x_tᵀ over ``n_tokens`` calibration inputs of this layer.
        n_tokens: number of calibration tokens in ``gram``.
        sparsity: share pruned, unstructured only (ignored for N:M, whose sparsity is 1 − N/M).
        n_m: (N, M) to keep N of every M consecutive inputs of each row; columns past the last full group are
            kept dense.
        blocksize: columns per lazy-update block (B = 128 in the paper); a multiple of M for N:M.
        percdamp: relative dampening λ (0.01 in the paper).
    Returns:
        :class:`SparseGPTLayerResult`.
    Raises:
        ValueError: shapes that do not match (both named), a bad N:M or blocksize, a Hessian that cannot be
            factorised.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be (out, in), got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    if tuple(gram.shape) != (cols, cols):
        raise ValueError(
            f"Gram matrix has shape {tuple(gram.shape)} but the weight {tuple(weight.shape)} "
            f"needs ({cols}, {cols})"
        )
    if blocksize < 1:
        raise ValueError(f"blocksize must be positive, got {blocksize}")
    if n_m is not None:
        n, m = n_m
        if not 1 <= n < m:
            raise ValueError(f"N:M needs 1 <= N < M, got {n}:{m}")
        if blocksize % m:
            raise ValueError(f"blocksize {blocksize} must be a multiple of M={m}")
        full = cols - cols % m
    else:
        count_for_sparsity(1, sparsity)  # validates the range

    h = hessian(gram, n_tokens)
    dead = h.diagonal() == 0
    if bool(dead.any()):
        h[dead, dead] = 1.0
        log.info("%d inputs never fired during calibration; their weights are kept", int(dead.sum()))
    hinv, damping, message = inverse_cholesky(h, percdamp)

    # The column loop runs in the weight's precision (float32 as the authors' code; float64 stays float64);
    # the Hessian is inverted in float64 above.
    dtype = torch.promote_types(weight.dtype, torch.float32)
    hinv = hinv.to(dtype)
    w = weight.detach().to(dtype).clone()
    keep = torch.ones(rows, cols, dtype=torch.bool)
    block_counts = None if n_m is not None else _block_counts(rows, cols, blocksize, sparsity)
    for b, i1 in enumerate(range(0, cols, blocksize)):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = hinv1.diagonal()
        keep1 = torch.ones(rows, count, dtype=torch.bool)
        if block_counts is not None and block_counts[b]:
            score = (w1**2 / d.view(1, -1) ** 2).reshape(-1)
            order = torch.sort(score, stable=True).indices[: block_counts[b]]
            keep1.view(-1)[order] = False
        for i in range(count):
            if n_m is not None and i % m == 0 and i1 + i + m <= full:
                score = w1[:, i : i + m] ** 2 / d[i : i + m].view(1, -1) ** 2
                order = torch.sort(score, dim=1, stable=True).indices[:, : m - n]
                keep1[:, i : i + m].scatter_(1, order, False)
            col = w1[:, i]
            q = torch.where(keep1[:, i], col, torch.zeros((), dtype=col.dtype))
            q1[:, i] = q
            e = (col - q) / d[i]
            w1[:, i:].addr_(e, hinv1[i, i:], alpha=-1.0)
            err1[:, i] = e
        w[:, i1:i2] = q1
        keep[:, i1:i2] = keep1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    w = torch.where(keep, w, torch.zeros((), dtype=w.dtype))
    return SparseGPTLayerResult(weight=w.to(weight.dtype), mask=keep, damping=damping, message=message)
