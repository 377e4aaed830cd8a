"""Sensitivity: the replayed partial forward, one-group KL against full forwards, the estimate, the cache."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from prune_explorer.execution import cpu_features
from prune_explorer.measure import sensitivity_cache
from prune_explorer.measure.replay import continue_from, dense_trace, run_from
from prune_explorer.measure.sensitivity import Sensitivity, measure_sensitivity
from prune_explorer.measure.sensitivity_groups import groups, instant_estimate
from prune_explorer.measure.tokens import TokenProtocol
from prune_explorer.models.dense import working_copy
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import PruningState

PROTOCOL = TokenProtocol(n_tokens=128)
# The models here are tiny: one torch thread is faster, and the CPU may be shared with other work.
pytestmark = pytest.mark.usefixtures("one_thread")


def reference_kl_ppl(dense, ids, masks: dict) -> tuple[float, float]:
    """KL(dense‖pruned) and perplexity from full forwards: the dense model, a state pruned by ``masks``."""
    state = PruningState(dense)
    state.apply_masks(masks)
    with torch.inference_mode():
        p_logits = dense.model(input_ids=ids).logits[:, :-1].double()
        q_logits = state.model(input_ids=ids).logits[:, :-1].double()
    logp, logq = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean()
    nll = -logq.gather(-1, ids[:, 1:, None]).mean()
    return float(kl), float(nll.exp())


def test_partial_forward_gives_the_full_forward_logits(stories):
    ids = PROTOCOL.ids(stories)
    model = working_copy(stories.model)
    trace = dense_trace(model, ids, stories.layers)
    assert trace.replayable and len(trace.blocks) == stories.model.config.num_hidden_layers
    with torch.inference_mode():
        full = model(input_ids=ids).logits
    for start in range(len(trace.blocks)):
        torch.testing.assert_close(run_from(model, trace, start), full, rtol=0, atol=1e-5)
    # variants stacked on the batch axis (one sequence: the recorded arguments broadcast)
    assert trace.batchable
    stacked = continue_from(model, trace, 2, torch.cat([trace.hidden[2]] * 3))
    for logits in stacked.split(1):
        torch.testing.assert_close(logits, full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fixture", ["llama_dense", "gpt2_dense"])
def test_partial_forward_on_tiny_models(fixture, request):
    dense = request.getfixturevalue(fixture)
    ids = TokenProtocol(n_tokens=256).ids(dense)
    assert ids.shape == (2, 128)  # the tiny models' context is 128: two sequences
    model = working_copy(dense.model)
    trace = dense_trace(model, ids, dense.layers)
    assert trace.replayable
    with torch.inference_mode():
        full = model(input_ids=ids).logits
    for start in range(len(trace.blocks)):
        torch.testing.assert_close(run_from(model, trace, start), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_one_layer_kl_equals_a_full_forward_with_only_that_layer_pruned(stories, method, tmp_path):
    result = measure_sensitivity(stories, method, [0.5], protocol=PROTOCOL, cache=False)
    ids = PROTOCOL.ids(stories)
    masks = prune_masks(stories, method, "unstructured", 0.5).masks
    assert result.replayed and result.groups == list(masks)
    for name in (result.groups[0], result.groups[len(result.groups) // 2], result.groups[-1]):
        kl, ppl = reference_kl_ppl(stories, ids, {name: masks[name]})
        assert result.kl[name][0] == pytest.approx(kl, rel=1e-4, abs=1e-7)
        assert result.ppl[name][0] == pytest.approx(ppl, rel=1e-5)
        assert result.achieved[name][0] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("mode", ["kind", "block"])
def test_group_modes_equal_full_forwards(stories, mode):
    result = measure_sensitivity(stories, "magnitude", [0.7], mode=mode, protocol=PROTOCOL, cache=False)
    found = groups(stories, mode)
    n_blocks = stories.model.config.num_hidden_layers
    assert len(found) == (7 if mode == "kind" else n_blocks)
    masks = prune_masks(stories, "magnitude", "unstructured", 0.7).masks
    for group in (found[0], found[-1]):
        kl, _ = reference_kl_ppl(
            stories, PROTOCOL.ids(stories), {lay.name: masks[lay.name] for lay in group.layers}
        )
        assert result.kl[group.name][0] == pytest.approx(kl, rel=1e-4)


def test_gpt2_one_layer_kl_equals_full_forward(gpt2_dense):
    protocol = TokenProtocol(n_tokens=256)
    result = measure_sensitivity(gpt2_dense, "magnitude", [0.6], protocol=protocol, cache=False)
    masks = prune_masks(gpt2_dense, "magnitude", "unstructured", 0.6).masks
    name = result.groups[0]
    kl, ppl = reference_kl_ppl(gpt2_dense, protocol.ids(gpt2_dense), {name: masks[name]})
    assert result.kl[name][0] == pytest.approx(kl, rel=1e-4, abs=1e-8)
    assert result.ppl[name][0] == pytest.approx(ppl, rel=1e-5)


def test_kl_grows_with_sparsity_for_magnitude(stories):
    sparsities = [0.0, 0.2, 0.4, 0.6, 0.8, 0.95]
    result = measure_sensitivity(stories, "magnitude", sparsities, protocol=PROTOCOL, cache=False)
    for name in result.groups:
        kl = result.kl[name]
        assert kl[0] == pytest.approx(0.0, abs=1e-9)
        assert kl[-1] > kl[2] > kl[0]
    totals = [sum(result.kl[g][i] for g in result.groups) for i in range(len(sparsities))]
    assert all(a < b for a, b in zip(totals, totals[1:], strict=False))
    assert result.fragile(0.95)[0][1] == max(result.kl[g][-1] for g in result.groups)


def test_estimate_is_zero_at_zero_and_grows(stories):
    sparsities = [0.0, 0.25, 0.5, 0.75, 1.0]
    for method in ("magnitude", "wanda"):
        estimate = instant_estimate(stories, method, sparsities)
        assert set(estimate) == {g.name for g in groups(stories)}
        for values in estimate.values():
            assert values[0] == 0.0
            assert all(a < b for a, b in zip(values, values[1:], strict=False))
            assert values[-1] == pytest.approx(1.0)


def test_result_carries_estimate_and_measurement(stories):
    result = measure_sensitivity(stories, "wanda", [0.5, 0.9], protocol=PROTOCOL, cache=False)
    assert set(result.estimate) == set(result.kl) == set(result.groups)
    assert result.protocol["tokens"] == 128 and result.protocol["predictions"] == 127
    assert result.dense_ppl > 1
    assert all(0 < e < 1 for values in result.estimate.values() for e in values)


def test_cache_round_trip_and_environment(stories, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_EXPLORER_CACHE", str(tmp_path / "root"))
    assert sensitivity_cache.cache_dir() == tmp_path / "root" / "sensitivity"
    first = measure_sensitivity(stories, "magnitude", [0.5], mode="block", protocol=PROTOCOL)
    files = list((tmp_path / "root" / "sensitivity").glob("*.json"))
    assert not first.cached and len(files) == 1
    again = measure_sensitivity(stories, "magnitude", [0.5], mode="block", protocol=PROTOCOL)
    assert again.cached and again.to_dict() == first.to_dict()
    other = measure_sensitivity(stories, "magnitude", [0.6], mode="block", protocol=PROTOCOL)
    assert not other.cached and len(list(files[0].parent.glob("*.json"))) == 2
    assert Sensitivity.from_dict(json.loads(files[0].read_text())["result"]).kl == first.kl


def test_a_corrupt_cache_file_is_ignored(stories, tmp_path, caplog):
    first = measure_sensitivity(
        stories, "magnitude", [0.5], mode="kind", protocol=PROTOCOL, cache_root=tmp_path
    )
    (path,) = (tmp_path / "sensitivity").glob("*.json")
    for garbage in ("{not json", json.dumps({"format": 1, "key": {}, "result": {}}), '{"format": 1}'):
        path.write_text(garbage)
        with caplog.at_level(logging.WARNING):
            again = measure_sensitivity(
                stories, "magnitude", [0.5], mode="kind", protocol=PROTOCOL, cache_root=tmp_path
            )
        assert not again.cached and again.kl == pytest.approx(first.kl)
        assert "ignoring" in caplog.text
        caplog.clear()
    assert measure_sensitivity(
        stories, "magnitude", [0.5], mode="kind", protocol=PROTOCOL, cache_root=tmp_path
    ).cached


class Cancelled(Exception):
    pass


def test_cancel_from_progress_stops_cleanly(stories, tmp_path):
    before = {name: p.detach().clone() for name, p in stories.model.named_parameters()}
    calls = []

    def progress(share: float) -> None:
        calls.append(share)
        if share > 0.5:
            raise Cancelled

    with pytest.raises(Cancelled):
        measure_sensitivity(
            stories, "magnitude", [0.3, 0.6], protocol=PROTOCOL, cache_root=tmp_path, progress=progress
        )
    assert len(calls) > 5 and calls == sorted(calls)
    assert not list(tmp_path.glob("**/*.json"))
    for name, p in stories.model.named_parameters():
        assert torch.equal(p.view(torch.uint8), before[name].view(torch.uint8)), name
    done = []
    result = measure_sensitivity(
        stories, "magnitude", [0.3, 0.6], protocol=PROTOCOL, cache_root=tmp_path, progress=done.append
    )
    assert done[-1] == pytest.approx(1.0) and not result.cached


def test_bad_requests_are_refused(stories):
    with pytest.raises(ValueError, match="mode"):
        groups(stories, "row")
    with pytest.raises(ValueError, match="sparsity"):
        measure_sensitivity(stories, "magnitude", [1.5], protocol=PROTOCOL, cache=False)


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_partial_forward_and_one_layer():
    from prune_explorer.models import smollm2

    dense = smollm2.load_smollm2()
    ids = TokenProtocol(n_tokens=64).ids(dense)
    model = working_copy(dense.model)
    trace = dense_trace(model, ids, dense.layers)
    assert trace.replayable and len(trace.blocks) == 30
    with torch.inference_mode():
        full = model(input_ids=ids).logits
    for start in (0, 15, 29):
        torch.testing.assert_close(run_from(model, trace, start), full, rtol=0, atol=1e-4)


def test_bfloat16_head_delta_keeps_kl_within_one_percent_at_every_sparsity(stories, monkeypatch):
    """The head delta's rounding is relative to each variant's change: a small KL (30%) keeps its precision
    as well as a large one (90%), and an unchanged model gives exactly the dense logits."""
    from prune_explorer.measure import replay
    from prune_explorer.measure.sensitivity import HEAD_DELTA

    assert not replay.head_delta_usable(stories.model)  # a 512 x 64 head: too small to gain
    monkeypatch.setattr(replay, "DELTA_MIN_WEIGHTS", 0)
    monkeypatch.setattr(cpu_features, "fast_bfloat16", lambda: True)
    assert replay.head_delta_usable(stories.model)
    ids = PROTOCOL.ids(stories)
    trace = dense_trace(working_copy(stories.model), ids, stories.layers)
    assert trace.head is not None and trace.head.weight.dtype == torch.bfloat16
    # no change: the dense logits, exactly
    assert torch.equal(trace.head.logits_of(trace.head.inputs), trace.head.logits)

    sparsities = [0.3, 0.9]
    result = measure_sensitivity(stories, "magnitude", sparsities, protocol=PROTOCOL, cache=False)
    assert result.logits == HEAD_DELTA
    for i, sparsity in enumerate(sparsities):
        masks = prune_masks(stories, "magnitude", "unstructured", sparsity).masks
        for name in (result.groups[0], result.groups[len(result.groups) // 2], result.groups[-1]):
            kl, ppl = reference_kl_ppl(stories, ids, {name: masks[name]})
            assert result.kl[name][i] == pytest.approx(kl, rel=1e-2)
            assert result.ppl[name][i] == pytest.approx(ppl, rel=1e-3)


def test_the_head_delta_is_off_without_fast_bfloat16(stories, monkeypatch):
    from prune_explorer.measure import replay
    from prune_explorer.measure.sensitivity import FLOAT32

    monkeypatch.setattr(replay, "DELTA_MIN_WEIGHTS", 0)
    monkeypatch.setattr(cpu_features, "fast_bfloat16", lambda: False)
    assert dense_trace(working_copy(stories.model), PROTOCOL.ids(stories), stories.layers).head is None
    assert measure_sensitivity(stories, "magnitude", [0.5], protocol=PROTOCOL, cache=False).logits == FLOAT32
