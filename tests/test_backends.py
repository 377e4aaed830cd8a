"""Execution backends: every backend computes what masked dense computes, and restore is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prune_explorer.execution import autotune, backends, modules
from prune_explorer.execution.labels import CSR, DENSE_ZEROS, TOKEN_FASTEST
from prune_explorer.execution.modules import AutoLinear, BackendUnavailable, CSRLinear
from prune_explorer.execution.paths import csr_for
from prune_explorer.models.dense import DenseModel
from prune_explorer.pruning.masks import magnitude_mask
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.state import PruningState
from tests.support.models import CharTokenizer, tiny_model


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _bit_identical(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == snapshot.keys() and all(
        torch.equal(now[k].view(torch.uint8), v.view(torch.uint8)) for k, v in snapshot.items()
    )


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits


IDS = torch.tensor([[1, 40, 77, 12, 250, 3, 99, 180, 7, 64, 31, 5]])


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_csr_linear_matches_masked_linear(sparsity):
    torch.manual_seed(0)
    lin = nn.Linear(37, 29)
    with torch.no_grad():
        lin.weight.mul_(magnitude_mask(lin.weight, sparsity))
    csr = CSRLinear.from_module(lin)
    assert csr.weight_csr.crow_indices().dtype == torch.int32
    assert csr.weight_csr.col_indices().dtype == torch.int32
    for shape in [(1, 37), (5, 37), (2, 7, 37)]:
        x = torch.randn(shape)
        torch.testing.assert_close(csr(x), lin(x), rtol=1e-5, atol=1e-6)


def test_csr_layouts_for_attention_and_mlp(llama_dense):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    q = csr_for(state, "model.layers.0.self_attn.q_proj")
    up = csr_for(state, "model.layers.0.mlp.up_proj")
    assert q.row_major_output and not up.row_major_output
    x = torch.randn(1, 7, 32)
    assert q(x).is_contiguous()  # attention views it per head: SDPA's fast path wants a contiguous head dim
    assert up(x).transpose(-1, -2).is_contiguous()  # (N, out) view of the (out, N) product
    down = csr_for(state, "model.layers.0.mlp.down_proj")
    h = up(x)
    torch.testing.assert_close(down(h), down(h.contiguous()), rtol=1e-6, atol=1e-6)


def test_csr_takes_conv1d_in_out_storage():
    torch.manual_seed(0)
    conv = Conv1D(23, 17)  # storage (in=17, out=23)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(17, 23))
        conv.bias.copy_(torch.randn(23))
        conv.weight.mul_(torch.rand(17, 23) > 0.7)
    x = torch.randn(3, 4, 17)
    torch.testing.assert_close(CSRLinear.from_module(conv)(x), conv(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_fixture", ["llama_dense", "gpt2_dense", "stories"])
@pytest.mark.parametrize("backend", ["dense", "csr", "compact", "auto"])
def test_backend_matches_masked_dense_and_restores_exactly(request, model_fixture, backend):
    dense: DenseModel = request.getfixturevalue(model_fixture)
    dense_before = _snapshot(dense.model)
    dense_modules = [(n, type(m)) for n, m in dense.model.named_modules()]
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    masked = _logits(state.model, IDS)
    masked_modules = {
        name: state.model.get_submodule(name) for name, _ in state.model.named_modules() if name
    }

    report = backends.apply_backend(state, backend, tokens=(12, 1), margin=1e9 if backend == "auto" else 0.95)
    assert state.swapped and state.swap_report is report
    assert {r.name for r in report.layers} >= {
        layer.name for layer in dense.layers if layer.kind != "embedding"
    }
    assert all(r.kernel for r in report.layers)
    torch.testing.assert_close(_logits(state.model, IDS), masked, rtol=1e-4, atol=1e-5)
    if backend == "csr":
        assert any(isinstance(m, CSRLinear) for m in state.model.modules())
        # per layer: each swapped module computes what its masked-dense original computes
        for r in report.layers:
            if r.backend == "csr":
                x = torch.randn(6, r.shape[1])
                torch.testing.assert_close(
                    state.model.get_submodule(r.name)(x), masked_modules[r.name](x), rtol=1e-5, atol=1e-5
                )
    assert [(n, type(m)) for n, m in dense.model.named_modules()] == dense_modules, "dense model untouched"

    backends.restore(state)
    assert not state.swapped
    for name, module in masked_modules.items():
        assert state.model.get_submodule(name) is module
    assert torch.equal(_logits(state.model, IDS), masked)
    state.reset()
    assert _bit_identical(state.model, dense_before)
    assert _bit_identical(dense.model, dense_before)
    assert torch.equal(_logits(state.model, IDS), _logits(dense.model, IDS))


def test_auto_records_choice_per_layer_and_token_count(llama_dense):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    cache: dict = {}
    report = backends.apply_backend(state, "auto", tokens=(12, 1), cache=cache)
    tried = [r for r in report.layers if r.choices]
    assert tried, "layers at 90% sparsity must be calibrated"
    for r in tried:
        assert r.backend == "auto" and set(r.choices) == {12, 1}
        assert set(r.choices.values()) <= {"dense", "csr"}
        assert r.timings_ms == {t: cache[(r.shape, 0.9, t)] for t in (12, 1)}
        assert all(set(times) == {"dense", "csr", "dense_min", "csr_min"} for times in r.timings_ms.values())
        # the kernel the report names is the module installed at that path
        # (auto compacts first: a layer that lost whole neurons runs as a smaller dense matrix)
        module = state.model.get_submodule(r.name)
        base = module.dense if isinstance(module, AutoLinear) else module
        compacted = getattr(base, "kernel_label", None)
        dense_kernel = f"{compacted} with zeros" if compacted else DENSE_ZEROS
        picked = set(r.choices.values())
        if picked == {"csr"}:
            assert isinstance(module, CSRLinear) and r.kernel == CSR
        elif picked == {"dense"}:
            assert isinstance(module, nn.Linear) and r.kernel == dense_kernel
        else:
            assert isinstance(module, AutoLinear) and module.choice == r.choices
            assert r.kernel == "; ".join(
                f"{CSR if c == 'csr' else dense_kernel} at {t} token{'s' * (t != 1)}"
                for t, c in r.choices.items()
            )
    assert set(cache) == {(r.shape, 0.9, t) for r in tried for t in (12, 1)}
    rows = report.rows()
    assert {"layer", "backend", "kernel", "dense ms @12", "csr ms @1"} <= rows[0].keys()
    assert report.summary()
    backends.restore(state)


def test_auto_uses_cached_calibration(llama_dense, monkeypatch):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    cache: dict = {}
    backends.apply_backend(state, "auto", tokens=(12,), cache=cache)
    monkeypatch.setattr(autotune, "_time_in_situ", lambda *a, **k: pytest.fail("calibrated twice"))
    backends.apply_backend(state, "auto", tokens=(12,), cache=cache)
    backends.restore(state)


def test_auto_dispatches_by_token_count(llama_dense):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    masked = _logits(state.model, IDS)
    # a calibration that says CSR wins for prefill and loses for one token, for every shape at 90%
    cache = {}
    for layer in llama_dense.layers:
        cache[(layer.shape, 0.9, 12)] = {"dense": 2.0, "csr": 1.0}
        cache[(layer.shape, 0.9, 1)] = {"dense": 1.0, "csr": 2.0}
    report = backends.apply_backend(state, "auto", tokens=(12, 1), cache=cache, compact=False)
    mixed = [r for r in report.layers if r.choices]
    assert len(mixed) == 14
    assert all(r.choices == {12: "csr", 1: "dense"} for r in mixed)
    assert all("CSR" in r.kernel and "at 12 tokens" in r.kernel and "at 1 token" in r.kernel for r in mixed)
    auto = state.model.get_submodule(mixed[0].name)
    assert isinstance(auto, AutoLinear)
    assert (
        auto.pick(12) == "csr"
        and auto.pick(100) == "csr"
        and auto.pick(1) == "dense"
        and auto.pick(2) == "dense"
    )
    torch.testing.assert_close(_logits(state.model, IDS), masked, rtol=1e-4, atol=1e-5)
    backends.restore(state)


@pytest.mark.parametrize("model_fixture", ["llama_dense", "gpt2_dense"])
def test_csr_stores_the_residual_stream_token_fastest(request, model_fixture):
    dense = request.getfixturevalue(model_fixture)
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    embedding = state.model.get_input_embeddings()
    report = backends.apply_backend(state, "csr")
    wrapped = state.model.get_input_embeddings()
    assert isinstance(wrapped, modules.TokenFastest) and wrapped.inner is embedding
    assert report.layout == TOKEN_FASTEST and "token-fastest" in report.summary()
    y = wrapped(IDS)
    assert torch.equal(y, embedding(IDS)) and y.transpose(-1, -2).is_contiguous()
    backends.restore(state)
    assert state.model.get_input_embeddings() is embedding


def test_semi_structured_unavailable_on_cpu(llama_dense):
    reason = backends.available_backends("cpu")["semi_2_4"]
    assert reason and "CUDA" in reason
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.5))
    with pytest.raises(BackendUnavailable, match="CUDA"):
        backends.apply_backend(state, "semi_2_4")
    assert not state.swapped
    with pytest.raises(BackendUnavailable, match="CUDA"):
        modules.SemiStructuredLinear(torch.zeros(8, 8))


def test_mask_a_backend_cannot_take_stays_on_masked_dense(llama_dense, monkeypatch):
    # pretend this machine had the 2:4 kernels: the per-layer checks must still refuse and fall back
    monkeypatch.setattr(backends, "semi_structured_available", lambda device: None)
    monkeypatch.setattr(modules, "semi_structured_available", lambda device: None)
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.5))  # unstructured 50%: not 2:4
    masked = _logits(state.model, IDS)
    report = backends.apply_backend(state, "semi_2_4")
    pruned = [r for r in report.layers if r.sparsity > 0]
    assert pruned and all(r.backend == "dense" and "not 2:4" in r.note for r in pruned)
    assert all(isinstance(state.model.get_submodule(r.name), nn.Linear) for r in pruned)
    assert torch.equal(_logits(state.model, IDS), masked)
    backends.restore(state)


def test_two_four_pattern():
    keep = torch.tensor([[1, 1, 0, 0, 0, 1, 0, 1]], dtype=torch.bool)
    assert modules.is_two_four(keep)
    assert not modules.is_two_four(torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool))
    assert not modules.is_two_four(torch.ones(2, 6, dtype=torch.bool))


def test_tied_weights_stay_on_masked_dense():
    model = tiny_model("llama", num_hidden_layers=1, tie_word_embeddings=True)
    dense = DenseModel(model, CharTokenizer(), name="tied")
    tied = next(layer for layer in dense.layers if len(layer.holders) > 1)
    state = PruningState(dense)
    state.apply_counts({tied.name: tied.numel // 2})
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    masked = _logits(state.model, IDS)
    report = backends.apply_backend(state, "csr")
    head = next(r for r in report.layers if r.name == "lm_head")
    assert head.backend == "dense" and "tied" in head.note
    assert isinstance(state.model.lm_head, nn.Linear)
    torch.testing.assert_close(_logits(state.model, IDS), masked, rtol=1e-4, atol=1e-5)
    backends.restore(state)


def test_backend_that_changes_outputs_is_undone(llama_dense, monkeypatch):
    monkeypatch.setattr(CSRLinear, "forward", lambda self, x: torch.zeros(*x.shape[:-1], self.out_features))
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    masked = _logits(state.model, IDS)
    with pytest.raises(BackendUnavailable, match="changed this model's outputs"):
        backends.apply_backend(state, "csr")
    assert not state.swapped
    assert torch.equal(_logits(state.model, IDS), masked)


def test_unknown_backend(llama_dense):
    with pytest.raises(ValueError, match="unknown backend"):
        backends.apply_backend(PruningState(llama_dense), "bsr")


def test_apply_twice_restores_first(llama_dense):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    originals = {r: state.model.get_submodule(r) for r in ("model.layers.0.mlp.down_proj",)}
    backends.apply_backend(state, "csr")
    backends.apply_backend(state, "csr")
    backends.restore(state)
    for name, module in originals.items():
        assert state.model.get_submodule(name) is module


def test_tiny_llama_generation_matches_with_cache():
    from prune_explorer.measure.evaluate import greedy_generate

    dense = DenseModel(tiny_model("llama", seed=1), CharTokenizer())
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    expected = greedy_generate(state.model, IDS[0], max_new_tokens=10)
    backends.apply_backend(state, "csr")
    assert greedy_generate(state.model, IDS[0], max_new_tokens=10) == expected
    backends.restore(state)


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_backends_match_masked_dense():
    from prune_explorer.models import smollm2
    from prune_explorer.pruning.prune import prune_masks

    dense = smollm2.load_smollm2()
    ids = torch.tensor([dense.tokenizer.encode("Once upon a time there was a little robot")])
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    masked = _logits(state.model, ids)
    for backend in ("csr", "auto"):
        backends.apply_backend(state, backend, tokens=(16,))
        torch.testing.assert_close(_logits(state.model, ids), masked, rtol=1e-4, atol=1e-3)
        backends.restore(state)
    state.reset()
    prune_masks(dense, "magnitude", "neurons", 0.5).apply(state)
    masked = _logits(state.model, ids)
    report = backends.apply_backend(state, "compact")
    assert sum(r.backend == "compact" for r in report.layers) == 3 * 30
    torch.testing.assert_close(_logits(state.model, ids), masked, rtol=1e-4, atol=1e-3)
    backends.restore(state)
    state.reset()
    assert all(
        torch.equal(a.view(torch.uint8), b.view(torch.uint8))
        for a, b in zip(state.model.state_dict().values(), dense.model.state_dict().values(), strict=True)
    )
