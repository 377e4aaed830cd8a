"""Per-layer allocations: every one meets the parameter-weighted target, OWL prunes the blocks with planted
outliers less, the budget solver takes the cheap layers first and is uniform when the curves are equal."""

import pytest
import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.pruning import outliers
from prune_explorer.pruning.allocation import (
    average_sparsity,
    budget,
    fit_to_target,
    layer_sizes,
    owl,
    owl_sparsities,
    predicted_damage,
    uniform,
)
from prune_explorer.pruning.budget import lower_hull
from prune_explorer.pruning.calibration import calibration_batch
from prune_explorer.pruning.outliers import outlier_ratio
from prune_explorer.pruning.prune import prune_masks
from tests.support.models import tiny_model

TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun. " * 12
PLANTED = 3


@pytest.fixture
def calib(char_tokenizer):
    return calibration_batch(char_tokenizer, TEXT, seq_len=32, n_sequences=6)


@pytest.fixture
def planted(char_tokenizer):
    """A 4-block tiny Llama whose last block (3) carries outliers: 3% of its weights scaled by 30."""
    model = tiny_model("llama", num_hidden_layers=4)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.model.layers[PLANTED].modules():
            if isinstance(module, torch.nn.Linear):
                pick = torch.rand(module.weight.shape, generator=generator) < 0.03
                module.weight[pick] *= 30.0
    return DenseModel(model, char_tokenizer, name="tiny-llama-outliers")


@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_uniform_meets_the_target(llama_dense, target):
    layers = select(llama_dense.layers)
    shares = uniform(layers, target)
    assert set(shares) == {layer.name for layer in layers}
    assert average_sparsity(shares, layer_sizes(layers)) == pytest.approx(target, abs=1e-12)


def test_fit_to_target_shifts_and_clips_exactly():
    sizes = {"a": 10, "b": 30, "c": 60}
    fitted = fit_to_target({"a": 0.1, "b": 0.5, "c": 0.9}, sizes, 0.6)
    assert average_sparsity(fitted, sizes) == pytest.approx(0.6, abs=1e-12)
    assert fitted["c"] - fitted["b"] == pytest.approx(0.4)  # a plain shift, no clipping needed
    clipped = fit_to_target({"a": 0.1, "b": 0.5, "c": 0.9}, sizes, 0.95)
    assert clipped["c"] == 1.0 and all(0.0 <= v <= 1.0 for v in clipped.values())
    assert average_sparsity(clipped, sizes) == pytest.approx(0.95, abs=1e-9)
    with pytest.raises(ValueError, match="between 0 and 1"):
        fit_to_target({"a": 0.5}, {"a": 1}, 1.2)


def test_outlier_ratio_by_hand():
    scores = torch.cat([torch.ones(99), torch.tensor([100.0])])  # mean 1.99: only 100 is above 5 x 1.99
    assert outlier_ratio([scores], 5.0) == pytest.approx(0.01)
    assert outlier_ratio([scores[:50], scores[50:]], 5.0) == pytest.approx(0.01)  # one block, many layers
    assert outlier_ratio([scores], 0.5) == pytest.approx(1.0)


def test_owl_sparsities_span_target_plus_minus_lambda():
    shares = owl_sparsities([0.01, 0.03, 0.02], [5, 5, 5], 0.7, lam=0.08)
    assert shares == pytest.approx([0.78, 0.62, 0.70])
    weighted = owl_sparsities([0.01, 0.03, 0.02], [1, 5, 2], 0.7, lam=0.08)
    assert weighted[0] - weighted[1] == pytest.approx(0.16)  # the spread stays 2 lambda
    assert sum(s * n for s, n in zip(weighted, [1, 5, 2], strict=True)) / 8 == pytest.approx(0.7, abs=1e-12)
    assert owl_sparsities([0.02, 0.02], [3, 4], 0.6) == [0.6, 0.6]


@pytest.mark.parametrize("target", [0.5, 0.6, 0.7])
def test_owl_prunes_the_block_with_outliers_least(planted, calib, target):
    layers = select(planted.layers)
    shares = owl(planted, layers, calib, target)
    assert average_sparsity(shares, layer_sizes(layers)) == pytest.approx(target, abs=1e-3)
    by_block = {layer.block: shares[layer.name] for layer in layers}
    assert len(set(shares[layer.name] for layer in layers if layer.block == PLANTED)) == 1
    assert min(by_block, key=by_block.get) == PLANTED
    assert all(by_block[PLANTED] < s for b, s in by_block.items() if b != PLANTED)
    assert max(by_block.values()) - min(by_block.values()) == pytest.approx(0.16)
    ratios = outliers.outlier_ratios(planted, layers, calib)
    assert max(ratios, key=ratios.get).startswith(f"model.layers.{PLANTED}.")
    # Through prune_masks: each layer pruned at its share, the whole at the target.
    result = prune_masks(planted, "magnitude", "unstructured", target, layer_sparsity=shares)
    assert result.info["sparsity"] == pytest.approx(target, abs=1e-3)


