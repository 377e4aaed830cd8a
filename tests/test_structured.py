"""Structured pruning: units found in Llama (GQA) and GPT-2 (fused qkv, Conv1D), masks against
torch.nn.utils.prune.ln_structured, heads and neurons going whole, and refusals."""

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from prune_explorer.models.layers import select
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.structured import (
    activation_unit_scores,
    keep_units,
    magnitude_unit_scores,
    unit_weights,
)
from prune_explorer.pruning.units import find_unit_groups, unit_masks


def _weights(dense, group):
    return {name: dense.by_name[name].weight(dense.model) for name in group.layer_names}


def _shapes(dense, group):
    return {name: dense.by_name[name].shape for name in group.layer_names}


def test_groups_in_llama_and_gpt2(llama_dense, gpt2_dense):
    neurons = find_unit_groups(select(llama_dense.layers), "neurons")
    assert [(g.block, g.n_units, g.unit_size) for g in neurons] == [(0, 37, 1), (1, 37, 1)]
    assert neurons[0].row_layers == ("model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj")
    heads = find_unit_groups(select(llama_dense.layers), "heads", n_heads=4)
    assert [(g.n_units, g.unit_size, g.n_kv) for g in heads] == [(4, 8, 2)] * 2
    gpt_heads = find_unit_groups(select(gpt2_dense.layers), "heads", n_heads=4)
    assert gpt_heads[0].fused_qkv and gpt_heads[0].n_kv == 4
    assert find_unit_groups(select(gpt2_dense.layers), "neurons")[0].col_layer == "transformer.h.0.mlp.c_proj"
    # only complete groups: without down_proj there is no neuron group
    assert find_unit_groups(select(llama_dense.layers, ("mlp_gate", "mlp_up")), "neurons") == []


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize(
    "fixture,unit",
    [
        ("llama_dense", "neurons"),
        ("llama_dense", "heads"),
        ("gpt2_dense", "neurons"),
        ("gpt2_dense", "heads"),
    ],
)
def test_unit_choice_equals_ln_structured(request, fixture, unit, amount):
    dense = request.getfixturevalue(fixture)
    group = find_unit_groups(select(dense.layers), unit, n_heads=4)[0]
    if round(amount * group.n_units) >= group.n_units:
        with pytest.raises(ValueError, match="would remove all"):
            keep_units(magnitude_unit_scores(group, _weights(dense, group)), amount)
        return
    matrix = unit_weights(group, _weights(dense, group))  # (n_units, weights per unit)
    keep = keep_units(magnitude_unit_scores(group, _weights(dense, group)), amount)
    ref = nn.Linear(matrix.shape[1], matrix.shape[0], bias=False)
    ref.weight.data.copy_(matrix)
    tprune.ln_structured(ref, "weight", amount=amount, n=2, dim=0)
    assert torch.equal(keep, ref.weight_mask.bool().all(1))


def test_single_layer_rows_equal_ln_structured(llama_dense):
    # up_proj alone (down's weights zeroed out of the score) is exactly ln_structured on its rows.
    up = llama_dense.model.model.layers[0].mlp.up_proj
    group = find_unit_groups(select(llama_dense.layers, ("mlp_up", "mlp_down")), "neurons")[0]
    w = {group.row_layers[0]: up.weight, group.col_layer: torch.zeros(32, 37)}
    keep = keep_units(magnitude_unit_scores(group, w), 0.4)
    ref = nn.Linear(32, 37, bias=False)
    ref.weight.data.copy_(up.weight)
    tprune.ln_structured(ref, "weight", amount=0.4, n=2, dim=0)
    masks = unit_masks(group, keep, _shapes(llama_dense, group))
    assert torch.equal(masks[group.row_layers[0]], ref.weight_mask.bool())


def test_neurons_go_whole(llama_dense):
    group = find_unit_groups(select(llama_dense.layers), "neurons")[0]
    keep = keep_units(magnitude_unit_scores(group, _weights(llama_dense, group)), 0.5)
    assert int((~keep).sum()) == round(0.5 * 37)
    masks = unit_masks(group, keep, _shapes(llama_dense, group))
    for name in group.row_layers:
        assert torch.equal(masks[name], keep.view(-1, 1).expand(37, 32))
    assert torch.equal(masks[group.col_layer], keep.view(1, -1).expand(32, 37))


