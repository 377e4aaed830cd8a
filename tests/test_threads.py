"""A session's slider moves and its speed measurement in two threads: writes wait for the swapped-in backend
to go, the weights end exactly masked dense, the dense model is never written; models load once per source."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from prune_explorer.execution.backends import apply_backend, restore, running_on
from prune_explorer.measure import speed
from prune_explorer.measure.flops import PREFILL
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import ModulesSwappedError, PruningState
from tests.support.models import saved_model

WAIT = 30.0  # seconds a thread waits for another before the test gives up (never reached when all is well)
# Slider positions a user drags through: big jumps and small steps (both ways), ending pruned.
MOVES = (0.1, 0.5, 0.95, 0.3, 0.0, 0.7, 0.705, 0.71, 0.7, 0.2, 0.9, 0.85, 0.6)
FORWARDS = 25


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.uint8).clone()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def model_bits(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: bits(v) for k, v in model.state_dict().items()}


def assert_bits_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        assert torch.equal(bits(after[key]), value), f"{key} changed"


def assert_masked_dense(state: PruningState) -> None:
    """Every prunable layer's weight is bit-equal to where(mask, dense, 0), nothing swapped in."""
    dense = state.dense
    assert not state.swapped
    for layer in dense.layers:
        mask = state.mask(layer.name)
        assert mask.dtype == torch.bool and tuple(mask.shape) == layer.shape
        dense_w = layer.weight(dense.model)
        expected = torch.where(mask, dense_w, torch.zeros((), dtype=dense_w.dtype))
        assert same_bits(state.weight(layer.name), expected), layer.name


def assert_original_modules(state: PruningState, originals: dict[str, nn.Module]) -> None:
    """The working model runs on its own masked-dense modules again: nothing of a backend is left in it."""
    for path, module in originals.items():
        now = state.model.get_submodule(path)
        assert now is module, f"{path} is {type(now).__name__}, not the original module"
    for layer in state.dense.layers:
        for holder in layer.holders:
            module = state.model.get_submodule(holder)
            assert type(module) in (nn.Linear, nn.Embedding), f"{holder} is {type(module).__name__}"
            assert module.weight is state.weight(layer.name)
    leftovers = [n for n, m in state.model.named_modules() if type(m).__module__.startswith("prune_explorer")]
    assert leftovers == []


def layer_modules(state: PruningState) -> dict[str, nn.Module]:
    return {h: state.model.get_submodule(h) for layer in state.dense.layers for h in layer.holders}


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out - reference).abs().max() / reference.abs().max())


def start(target) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, errors


def join(*pairs: tuple[threading.Thread, list[BaseException]]) -> None:
    for thread, _ in pairs:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a thread never finished (deadlock?)"
    for _, errors in pairs:
        if errors:
            raise errors[0]


def mover(state: PruningState, go: threading.Event, trying: threading.Event, log: list) -> None:
    """Wait for the measurement to hold the model, then drag the slider through ``MOVES``."""
    assert go.wait(WAIT), "the measurement never started"
    log.append("mover starts")
    trying.set()
    for s in MOVES:
        apply_magnitude(state, MagnitudeSettings(sparsity=s))
        log.append(("moved", s))


def assert_moves_after(log: list, last_measuring: str) -> None:
    """Every move finished after the measurement released the model (the mover had to wait)."""
    moves = [i for i, e in enumerate(log) if isinstance(e, tuple) and e[0] == "moved"]
    assert [log[i][1] for i in moves] == list(MOVES)
    assert log.index("mover starts") < log.index(last_measuring) < moves[0], log


def assert_pruned_as_last_move(state: PruningState) -> None:
    from prune_explorer.models.layers import select

    for layer in select(state.dense.layers):
        assert state.pruned_count(layer.name) == round(MOVES[-1] * layer.numel), layer.name


# ----- (a) the acceptance test: a measurement and slider moves of one session at once


