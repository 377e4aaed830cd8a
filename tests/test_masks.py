"""Masks against the reference (torch.nn.utils.prune) and the sparsity asked for against the one obtained."""

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from prune_explorer.pruning.masks import check_mask, magnitude_mask, sparsity_of
from prune_explorer.pruning.policies import MagnitudeSettings, magnitude_counts
from prune_explorer.pruning.ranking import GlobalRanking, count_for_sparsity, layer_ranking, magnitude_ranking


@pytest.mark.parametrize("amount", [0.0, 0.1, 0.37, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("shape", [(37, 32), (5, 171), (64, 64)])
def test_magnitude_mask_equals_torch_l1_unstructured(shape, amount):
    torch.manual_seed(hash(shape) % 1000)
    linear = nn.Linear(shape[1], shape[0])
    ours = magnitude_mask(linear.weight, amount)
    tprune.l1_unstructured(linear, "weight", amount=amount)
    assert torch.equal(ours, linear.weight_mask.bool())


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.73, 1.0])
def test_global_policy_prunes_the_smallest_weights_of_all_layers(llama_dense, sparsity):
    counts = magnitude_counts(llama_dense, MagnitudeSettings(sparsity=sparsity, policy="global"))
    layers = [layer for layer in llama_dense.layers if counts.get(layer.name) is not None]
    selected = [layer for layer in layers if layer.kind not in ("embedding", "lm_head")]
    total = sum(layer.numel for layer in selected)
    assert sum(counts[layer.name] for layer in selected) == count_for_sparsity(total, sparsity)
    # Reference: torch's global_unstructured over the same weights.
    modules = [llama_dense.model.get_submodule(layer.name) for layer in selected]
    clones = [nn.Linear(m.in_features, m.out_features, bias=False) for m in modules]
    for clone, m in zip(clones, modules):
        clone.weight.data.copy_(m.weight.data)
    tprune.global_unstructured([(c, "weight") for c in clones], tprune.L1Unstructured, amount=sparsity)
    for layer, clone in zip(selected, clones):
        assert counts[layer.name] == int((~clone.weight_mask.bool()).sum()), layer.name


class _Named:
    def __init__(self, name):
        self.name = name


def _global_ranking(weights: dict[str, torch.Tensor]) -> GlobalRanking:
    ranks = {name: magnitude_ranking(w) for name, w in weights.items()}
    return GlobalRanking(ranks, [_Named(name) for name in weights])


def _brute_force_counts(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, int]:
    """Global top-k by hand: every weight as (|w|, layer position, flat index), sorted, the first
    round(sparsity · total) pruned (ties: earlier layer first, then lower index)."""
    names = list(weights)
    entries = sorted(
        (abs(v), layer, i)
        for layer, name in enumerate(names)
        for i, v in enumerate(weights[name].reshape(-1).tolist())
    )
    counts = dict.fromkeys(names, 0)
    for _, layer, _ in entries[: round(sparsity * len(entries))]:
        counts[names[layer]] += 1
    return counts


def test_global_ties_are_split_exactly_and_deterministically():
    weights = {"a": torch.tensor([[0.5, 0.5, 0.5, 2.0]]), "b": torch.tensor([[0.5, 0.5, 3.0, 4.0]])}
    # 4 of 8 go; five weights tie at 0.5 for the last places: layer a's three first, then one of b's
    assert _global_ranking(weights).counts(0.5) == {"a": 3, "b": 1} == _brute_force_counts(weights, 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_global_counts_equal_a_brute_force_top_k(seed, sparsity):
    g = torch.Generator().manual_seed(seed)
    # few distinct magnitudes (and signs): many ties across layers, as 4-bit weights have
    weights = {
        name: (torch.randint(-4, 5, shape, generator=g) / 4.0)
        for name, shape in (("q", (5, 7)), ("up", (3, 11)), ("down", (11, 3)))
    }
    counts = _global_ranking(weights).counts(sparsity)
    total = sum(w.numel() for w in weights.values())
    assert sum(counts.values()) == round(sparsity * total)
    assert counts == _brute_force_counts(weights, sparsity)


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.8])
def test_uniform_policy_reaches_the_asked_sparsity_in_every_layer(stories, sparsity):
    counts = magnitude_counts(stories, MagnitudeSettings(sparsity=sparsity))
    for layer in stories.layers:
        expected = count_for_sparsity(layer.numel, sparsity) if layer.kind != "embedding" else 0
        assert counts[layer.name] == expected


