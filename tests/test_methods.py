"""The one interface: every method x pattern on tiny models, the sparsity asked vs obtained, SparseGPT's new
weights through the session state (restore stays exact), clear errors, and stories260K quality ordering."""

import pytest
import torch

from prune_explorer import texts
from prune_explorer.measure.comparison import mask_overlap, reconstruction_errors
from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.layers import select
from prune_explorer.pruning import sequential
from prune_explorer.pruning.calibration import calibration_batch, default_calibration
from prune_explorer.pruning.methods import METHODS, get_method
from prune_explorer.pruning.patterns import PATTERN_KINDS, parse_pattern
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.ranking import count_for_sparsity
from prune_explorer.state import PruningState

TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun. " * 12


@pytest.fixture
def calib(char_tokenizer):
    return calibration_batch(char_tokenizer, TEXT, seq_len=32, n_sequences=6)


def _bits(t):
    return t.detach().contiguous().view(torch.uint8)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("fixture", ["llama_dense", "gpt2_dense"])
def test_unstructured_sparsity_asked_is_obtained(request, fixture, method, calib):
    dense = request.getfixturevalue(fixture)
    result = prune_masks(dense, method, "unstructured", 0.37, calibration=calib)
    layers = select(dense.layers)
    assert set(result.masks) == {layer.name for layer in layers}
    for layer in layers:
        mask = result.masks[layer.name]
        assert mask.dtype == torch.bool and tuple(mask.shape) == layer.shape
        pruned = int((~mask).sum())
        if method == "wanda":  # comparison group: the row
            assert (mask.sum(1) == layer.shape[1] - count_for_sparsity(layer.shape[1], 0.37)).all()
        else:
            assert pruned == count_for_sparsity(layer.numel, 0.37), layer.name
    assert (result.weights is not None) == (method == "sparsegpt")
    spec, pattern = get_method(method), parse_pattern("unstructured")
    assert result.info["formula"] == spec.formula_for(pattern) == spec.formula
    assert result.info["variant"] == spec.variant_for(pattern, result.info["sequential"])
    assert result.info["sparsity"] == pytest.approx(0.37, abs=0.01)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4", "2:3"])
def test_n_m_every_full_group_keeps_n(llama_dense, calib, method, pattern):
    n, m = parse_pattern(pattern).n, parse_pattern(pattern).m
    result = prune_masks(llama_dense, method, pattern, 0.2, calibration=calib)
    for name, mask in result.masks.items():
        full = mask.shape[1] - mask.shape[1] % m
        assert (mask[:, :full].reshape(mask.shape[0], -1, m).sum(2) == n).all(), name
        assert mask[:, full:].all()
    assert result.info["sparsity_asked"] == 1 - n / m
    assert any("ignored" in msg for msg in result.info["messages"])
    if pattern == "4:8":  # intermediate 37 is no multiple of 8
        assert any("down_proj: the last 5 of 37" in msg for msg in result.info["messages"])


def test_sparsegpt_weights_apply_and_restore_exactly(gpt2_dense, calib):
    dense = gpt2_dense
    before = {k: v.clone() for k, v in dense.model.state_dict().items()}
    ids = calib.ids[0]
    state = PruningState(dense)
    dense_logits = state.model(input_ids=ids.view(1, -1)).logits
    result = prune_masks(state, "sparsegpt", "unstructured", 0.5, calibration=calib)
    result.apply(state)
    for name, w in result.weights.items():
        assert torch.equal(state.weight(name), torch.where(result.masks[name], w, 0.0))
        assert torch.equal(state.mask(name), result.masks[name])
        assert not torch.equal(
            w[result.masks[name]], dense.by_name[name].weight(dense.model)[result.masks[name]]
        )
    state.reset()
    assert torch.equal(_bits(state.model(input_ids=ids.view(1, -1)).logits), _bits(dense_logits))
    for k, v in dense.model.state_dict().items():
        assert torch.equal(_bits(v), _bits(before[k])), k  # the cached dense model is never written
    assert all(not m._forward_hooks for m in dense.model.modules())


