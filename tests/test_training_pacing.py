"""A run fitted to its time budget: a gradual run cut by the budget still ends at its final sparsity, trained
at it; the learning rate and the mask updates follow the planned run; without a budget nothing changes."""

from __future__ import annotations

import types

import pytest
import torch

from prune_explorer.training import job
from prune_explorer.training.checkpoints import load_checkpoint
from prune_explorer.training.data import TrainingData
from prune_explorer.training.pacing import Pace
from prune_explorer.training.schedule import GradualSchedule, fit_schedule
from prune_explorer.training.settings import TrainSettings

SMALL = dict(batch_size=2, seq_len=32, eval_tokens=200)


@pytest.fixture
def data():
    torch.manual_seed(0)
    return TrainingData(torch.randint(3, 259, (2000,)), "random bytes")


class Clock:
    """A fake perf_counter for the job loop: every reading moves ``tick`` seconds on (``slow`` from the
    ``after``-th reading on), so a time budget cuts a run at a known step whatever the machine's load."""

    def __init__(self, tick: float, after: int | None = None, slow: float = 0.0):
        self.now, self.reads, self.tick, self.after, self.slow = 0.0, 0, tick, after, slow

    def perf_counter(self) -> float:
        self.reads += 1
        slow = self.after is not None and self.reads > self.after
        self.now += self.slow if slow else self.tick
        return self.now


def _sparsity(masks) -> float:
    return sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def test_a_gradual_run_cut_by_its_budget_ends_at_the_final_sparsity(
    llama_dense, data, tmp_path, monkeypatch, one_thread
):
    # 3 clock readings a step, 1/16 s apart: 1/8 s a step, 20 steps in the budget of 2.5 s, of 300 asked;
    # the schedule as asked would reach 16% by then.
    monkeypatch.setattr(job, "time", types.SimpleNamespace(perf_counter=Clock(0.0625).perf_counter))
    settings = TrainSettings(
        steps=300, lr=1e-2, warmup=30, schedule=fit_schedule(0.6, 300), max_seconds=2.5,
        checkpoint_dir=str(tmp_path), checkpoint_every=1, **SMALL,
    )  # fmt: skip
    assert settings.schedule.curve(20)[-1] < 0.2
    result = job.train(llama_dense, data, settings)
    info = result.info
    assert info["stopped"] == "time budget" and info["steps_done"] == 20
    assert info["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert not info.get("final_masks_untrained")
    sparsities = [
        _sparsity(load_checkpoint(path)[0].masks) for path in sorted(tmp_path.glob("*.safetensors"))
    ]
    assert len(sparsities) == 20
    assert all(b >= a for a, b in zip(sparsities, sparsities[1:], strict=False))  # masks only grow
    trained_at_final = sum(s == pytest.approx(0.6, abs=0.01) for s in sparsities)
    assert 3 <= trained_at_final <= 10  # about the schedule's last 30%, trained at the final sparsity
    # the cosine ends with the run: its last step ran near the floor, not at 93% of the peak
    assert result.curve[-1].lr < 0.2 * settings.lr


def test_a_step_far_slower_than_planned_still_ends_at_the_final_sparsity(
    llama_dense, data, monkeypatch, one_thread
):
    # 0.01 s a reading, then 5 s each from the 13th (during step 5): the budget runs out unforeseen
    clock = Clock(0.01, after=13, slow=5.0)
    monkeypatch.setattr(job, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    settings = TrainSettings(steps=100, schedule=fit_schedule(0.5, 100), max_seconds=3.0, **SMALL)
    result = job.train(llama_dense, data, settings)
    assert result.info["stopped"] == "time budget" and result.info["steps_done"] == 5
    assert result.info["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert result.info["final_masks_untrained"] is True
    for name, keep in result.masks.items():
        assert bool((result.weights[name][~keep] == 0).all())


def test_without_a_budget_the_plan_is_the_schedule():
    schedule = GradualSchedule(final_sparsity=0.6, start_step=2, updates=4, every=3)
    settings = TrainSettings(steps=20, warmup=4, schedule=schedule)
    pace = Pace(settings)
    due = {}
    for step in range(20):
        target = pace.due(step)
        if target is not None:
            due[step] = target
        pace.record(0.1, None)
        assert pace.refit(step + 1, 0.1 * (step + 1)) == 20
    assert list(due) == schedule.update_steps()
    curve = schedule.curve(20)
    assert all(due[step] == curve[step] for step in due)
    assert [pace.lr(step) for step in range(20)] == [settings.lr_at(step) for step in range(20)]


def test_the_plan_follows_the_budget_left():
    # steps of 0.1 s, mask updates of 0.2 s, 10 s: 21 updates and about 58 steps fit, of 1000 asked
    settings = TrainSettings(steps=1000, warmup=50, schedule=fit_schedule(0.7, 1000), max_seconds=10.0)
    pace, spent, step, updates, final_at = Pace(settings), 0.0, 0, [], None
    while spent < settings.max_seconds:
        target = pace.due(step)
        spent += 0.1 + (0.2 if target is not None else 0.0)
        if target is not None:
            updates.append(target)
            if pace.final_applied and final_at is None:
                final_at = step
        pace.record(0.1 if step else 0.3, 0.2 if target is not None else None)  # the first step is slow
        step += 1
        pace.refit(step, spent)
    assert 50 <= step <= 62 and pace.planned - step <= 1  # the plan ends with the budget
    assert updates[-1] == pytest.approx(0.7) and final_at is not None
    assert 0.55 * step <= final_at <= 0.8 * step  # the schedule's last 30% trains at the final sparsity
    assert len(updates) >= 15 and updates == sorted(updates)
    assert pace.lr(step - 1) < 0.15 * settings.lr  # the cosine ended with the run
    assert pace.lr(2) == pytest.approx(settings.lr * 3 / round(50 * step / 1000))  # warm-up in proportion
    assert pace.final() is None
