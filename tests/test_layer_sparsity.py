"""Per-layer sparsity in every method (``prune_masks(..., layer_sparsity=...)``): a mapping equal to the
uniform value changes nothing, different values give every layer its own share in its own comparison group
(layer, row for Wanda, block for whole units), N:M ignores it with a message, bad mappings name the layer."""

import pytest
import torch
from torch.nn.utils import prune as torch_prune

from prune_explorer.models.layers import select
from prune_explorer.pruning.calibration import calibration_batch
from prune_explorer.pruning.methods import METHODS
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.ranking import count_for_sparsity
from prune_explorer.pruning.units import model_unit_groups

TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun. " * 12


@pytest.fixture
def calib(char_tokenizer):
    return calibration_batch(char_tokenizer, TEXT, seq_len=32, n_sequences=6)


def _bits(t):
    return t.detach().contiguous().view(torch.uint8)


def _spread(dense) -> dict[str, float]:
    """A different share for every selected layer, between 0.1 and 0.8."""
    layers = select(dense.layers)
    return {layer.name: 0.1 + 0.7 * i / (len(layers) - 1) for i, layer in enumerate(layers)}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("pattern", ["unstructured", "neurons", "heads"])
def test_mapping_equal_to_uniform_changes_nothing(llama_dense, calib, method, pattern):
    if pattern not in METHODS[method].patterns:
        pytest.skip(f"{method} has no {pattern} pattern")
    same = {layer.name: 0.4 for layer in select(llama_dense.layers)}
    plain = prune_masks(llama_dense, method, pattern, 0.4, calibration=calib)
    mapped = prune_masks(llama_dense, method, pattern, 0.4, calibration=calib, layer_sparsity=same)
    assert plain.masks.keys() == mapped.masks.keys()
    for name, mask in plain.masks.items():
        assert torch.equal(mask, mapped.masks[name]), name
    if plain.weights is not None:
        for name, weight in plain.weights.items():
            assert torch.equal(_bits(weight), _bits(mapped.weights[name])), name
    assert plain.info["messages"] == mapped.info["messages"]


@pytest.mark.parametrize("fixture", ["llama_dense", "gpt2_dense"])
def test_magnitude_each_layer_its_own_share_as_torch_prune(request, fixture):
    dense = request.getfixturevalue(fixture)
    shares = _spread(dense)
    result = prune_masks(dense, "magnitude", "unstructured", 0.5, layer_sparsity=shares)
    for layer in select(dense.layers):
        mask = result.masks[layer.name]
        assert int((~mask).sum()) == count_for_sparsity(layer.numel, shares[layer.name]), layer.name
        module = torch.nn.Linear(layer.shape[1], layer.shape[0], bias=False)
        module.weight.data = layer.weight(dense.model).detach().contiguous().clone()
        torch_prune.l1_unstructured(module, "weight", amount=shares[layer.name])
        assert torch.equal(mask, module.weight_mask.bool()), layer.name
    assert result.info["layer_sparsity_asked"] == shares


def test_only_named_layers_change(llama_dense):
    layers = select(llama_dense.layers)
    one = layers[3].name
    result = prune_masks(llama_dense, "random", "unstructured", 0.3, layer_sparsity={one: 0.9})
    for layer in layers:
        share = 0.9 if layer.name == one else 0.3
        assert int((~result.masks[layer.name]).sum()) == count_for_sparsity(layer.numel, share)


@pytest.mark.parametrize("sequential", [False, True])
def test_wanda_per_row(llama_dense, calib, sequential):
    shares = _spread(llama_dense)
    result = prune_masks(
        llama_dense,
        "wanda",
        "unstructured",
        0.5,
        calibration=calib,
        sequential=sequential,
        layer_sparsity=shares,
    )
    for layer in select(llama_dense.layers):
        kept = layer.shape[1] - count_for_sparsity(layer.shape[1], shares[layer.name])
        assert (result.masks[layer.name].sum(1) == kept).all(), layer.name


@pytest.mark.parametrize("sequential", [False, True])
def test_sparsegpt_each_layer_its_own_count(gpt2_dense, calib, sequential):
    shares = _spread(gpt2_dense)
    result = prune_masks(
        gpt2_dense, "sparsegpt", "unstructured", 0.5, calibration=calib, sequential=sequential,
        layer_sparsity=shares,
    )  # fmt: skip
    for layer in select(gpt2_dense.layers):
        mask, weight = result.masks[layer.name], result.weights[layer.name]
        assert int((~mask).sum()) == count_for_sparsity(layer.numel, shares[layer.name]), layer.name
        assert (weight[~mask] == 0).all()


def test_units_go_per_block(llama_dense):
    groups = model_unit_groups(llama_dense, select(llama_dense.layers), "neurons")
    shares = {name: 0.5 for name in groups[0].layer_names} | {name: 0.25 for name in groups[1].layer_names}
    result = prune_masks(llama_dense, "magnitude", "neurons", 0.1, layer_sparsity=shares)
    for group, share in zip(groups, (0.5, 0.25), strict=True):
        down = result.masks[group.col_layer]
        gone = int((~down.any(0)).sum())  # a neuron gone is a whole column of down_proj
        assert gone == count_for_sparsity(group.n_units, share)
    # Different values inside a block: the block goes at their parameter-weighted mean.
    g = groups[0]
    mixed = {g.row_layers[0]: 0.2, g.row_layers[1]: 0.2, g.col_layer: 0.8}
    result = prune_masks(llama_dense, "magnitude", "neurons", 0.0, layer_sparsity=mixed)
    sizes = [llama_dense.by_name[n].numel for n in (g.row_layers[0], g.row_layers[1], g.col_layer)]
    mean = (0.2 * sizes[0] + 0.2 * sizes[1] + 0.8 * sizes[2]) / sum(sizes)
    assert int((~result.masks[g.col_layer].any(0)).sum()) == count_for_sparsity(g.n_units, mean)
    assert any("per-layer" in message for message in result.info["messages"])


def test_n_m_ignores_it_with_a_message(llama_dense):
    shares = _spread(llama_dense)
    plain = prune_masks(llama_dense, "magnitude", "2:4")
    mapped = prune_masks(llama_dense, "magnitude", "2:4", layer_sparsity=shares)
    assert all(torch.equal(plain.masks[n], mapped.masks[n]) for n in plain.masks)
    assert any("per-layer sparsities are ignored" in m for m in mapped.info["messages"])


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"model.layers.9.mlp.up_proj": 0.5}, r"'model\.layers\.9\.mlp\.up_proj': no prunable layer"),
        ({"lm_head": 0.5}, r"'lm_head': a lm_head layer, not among the kinds selected"),
        ({"model.layers.0.mlp.up_proj": 1.5}, r"model\.layers\.0\.mlp\.up_proj must be between 0 and 1"),
        ({"model.layers.1.self_attn.q_proj": -0.1}, r"model\.layers\.1\.self_attn\.q_proj must be between"),
        ({"model.layers.1.self_attn.k_proj": "half"}, r"model\.layers\.1\.self_attn\.k_proj must be between"),
    ],
)
def test_bad_mappings_name_the_layer(llama_dense, mapping, match):
    with pytest.raises(ValueError, match=match):
        prune_masks(llama_dense, "magnitude", "unstructured", 0.5, layer_sparsity=mapping)
