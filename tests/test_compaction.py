"""Structured compaction: smaller dense layers that compute exactly what the masked model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prune_explorer.execution import compaction as C
from prune_explorer.execution.backends import apply_backend, restore
from prune_explorer.execution.modules import out_in_weight
from prune_explorer.measure.evaluate import greedy_generate
from prune_explorer.models.dense import DenseModel
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import PruningState
from tests.support.masks import head_masks
from tests.support.models import CharTokenizer, tiny_model

IDS = torch.tensor([[1, 40, 77, 12, 250, 3, 99, 180, 7, 64, 31, 5]])


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=IDS, use_cache=False).logits


def _bit_identical(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.equal(sa[k].view(torch.uint8), sb[k].view(torch.uint8)) for k in sa
    )


def _shape(model: nn.Module, name: str) -> tuple[int, int]:
    return tuple(out_in_weight(model.get_submodule(name)).shape)


def neuron_masks(dense: DenseModel, sparsity: float) -> dict[str, torch.Tensor]:
    """Whole MLP neurons by the library's one unit score (structured magnitude: L2 norm of each unit)."""
    return prune_masks(dense, "magnitude", "neurons", sparsity).masks


def test_compactable_groups_llama_and_gpt2(llama_dense, gpt2_dense):
    mlps, attns, notes = C.compactable_groups(llama_dense)
    assert [g.parent for g in mlps] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert mlps[0].gate == "model.layers.0.mlp.gate_proj" and mlps[0].up == "model.layers.0.mlp.up_proj"
    assert mlps[0].col_layer == "model.layers.0.mlp.down_proj"
    assert [g.parent for g in attns] == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    assert [(g.unit_size, g.n_units, g.n_kv) for g in attns] == [(8, 4, 2)] * 2
    assert not notes
    mlps, attns, _ = C.compactable_groups(gpt2_dense)
    assert len(mlps) == 2 and mlps[0].gate is None and mlps[0].up == "transformer.h.0.mlp.c_fc"
    assert attns[0].fused_qkv and attns[0].row_layers == ("transformer.h.0.attn.c_attn",)
    assert attns[0].n_units == attns[0].n_kv == 4


def test_mlp_neurons_compact_exactly_and_restore(llama_dense):
    state = PruningState(llama_dense)
    state.apply_masks(neuron_masks(llama_dense, 0.5))
    masked = _logits(state.model)
    report = apply_backend(state, "compact")
    kept = 37 - round(0.5 * 37)
    assert _shape(state.model, "model.layers.0.mlp.gate_proj") == (kept, 32)
    assert _shape(state.model, "model.layers.0.mlp.up_proj") == (kept, 32)
    assert _shape(state.model, "model.layers.1.mlp.down_proj") == (32, kept)
    assert state.model.model.layers[0].mlp.intermediate_size == kept
    down = next(r for r in report.layers if r.name == "model.layers.0.mlp.down_proj")
    assert down.backend == "compact" and down.kernel == f"compacted dense 37→{kept} columns"
    assert "removed" in down.note
    torch.testing.assert_close(_logits(state.model), masked, rtol=1e-5, atol=1e-5)
    restore(state)
    assert state.model.model.layers[0].mlp.intermediate_size == 37
    assert torch.equal(_logits(state.model), masked)
    state.reset()
    assert _bit_identical(state.model, llama_dense.model)


def test_neurons_removable_through_up_or_gate_rows(llama_dense):
    state = PruningState(llama_dense)
    g = C.compactable_groups(llama_dense)[0][0]
    up = torch.ones(37, 32, dtype=torch.bool)
    up[[0, 5]] = False
    gate = torch.ones(37, 32, dtype=torch.bool)
    gate[[9]] = False
    state.apply_masks({g.up: up, g.gate: gate})
    assert C.removable_neurons(state, g).nonzero().view(-1).tolist() == [0, 5, 9]
    masked = _logits(state.model)
    apply_backend(state, "compact")
    assert _shape(state.model, g.col_layer) == (32, 34)
    torch.testing.assert_close(_logits(state.model), masked, rtol=1e-5, atol=1e-5)
    restore(state)