def test_slider_moves_wait_for_a_running_backend_and_leave_exact_masked_dense_weights(
    llama_dense, one_thread
):
    dense = llama_dense
    dense_before = model_bits(dense.model)
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    originals = layer_modules(state)
    ids = (torch.arange(40).view(1, -1) * 7) % 300
    with torch.inference_mode():
        reference = state.model(input_ids=ids, use_cache=False).logits.float()

    swapped_in, mover_trying = threading.Event(), threading.Event()
    log: list = []
    seen: dict = {}

    def measurement() -> None:
        with running_on(state, "csr") as report:
            seen["csr layers"] = [r.name for r in report.layers if r.backend == "csr"]
            seen["swapped"] = state.swapped
            weights_before = {layer.name: bits(state.weight(layer.name)) for layer in dense.layers}
            swapped_in.set()
            assert mover_trying.wait(WAIT), "the mover never started"
            errors = []
            with torch.inference_mode():
                for _ in range(FORWARDS):  # the mover is trying to write all this time
                    out = state.model(input_ids=ids, use_cache=False).logits.float()
                    errors.append(relative_error(out, reference))
            seen["errors"] = errors
            seen["weights unchanged"] = all(
                torch.equal(bits(state.weight(name)), b) for name, b in weights_before.items()
            )
            seen["modules during"] = {p: type(state.model.get_submodule(p)).__name__ for p in originals}
            log.append("measurement releases")

    m = start(measurement)
    w = start(lambda: mover(state, swapped_in, mover_trying, log))
    join(m, w)

    assert seen["swapped"] is True
    assert len(seen["csr layers"]) == 14  # every attention and MLP layer of the tiny llama ran as CSR
    assert all(
        type_name == "CSRLinear" for p, type_name in seen["modules during"].items() if p in seen["csr layers"]
    )
    assert max(seen["errors"]) <= 1e-4  # the model the measurement ran was the 90% one throughout
    assert seen["weights unchanged"]
    assert_moves_after(log, "measurement releases")
    assert_masked_dense(state)
    assert_original_modules(state, originals)
    assert_pruned_as_last_move(state)
    assert_bits_unchanged(dense.model, dense_before)


@pytest.mark.parametrize("backend", ["auto", "csr"])
def test_slider_moves_during_speed_measure_wait_and_leave_masked_dense(
    llama_dense, one_thread, monkeypatch, backend
):
    dense = llama_dense
    dense_before = model_bits(dense.model)
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    originals = layer_modules(state)
    timing, mover_trying = threading.Event(), threading.Event()
    log: list = []
    real = speed.time_interleaved

    def time_interleaved(*args, **kwargs):
        log.append(("swapped while timing", state.swapped))
        timing.set()
        assert mover_trying.wait(WAIT), "the mover never started"
        out = real(*args, **kwargs)
        log.append("timed")
        return out

    monkeypatch.setattr(speed, "time_interleaved", time_interleaved)
    result = {}
    m = start(lambda: result.setdefault("r", speed.measure(state, backend, (PREFILL,), warmup=2, repeats=5)))
    w = start(lambda: mover(state, timing, mover_trying, log))
    join(m, w)

    assert ("swapped while timing", True) in log
    report = result["r"].report
    assert sum(r.backend in ("csr", "auto") for r in report.layers) == 14
    assert_moves_after(log, "timed")
    assert_masked_dense(state)
    assert_original_modules(state, originals)
    assert_pruned_as_last_move(state)
    assert_bits_unchanged(dense.model, dense_before)


def test_the_backend_goes_and_the_lock_is_free_however_the_block_ends(llama_dense, one_thread):
    dense = llama_dense
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    originals = layer_modules(state)

    with pytest.raises(KeyError, match="inside"):
        with running_on(state, "csr"):
            assert state.swapped
            raise KeyError("inside")

    assert not state.swapped
    assert_original_modules(state, originals)
    w = start(lambda: apply_magnitude(state, MagnitudeSettings(sparsity=0.5)))  # would hang on a held lock
    join(w)
    assert_masked_dense(state)


def test_compaction_attributes_are_put_back(llama_dense, one_thread):
    dense = llama_dense
    state = PruningState(dense)
    prune_masks(dense, "magnitude", "neurons", 0.5).apply(state)
    prune_masks(dense, "magnitude", "heads", 0.5).apply(state)
    originals = layer_modules(state)
    attrs = {
        path: {
            a: getattr(state.model.get_submodule(path), a)
            for a in ("intermediate_size", "num_key_value_groups")
            if hasattr(state.model.get_submodule(path), a)
        }
        for path in ("model.layers.0.mlp", "model.layers.0.self_attn")
    }
    assert all(attrs.values())
    with running_on(state, "compact"):
        assert state.model.get_submodule("model.layers.0.mlp").intermediate_size == 37 - 18
    for path, values in attrs.items():
        for attr, value in values.items():
            assert getattr(state.model.get_submodule(path), attr) == value, (path, attr)
    assert_original_modules(state, originals)
    assert_masked_dense(state)


