"""The pruning state: isolation from the shared dense model, exact restore, incremental updates."""

import pytest
import torch

from prune_explorer.measure.evaluate import next_token_logits
from prune_explorer.pruning.masks import magnitude_mask
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.state import PruningState


def weight_bytes(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().view(torch.uint8) for k, v in model.state_dict().items()}


def assert_same_bytes(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(params=["llama_dense", "gpt2_dense"])
def dense(request):
    return request.getfixturevalue(request.param)


def test_all_true_masks_give_bit_identical_logits(dense):
    state = PruningState(dense)
    ids = dense.tokenizer.encode("hello world")
    before = next_token_logits(dense.model, ids)
    state.apply_masks({layer.name: torch.ones(layer.shape, dtype=torch.bool) for layer in dense.layers})
    assert torch.equal(next_token_logits(state.model, ids).view(torch.uint8), before.view(torch.uint8))


def test_prune_then_reset_is_bit_exact_and_dense_is_never_written(dense):
    dense_before = weight_bytes(dense.model)
    state = PruningState(dense)
    apply_magnitude(
        state,
        MagnitudeSettings(
            sparsity=0.6, kinds=("attn_q", "attn_qkv", "mlp_up", "mlp_down", "embedding", "lm_head")
        ),
    )
    assert state.overall_sparsity() > 0.3
    assert_same_bytes(weight_bytes(dense.model), dense_before)
    state.reset()
    assert_same_bytes(weight_bytes(state.model), dense_before)
    assert state.overall_sparsity() == 0.0


def test_explicit_masks_reset_bit_exact(dense):
    dense_before = weight_bytes(dense.model)
    state = PruningState(dense)
    masks = {layer.name: magnitude_mask(layer.weight(dense.model), 0.5) for layer in dense.layers}
    state.apply_masks(masks)
    for layer in dense.layers:
        w = state.weight(layer.name)
        assert torch.equal(w[~masks[layer.name]], torch.zeros_like(w[~masks[layer.name]]))
        assert torch.equal(w[masks[layer.name]], layer.weight(dense.model)[masks[layer.name]])
    state.reset()
    assert_same_bytes(weight_bytes(state.model), dense_before)


def test_incremental_moves_equal_a_fresh_prune(stories):
    moved = PruningState(stories)
    for s in (0.2, 0.9, 0.5, 0.51, 0.49, 0.0, 0.37, 0.35):
        apply_magnitude(moved, MagnitudeSettings(sparsity=s))
    fresh = PruningState(stories)
    apply_magnitude(fresh, MagnitudeSettings(sparsity=0.35))
    assert_same_bytes(weight_bytes(moved.model), weight_bytes(fresh.model))
    for layer in stories.layers:
        assert torch.equal(moved.mask(layer.name), fresh.mask(layer.name))


def test_masks_match_the_weights_zeroed(stories):
    state = PruningState(stories)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.4, policy="global"))
    for layer in stories.layers:
        keep = state.mask(layer.name)
        assert keep.shape == layer.shape
        assert torch.equal(state.weight(layer.name)[~keep], torch.zeros(int((~keep).sum())))
        assert state.sparsity(layer.name) == pytest.approx(1 - keep.float().mean().item())


def test_two_sessions_do_not_see_each_other(stories):
    a, b = PruningState(stories), PruningState(stories)
    apply_magnitude(a, MagnitudeSettings(sparsity=0.8))
    assert b.overall_sparsity() == 0.0
    ids = stories.tokenizer.encode("Once upon a time")
    assert torch.equal(next_token_logits(b.model, ids), next_token_logits(stories.model, ids))
    assert not torch.equal(next_token_logits(a.model, ids), next_token_logits(stories.model, ids))


def test_tied_embedding_is_pruned_once_under_both_names(stories):
    emb = next(layer for layer in stories.layers if layer.kind == "embedding")
    assert set(emb.holders) == {"model.embed_tokens", "lm_head"}
    state = PruningState(stories)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.5, kinds=("embedding",)))
    assert state.model.lm_head.weight is state.model.model.embed_tokens.weight
    assert state.model.lm_head.weight is not stories.model.lm_head.weight
    assert state.sparsity(emb.name) == pytest.approx(0.5, abs=1e-3)


def test_gpt2_conv1d_masks_are_out_by_in(gpt2_dense):
    state = PruningState(gpt2_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.5))
    layer = gpt2_dense.by_name["transformer.h.0.mlp.c_fc"]
    assert layer.transposed and layer.shape == (128, 32)
    keep = state.mask(layer.name)
    assert torch.equal(keep, magnitude_mask(layer.weight(gpt2_dense.model), 0.5))


def test_private_bytes_cover_only_pruned_layers(stories):
    state = PruningState(stories)
    assert state.private_bytes() == 0
    apply_magnitude(state, MagnitudeSettings(sparsity=0.5, kinds=("mlp_up",)))
    ups = [layer for layer in stories.layers if layer.kind == "mlp_up"]
    assert state.private_bytes() == sum(layer.numel * 4 for layer in ups)
