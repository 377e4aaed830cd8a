"""Speed measurement: FLOP and byte models against hand counts, labelled timings, sizes, the Speed page."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prune_explorer import backends as B
from prune_explorer import speed
from prune_explorer.compaction import neuron_masks
from prune_explorer.pruning import MagnitudeSettings, apply_magnitude
from prune_explorer.state import PruningState
from prune_explorer.timing import Timing

ROOT = Path(__file__).resolve().parents[1]

# tiny llama: hidden 32, 4 heads of 8 over 2 KV heads, intermediate 37, 2 blocks, vocab 300
BLOCK_WEIGHTS = 32 * 32 + 16 * 32 + 16 * 32 + 32 * 32 + 3 * 37 * 32
HEAD_WEIGHTS = 300 * 32


def test_model_flops_by_hand(llama_dense):
    t = 12
    prefill = speed.model_flops(llama_dense, llama_dense.model, speed.Phase("prefill", t), skip_zeros=False)
    attention = 2 * 2 * 32 * (t * (t + 1) / 2)  # q·k and p·v, causal, 32 = heads × head_dim
    assert prefill == 2 * (2 * BLOCK_WEIGHTS * t + HEAD_WEIGHTS) + 2 * attention
    decode = speed.model_flops(llama_dense, llama_dense.model, speed.Phase("decode", t), skip_zeros=False)
    assert decode == 2 * (2 * BLOCK_WEIGHTS + HEAD_WEIGHTS) + 2 * (2 * 2 * 32 * (t + 1))
    # the dense model has no zeros: counting kept weights gives the same number
    assert speed.model_flops(llama_dense, llama_dense.model, speed.Phase("prefill", t)) == prefill


def test_ideal_counts_only_kept_weights(llama_dense):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.5))
    phase = speed.Phase("prefill", 12)
    kept = speed.model_flops(llama_dense, state.model, phase)
    dense = speed.model_flops(llama_dense, llama_dense.model, phase, skip_zeros=False)
    pruned_weights = sum(state.pruned_count(layer.name) for layer in llama_dense.layers)
    assert dense - kept == pytest.approx(2 * pruned_weights * 12)
    # CSR reads 8 bytes per kept weight (+ row pointers): at 50% a little more than dense
    dense_bytes = speed.streamed_bytes(llama_dense, llama_dense.model)
    assert dense_bytes == 4 * (2 * BLOCK_WEIGHTS + HEAD_WEIGHTS)
    assert speed.streamed_bytes(llama_dense, state.model) == dense_bytes  # masked dense reads every zero
    B.apply_backend(state, "csr")
    pruned = [layer for layer in llama_dense.layers if state.is_pruned(layer.name)]
    kept = sum(layer.numel - state.pruned_count(layer.name) for layer in pruned)
    rows = sum(layer.shape[0] + 1 for layer in pruned)
    assert speed.streamed_bytes(llama_dense, state.model) == 8 * kept + 4 * rows + 4 * HEAD_WEIGHTS
    B.restore(state)


def test_reference_lines():
    assert speed.ideal_ms(10.0, 0.9) == pytest.approx(1.0)
    # 100 × 100 at 90%: 1000 kept × 8 bytes + 101 row pointers × 4, against 40 000 dense bytes
    assert speed.memory_bound_ms(10.0, (100, 100), 0.9) == pytest.approx(10.0 * (8000 + 404) / 40000)
    assert B.csr_bytes(1000, 100) == 8404


def _point(backend: str, s: float, ms: float) -> speed.LayerPoint:
    return speed.LayerPoint((8, 8), s, 1, backend, Timing([ms], "test"))


def test_break_even_interpolates():
    points = [_point("dense", s, 1.0) for s in (0.5, 0.7, 0.9)]
    points += [_point("csr", 0.5, 2.0), _point("csr", 0.7, 1.5), _point("csr", 0.9, 0.5)]
    assert speed.break_even(points) == pytest.approx(0.8)
    assert speed.break_even([_point("dense", 0.5, 1.0), _point("csr", 0.5, 3.0)]) is None
    assert speed.break_even([_point("dense", 0.5, 1.0), _point("csr", 0.5, 0.9)]) == 0.5
    # a noisy win at 50% does not count when CSR loses again at 70%
    noisy = [_point("dense", s, 1.0) for s in (0.5, 0.7, 0.9)]
    noisy += [_point("csr", 0.5, 0.8), _point("csr", 0.7, 1.5), _point("csr", 0.9, 0.5)]
    assert speed.break_even(noisy) == pytest.approx(0.8)


def test_layer_points_label_every_timing():
    torch.manual_seed(0)
    w = torch.randn(24, 40)
    points = list(
        speed.layer_points(w, [0.0, 0.9], tokens=4, working_set_bytes=16 << 10, warmup=1, repeats=3)
    )
    assert [(p.sparsity, p.backend) for p in points] == [
        (s, b) for s in (0.0, 0.9) for b in ("dense", "csr", "compact")
    ]
    assert all(p.median_ms > 0 and p.timing.kernel for p in points)
    labels = {p.backend: p.timing.kernel for p in points if p.sparsity == 0.9}
    assert labels == {"dense": B.DENSE_ZEROS, "csr": B.CSR, "compact": "compacted dense 24→2 rows"}


@pytest.mark.parametrize(
    "case",
    [
        speed.Case("csr 90", 0.9, "unstructured", "csr"),
        speed.Case("auto 90", 0.9, "unstructured", "auto"),
        speed.Case("mlp 50", 0.5, "mlp_neurons", "compact"),
    ],
)
def test_measure_case_times_against_dense_and_restores(llama_dense, case):
    state = PruningState(llama_dense)
    phases = (speed.Phase("prefill", 16), speed.Phase("decode", 16))
    result = speed.measure_case(state, case, phases, warmup=1, repeats=3)
    assert set(result.timings) == {"dense prefill", "case prefill", "dense decode", "case decode"}
    assert result.timings["dense decode"].kernel == B.DENSE
    assert result.timings["case prefill"].kernel == result.report.summary()
    assert result.speedup("prefill") > 0 and result.speedup("decode") > 0
    assert result.ideal("prefill") > 1.0
    assert result.memory_bound() > 0
    assert not B.is_swapped(state)
    assert state.overall_sparsity() > 0
    if case.structure == "mlp_neurons":
        assert any(r.backend == "compact" for r in result.report.layers)


def test_calibration_is_cached_by_shape_bucket_and_tokens(llama_dense):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.92))
    paths, _ = B.linear_layers(state)
    cache: dict = {}
    reports = speed.calibrate(state, paths, tokens=(8,), cache=cache, warmup=1, repeats=2)
    assert {k for k in cache} == {(r.shape, 0.9, 8) for r in reports if r.choices}
    assert all(set(v) == {"dense", "csr", "dense_min", "csr_min"} for v in cache.values())
    B.restore(state)


def test_model_sizes(llama_dense, tmp_path):
    from safetensors.torch import save_file

    state = PruningState(llama_dense)
    sizes = {s.form: s for s in speed.model_sizes(state)}
    dense_bytes = llama_dense.num_parameters() * 4
    assert all(s.memory_bytes == dense_bytes for s in sizes.values())
    path = tmp_path / "dense.safetensors"
    save_file({k: v.contiguous() for k, v in llama_dense.model.state_dict().items()}, str(path))
    assert 0 <= path.stat().st_size - sizes["dense"].disk_bytes < 16 << 10

    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    sizes = {s.form: s for s in speed.model_sizes(state)}
    pruned = [layer for layer in llama_dense.layers if state.is_pruned(layer.name)]
    kept = sum(layer.numel - state.pruned_count(layer.name) for layer in pruned)
    numel = sum(layer.numel for layer in pruned)
    rows = sum(layer.shape[0] for layer in pruned)
    assert sizes["bitmask"].disk_bytes == dense_bytes - 4 * numel + 4 * kept + sum(
        -(-la.numel // 8) for la in pruned
    )
    assert sizes["bitmask"].memory_bytes == dense_bytes
    assert sizes["CSR"].disk_bytes == dense_bytes - 4 * numel + 8 * kept + 4 * (rows + len(pruned))
    assert sizes["compacted"].memory_bytes <= dense_bytes
    assert all(s.kernel for s in sizes.values())

    state.reset()
    state.apply_masks(neuron_masks(llama_dense, 0.5))
    sizes = {s.form: s for s in speed.model_sizes(state)}
    removed = 2 * round(0.5 * 37) * 32 * 3
    assert sizes["compacted"].memory_bytes == dense_bytes - 4 * removed
    assert not B.is_swapped(state)


@pytest.mark.slow
def test_speed_page_runs():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / "speed.py"), default_timeout=120)
    at.run()
    assert not at.exception
    at.button(key="speed_session_run").click().run()
    assert not at.exception
    assert len(at.metric) == 2 and "dense" in at.metric[0].delta
    # nothing is pruned: every layer runs the dense kernel, so no gap may read as a speedup
    assert any("exactly the dense model's work" in i.value for i in at.info)
    assert all(m.delta.endswith("within noise") for m in at.metric)
    at.button(key="speed_layer_run").click().run()
    assert not at.exception
    assert any("Break-even" in m.value for m in at.markdown)
    assert not at.session_state["speed_results"] == {}