# ----- (b) a write from the thread that holds the backend is refused, and changes nothing


def state_bits(state: PruningState) -> dict:
    return {
        layer.name: (
            bits(state.weight(layer.name)),
            state.mask(layer.name).clone(),
            state.pruned_count(layer.name),
        )
        for layer in state.dense.layers
    }


def assert_state_unchanged(state: PruningState, before: dict) -> None:
    for name, (w, mask, count) in before.items():
        assert torch.equal(bits(state.weight(name)), w), name
        assert torch.equal(state.mask(name), mask), name
        assert state.pruned_count(name) == count, name


@pytest.mark.parametrize("how", ["apply_backend", "running_on"])
def test_a_write_while_swapped_is_refused_and_changes_nothing(llama_dense, one_thread, how):
    dense = llama_dense
    dense_before = model_bits(dense.model)
    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.9))
    q = "model.layers.0.self_attn.q_proj"
    up = "model.layers.1.mlp.up_proj"
    state.apply_masks({up: torch.rand(37, 32, generator=torch.Generator().manual_seed(1)) > 0.3})
    before = state_bits(state)
    originals = layer_modules(state)
    shape = dense.by_name[q].shape
    writes = {
        "apply_magnitude": lambda: apply_magnitude(state, MagnitudeSettings(sparsity=0.5)),
        "apply_counts": lambda: state.apply_counts({q: 3}),
        "apply_counts to dense": lambda: state.apply_counts({q: 0}),
        "apply_masks": lambda: state.apply_masks({q: torch.zeros(shape, dtype=torch.bool)}),
        "apply_weights": lambda: state.apply_weights(
            {q: torch.ones(shape)}, {q: torch.ones(shape, dtype=torch.bool)}
        ),
        "reset one": lambda: state.reset([up]),
        "reset": lambda: state.reset(),
    }

    def refuse_all() -> None:
        assert state.swapped
        for what, write in writes.items():
            with pytest.raises(ModulesSwappedError):
                write()
            assert state.swapped, what
            assert_state_unchanged(state, before)

    if how == "apply_backend":
        apply_backend(state, "csr")
        refuse_all()
        restore(state)
    else:
        with running_on(state, "csr"):
            refuse_all()

    assert not state.swapped
    assert_state_unchanged(state, before)
    assert_original_modules(state, originals)
    assert_masked_dense(state)
    state.reset()  # writes work again once the masked-dense modules are back
    assert all(state.pruned_count(layer.name) == 0 for layer in dense.layers)
    assert_masked_dense(state)
    # (c) the dense model is bit-unchanged after all that
    assert_bits_unchanged(dense.model, dense_before)


# ----- (d) one model per source


def test_resolve_source_names_one_folder_once(tmp_path, monkeypatch):
    from prune_explorer.models.loading import BUILTINS, resolve_source

    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    absolute = str((tmp_path / "m").resolve())
    for spelling in ("./m", "m", "m/", absolute, f"{tmp_path}/./m", " ./m "):
        assert resolve_source(spelling) == absolute, spelling
    for name in BUILTINS:
        assert resolve_source(name) == name
        assert resolve_source(f"  {name}\n") == name
    assert resolve_source("  HuggingFaceTB/SmolLM2-135M \t") == "HuggingFaceTB/SmolLM2-135M"


def test_load_dense_loads_one_folder_once_however_it_is_spelled(tmp_path, monkeypatch):
    from ui import loading

    saved_model(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    first = loading.load_dense("./m")
    assert first.model.config.hidden_size == 32
    assert loading.load_dense(str(tmp_path / "m")) is first
    assert loading.load_dense("m") is first
    # Evicted from Streamlit's resource cache but still held by a session: found again, not loaded twice.
    loading._load_dense.clear()
    assert loading.load_dense(str(tmp_path / "m")) is first


def test_load_dense_of_the_built_in_model_twice_is_one_model():
    from ui import loading

    first = loading.load_dense("stories260K")
    assert loading.load_dense("stories260K") is first
    assert loading.load_dense(" stories260K ") is first
