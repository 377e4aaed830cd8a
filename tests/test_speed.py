"""Speed measurement: FLOP and byte models against hand counts, labelled timings, sizes, the Speed page."""

from __future__ import annotations

import re

import pytest
import torch

from prune_explorer.execution import autotune
from prune_explorer.execution.backends import apply_backend, restore
from prune_explorer.execution.labels import CSR, DENSE, DENSE_ZEROS, compacted_label, family
from prune_explorer.execution.modules import AutoLinear, CSRLinear, csr_bytes
from prune_explorer.execution.paths import linear_layers
from prune_explorer.measure import layer_speed, speed
from prune_explorer.measure.flops import Phase, model_flops, streamed_bytes
from prune_explorer.measure.sizes import model_sizes
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import PruningState
from prune_explorer.timing import Timing
from tests.support.apptest import figures
from ui.speed_charts import SPEED_COLORS

# tiny llama: hidden 32, 4 heads of 8 over 2 KV heads, intermediate 37, 2 blocks, vocab 300
BLOCK_WEIGHTS = 32 * 32 + 16 * 32 + 16 * 32 + 32 * 32 + 3 * 37 * 32
HEAD_WEIGHTS = 300 * 32


def test_model_flops_by_hand(llama_dense):
    t = 12
    prefill = model_flops(llama_dense, llama_dense.model, Phase("prefill", t), skip_zeros=False)
    attention = 2 * 2 * 32 * (t * (t + 1) / 2)  # q·k and p·v, causal, 32 = heads × head_dim
    assert prefill == 2 * (2 * BLOCK_WEIGHTS * t + HEAD_WEIGHTS) + 2 * attention
    decode = model_flops(llama_dense, llama_dense.model, Phase("decode", t), skip_zeros=False)
    assert decode == 2 * (2 * BLOCK_WEIGHTS + HEAD_WEIGHTS) + 2 * (2 * 2 * 32 * (t + 1))
    # the dense model has no zeros: counting kept weights gives the same number
    assert model_flops(llama_dense, llama_dense.model, Phase("prefill", t)) == prefill


def test_ideal_counts_only_kept_weights(llama_dense):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.5))
    phase = Phase("prefill", 12)
    kept = model_flops(llama_dense, state.model, phase)
    dense = model_flops(llama_dense, llama_dense.model, phase, skip_zeros=False)
    pruned_weights = sum(state.pruned_count(layer.name) for layer in llama_dense.layers)
    assert dense - kept == pytest.approx(2 * pruned_weights * 12)
    # CSR reads 8 bytes per kept weight (+ row pointers): at 50% a little more than dense
    dense_bytes = streamed_bytes(llama_dense, llama_dense.model)
    assert dense_bytes == 4 * (2 * BLOCK_WEIGHTS + HEAD_WEIGHTS)
    assert streamed_bytes(llama_dense, state.model) == dense_bytes  # masked dense reads every zero
    apply_backend(state, "csr")
    pruned = [layer for layer in llama_dense.layers if state.is_pruned(layer.name)]
    kept = sum(layer.numel - state.pruned_count(layer.name) for layer in pruned)
    rows = sum(layer.shape[0] + 1 for layer in pruned)
    assert streamed_bytes(llama_dense, state.model) == 8 * kept + 4 * rows + 4 * HEAD_WEIGHTS
    restore(state)


def test_reference_lines():
    assert layer_speed.ideal_ms(10.0, 0.9) == pytest.approx(1.0)
    # 100 × 100 at 90%: 1000 kept × 8 bytes + 101 row pointers × 4, against 40 000 dense bytes
    assert layer_speed.memory_bound_ms(10.0, (100, 100), 0.9) == pytest.approx(10.0 * (8000 + 404) / 40000)
    assert csr_bytes(1000, 100) == 8404


def _point(backend: str, s: float, ms: float) -> layer_speed.LayerPoint:
    return layer_speed.LayerPoint((8, 8), s, 1, backend, Timing([ms], "test"))


