"""Scores and their masks against hand-computed cases: Wanda's formula, per-row and N:M comparison groups,
reconstruction error and Jaccard overlap."""

import pytest
import torch

from prune_explorer.pruning.masks import magnitude_mask, n_m_mask, n_m_tail, parse_n_m, per_row_mask
from prune_explorer.pruning.scores import (
    jaccard_pruned,
    magnitude_scores,
    random_scores,
    reconstruction_error,
    relative_reconstruction_error,
    wanda_scores,
)


def test_wanda_equals_the_paper_formula_by_hand():
    # Sun et al. 2023, eq. 1: S_ij = |W_ij| * ||X_j||_2, compared within each output row.
    w = torch.tensor([[1.0, -2.0, 3.0, -4.0], [-0.5, 0.25, 4.0, 1.0]])
    x = torch.tensor([[3.0, 0.0, 1.0, 0.0], [4.0, 1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]])  # (tokens, in)
    # ||X_j||_2 = [5, 1, 1, 0.5]
    expected = torch.tensor([[5.0, 2.0, 3.0, 2.0], [2.5, 0.25, 4.0, 0.5]])
    scores = wanda_scores(w, (x * x).sum(0))
    torch.testing.assert_close(scores, expected)
    by_loop = torch.empty(2, 4)
    for i in range(2):
        for j in range(4):
            by_loop[i, j] = abs(w[i, j]) * sum(float(x[t, j]) ** 2 for t in range(3)) ** 0.5
    torch.testing.assert_close(scores, by_loop)
    # 50% per row: row 0 drops the tie (2, 2) -> columns 1 and 3; row 1 drops 0.25 and 0.5 -> columns 1, 3.
    assert per_row_mask(scores, 0.5).tolist() == [[True, False, True, False], [True, False, True, False]]
    # Magnitude on the same row 1 would drop -0.5 and 0.25 (columns 0, 1): activations change the choice.
    assert per_row_mask(magnitude_scores(w), 0.5)[1].tolist() == [False, False, True, True]
    # 2:4 keeps the same two per row here (one group of 4 per row).
    assert torch.equal(n_m_mask(scores, 2, 4), per_row_mask(scores, 0.5))


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_wanda_with_equal_activation_norms_is_per_row_magnitude(sparsity):
    torch.manual_seed(0)
    w = torch.randn(13, 37)
    scores = wanda_scores(w, torch.full((37,), 7.0))
    ours = per_row_mask(scores, sparsity)
    assert torch.equal(ours, per_row_mask(w.abs(), sparsity))
    # per-row magnitude, independently: each row is its own l1_unstructured.
    for i in range(13):
        assert torch.equal(ours[i], magnitude_mask(w[i : i + 1], sparsity)[0])


def test_per_row_counts_and_ties():
    scores = torch.ones(3, 10)
    mask = per_row_mask(scores, 0.34)
    assert (mask.sum(1) == 7).all()
    assert mask[:, 3:].all() and not mask[:, :3].any()  # ties: lowest column index goes first


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 4)])
@pytest.mark.parametrize("cols", [32, 37])
def test_n_m_keeps_exactly_n_per_full_group(n, m, cols):
    scores = torch.randn(11, cols, generator=torch.Generator().manual_seed(cols))
    mask = n_m_mask(scores, n, m)
    full = cols - n_m_tail(cols, m)
    assert (mask[:, :full].reshape(11, -1, m).sum(2) == n).all()
    assert mask[:, full:].all()
    # the kept ones are the N largest of each group
    groups = scores[:, :full].reshape(11, -1, m)
    kept_min = torch.where(mask[:, :full].reshape(11, -1, m), groups, torch.inf).amin(2)
    pruned_max = torch.where(mask[:, :full].reshape(11, -1, m), -torch.inf, groups).amax(2)
    assert (kept_min >= pruned_max).all()


def test_n_m_ties_go_by_index():
    assert n_m_mask(torch.zeros(1, 8), 2, 4).tolist() == [[False, False, True, True] * 2]


@pytest.mark.parametrize(
    "text,match",
    [
        ("4:4", "smaller than M"),
        ("5:4", "smaller than M"),
        ("0:4", "at least 1"),
        ("2-4", "two integers"),
        ("a:b", "two integers"),
    ],
)
def test_bad_n_m_is_refused(text, match):
    with pytest.raises(ValueError, match=match):
        parse_n_m(text)


def test_parse_n_m():
    assert parse_n_m("2:4") == (2, 4) and parse_n_m("4:8") == (4, 8)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(5,\).*\(3, 4\).*\(4,\)"):
        wanda_scores(torch.zeros(3, 4), torch.ones(5))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(2, 4\)"):
        reconstruction_error(torch.zeros(2, 4), torch.zeros(2, 4), torch.eye(3))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(4, 2\)"):
        jaccard_pruned(torch.ones(2, 4, dtype=torch.bool), torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="torch.bool"):
        jaccard_pruned(torch.ones(2, 4), torch.ones(2, 4, dtype=torch.bool))


def test_reconstruction_error_is_the_output_error():
    torch.manual_seed(1)
    w, x = torch.randn(6, 9, dtype=torch.float64), torch.randn(50, 9, dtype=torch.float64)
    new = w * (torch.rand(6, 9, dtype=torch.float64) > 0.5)
    gram = x.T @ x
    direct = float(((x @ w.T - x @ new.T) ** 2).sum())
    assert reconstruction_error(w, new, gram) == pytest.approx(direct, rel=1e-10)
    assert relative_reconstruction_error(w, new, gram) == pytest.approx(direct**0.5 / float((x @ w.T).norm()))
    assert reconstruction_error(w, w, gram) == 0.0


def test_jaccard_of_pruned_sets():
    a = torch.tensor([[True, False, False, True]])
    b = torch.tensor([[False, False, True, True]])
    assert jaccard_pruned(a, b) == pytest.approx(1 / 3)  # pruned {1,2} vs {0,1}
    assert jaccard_pruned(a, a) == 1.0 and jaccard_pruned(a, ~a) == 0.0
    assert jaccard_pruned(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)) == 1.0


def test_random_scores_are_seeded():
    assert torch.equal(random_scores((4, 5), 3), random_scores((4, 5), 3))
    assert not torch.equal(random_scores((4, 5), 3), random_scores((4, 5), 4))