def test_grouped_kv_heads_compact_consistently(llama_dense):
    # 4 query heads over 2 KV heads: KV head 0 serves q 0,1 and KV head 1 serves q 2,3
    state = PruningState(llama_dense)
    state.apply_masks(
        head_masks(llama_dense, {"model.layers.0.self_attn": [0, 1, 3], "model.layers.1.self_attn": [1, 3]})
    )
    masked = _logits(state.model)
    expected = greedy_generate(state.model, IDS[0], max_new_tokens=8)
    report = apply_backend(state, "compact")
    a0, a1 = state.model.model.layers[0].self_attn, state.model.model.layers[1].self_attn
    # block 0: KV head 0 has no live query head and goes; KV head 1 keeps one query head (q 2)
    assert _shape(state.model, "model.layers.0.self_attn.q_proj") == (8, 32)
    assert _shape(state.model, "model.layers.0.self_attn.k_proj") == (8, 32)
    assert _shape(state.model, "model.layers.0.self_attn.o_proj") == (32, 8)
    assert a0.num_key_value_groups == 1
    # block 1: each KV head keeps one query head (q 0 and q 2)
    assert _shape(state.model, "model.layers.1.self_attn.q_proj") == (16, 32)
    assert _shape(state.model, "model.layers.1.self_attn.v_proj") == (16, 32)
    assert a1.num_key_value_groups == 1
    assert any(r.kernel == "compacted dense 4→1 heads" for r in report.layers)
    torch.testing.assert_close(_logits(state.model), masked, rtol=1e-5, atol=1e-5)
    assert greedy_generate(state.model, IDS[0], max_new_tokens=8) == expected
    restore(state)
    assert a0.num_key_value_groups == 2 and a1.num_key_value_groups == 2
    state.reset()
    assert _bit_identical(state.model, llama_dense.model)


def test_uneven_groups_keep_equal_query_heads_per_kv_head(llama_dense):
    # q 1 pruned only: KV head 0 has one live head, KV head 1 two; both keep two, so nothing is removed
    state = PruningState(llama_dense)
    state.apply_masks(head_masks(llama_dense, {"model.layers.0.self_attn": [1]}))
    apply_backend(state, "compact")
    assert isinstance(state.model.get_submodule("model.layers.0.self_attn.q_proj"), nn.Linear)
    assert _shape(state.model, "model.layers.0.self_attn.q_proj") == (32, 32)
    restore(state)


def test_heads_removable_through_v_rows(llama_dense):
    state = PruningState(llama_dense)
    v = torch.ones(16, 32, dtype=torch.bool)
    v[8:] = False  # KV head 1: its query heads 2 and 3 output zeros
    state.apply_masks({"model.layers.1.self_attn.v_proj": v})
    g = C.compactable_groups(llama_dense)[1][1]
    assert C.removable_heads(state, g).tolist() == [False, False, True, True]
    masked = _logits(state.model)
    apply_backend(state, "compact")
    assert _shape(state.model, "model.layers.1.self_attn.k_proj") == (8, 32)
    torch.testing.assert_close(_logits(state.model), masked, rtol=1e-5, atol=1e-5)
    restore(state)


def test_gpt2_fused_qkv_heads_and_conv1d_mlp(gpt2_dense):
    state = PruningState(gpt2_dense)
    masks = neuron_masks(gpt2_dense, 0.25)
    masks.update(head_masks(gpt2_dense, {"transformer.h.0.attn": [0, 2]}))
    state.apply_masks(masks)
    masked = _logits(state.model)
    apply_backend(state, "compact")
    attn = state.model.transformer.h[0].attn
    assert attn.split_size == 16 and attn.num_heads == 2
    qkv = state.model.get_submodule("transformer.h.0.attn.c_attn")
    assert isinstance(qkv, Conv1D) and tuple(qkv.weight.shape) == (32, 48)
    assert _shape(state.model, "transformer.h.0.mlp.c_fc") == (96, 32)
    torch.testing.assert_close(_logits(state.model), masked, rtol=1e-5, atol=1e-5)
    restore(state)
    assert attn.split_size == 32 and attn.num_heads == 4
    state.reset()
    assert _bit_identical(state.model, gpt2_dense.model)