def test_break_even_interpolates():
    points = [_point("dense", s, 1.0) for s in (0.5, 0.7, 0.9)]
    points += [_point("csr", 0.5, 2.0), _point("csr", 0.7, 1.5), _point("csr", 0.9, 0.5)]
    assert layer_speed.break_even(points) == pytest.approx(0.8)
    assert layer_speed.break_even([_point("dense", 0.5, 1.0), _point("csr", 0.5, 3.0)]) is None
    assert layer_speed.break_even([_point("dense", 0.5, 1.0), _point("csr", 0.5, 0.9)]) == 0.5
    # a noisy win at 50% does not count when CSR loses again at 70%
    noisy = [_point("dense", s, 1.0) for s in (0.5, 0.7, 0.9)]
    noisy += [_point("csr", 0.5, 0.8), _point("csr", 0.7, 1.5), _point("csr", 0.9, 0.5)]
    assert layer_speed.break_even(noisy) == pytest.approx(0.8)


def test_layer_points_label_every_timing():
    torch.manual_seed(0)
    w = torch.randn(24, 40)
    # working set of one copy: every point is timed exactly `repeats` times
    points = list(layer_speed.layer_points(w, [0.0, 0.9], tokens=4, working_set_bytes=1, warmup=1, repeats=3))
    assert [(p.sparsity, p.backend) for p in points] == [
        (s, b) for s in (0.0, 0.9) for b in ("dense", "csr", "compact")
    ]
    assert all(p.shape == (24, 40) and p.tokens == 4 and len(p.timing.runs_ms) == 3 for p in points)
    labels = {(p.sparsity, p.backend): p.timing.kernel for p in points}
    assert labels == {
        (0.0, "dense"): DENSE_ZEROS,
        (0.0, "csr"): CSR,
        (0.0, "compact"): compacted_label(24, 24, "rows"),
        (0.9, "dense"): DENSE_ZEROS,
        (0.9, "csr"): CSR,
        (0.9, "compact"): "compacted dense 24→2 rows",  # round(0.1 · 24) rows kept
    }


def _installed_kernel(module, r) -> None:
    """The module at a report's layer runs the kernel the report names."""
    if r.backend == "csr":
        assert isinstance(module, CSRLinear) and r.kernel == CSR, r.name
    elif r.backend == "compact":
        assert family(module.kernel_label) == "compacted dense", r.name
        assert r.kernel.startswith(module.kernel_label), r.name
    elif r.backend == "auto" and set(r.choices.values()) == {"csr", "dense"}:
        assert isinstance(module, AutoLinear) and module.choice == r.choices, r.name
    elif r.backend == "auto" and set(r.choices.values()) == {"csr"}:
        assert isinstance(module, CSRLinear) and r.kernel == CSR, r.name
    else:  # masked dense, maybe compacted first
        assert not isinstance(module, (CSRLinear, AutoLinear)), r.name
        assert r.kernel.startswith(getattr(module, "kernel_label", "dense matmul")), r.name