def test_threshold_policy_prunes_at_or_below_the_threshold(stories):
    t = 0.05
    counts = magnitude_counts(stories, MagnitudeSettings(policy="threshold", threshold=t))
    for layer in stories.layers:
        if layer.kind == "embedding":
            continue
        w = layer.weight(stories.model)
        assert counts[layer.name] == int((w.abs() <= t).sum())


def test_bad_settings_are_refused_with_a_message(stories):
    with pytest.raises(ValueError, match="above the largest"):
        magnitude_counts(stories, MagnitudeSettings(policy="threshold", threshold=1e6))
    with pytest.raises(ValueError, match="negative"):
        magnitude_counts(stories, MagnitudeSettings(policy="threshold", threshold=-1.0))
    with pytest.raises(ValueError, match="between 0 and 1"):
        magnitude_counts(stories, MagnitudeSettings(sparsity=1.5))
    with pytest.raises(ValueError, match="policy"):
        magnitude_counts(stories, MagnitudeSettings(policy="bogus"))
    with pytest.raises(ValueError, match="kinds"):
        magnitude_counts(stories, MagnitudeSettings(kinds=("attn_z",)))
    with pytest.raises(ValueError, match="no prunable layer"):
        magnitude_counts(stories, MagnitudeSettings(overrides={"nope": 0.5}))


def test_check_mask_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        check_mask(torch.ones(3, 4, dtype=torch.bool), (4, 3))
    with pytest.raises(ValueError, match="torch.bool"):
        check_mask(torch.ones(4, 3), (4, 3))
    assert sparsity_of(torch.tensor([True, False, False, True])) == 0.5


@pytest.mark.parametrize("numel", [7, 255, 256, 1_000, 40_013])
def test_ranking_mask_is_the_first_k_of_the_order_at_every_k(numel):
    torch.manual_seed(numel)
    ranking = magnitude_ranking(torch.randn(numel))
    position = torch.empty(numel, dtype=torch.long)
    position[ranking.order.long()] = torch.arange(numel)
    step = max(1, numel // 97)
    reused = torch.ones(numel, dtype=torch.bool)
    for k in list(range(0, numel + 1, step)) + [numel, 1, numel - 1]:
        assert torch.equal(ranking.mask(k, torch.Size([numel])), position >= k), k
        assert torch.equal(ranking.mask(k, torch.Size([numel]), out=reused), position >= k), k


def test_a_drag_of_random_moves_equals_a_fresh_prune_after_every_move():
    from prune_explorer.models.dense import DenseModel
    from prune_explorer.state import PruningState

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(300, 211, bias=False), nn.Linear(211, 5, bias=False))
    dense = DenseModel(model, tokenizer=None)
    state = PruningState(dense)
    name = dense.layers[0].name
    numel = dense.layers[0].numel
    w = dense.storage(name).detach()
    rng = torch.Generator().manual_seed(4)
    k = 0
    for _ in range(60):
        # mostly small moves (inside one or two buckets), sometimes large jumps, both directions
        span = numel if torch.rand(1, generator=rng) < 0.3 else numel // 100
        k = int(min(numel, max(1, k + torch.randint(-span, span + 1, (1,), generator=rng))))
        state.apply_counts({name: k})
        expected = torch.where(layer_ranking(dense, name).mask(k, w.shape), w, torch.zeros(()))
        assert torch.equal(state.model[0].weight.view(torch.int32), expected.view(torch.int32)), k
        assert state.pruned_count(name) == k
