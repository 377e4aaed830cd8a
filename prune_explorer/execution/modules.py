"""The modules a pruned layer can run as, besides the masked-dense Linear it starts as.

``CSRLinear``            the (out, in) weight as a CSR matrix with int32 indices, run as ``W @ x.T``
                         (``torch.addmm`` into an unfilled output: the fastest sparse call measured on CPU;
                         ``F.linear(x, W_csr)`` and COO are much slower).
``SemiStructuredLinear`` 2:4 semi-structured sparsity (``torch.sparse.to_sparse_semi_structured``), CUDA.
``AutoLinear``           dense or CSR per call, by the token count, as measured (``execution.autotune``).
``TokenFastest``         wraps the input embedding so the residual stream is stored token-fastest, the layout
                         CSR layers multiply fastest.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prune_explorer.execution.labels import CSR, SEMI


class BackendUnavailable(RuntimeError):
    """A backend cannot run on this machine or this model; the message says why."""


def out_in_weight(module: nn.Module) -> torch.Tensor:
    """The weight of a Linear or transformers Conv1D as an (out, in) view of its storage."""
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def to_csr(weight: torch.Tensor) -> torch.Tensor:
    """float (out, in) dense -> CSR with int32 indices (10-30% faster than int64 in torch.sparse.mm)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta" / "invariant checks disabled"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.detach().contiguous().to_sparse_csr()
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32), csr.values(), csr.shape
        )


def csr_bytes(kept: int, rows: int, index_bytes: int = 4, value_bytes: int = 4) -> int:
    """Bytes of a CSR matrix: a value and a column index per kept weight, one row pointer per row (+1)."""
    return kept * (value_bytes + index_bytes) + (rows + 1) * index_bytes


class CSRLinear(nn.Module):
    """A pruned Linear run as ``(W_csr @ x.T).T`` with int32 CSR indices (``torch.addmm``, MKL on CPU).

    The product is written as (out, N) into a fresh uninitialised tensor (``beta=0``: no zero fill) and
    returned as its (N, out) transpose, a view: elementwise ops keep that layout, so a following CSR layer
    (MLP down after gate/up) gets its ``x.T`` contiguous for free. Attention reshapes q/k/v per head and
    only takes the fast SDPA kernel with a contiguous head dimension, so those layers copy to row-major.

    Args:
        weight: float (out, in), zeros are dropped.
        bias: float (out,) or None.
        row_major_output: return a contiguous (N, out) tensor (for q/k/v projections).
    """

    kernel = CSR

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None = None, row_major_output: bool = False
    ):
        super().__init__()
        self.in_features = int(weight.shape[1])
        self.out_features = int(weight.shape[0])
        self.weight_csr = to_csr(weight)
        self.bias = None if bias is None else bias.detach()
        self.row_major_output = row_major_output

    @classmethod
    def from_module(cls, module: nn.Module, row_major_output: bool = False) -> CSRLinear:
        return cls(out_in_weight(module), module.bias, row_major_output)

    @property
    def kept(self) -> int:
        return int(self.weight_csr.values().numel())

    def nbytes(self) -> int:
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return csr_bytes(self.kept, self.out_features) + bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xt = x.reshape(-1, self.in_features).T  # (in, N)
        y = torch.empty(self.out_features, xt.shape[1], dtype=x.dtype, device=x.device)
        y = torch.addmm(y, self.weight_csr, xt, beta=0, out=y).T  # (N, out), a view
        if self.row_major_output:
            y = y.contiguous()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, kept={self.kept}, kernel={self.kernel!r}"


def is_two_four(mask: torch.Tensor) -> bool:
    """True if every group of 4 consecutive inputs of each row keeps at most 2 (bool (out, in) mask)."""
    if mask.shape[-1] % 4:
        return False
    return bool((mask.reshape(mask.shape[0], -1, 4).sum(-1) <= 2).all())


def semi_structured_available(device: torch.device | str) -> str | None:
    """None if 2:4 kernels can run on ``device``, else the reason they cannot."""
    device = torch.device(device)
    if device.type != "cuda":
        return (
            "2:4 semi-structured sparse kernels exist in torch only for CUDA GPUs; "
            f"this model runs on {device.type}"
        )
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return "this torch build has no torch.sparse.to_sparse_semi_structured"
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"2:4 kernels need a GPU of compute capability 8.0 or newer, this one is {major}.x"
    return None


class SemiStructuredLinear(nn.Module):
    """A 2:4-pruned Linear on CUDA, its weight a ``SparseSemiStructuredTensor``.

    Raises:
        BackendUnavailable: not on a CUDA GPU that has the kernels.
        ValueError: the mask is not 2:4 along the input dimension, or torch refuses the shape/dtype.
    """

    kernel = SEMI

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        reason = semi_structured_available(weight.device)
        if reason:
            raise BackendUnavailable(reason)
        if not is_two_four(weight != 0):
            raise ValueError("the weight is not 2:4 sparse (at most 2 kept in every 4 consecutive inputs)")
        try:
            self.weight_2_4 = torch.sparse.to_sparse_semi_structured(weight.detach().contiguous())
        except Exception as exc:  # torch checks dtype and minimum shapes
            raise ValueError(f"torch cannot make this weight 2:4 semi-structured: {exc}") from exc
        self.out_features, self.in_features = (int(s) for s in weight.shape)
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(x.reshape(-1, self.in_features), self.weight_2_4, self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)


class AutoLinear(nn.Module):
    """Runs each call on the backend calibrated as fastest for the nearest measured token count.

    ``choice`` maps a token count (rows of the input, batch × sequence) to ``"dense"`` or ``"csr"``;
    a call with N tokens uses the calibrated count nearest to N on a log scale.
    """

    def __init__(self, dense: nn.Module, csr: CSRLinear, choice: dict[int, str]):
        super().__init__()
        self.dense, self.csr = dense, csr
        self.choice = dict(sorted(choice.items()))
        self.in_features = csr.in_features

    def pick(self, tokens: int) -> str:
        near = min(self.choice, key=lambda t: abs(math.log2(max(t, 1)) - math.log2(max(tokens, 1))))
        return self.choice[near]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // self.in_features
        return self.csr(x) if self.pick(tokens) == "csr" else self.dense(x)


class TokenFastest(nn.Module):
    """Wraps the input embedding so the residual stream is stored token-fastest: (B, T, H) with strides
    (T·H, 1, T). Same values, another layout.

    A CSR layer multiplies ``W @ x.T`` fastest when ``x.T`` is a contiguous (H, T) matrix, i.e. when ``x`` is
    token-fastest; elementwise ops (norms, residual adds, SiLU·up) keep that layout, so no CSR layer has to
    transpose its input. Dense matmuls take either layout at the same speed.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    @property
    def weight(self) -> torch.Tensor:
        return self.inner.weight

    def forward(self, *args, **kwargs) -> torch.Tensor:
        y = self.inner(*args, **kwargs)
        return y.transpose(-1, -2).contiguous().transpose(-1, -2) if y.dim() >= 2 else y