@pytest.mark.parametrize(
    "case",
    [
        speed.Case("csr 90", 0.9, "unstructured", "csr"),
        speed.Case("auto 90", 0.9, "unstructured", "auto"),
        speed.Case("mlp 50", 0.5, "mlp_neurons", "compact"),
    ],
)
def test_measure_case_times_against_dense_and_restores(llama_dense, case, monkeypatch):
    state = PruningState(llama_dense)
    phases = (Phase("prefill", 16), Phase("decode", 16))
    installed = []
    real = speed.time_interleaved

    def spy(fns, kernels, warmup, repeats):  # what runs while the timer runs
        installed.append({r.name: state.model.get_submodule(r.name) for r in state.swap_report.layers})
        return real(fns, kernels, warmup, repeats)

    monkeypatch.setattr(speed, "time_interleaved", spy)
    result = speed.measure_case(state, case, phases, warmup=1, repeats=3)
    assert set(result.timings) == {"dense prefill", "case prefill", "dense decode", "case decode"}
    assert all(len(t.runs_ms) == 3 for t in result.timings.values())
    assert result.timings["dense decode"].kernel == result.timings["dense prefill"].kernel == DENSE
    assert result.timings["case prefill"].kernel == result.timings["case decode"].kernel
    assert result.timings["case prefill"].kernel == result.report.summary()
    assert len(installed) == len(phases)  # one interleaved timing per phase, both with the backend in
    for modules in installed:
        for r in result.report.layers:
            _installed_kernel(modules[r.name], r)
    assert result.report.backend == case.backend
    assert result.ideal("prefill") > 1.0
    assert result.memory_bound() >= 1.0  # decode reads no more bytes than dense
    assert not state.swapped
    assert state.overall_sparsity() > 0
    kernels = result.report.kernels()
    if case.backend == "csr":
        pruned = [layer for layer in llama_dense.layers if state.is_pruned(layer.name)]
        assert kernels[CSR] == len(pruned) and result.memory_bound() > 1.0
    if case.structure == "mlp_neurons":
        assert kernels["compacted dense"] == 3 * 2  # gate, up and down of both blocks
        assert all(r.backend == "compact" for r in result.report.layers if ".mlp." in r.name)


def test_calibration_is_cached_by_shape_bucket_and_tokens(llama_dense):
    state = PruningState(llama_dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.92))
    paths, _ = linear_layers(state)
    cache: dict = {}
    reports = autotune.calibrate(state, paths, tokens=(8,), cache=cache, warmup=1, repeats=2)
    assert {k for k in cache} == {(r.shape, 0.9, 8) for r in reports if r.choices}
    assert all(set(v) == {"dense", "csr", "dense_min", "csr_min"} for v in cache.values())
    restore(state)


def test_model_sizes(llama_dense, tmp_path):
    from safetensors.torch import save_file

    state = PruningState(llama_dense)
    sizes = {s.form: s for s in model_sizes(state)}
    dense_bytes = llama_dense.num_parameters() * 4
    assert all(s.memory_bytes == dense_bytes for s in sizes.values())
    path = tmp_path / "dense.safetensors"
    save_file({k: v.contiguous() for k, v in llama_dense.model.state_dict().items()}, str(path))
    assert 0 <= path.stat().st_size - sizes["dense"].disk_bytes < 16 << 10

    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    sizes = {s.form: s for s in model_sizes(state)}
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
    prune_masks(llama_dense, "magnitude", "neurons", 0.5).apply(state)
    sizes = {s.form: s for s in model_sizes(state)}
    removed = 2 * round(0.5 * 37) * 32 * 3
    assert sizes["compacted"].memory_bytes == dense_bytes - 4 * removed
    assert not state.swapped


# ----- the Speed page: its "within noise" decision on timings chosen by the test

# Timings the page is shown: prefill a clear 2× gap with no spread; decode a 0.5 ms gap inside the spread.
FAKE_RUNS = {
    "prefill": {"dense": [10.0] * 7, "case": [5.0] * 7},
    "decode": {
        "dense": [8.0, 12.0, 9.0, 11.0, 10.0, 8.5, 11.5],
        "case": [9.0, 12.5, 9.5, 10.5, 10.5, 9.0, 12.0],
    },
}


@pytest.fixture
def fake_timings(monkeypatch):
    """The Speed page's end-to-end measurement runs every forward once but reports ``FAKE_RUNS``."""

    def fake(fns, kernels, warmup=2, repeats=7):
        for fn in fns.values():
            fn()
        phase = next(iter(fns)).split()[-1]
        return {k: Timing(list(FAKE_RUNS[phase][k.split()[0]]), kernels[k]) for k in fns}

    monkeypatch.setattr(speed, "time_interleaved", fake)