def test_sequential_uses_the_pruned_earlier_blocks(llama_dense, calib):
    seq = prune_masks(llama_dense, "sparsegpt", calibration=calib)
    one_pass = prune_masks(llama_dense, "sparsegpt", calibration=calib, sequential=False)
    assert seq.info["sequential"] and not one_pass.info["sequential"]
    for name in seq.weights:  # block 0 sees the same (dense) inputs either way; block 1 does not
        same = torch.allclose(seq.weights[name], one_pass.weights[name])
        assert same == (".layers.0." in name), name
    wanda = prune_masks(llama_dense, "wanda", calibration=calib, sequential=True)
    for name, mask in wanda.masks.items():
        assert (mask.sum(1) == mask.shape[1] - round(0.5 * mask.shape[1])).all(), name


@pytest.mark.parametrize("fixture", ["llama_dense", "gpt2_dense"])
def test_replaying_blocks_equals_running_the_whole_model(request, fixture, calib, monkeypatch):
    dense = request.getfixturevalue(fixture)
    replayed = prune_masks(dense, "sparsegpt", calibration=calib)

    def refuse(*args, **kwargs):
        raise ValueError("forced fallback")

    monkeypatch.setattr(sequential, "capture_block_inputs", refuse)
    full = prune_masks(dense, "sparsegpt", calibration=calib)
    for name, w in full.weights.items():
        assert torch.equal(replayed.masks[name], full.masks[name]), name
        torch.testing.assert_close(replayed.weights[name], w, rtol=1e-4, atol=1e-5)


def test_masks_after_new_weights_start_again_from_dense(llama_dense, calib):
    state = PruningState(llama_dense)
    prune_masks(llama_dense, "sparsegpt", calibration=calib).apply(state)
    mag = prune_masks(llama_dense, "magnitude", sparsity=0.3)
    mag.apply(state)
    for name, mask in mag.masks.items():
        dense_w = llama_dense.by_name[name].weight(llama_dense.model)
        assert torch.equal(state.weight(name), torch.where(mask, dense_w, 0.0)), name


def test_apply_weights_validates(llama_dense):
    state = PruningState(llama_dense)
    name = "model.layers.0.self_attn.q_proj"
    keep = torch.ones(32, 32, dtype=torch.bool)
    with pytest.raises(ValueError, match="without a mask"):
        state.apply_weights({name: torch.zeros(32, 32)}, {})
    with pytest.raises(ValueError, match=r"\(32, 32\).*\(4, 4\)"):
        state.apply_weights({name: torch.zeros(4, 4)}, {name: keep})
    with pytest.raises(ValueError, match="torch.bool"):
        state.apply_weights({name: torch.zeros(32, 32)}, {name: keep.float()})


@pytest.mark.parametrize("method", ["magnitude", "random", "wanda"])
@pytest.mark.parametrize("unit", ["neurons", "heads"])
def test_structured_through_the_interface(llama_dense, calib, method, unit):
    result = prune_masks(llama_dense, method, unit, 0.5, calibration=calib)
    spec = get_method(method)
    assert result.info["formula"] == spec.unit_formula and result.info["variant"] == spec.unit_variant
    assert result.weights is None
    if unit == "neurons":
        down = result.masks["model.layers.1.mlp.down_proj"]
        assert int((~down.all(0)).sum()) == round(0.5 * 37)
    else:
        o = result.masks["model.layers.1.self_attn.o_proj"]
        assert int((~o.view(32, 4, 8).all(2).all(0)).sum()) == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "obs"}, "unknown method"),
        ({"pattern": "4:4"}, "smaller than M"),
        ({"pattern": "0:4"}, "at least 1"),
        ({"pattern": "diagonal"}, "unknown pattern"),
        ({"sparsity": 1.2}, "between 0 and 1"),
        (
            {"method": "sparsegpt", "pattern": "heads"},
            r"SparseGPT prunes unstructured and N:M patterns, not heads; "
            r"for heads use Magnitude or Random or Wanda",
        ),
        ({"pattern": "heads", "sparsity": 0.9}, "would remove all 4 units"),
        ({"method": "wanda", "calibration": ""}, "empty"),
        ({"method": "wanda", "calibration": "tiny"}, r"has 5 tokens.*needs"),
        ({"method": "wanda", "kinds": ("embedding",)}, "embedding"),
        ({"method": "magnitude", "sequential": True}, "needs calibration"),
    ],
)
def test_bad_input_is_a_clear_value_error(llama_dense, kwargs, match):
    args = {"method": "magnitude", "pattern": "unstructured", "sparsity": 0.5} | kwargs
    method = args.pop("method")
    with pytest.raises(ValueError, match=match):
        prune_masks(llama_dense, method, **args)