def test_owl_with_lambda_zero_is_uniform(planted, calib):
    layers = select(planted.layers)
    assert owl(planted, layers, calib, 0.6, lam=0.0) == pytest.approx(uniform(layers, 0.6))


def test_owl_refuses_bad_settings(planted, calib):
    layers = select(planted.layers)
    with pytest.raises(ValueError, match="between 0 and 1"):
        owl(planted, layers, calib, 1.5)
    with pytest.raises(ValueError, match="λ"):
        owl(planted, layers, calib, 0.5, lam=-0.1)
    with pytest.raises(ValueError, match="M must be positive"):
        owl(planted, layers, calib, 0.5, m=0.0)


def _linear(cost: float) -> list[tuple[float, float]]:
    return [(s / 10, cost * s / 10) for s in range(11)]


def test_budget_takes_the_cheap_layers_first():
    curves = {"cheap": _linear(1.0), "middle": _linear(2.0), "dear": _linear(10.0)}
    shares = budget(curves, 0.2)  # 0.6 of one layer's weights to prune: all from the cheapest
    assert shares == pytest.approx({"cheap": 0.6, "middle": 0.0, "dear": 0.0})
    shares = budget(curves, 0.5)
    assert shares == pytest.approx({"cheap": 1.0, "middle": 0.5, "dear": 0.0})
    sizes = {"cheap": 100, "middle": 300, "dear": 100}
    equal = {
        name: _linear(1.0) for name in sizes
    }  # same damage per layer: the big layer is cheaper per weight
    shares = budget(equal, 0.5, sizes)
    assert shares["middle"] == pytest.approx(250 / 300)
    assert average_sparsity(shares, sizes) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("target", [0.05, 0.37, 0.6, 0.9])
def test_budget_equal_curves_give_uniform(target):
    curve = [(0.0, 0.0), (0.25, 0.1), (0.5, 0.3), (0.75, 0.9), (1.0, 3.0)]
    shares = budget({f"l{i}": curve for i in range(5)}, target)
    assert all(s == pytest.approx(target, abs=1e-12) for s in shares.values())


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_budget_meets_the_target_and_beats_uniform(target):
    grid = [i / 10 for i in range(11)]
    curves = {f"l{k}": [(s, (k + 1) * s**2 + 0.02 * k * s) for s in grid] for k in range(6)}
    sizes = {f"l{k}": 50 + 30 * k for k in range(6)}
    shares = budget(curves, target, sizes)
    assert average_sparsity(shares, sizes) == pytest.approx(target, abs=1e-3)
    flat = {name: target for name in curves}
    assert predicted_damage(curves, shares) < predicted_damage(curves, flat)
    assert shares["l0"] > shares["l5"]  # the cheapest curve is pruned most


def test_budget_skips_points_above_the_hull_and_adds_the_origin():
    assert lower_hull([(0.0, 0.0), (0.5, 2.0), (1.0, 1.0)]) == [(0.0, 0.0), (1.0, 1.0)]
    # a's point at 0.5 lies above the chord from (0, 0) to (1, 1): a costs 1 all the way, b 2 then 8.
    shares = budget({"a": [(0.5, 2.0), (1.0, 1.0)], "b": [(0.5, 1.0), (1.0, 5.0)]}, 0.5)
    assert shares == pytest.approx({"a": 1.0, "b": 0.0})


def test_budget_within_bounds():
    curves = {"cheap": _linear(1.0), "middle": _linear(2.0), "dear": _linear(10.0)}
    shares = budget(curves, 0.5, bounds=(0.3, 0.7))
    assert shares == pytest.approx({"cheap": 0.7, "middle": 0.5, "dear": 0.3})
    with pytest.raises(ValueError, match="bounds"):
        budget(curves, 0.5, bounds=(0.7, 0.3))


def test_budget_refuses_what_the_curves_cannot_reach():
    curves = {"a": [(0.3, 0.1), (0.6, 0.5)], "b": [(0.3, 0.2), (0.6, 0.4)]}
    with pytest.raises(ValueError, match="at most"):
        budget(curves, 0.8)
    with pytest.raises(ValueError, match="start at an average sparsity of 0.3000"):
        budget(curves, 0.2, origin=False)
    with pytest.raises(ValueError, match="outside"):
        budget({"a": [(1.5, 0.1)]}, 0.5)
    with pytest.raises(ValueError, match="positive size"):
        budget(curves, 0.5, {"a": 10})
