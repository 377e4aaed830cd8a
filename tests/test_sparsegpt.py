"""SparseGPT on one layer: a port of the authors' fasterprune as reference, lower reconstruction error than
magnitude and Wanda, exact sparsity, and the Cholesky dampening retry."""

import math

import pytest
import torch

from prune_explorer.pruning.masks import magnitude_mask, n_m_mask, per_row_mask
from prune_explorer.pruning.scores import reconstruction_error, wanda_scores
from prune_explorer.pruning.sparsegpt_layer import hessian, sparsegpt_prune


def _layer(rows=24, cols=40, tokens=300, seed=0):
    """A weight and correlated inputs with uneven feature scales, as LLM activations have."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=torch.float64) / math.sqrt(cols)
    scale = torch.exp(torch.randn(cols, generator=g, dtype=torch.float64))
    x = (torch.randn(tokens, cols, generator=g, dtype=torch.float64) @ mix + 0.3) * scale
    w = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    return w, x, x.T @ x


def _reference_fasterprune(w, gram, n_tokens, prunen, prunem, blocksize=128, percdamp=0.01, sparsity=0.5):
    """The authors' SparseGPT.fasterprune, float64; N = weights pruned per M (0: unstructured)."""
    W = w.clone()
    H = 2 * gram / n_tokens
    rows, columns = W.shape
    damp = percdamp * torch.mean(torch.diag(H))
    H = H + damp * torch.eye(columns, dtype=H.dtype)
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(count):
            w_col = W1[:, i]
            d = Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = (
                    W1[:, i : (i + prunem)] ** 2 / (torch.diag(Hinv1)[i : (i + prunem)].reshape((1, -1))) ** 2
                )
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w_col.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w_col - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


@pytest.mark.parametrize("n,m,blocksize", [(2, 4, 128), (2, 4, 8), (4, 8, 16)])
def test_n_m_equals_the_authors_procedure(n, m, blocksize):
    w, x, gram = _layer()
    ours = sparsegpt_prune(w, gram, x.shape[0], n_m=(n, m), blocksize=blocksize)
    ref = _reference_fasterprune(w, gram, x.shape[0], m - n, m, blocksize=blocksize)
    torch.testing.assert_close(ours.weight, ref, rtol=1e-9, atol=1e-9)
    assert torch.equal(ours.mask, ref != 0)


def test_unstructured_equals_the_authors_procedure_in_one_block():
    # The reference prunes int(s·n) + 1 weights per block, we prune round(s·n): pick s where they agree.
    w, x, gram = _layer()
    sparsity = 0.5008  # 960 weights: int(480.77) + 1 == round(480.77) == 481
    ours = sparsegpt_prune(w, gram, x.shape[0], sparsity)
    ref = _reference_fasterprune(w, gram, x.shape[0], 0, 0, sparsity=sparsity)
    torch.testing.assert_close(ours.weight, ref, rtol=1e-9, atol=1e-9)
    assert torch.equal(ours.mask, ref != 0) and int((~ours.mask).sum()) == 481


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_lower_reconstruction_error_than_magnitude_and_wanda(sparsity):
    w, x, gram = _layer()
    sq = (x * x).sum(0)
    sgpt = sparsegpt_prune(w, gram, x.shape[0], sparsity, blocksize=16)
    mag = torch.where(magnitude_mask(w, sparsity), w, 0.0)
    wanda = torch.where(per_row_mask(wanda_scores(w, sq), sparsity), w, 0.0)
    err = reconstruction_error(w, sgpt.weight, gram)
    assert err < reconstruction_error(w, wanda, gram) < reconstruction_error(w, mag, gram)
    # 2:4 too
    sgpt24 = sparsegpt_prune(w, gram, x.shape[0], n_m=(2, 4))
    wanda24 = torch.where(n_m_mask(wanda_scores(w, sq), 2, 4), w, 0.0)
    mag24 = torch.where(n_m_mask(w.abs(), 2, 4), w, 0.0)
    assert reconstruction_error(w, sgpt24.weight, gram) < reconstruction_error(w, wanda24, gram)
    assert reconstruction_error(w, sgpt24.weight, gram) < reconstruction_error(w, mag24, gram)


