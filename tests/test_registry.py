"""Every registered pruning method on every pattern it declares: the sparsity asked is the sparsity obtained,
masks and weights have the right form, the dense model is never written, and what ran is said truthfully."""

from __future__ import annotations

import pytest
import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import select
from prune_explorer.pruning.method import Method
from prune_explorer.pruning.methods import METHODS
from prune_explorer.pruning.patterns import PATTERN_KINDS, parse_pattern
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.units import find_unit_groups

PATTERN_OF_KIND = {"unstructured": "unstructured", "n:m": "2:4", "neurons": "neurons", "heads": "heads"}
SPARSITY = 0.5
CASES = [(name, kind) for name, method in METHODS.items() for kind in method.patterns]
UNDECLARED = [
    (name, kind) for name, method in METHODS.items() for kind in PATTERN_KINDS if kind not in method.patterns
]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.uint8).clone()


def model_bits(dense: DenseModel) -> dict[str, torch.Tensor]:
    return {k: bits(v) for k, v in dense.model.state_dict().items()}


def assert_dense_unchanged(dense: DenseModel, before: dict[str, torch.Tensor]) -> None:
    after = dense.model.state_dict()
    for key, value in before.items():
        assert torch.equal(bits(after[key]), value), f"the dense model's {key} changed"