def _speed_metrics(at) -> dict[str, str]:
    """The headline of each phase: the speedup over dense, or "~1.00×" and why when the gap means nothing."""
    return {m.label: m.value for m in at.metric if m.label in ("128-token prefill", "one-token decode")}


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread", "app_navigation", "fake_timings")
def test_speed_page_tells_a_speedup_from_noise():
    from tests.support.apptest import choose, set_sparsity, start

    at = start()
    set_sparsity(at, 50)
    choose(at, "magnitude", "neurons")  # whole neurons: the auto backend compacts them, a kernel of its own
    at.switch_page("views/speed.py").run()
    assert not at.exception, at.exception
    at.button(key="speed_session_run").click().run()
    assert not at.exception, at.exception
    (result,) = [r for key, r in at.session_state["speed_results"].items() if key[0] == "session"]
    assert "compacted dense" in result.report.kernels()
    assert not any("exactly the dense model's work" in i.value for i in at.info)
    for phase in ("prefill", "decode"):
        d, c = result.timings[f"dense {phase}"], result.timings[f"case {phase}"]
        assert (d.runs_ms, c.runs_ms) == (FAKE_RUNS[phase]["dense"], FAKE_RUNS[phase]["case"])
    # Kernels in a few words, each layer's full label in the expander's table.
    (kernels,) = [c.value for c in at.caption if c.value.startswith("Kernels: ")]
    assert re.match(r"Kernels: [a-zA-Z: ]+ in \d+ layers?(, [a-zA-Z: ]+ in \d+)*", kernels), kernels
    assert "compacted dense in" in kernels and "F.linear" not in kernels
    assert set(at.dataframe[0].value["kernel"]) <= set(result.report.kernels(by_family=False))
    (sizes,) = [d.value for d in at.dataframe if "in memory" in d.value]  # readable units, not 0.0012 MB
    assert all(re.fullmatch(r"\d+(\.\d)? (bytes|KB|MB)|\d+\.\d\d GB", v) for v in sizes["in memory"])
    headlines = _speed_metrics(at)
    assert headlines["128-token prefill"] == "2.00×"  # a 5 ms gap, no spread: a speedup
    assert headlines["one-token decode"] == "~1.00×, within noise"  # 0.5 ms gap, spreads of about 1.2 ms


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread", "app_navigation", "fake_timings")
def test_speed_page_calls_any_gap_noise_when_every_layer_runs_dense():
    from tests.support.apptest import start

    at = start()  # nothing pruned: every layer runs the dense kernel, whatever the timings say
    at.switch_page("views/speed.py").run()
    at.button(key="speed_session_run").click().run()
    assert not at.exception, at.exception
    assert any("exactly the dense model's work" in i.value for i in at.info)
    headlines = _speed_metrics(at)
    assert set(headlines.values()) == {"~1.00×, same kernel"} and len(headlines) == 2


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread", "app_navigation")
def test_speed_page_times_one_layer_on_every_kernel():
    from tests.support.apptest import start

    at = start()
    at.switch_page("views/speed.py").run()
    assert not at.exception, at.exception
    at.button(key="speed_layer_run").click().run()
    assert not at.exception, at.exception
    assert any("Break-even for CSR" in m.value for m in at.markdown)
    # Finished: no progress bar and no live Stop button left, a short "done" line instead.
    assert not at.get("progress") and not [b for b in at.button if b.key == "speed_layer_stop"]
    assert any(c.value.startswith("Done in ") for c in at.caption)
    (chart,) = [f for f in figures(at) if f["layout"]["yaxis"]["title"]["text"] == "ms per call"]
    colours = [trace["line"]["color"] for trace in chart["data"]]
    assert len(set(colours)) == len(colours) == 5 and set(colours) <= set(SPEED_COLORS.values())
    (points,) = [v for key, v in at.session_state["speed_results"].items() if key[0] == "layer"]
    assert len(points) == 8 * 3  # 8 sparsities × dense, CSR, compacted
    rows = points[0].shape[0]
    assert {p.backend: p.timing.kernel for p in points if p.sparsity == 0.0} == {
        "dense": DENSE_ZEROS,
        "csr": CSR,
        "compact": compacted_label(rows, rows, "rows"),  # nothing pruned: every row kept
    }