def test_heads_go_whole_and_kv_heads_only_with_all_their_queries(llama_dense):
    group = find_unit_groups(select(llama_dense.layers), "heads", n_heads=4)[0]
    shapes = _shapes(llama_dense, group)
    # heads 0, 1 share KV head 0; heads 2, 3 share KV head 1
    masks = unit_masks(group, torch.tensor([False, True, False, False]), shapes)
    q, k, v, o = (
        masks[n]
        for n in (
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.k_proj",
            "model.layers.0.self_attn.v_proj",
            "model.layers.0.self_attn.o_proj",
        )
    )
    per_head = q.view(4, 8, 32)
    assert per_head.all(2).all(1).tolist() == [False, True, False, False]
    assert per_head.any(2).any(1).tolist() == [False, True, False, False]  # whole heads
    assert o.view(32, 4, 8).all(2).all(0).tolist() == [False, True, False, False]
    assert o.view(32, 4, 8).any(2).any(0).tolist() == [False, True, False, False]
    for kv in (k, v):
        assert kv.view(2, 8, 32).all(2).all(1).tolist() == [True, False]
        assert kv.view(2, 8, 32).any(2).any(1).tolist() == [True, False]


def test_gpt2_fused_qkv_masks(gpt2_dense):
    group = find_unit_groups(select(gpt2_dense.layers), "heads", n_heads=4)[0]
    masks = unit_masks(group, torch.tensor([True, False, True, True]), _shapes(gpt2_dense, group))
    qkv = masks["transformer.h.0.attn.c_attn"]
    assert tuple(qkv.shape) == (96, 32)
    rows = qkv.all(1).view(3, 4, 8)  # [q | k | v] x heads x head_dim
    assert rows.all(2).tolist() == [[True, False, True, True]] * 3
    assert rows.any(2).tolist() == [[True, False, True, True]] * 3


def test_removing_every_unit_is_refused():
    with pytest.raises(ValueError, match=r"remove all 4 units of block 2 attention"):
        keep_units(torch.arange(4.0), 0.9, "block 2 attention")
    assert keep_units(torch.arange(4.0), 0.75).tolist() == [False, False, False, True]


def test_keep_units_ties_by_index():
    assert keep_units(torch.zeros(5), 0.4).tolist() == [False, False, True, True, True]


def test_activation_score_of_a_neuron_is_its_output_change(llama_dense):
    group = find_unit_groups(select(llama_dense.layers), "neurons")[0]
    weights = _weights(llama_dense, group)
    x = torch.randn(40, 37, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scores = activation_unit_scores(group, weights, (x * x).sum(0))
    down = weights[group.col_layer].double()
    for i in (0, 7, 36):
        # removing neuron i changes the down output by W[:, i] x_i^T; its Frobenius norm is the score
        change = torch.outer(x[:, i], down[:, i])
        assert float(scores[i]) == pytest.approx(float(change.norm()), rel=1e-5)
    with pytest.raises(ValueError, match=r"\(5,\).*\(32, 37\).*\(37,\)"):
        activation_unit_scores(group, weights, torch.ones(5))


def test_heads_need_the_head_count(llama_dense):
    with pytest.raises(ValueError, match="number of attention heads"):
        find_unit_groups(select(llama_dense.layers), "heads")
    with pytest.raises(ValueError, match="unknown structured unit"):
        find_unit_groups(select(llama_dense.layers), "channels")


def test_whole_heads_say_how_the_sparsity_rounds_and_what_gqa_keeps(llama_dense):
    """4 query heads over 2 K/V heads: 80% asked removes round(3.2) = 3 heads (75%) and one K/V head (50%)."""
    result = prune_masks(llama_dense, "magnitude", "heads", 0.8)
    assert {round(s, 3) for s in result.info["layer_sparsity"].values()} == {0.75, 0.5}
    rounding, gqa = result.info["messages"][:2]
    assert rounding.startswith("80% asked, rounded to whole heads") and "q, o lose 75%" in rounding
    assert gqa.startswith("grouped-query attention") and "k and v lose 50%" in gqa
    half = prune_masks(llama_dense, "magnitude", "heads", 0.5).info["messages"]  # 2 of 4 heads: exact
    assert not any("rounded" in m for m in half)