def expected_pruned(method: str, kind: str, dense: DenseModel, sparsity: float) -> dict[str, int]:
    """Weights each layer loses, counted as the docstrings say (independently of the library)."""
    layers = select(dense.layers)
    if kind == "unstructured":
        if method == "wanda":  # per output row: round(s · in) of every row
            return {layer.name: layer.shape[0] * round(sparsity * layer.shape[1]) for layer in layers}
        return {layer.name: round(sparsity * layer.numel) for layer in layers}  # per layer
    if kind == "n:m":  # 2 of every full group of 4 inputs, in every row; the tail columns stay dense
        return {layer.name: layer.shape[0] * (layer.shape[1] // 4) * 2 for layer in layers}
    raise AssertionError(kind)


def check_unit_masks(dense: DenseModel, kind: str, masks: dict[str, torch.Tensor], sparsity: float) -> int:
    """round(s · n_units) units go in every block, whole (rows of the producing layers, columns of the
    consuming one, the same units in both); K/V heads go only with all their query heads. Returns the number
    of weights pruned."""
    n_heads = dense.model.config.num_attention_heads
    groups = find_unit_groups(select(dense.layers), kind, n_heads if kind == "heads" else None)
    assert len(groups) == dense.model.config.num_hidden_layers
    assert set(masks) == {name for g in groups for name in g.layer_names}
    pruned = 0
    for g in groups:
        size = g.unit_size
        col = masks[g.col_layer]
        # a unit's columns of the consuming layer are all kept or all pruned
        col_units = col.reshape(col.shape[0], g.n_units, size)
        unit_keep = col_units.all(0).all(-1)
        assert torch.equal(col_units.any(0).any(-1), unit_keep), g.col_layer
        assert int((~unit_keep).sum()) == round(sparsity * g.n_units), g.label()
        assert torch.equal(col, unit_keep.repeat_interleave(size).view(1, -1).expand_as(col)), g.col_layer
        for name in g.row_layers:
            expected = unit_keep.repeat_interleave(size).view(-1, 1).expand_as(masks[name])
            assert torch.equal(masks[name], expected), name
        for name in g.kv_layers:
            kv_keep = unit_keep.view(g.n_kv, -1).any(1).repeat_interleave(size)
            assert torch.equal(masks[name], kv_keep.view(-1, 1).expand_as(masks[name])), name
        pruned += sum(int((~masks[name]).sum()) for name in g.layer_names)
    return pruned


def check_n_m(mask: torch.Tensor, name: str) -> None:
    rows, cols = mask.shape
    full = cols - cols % 4
    groups = mask[:, :full].reshape(rows, full // 4, 4)
    assert bool((groups.sum(-1) == 2).all()), f"{name}: a group of 4 does not keep exactly 2"
    assert bool(mask[:, full:].all()), f"{name}: the tail columns must stay dense"


@pytest.mark.parametrize(("name", "kind"), CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_every_method_on_every_pattern_it_declares(llama_dense, one_thread, name, kind):
    dense = llama_dense
    method: Method = METHODS[name]
    pattern = PATTERN_OF_KIND[kind]
    before = model_bits(dense)

    result = prune_masks(dense, name, pattern, SPARSITY)

    assert_dense_unchanged(dense, before)
    info, masks = result.info, result.masks
    for layer_name, mask in masks.items():
        layer = dense.by_name[layer_name]
        assert mask.dtype == torch.bool, layer_name
        assert tuple(mask.shape) == layer.shape, layer_name
    total = sum(m.numel() for m in masks.values())
    if parse_pattern(pattern).structured:
        pruned = check_unit_masks(dense, kind, masks, SPARSITY)
    else:
        expected = expected_pruned(name, kind, dense, SPARSITY)
        assert set(masks) == set(expected)  # every selected layer, no embedding, no LM head
        for layer_name, mask in masks.items():
            assert int((~mask).sum()) == expected[layer_name], layer_name
            if kind == "n:m":
                check_n_m(mask, layer_name)
            if name == "wanda" and kind == "unstructured":  # the comparison group is the row
                k = round(SPARSITY * mask.shape[1])
                assert bool(((~mask).sum(1) == k).all()), layer_name
        pruned = sum(expected.values())
        assert info["sparsity"] == pytest.approx(SPARSITY, abs=0.02)  # what was asked, up to rounding
    assert info["sparsity"] == pruned / total
    assert info["method"] == name and info["pattern"] == pattern
    assert info["sequential"] is method.sequential_default  # the method's own default when not told
    assert info["variant"] == method.variant_for(parse_pattern(pattern), info["sequential"])
    assert info["formula"] == method.formula_for(parse_pattern(pattern))
    assert info["variant"] and info["formula"]
    assert (info["calibration"] is not None) is method.calibrated

    if method.updates_weights:
        assert result.weights is not None and set(result.weights) == set(masks)
        for layer_name, w in result.weights.items():
            mask = masks[layer_name]
            assert w.is_floating_point() and tuple(w.shape) == tuple(mask.shape), layer_name
            assert bool((w[~mask] == 0).all()), f"{layer_name}: pruned weights must be exactly 0"
            assert bool(torch.isfinite(w).all()), layer_name
    else:
        assert result.weights is None


@pytest.mark.parametrize(("name", "kind"), UNDECLARED, ids=[f"{n}-{k}" for n, k in UNDECLARED])
def test_a_pattern_a_method_does_not_declare_is_refused(llama_dense, name, kind):
    before = model_bits(llama_dense)
    with pytest.raises(ValueError, match=kind):
        prune_masks(llama_dense, name, PATTERN_OF_KIND[kind], SPARSITY)
    assert_dense_unchanged(llama_dense, before)


def test_the_registry_declares_only_known_patterns():
    assert UNDECLARED, "some method should refuse some pattern (SparseGPT has no whole units)"
    for name, method in METHODS.items():
        assert method.name == name
        assert method.patterns and set(method.patterns) <= set(PATTERN_KINDS), name
        if any(k in ("neurons", "heads") for k in method.patterns):
            assert method.unit_formula and method.unit_variant, name
        if method.sequential_default:
            assert method.offers_sequential, name


def test_unknown_method_is_refused_with_the_known_ones(llama_dense):
    with pytest.raises(ValueError) as caught:
        prune_masks(llama_dense, "obs-magic", "unstructured", SPARSITY)
    message = str(caught.value)
    assert "obs-magic" in message
    for name in METHODS:
        assert name in message


def test_wanda_block_by_block_says_so_and_prunes_the_same_amount(llama_dense, one_thread):
    dense = llama_dense
    wanda = METHODS["wanda"]
    before = model_bits(dense)
    one_pass = prune_masks(dense, "wanda", "unstructured", SPARSITY)
    blocks = prune_masks(dense, "wanda", "unstructured", SPARSITY, sequential=True)
    assert_dense_unchanged(dense, before)

    assert one_pass.info["sequential"] is False
    assert one_pass.info["variant"] == wanda.variant
    assert blocks.info["sequential"] is True
    assert blocks.info["variant"] == wanda.sequential_variant != wanda.variant
    assert set(blocks.masks) == set(one_pass.masks)
    for name, mask in blocks.masks.items():
        assert mask.dtype == torch.bool and mask.shape == one_pass.masks[name].shape
        assert torch.equal((~mask).sum(1), (~one_pass.masks[name]).sum(1)), name  # same count in every row
    assert blocks.info["sparsity"] == one_pass.info["sparsity"]
    # The first block sees the same (dense) inputs either way; later blocks see the pruned earlier blocks.
    first = [n for n in one_pass.masks if dense.by_name[n].block == 0]
    assert all(torch.equal(blocks.masks[n], one_pass.masks[n]) for n in first)


def test_sequential_is_refused_where_it_is_not_offered(llama_dense):
    with pytest.raises(ValueError, match="calibration"):
        prune_masks(llama_dense, "magnitude", "unstructured", SPARSITY, sequential=True)
    with pytest.raises(ValueError, match="sequential"):
        prune_masks(llama_dense, "wanda", "neurons", SPARSITY, sequential=True)


# ----- the Speed page's structured case and the sidebar's "Whole MLP neurons" remove the same neurons


def test_speed_page_structured_case_and_sidebar_neurons_remove_the_same_neurons(llama_dense, one_thread):
    from prune_explorer.execution.backends import restore
    from prune_explorer.execution.compaction import compact
    from prune_explorer.measure.speed import Case, prune_for
    from prune_explorer.pruning.policies import MagnitudeSettings
    from prune_explorer.pruning.settings import apply_settings, prune_settings
    from prune_explorer.state import PruningState

    dense = llama_dense
    before = model_bits(dense)
    page, sidebar = PruningState(dense), PruningState(dense)
    prune_for(page, Case("s", 0.5, "mlp_neurons", "compact"))
    apply_settings(sidebar, prune_settings(MagnitudeSettings(sparsity=0.5), "magnitude", "neurons"))

    for layer in dense.layers:
        assert torch.equal(page.mask(layer.name), sidebar.mask(layer.name)), layer.name
    groups = find_unit_groups(select(dense.layers), "neurons")
    pruned_layers = {n for g in groups for n in g.layer_names}
    assert {layer.name for layer in dense.layers if page.is_pruned(layer.name)} == pruned_layers

    kept = {}
    for g in groups:
        keep = page.mask(g.col_layer).all(0)
        kept[g] = int(keep.sum())
        assert kept[g] == g.n_units - round(0.5 * g.n_units)
    notes = compact(page)
    try:
        for g, k in kept.items():
            for name in g.row_layers:
                assert tuple(page.model.get_submodule(name).weight.shape) == (k, dense.by_name[name].shape[1])
                assert name in notes
            down = page.model.get_submodule(g.col_layer)
            assert tuple(down.weight.shape) == (dense.by_name[g.col_layer].shape[0], k)
            # exactly the kept neurons: the compacted down holds the dense columns of the kept neurons
            keep = page.mask(g.col_layer).all(0)
            assert torch.equal(down.weight, dense.by_name[g.col_layer].weight(dense.model)[:, keep])
    finally:
        restore(page)
    assert not page.swapped
    assert_dense_unchanged(dense, before)


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.offers_sequential])
def test_each_way_a_calibrated_method_runs_is_said(llama_dense, one_thread, name):
    method = METHODS[name]
    for sequential in (False, True):
        result = prune_masks(llama_dense, name, "unstructured", SPARSITY, sequential=sequential)
        assert result.info["sequential"] is sequential
        expected = method.sequential_variant if sequential else method.variant
        assert result.info["variant"] == expected
        assert result.info["sparsity"] == pytest.approx(SPARSITY, abs=0.02)