@pytest.mark.parametrize("fixture", ["llama_dense", "gpt2_dense"])
def test_magnitude_equals_the_slider_uniform_policy(request, fixture):
    dense = request.getfixturevalue(fixture)
    result = prune_masks(dense, "magnitude", sparsity=0.42)
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.42))
    for name, mask in result.masks.items():
        assert torch.equal(state.mask(name), mask), name


def test_random_is_seeded(llama_dense):
    a = prune_masks(llama_dense, "random", sparsity=0.5, seed=1).masks
    b = prune_masks(llama_dense, "random", sparsity=0.5, seed=1).masks
    c = prune_masks(llama_dense, "random", sparsity=0.5, seed=2).masks
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_wanda_statistics_are_cached_and_progress_ends_at_one(llama_dense, calib):
    seen = []
    first = prune_masks(llama_dense, "wanda", sparsity=0.5, calibration=calib, progress=seen.append)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    layers = tuple(layer.name for layer in select(llama_dense.layers))
    assert ("activation_stats", calib.key, layers) in llama_dense.cache
    misses = llama_dense.cache.stats().misses
    second = prune_masks(llama_dense, "wanda", sparsity=0.5, calibration=calib)
    assert llama_dense.cache.stats().misses == misses  # no statistic computed twice
    assert all(torch.equal(first.masks[n], second.masks[n]) for n in first.masks)


def test_every_method_declares_what_it_runs():
    for name, method in METHODS.items():
        assert method.name == name and method.label and method.formula and method.variant
        assert set(method.patterns) <= set(PATTERN_KINDS) and "unstructured" in method.patterns
        structured = {"neurons", "heads"} & set(method.patterns)
        assert bool(method.unit_formula) == bool(structured) == bool(method.unit_variant), name
        assert method.offers_sequential <= method.calibrated, name
        assert method.variant_for(parse_pattern("unstructured"), sequential=False) == method.variant


def test_overlap_helper(llama_dense, calib):
    mag = prune_masks(llama_dense, "magnitude", sparsity=0.5)
    wanda = prune_masks(llama_dense, "wanda", sparsity=0.5, calibration=calib)
    assert set(mask_overlap(mag.masks, mag.masks).values()) == {1.0}
    overlap = mask_overlap(mag.masks, wanda.masks)
    assert set(overlap) == set(mag.masks) and all(0.0 < v < 1.0 for v in overlap.values())
    partial = mask_overlap({"a": torch.tensor([[True, False]])}, {"b": torch.tensor([[False, True]])})
    assert partial == {"a": 0.0, "b": 0.0}  # a layer missing on one side counts as unpruned there


@pytest.mark.slow
def test_stories_sparsegpt_has_lower_reconstruction_error_in_every_layer(stories):
    calib = default_calibration(stories)
    mag = prune_masks(stories, "magnitude", sparsity=0.5)
    sgpt = prune_masks(stories, "sparsegpt", sparsity=0.5, calibration=calib)
    err_mag = reconstruction_errors(stories, mag, calib)
    err_sgpt = reconstruction_errors(stories, sgpt, calib)
    assert set(err_mag) == set(err_sgpt) == set(mag.masks)
    for name, err in err_mag.items():
        assert 0.0 < err_sgpt[name] < err < 1.0, name
    same = reconstruction_errors(stories, {n: torch.ones_like(m) for n, m in mag.masks.items()}, calib)
    assert set(same.values()) == {0.0}


@pytest.mark.slow
def test_stories_activation_aware_beats_magnitude(stories):
    ids = stories.tokenizer.encode(texts.eval_text("stories"))
    calib = default_calibration(stories)
    assert calib.source == "built-in stories calibration text" and calib.seq_len == 128
    state = PruningState(stories)
    ppl = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        for pattern in ("unstructured", "2:4"):
            state.reset()
            prune_masks(stories, method, pattern, 0.5, calibration=calib).apply(state)
            ppl[method, pattern] = perplexity(state.model, ids).ppl
    for pattern in ("unstructured", "2:4"):
        assert ppl["sparsegpt", pattern] < ppl["magnitude", pattern] / 1.5
        assert ppl["wanda", pattern] < ppl["magnitude", pattern] / 1.5
