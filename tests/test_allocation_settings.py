"""Allocation in ``PruneSettings``: the one slider's average is shared by OWL or the budget, exactly; the
slider path's counts are round(share · n) of an independent OWL computation, its weights are
``where(mask, dense, 0)`` with the masks ``prune_masks`` gives for the same shares; methods get the shares;
bad settings raise before anything is written."""

from dataclasses import replace

import pytest
import torch

from prune_explorer.models.layers import select
from prune_explorer.pruning import allocation
from prune_explorer.pruning.calibration import calibration_batch
from prune_explorer.pruning.policies import MagnitudeSettings, magnitude_counts
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.settings import apply_settings, prune_settings, with_basis
from prune_explorer.state import PruningState

TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun. " * 12


@pytest.fixture
def calib(char_tokenizer):
    return calibration_batch(char_tokenizer, TEXT, seq_len=32, n_sequences=6)


def owl_settings(dense, calib, sparsity, method="magnitude", lam=0.08, m=5.0):
    chosen = prune_settings(
        MagnitudeSettings(sparsity=sparsity),
        method,
        "unstructured",
        calib,
        allocation="owl",
        owl_m=m,
        owl_lam=lam,
    )
    return with_basis(dense, chosen, calib)


def curves_for(dense):
    """Made-up damage curves: later layers hurt more, so the budget is far from uniform."""
    return {
        layer.name: [(s, (1 + i) * s**2) for s in (0.3, 0.5, 0.7, 0.9)]
        for i, layer in enumerate(select(dense.layers))
    }


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.uint8)


@pytest.mark.parametrize("target", [0.2, 0.5, 0.73])
@pytest.mark.parametrize("name", ["owl", "budget"])
def test_the_average_is_the_slider(llama_dense, calib, name, target):
    base = prune_settings(
        MagnitudeSettings(sparsity=target), "magnitude", "unstructured", calib, allocation=name
    )
    chosen = with_basis(llama_dense, base, calib, curves=curves_for(llama_dense))
    shares = chosen.layer_sparsity
    sizes = allocation.layer_sizes(select(llama_dense.layers))
    assert set(shares) == set(sizes)
    assert len(set(round(s, 6) for s in shares.values())) > 1  # not uniform
    assert allocation.average_sparsity(shares, sizes) == pytest.approx(target, abs=1e-9)


def test_slider_counts_come_from_the_owl_sparsities(llama_dense, calib):
    chosen = owl_settings(llama_dense, calib, 0.6)
    # Independently: OWL's shares from the library function, counted like torch.nn.utils.prune.
    layers = select(llama_dense.layers)
    expected = allocation.owl(llama_dense, layers, calib, 0.6)
    counts = magnitude_counts(llama_dense, chosen)
    assert counts == {
        layer.name: int(round(expected[layer.name] * layer.numel)) if layer in layers else 0
        for layer in llama_dense.layers
    }
    moved = magnitude_counts(llama_dense, replace(chosen, sparsity=0.4))  # the basis is reused, shares move
    assert sum(moved.values()) < sum(counts.values())


def test_slider_path_writes_where_mask_dense_zero(llama_dense, calib):
    state = PruningState(llama_dense)
    before = {name: bits(p).clone() for name, p in llama_dense.model.named_parameters()}
    for target in (0.3, 0.7, 0.5):  # moves both ways on the same state
        chosen = owl_settings(llama_dense, calib, target)
        assert apply_settings(state, chosen) is None  # the slider path
    reference = prune_masks(
        llama_dense, "magnitude", "unstructured", 0.5, layer_sparsity=chosen.layer_sparsity
    )
    for layer in select(llama_dense.layers):
        mask = state.mask(layer.name)
        assert torch.equal(mask, reference.masks[layer.name])
        dense_w = layer.weight(llama_dense.model)
        want = torch.where(mask, dense_w, torch.zeros((), dtype=dense_w.dtype))
        assert torch.equal(bits(state.weight(layer.name)), bits(want))
        assert state.pruned_count(layer.name) == round(chosen.layer_sparsity[layer.name] * layer.numel)
    assert all(torch.equal(before[n], bits(p)) for n, p in llama_dense.model.named_parameters())


@pytest.mark.parametrize("method", ["random", "wanda", "sparsegpt"])
def test_methods_get_the_shares(llama_dense, calib, method):
    state = PruningState(llama_dense)
    chosen = owl_settings(llama_dense, calib, 0.5, method=method, lam=0.2)
    info = apply_settings(state, chosen, calib)
    assert info["layer_sparsity_asked"] == chosen.layer_sparsity
    for name, share in chosen.layer_sparsity.items():
        assert state.sparsity(name) == pytest.approx(share, abs=0.03)  # Wanda rounds per row
    layers = select(llama_dense.layers)
    assert state.overall_sparsity(layers) == pytest.approx(0.5, abs=0.01)


def test_budget_without_curves_or_a_bad_lambda_changes_nothing(llama_dense, calib):
    state = PruningState(llama_dense)
    apply_settings(state, owl_settings(llama_dense, calib, 0.5))
    counts = {layer.name: state.pruned_count(layer.name) for layer in llama_dense.layers}
    budget = prune_settings(MagnitudeSettings(sparsity=0.6), "magnitude", "unstructured", allocation="budget")
    with pytest.raises(ValueError, match="Sensitivity page"):
        apply_settings(state, budget)
    with pytest.raises(ValueError, match="λ must be between 0 and 0.5"):
        apply_settings(state, replace(owl_settings(llama_dense, calib, 0.6), owl_lam=0.9))
    with pytest.raises(ValueError, match="no damage curve for layer"):
        with_basis(llama_dense, budget, curves={"model.layers.0.mlp.up_proj": [(0.5, 1.0)]})
    assert counts == {layer.name: state.pruned_count(layer.name) for layer in llama_dense.layers}


def test_allocation_only_where_it_applies(llama_dense, calib):
    owl = prune_settings(
        MagnitudeSettings(sparsity=0.5), "magnitude", "unstructured", calib, allocation="owl"
    )
    assert owl.calibration is not None  # OWL reads activations: its batch is part of the settings
    by_threshold = prune_settings(
        MagnitudeSettings(sparsity=0.5, policy="global"), "magnitude", "unstructured", calib, allocation="owl"
    )
    assert by_threshold.allocation == "uniform" and by_threshold.calibration is None
    nm = prune_settings(MagnitudeSettings(sparsity=0.5), "wanda", "2:4", calib, allocation="owl")
    assert nm.allocation == "uniform" and nm.layer_sparsity is None
    # Equal choices compare equal: OWL's parameters are forgotten under another allocation.
    assert prune_settings(MagnitudeSettings(), "magnitude", "unstructured", owl_lam=0.3) == prune_settings(
        MagnitudeSettings(), "magnitude", "unstructured"
    )


def test_a_recipe_of_an_owl_slider_names_owl_and_its_exact_shares(llama_dense, calib):
    from prune_explorer.plans.recipe_capture import recipe_from_state

    chosen = owl_settings(llama_dense, calib, 0.6)
    state = PruningState(llama_dense)
    apply_settings(state, chosen)
    recipe = recipe_from_state(state, chosen)
    assert recipe.allocation.name == "owl"  # the slider path's uniform policy, shared by OWL
    for layer in select(llama_dense.layers):
        assert recipe.allocation.layers[layer.name] * layer.numel == pytest.approx(
            state.pruned_count(layer.name)
        )
