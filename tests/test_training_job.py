"""Training jobs: the dense model untouched, pruned weights exactly zero through every AdamW step, gradual
masks on the schedule, the result applied to a session with an exact reset, cancel, refusals, bad input."""

from __future__ import annotations

import pytest
import torch

from prune_explorer.models.layers import select
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.ranking import count_for_sparsity
from prune_explorer.pruning.units import model_unit_groups, unit_masks
from prune_explorer.state import PruningState
from prune_explorer.training.budget import (
    TrainingRefused,
    check_job_memory,
    estimate_bytes,
    job_bytes,
    job_slot,
)
from prune_explorer.training.checkpoints import latest_checkpoint, load_checkpoint
from prune_explorer.training.data import TrainingData, sampled_data
from prune_explorer.training.job import TrainingCancelled, train
from prune_explorer.training.schedule import GradualSchedule
from prune_explorer.training.settings import TrainSettings
from prune_explorer.training.student import Start, Student, dense_start

SMALL = dict(batch_size=2, seq_len=32, eval_tokens=200)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.uint8).clone()


def _dense_bits(dense):
    tensors = dict(dense.model.named_parameters()) | dict(dense.model.named_buffers())
    return {name: _bits(t) for name, t in tensors.items()}


@pytest.fixture
def data(llama_dense):
    torch.manual_seed(0)
    return TrainingData(torch.randint(3, 259, (2000,)), "random bytes")


def _pruned_state(dense, sparsity=0.6):
    state = PruningState(dense)
    prune_masks(dense, "magnitude", "unstructured", sparsity).apply(state)
    return state


def test_recovery_keeps_pruned_weights_exactly_zero_after_every_step(llama_dense, data, tmp_path, one_thread):
    state = _pruned_state(llama_dense)
    before = _dense_bits(llama_dense)
    masks = {layer.name: state.mask(layer.name).clone() for layer in select(llama_dense.layers)}
    settings = TrainSettings(
        steps=6, lr=1e-2, weight_decay=0.5, checkpoint_dir=str(tmp_path), checkpoint_every=1, **SMALL
    )
    result = train(llama_dense, data, settings, start=state)
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 6 and result.info["steps_done"] == 6
    for path in files:
        start, _ = load_checkpoint(path)
        for name, keep in masks.items():
            assert torch.equal(start.masks[name], keep)  # masks held fixed
            zeros = start.weights[name][~keep]
            assert torch.equal(_bits(zeros), _bits(torch.zeros_like(zeros)))  # +0.0, bit for bit
            assert not torch.equal(start.weights[name][keep], state.weight(name)[keep])  # the rest trained
    assert all(torch.equal(before[k], v) for k, v in _dense_bits(llama_dense).items())  # dense untouched
    last, step = load_checkpoint(latest_checkpoint(tmp_path))
    assert step == 6 and all(torch.equal(last.weights[n], w) for n, w in result.weights.items())


@pytest.mark.parametrize("recover", ["distill", "text"])
def test_bfloat16_mixed_precision_runs_the_forward_in_bfloat16_and_keeps_exact_zeros(
    llama_dense, data, one_thread, recover
):
    state = _pruned_state(llama_dense)
    losses, results = {}, {}
    for precision in ("float32", "bfloat16"):
        settings = TrainSettings(
            steps=3, lr=1e-2, recover=recover, eval_every=1, precision=precision, **SMALL
        )
        results[precision] = train(llama_dense, data, settings, start=state)
        losses[precision] = results[precision].curve[1].loss  # step 0's loss: the start weights, same batch
    # the same batch and weights: bfloat16 matmuls change the loss a little, and only a little
    assert losses["bfloat16"] != losses["float32"]
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.05)
    for name, weight in results["bfloat16"].weights.items():
        assert weight.dtype == torch.float32  # master weights stay float32
        keep = state.mask(name)
        zeros = weight[~keep]
        assert torch.equal(_bits(zeros), _bits(torch.zeros_like(zeros)))
        assert not torch.equal(weight[keep], state.weight(name)[keep])