@pytest.mark.parametrize("sparsity", [0.0, 0.13, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("blocksize", [7, 128])
def test_sparsity_asked_is_sparsity_obtained(sparsity, blocksize):
    w, x, gram = _layer(rows=11, cols=37)
    out = sparsegpt_prune(w.float(), gram, x.shape[0], sparsity, blocksize=blocksize)
    assert out.weight.dtype == torch.float32 and out.mask.dtype == torch.bool
    assert int((~out.mask).sum()) == round(sparsity * w.numel())
    assert (out.weight[~out.mask] == 0).all()
    if sparsity == 0.0:
        torch.testing.assert_close(out.weight, w.float())


def test_n_m_tail_stays_dense_and_input_is_not_modified():
    w, x, gram = _layer(rows=5, cols=38)
    before = w.clone()
    out = sparsegpt_prune(w, gram, x.shape[0], n_m=(4, 8))
    assert torch.equal(w, before)
    assert (out.mask[:, :32].reshape(5, 4, 8).sum(2) == 4).all()
    assert out.mask[:, 32:].all()


def test_dampening_is_raised_when_cholesky_fails():
    w = torch.randn(3, 3, dtype=torch.float64)
    gram = torch.diag(torch.tensor([1.0, 1.0, -0.9], dtype=torch.float64)) * 100
    out = sparsegpt_prune(w, gram, 100, 0.5)
    assert out.damping > 0.01 and "Cholesky failed" in out.message
    assert int((~out.mask).sum()) == round(0.5 * 9)
    ok = sparsegpt_prune(w, torch.eye(3, dtype=torch.float64), 1, 0.5)
    assert ok.damping == 0.01 and ok.message is None


def test_hopeless_hessian_is_a_clear_error():
    gram = torch.diag(torch.tensor([1.0, -1e6], dtype=torch.float64))
    with pytest.raises(ValueError, match="not positive definite"):
        sparsegpt_prune(torch.ones(2, 2), gram, 1, 0.5)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("blocksize", [5, 128])
def test_dead_inputs_keep_their_weights_when_not_chosen(sparsity, blocksize):
    # An input that never fires has a zero Hessian diagonal. The authors' code zeroes its whole column; ours
    # (sparsegpt_layer's docstring) scores its weights like any other, keeps those not chosen exactly as they
    # were (no OBS update reaches an input no other input correlates with) and prunes exactly round(s · n).
    w, x, _ = _layer(rows=6, cols=12)
    x[:, 3] = 0.0
    out = sparsegpt_prune(w, x.T @ x, x.shape[0], sparsity, blocksize=blocksize)
    kept = out.mask[:, 3]
    assert kept.any(), "the dead input's column was zeroed whole"
    assert torch.equal(out.weight[kept, 3], w[kept, 3])
    assert (out.weight[~kept, 3] == 0).all()
    assert int((~out.mask).sum()) == round(sparsity * w.numel())
    assert (out.weight[~out.mask] == 0).all()
    live = out.mask.clone()
    live[:, 3] = False
    assert not torch.equal(out.weight[live], w[live])  # the live inputs' kept weights did get the OBS update


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gram": torch.eye(5)}, r"\(5, 5\).*\(4, 6\).*\(6, 6\)"),
        ({"n_m": (4, 4)}, "1 <= N < M"),
        ({"n_m": (2, 4), "blocksize": 6}, "multiple of M"),
        ({"sparsity": 1.5}, "between 0 and 1"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"weight": torch.ones(4, 6), "gram": torch.eye(6), "n_tokens": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        sparsegpt_prune(**args)


def test_hessian_scaling():
    assert torch.equal(hessian(torch.eye(2) * 8, 4), torch.eye(2, dtype=torch.float64) * 4)