def test_gpt2_up_rows_with_bias_are_not_removable(gpt2_dense):
    g = C.compactable_groups(gpt2_dense)[0][0]
    with torch.no_grad():
        gpt2_dense.model.get_submodule(g.up).bias[:5] = 0.1  # GPT-2 starts its biases at zero
    state = PruningState(gpt2_dense)
    up = torch.ones(128, 32, dtype=torch.bool)
    up[:10] = False  # rows 0-4: gelu(0.1) is not zero, the neurons still add something; rows 5-9 add zero
    state.apply_masks({g.up: up})
    assert C.removable_neurons(state, g).nonzero().view(-1).tolist() == [5, 6, 7, 8, 9]


def test_all_neurons_pruned_keeps_one(llama_dense):
    # Structured pruning refuses to remove every unit of a block...
    with pytest.raises(ValueError, match=r"would remove all 37 units of block 0 MLP"):
        prune_masks(llama_dense, "magnitude", "neurons", 1.0)
    # ...but masks can still kill them all (every down column pruned): compaction keeps one zero neuron.
    state = PruningState(llama_dense)
    state.apply_masks(
        {f"model.layers.{b}.mlp.down_proj": torch.zeros(32, 37, dtype=torch.bool) for b in (0, 1)}
    )
    masked = _logits(state.model)
    apply_backend(state, "compact")
    assert _shape(state.model, "model.layers.0.mlp.down_proj") == (32, 1)
    torch.testing.assert_close(_logits(state.model), masked, rtol=1e-5, atol=1e-5)
    restore(state)


def test_shared_weight_group_is_not_compacted():
    torch.manual_seed(0)
    model = tiny_model("llama")
    mlp = model.model.layers[0].mlp
    mlp.up_proj.weight = mlp.gate_proj.weight  # one tensor under two names
    dense = DenseModel(model, CharTokenizer())
    _, _, notes = C.compactable_groups(dense)
    assert (
        "model.layers.0.mlp.down_proj" in notes and "shared (tied)" in notes["model.layers.0.mlp.down_proj"]
    )
    state = PruningState(dense)
    state.apply_masks({"model.layers.0.mlp.down_proj": torch.zeros(32, 37, dtype=torch.bool)})
    report = apply_backend(state, "compact")
    down = next(r for r in report.layers if r.name == "model.layers.0.mlp.down_proj")
    assert down.backend == "dense" and "shared (tied)" in down.note
    assert _shape(state.model, "model.layers.0.mlp.down_proj") == (32, 37)
    restore(state)


def test_stories260k_structured_compaction(stories):
    state = PruningState(stories)
    state.apply_masks(neuron_masks(stories, 0.5))
    masked = _logits(state.model)
    report = apply_backend(state, "compact")
    assert sum(r.backend == "compact" for r in report.layers) == 3 * 5
    torch.testing.assert_close(_logits(state.model), masked, rtol=1e-5, atol=1e-5)
    restore(state)
    state.reset()
    assert _bit_identical(state.model, stories.model)


def test_pruned_neurons_are_the_units_compaction_removes(llama_dense):
    masks = neuron_masks(llama_dense, 0.5)
    gate, down = masks["model.layers.0.mlp.gate_proj"], masks["model.layers.0.mlp.down_proj"]
    assert gate.dtype == torch.bool and gate.shape == (37, 32) and down.shape == (32, 37)
    assert torch.equal(gate.all(1), gate.any(1)) and torch.equal(gate[:, 0], down[0])
    assert int((~gate[:, 0]).sum()) == round(0.5 * 37)
    state = PruningState(llama_dense)
    state.apply_masks(masks)
    for g in C.compactable_groups(llama_dense)[0]:  # one unit model: the same neurons, by the same index
        assert torch.equal(C.removable_neurons(state, g), ~masks[g.col_layer].all(0)), g.parent