def test_result_applies_to_the_session_and_reset_is_exact(llama_dense, data, one_thread):
    state = _pruned_state(llama_dense)
    before = _dense_bits(llama_dense)
    result = train(llama_dense, data, TrainSettings(steps=3, lr=1e-2, recover="text", **SMALL), start=state)
    result.apply(state)
    for name, weight in result.weights.items():
        assert torch.equal(state.weight(name), torch.where(result.masks[name], weight, 0.0))
        assert torch.equal(state.mask(name), result.masks[name])
    assert state.overall_sparsity(select(llama_dense.layers)) == pytest.approx(result.info["sparsity"])
    state.reset()
    for layer in llama_dense.layers:
        assert torch.equal(_bits(state.weight(layer.name)), _bits(layer.weight(llama_dense.model)))
    assert all(torch.equal(before[k], v) for k, v in _dense_bits(llama_dense).items())


def test_recovery_by_distillation_lowers_held_out_perplexity(stories, one_thread):
    data = sampled_data(stories, tokens=16 * 128, seq_len=128, seed=1)
    state = _pruned_state(stories, 0.5)
    settings = TrainSettings(steps=40, lr=1e-2, batch_size=8, seq_len=64, eval_every=20)
    result = train(stories, data, settings, start=state)
    ppl = [p.ppl for p in result.curve]
    assert [p.step for p in result.curve] == [0, 20, 40]
    assert ppl[-1] < 0.7 * ppl[0] and result.info["dense_ppl"] < ppl[-1]
    assert all(p.sparsity == pytest.approx(0.5, abs=1e-3) for p in result.curve)


@pytest.mark.parametrize("method, pattern", [("magnitude", "unstructured"), ("wanda", "unstructured")])
def test_gradual_pruning_follows_the_schedule(llama_dense, data, tmp_path, one_thread, method, pattern):
    schedule = GradualSchedule(final_sparsity=0.6, start_step=1, updates=3, every=2)
    settings = TrainSettings(
        steps=9, lr=1e-2, weight_decay=0.1, schedule=schedule, method=method, pattern=pattern,
        checkpoint_dir=str(tmp_path), checkpoint_every=1, **SMALL,
    )  # fmt: skip
    result = train(llama_dense, data, settings)
    curve = schedule.curve(9)
    previous = None
    for path in sorted(tmp_path.glob("*.safetensors")):
        start, step = load_checkpoint(path)
        masks = start.masks
        pruned = sum(int((~m).sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        # Wanda counts round(s · in) per row: rows of 32 and 37 inputs round by up to 1/64
        assert pruned / total == pytest.approx(curve[step - 1], abs=0.01 if method == "magnitude" else 0.02)
        for name, keep in masks.items():
            assert bool((start.weights[name][~keep] == 0).all())
            if previous is not None:
                assert not bool((keep & ~previous[name]).any())  # once pruned, stays pruned
        previous = masks
    assert result.info["sparsity"] == pytest.approx(0.6, abs=0.02)


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
@pytest.mark.parametrize("unit", ["neurons", "heads"])
def test_gradual_units_prune_whole_units_on_the_schedule(
    llama_dense, data, tmp_path, one_thread, method, unit
):
    schedule = GradualSchedule(final_sparsity=0.5, start_step=1, updates=2, every=2)
    settings = TrainSettings(
        steps=7, lr=1e-2, schedule=schedule, method=method, pattern=unit, checkpoint_dir=str(tmp_path),
        checkpoint_every=1, **SMALL,
    )  # fmt: skip
    result = train(llama_dense, data, settings)
    layers = select(llama_dense.layers)
    groups = model_unit_groups(llama_dense, layers, unit)
    assert groups
    shapes = {layer.name: layer.shape for layer in layers}
    curve = schedule.curve(7)
    gone_before: dict[int, torch.Tensor] = {}
    for path in sorted(tmp_path.glob("*.safetensors")):
        start, step = load_checkpoint(path)
        for group in groups:
            col = start.masks[group.col_layer]
            keep = col.any(0).view(group.n_units, group.unit_size).any(1)
            for name, mask in unit_masks(group, keep, shapes).items():
                assert torch.equal(start.masks[name], mask), f"{name}: not whole {unit} at step {step}"
                assert bool((start.weights[name][~mask] == 0).all())
            assert int((~keep).sum()) == count_for_sparsity(group.n_units, curve[step - 1])
            if group.block in gone_before:
                assert not bool((keep & gone_before[group.block]).any()), "a pruned unit came back"
            gone_before[group.block] = ~keep
    in_groups = {name for group in groups for name in group.layer_names}
    others = [layer.name for layer in layers if layer.name not in in_groups]
    assert others and all(bool(result.masks[name].all()) for name in others)  # trained, not pruned
    assert result.info["schedule_done"]


def test_gradual_two_four(llama_dense, data, one_thread):
    schedule = GradualSchedule(final_sparsity=0.5, updates=2, every=2)
    settings = TrainSettings(steps=6, schedule=schedule, pattern="2:4", **SMALL)
    result = train(llama_dense, data, settings)
    for keep in result.masks.values():
        full = keep.shape[1] - keep.shape[1] % 4
        groups = keep[:, :full].reshape(keep.shape[0], -1, 4)
        assert bool((groups.sum(-1) == 2).all())


def test_cancel_returns_the_last_whole_step(llama_dense, data, tmp_path, one_thread):
    seen = []

    def progress(share):
        seen.append(share)
        if len(seen) == 3:
            raise TrainingCancelled

    settings = TrainSettings(steps=10, checkpoint_dir=str(tmp_path), checkpoint_every=1, **SMALL)
    result = train(llama_dense, data, settings, start=_pruned_state(llama_dense), progress=progress)
    assert result.cancelled and result.info["steps_done"] == 3 and result.curve[-1].step == 3
    last, step = load_checkpoint(latest_checkpoint(tmp_path))
    assert step == 3 and all(torch.equal(last.weights[n], w) for n, w in result.weights.items())


def _checkpoint_at(folder, step, start_state):
    """The trained layers after ``step`` steps: the checkpoint file, or the start for step 0."""
    if step == 0:
        return {name: start_state.weight(name) for name in start_state.dense.by_name}
    for path in folder.glob("*.safetensors"):
        start, at = load_checkpoint(path)
        if at == step:
            return start.weights
    raise AssertionError(f"no checkpoint at step {step}")


def test_best_checkpoint_is_the_lowest_held_out_point_and_applies(llama_dense, data, tmp_path, one_thread):
    # Next-token loss on random bytes at a high rate: the held-out curve does not fall all the way.
    state = _pruned_state(llama_dense)
    settings = TrainSettings(
        steps=6, lr=0.3, recover="text", eval_every=1, keep_best=True, checkpoint_dir=str(tmp_path),
        checkpoint_every=1, **SMALL,
    )  # fmt: skip
    result = train(llama_dense, data, settings, start=state)
    ppl = {p.step: p.ppl for p in result.curve}
    lowest = min(ppl, key=ppl.get)
    assert lowest != 6, f"the test needs a curve whose last point is not its lowest: {ppl}"
    best = result.best
    assert best is not None and best.step == lowest and best.ppl == ppl[lowest] < ppl[6]
    assert result.info["best_step"] == lowest and result.info["best_ppl"] == best.ppl
    expected = _checkpoint_at(tmp_path, lowest, state)
    for name, weight in best.state.weights.items():
        assert torch.equal(weight, expected[name])
    result.apply(state, best=True)
    for name, weight in best.state.weights.items():
        assert torch.equal(state.weight(name), weight) and torch.equal(
            state.mask(name), best.state.masks[name]
        )
    result.apply(state)  # and back to the final state
    for name, weight in result.weights.items():
        assert torch.equal(state.weight(name), weight)


def test_gradual_best_checkpoint_only_at_the_final_masks(llama_dense, data, one_thread):
    schedule = GradualSchedule(final_sparsity=0.6, start_step=0, updates=2, every=2)
    settings = TrainSettings(
        steps=9, lr=0.1, recover="text", schedule=schedule, eval_every=1, keep_best=True, **SMALL
    )
    result = train(llama_dense, data, settings)
    final_points = [p for p in result.curve if p.step > schedule.end_step]
    lowest = min(final_points, key=lambda p: p.ppl)
    assert lowest.step != 9, "the test needs a final stretch whose last point is not its lowest"
    assert min(p.ppl for p in result.curve) < lowest.ppl  # a point at a lower sparsity was lower still
    assert result.best is not None and (result.best.step, result.best.ppl) == (lowest.step, lowest.ppl)
    kept = sum(int(m.sum()) for m in result.best.state.masks.values())
    total = sum(m.numel() for m in result.best.state.masks.values())
    assert 1 - kept / total == pytest.approx(0.6, abs=0.01)


def test_no_best_checkpoint_unless_asked_or_better(llama_dense, data, one_thread):
    state = _pruned_state(llama_dense)
    result = train(
        llama_dense, data, TrainSettings(steps=3, lr=0.3, recover="text", eval_every=1, **SMALL), start=state
    )
    assert result.best is None and "best_step" not in result.info
    with pytest.raises(ValueError, match="no best checkpoint"):
        result.apply(state, best=True)


def test_time_budget_stops_the_run(llama_dense, data, one_thread):
    result = train(llama_dense, data, TrainSettings(steps=50, max_seconds=1e-9, **SMALL))
    assert result.info["stopped"] == "time budget" and result.info["steps_done"] == 1


def test_a_second_job_is_refused_while_one_runs(llama_dense, data):
    with job_slot():
        with pytest.raises(TrainingRefused, match="already running"):
            train(llama_dense, data, TrainSettings(steps=1, **SMALL))
    train(llama_dense, data, TrainSettings(steps=1, **SMALL))  # the slot is free again


def test_memory_estimate_and_refusal(llama_dense):
    layers = select(llama_dense.layers)
    small = estimate_bytes(llama_dense, layers, 1, 32)
    assert small > 21 * sum(layer.numel for layer in layers)
    assert estimate_bytes(llama_dense, layers, 64, 32) > 30 * small
    settings = TrainSettings(batch_size=1, seq_len=32)
    assert job_bytes(llama_dense, settings) == small
    trained = sum(layer.numel for layer in layers)
    best = job_bytes(llama_dense, TrainSettings(batch_size=1, seq_len=32, keep_best=True))
    assert best - small >= trained * 5  # one more copy of the weights and masks
    watched = job_bytes(llama_dense, settings, [layers[0].name])
    assert watched - small >= layers[0].numel * 13  # a start copy and a ranking
    check_job_memory(small, available=small + 1)
    with pytest.raises(TrainingRefused, match="GiB"):
        check_job_memory(small, available=small // 2)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(steps=0), "steps"),
        (dict(steps=2_000_000), "steps"),
        (dict(lr=0.0), "lr"),
        (dict(recover="magic"), "recover"),
        (dict(seq_len=1000), "seq_len"),
        (dict(temperature=0), "temperature"),
        (dict(precision="float8"), "precision"),
        (dict(kinds=("lm_head",), steps=1), None),
        (dict(checkpoint_every=2), "checkpoint_dir"),
        (dict(steps=5, schedule=GradualSchedule(0.5, updates=5, every=1)), "schedule"),
        (dict(steps=50, schedule=GradualSchedule(0.5), method="sparsegpt"), "method"),
        (
            dict(steps=50, schedule=GradualSchedule(0.5), pattern="heads", kinds=("mlp_up", "mlp_down")),
            "pattern",
        ),
        (dict(steps=50, schedule=GradualSchedule(0.9), pattern="heads"), "schedule"),  # all 4 heads would go
        (dict(steps=50, schedule=GradualSchedule(0.7), pattern="2:4"), "schedule"),
    ],
)
def test_bad_settings_name_the_field(llama_dense, data, kwargs, field):
    if field is None:  # a legal choice: the LM head alone trains
        assert train(llama_dense, data, TrainSettings(**(SMALL | kwargs))).info["steps_done"] == 1
        return
    with pytest.raises(ValueError, match=field):
        train(llama_dense, data, TrainSettings(**(SMALL | kwargs)))


def test_student_masks_write_exact_positive_zeros_and_leave_kept_bits(llama_dense):
    layers = select(llama_dense.layers)
    start = dense_start(llama_dense, layers)
    torch.manual_seed(1)
    keep = {name: torch.rand(w.shape) > 0.5 for name, w in start.weights.items()}
    student = Student(llama_dense, layers, Start(start.weights, keep))
    for name, weight in start.weights.items():
        got = student.weight(name)
        zeros = got[~keep[name]]
        assert bool((weight[~keep[name]] < 0).any())  # negatives pruned: a plain multiply gives -0.0
        assert torch.equal(_bits(zeros), _bits(torch.zeros_like(zeros)))
        assert torch.equal(_bits(got[keep[name]]), _bits(weight[keep[name]]))
    for param in student.params.values():
        param.grad = torch.randn_like(param)
    student.mask_grads()
    for name, param in student.params.items():
        assert bool((param.grad[~student.masks[name]] == 0).all())
        assert bool((param.grad[student.masks[name]] != 0).all())
