"""The cubic gradual-pruning schedule (Zhu & Gupta 2017) and its validation."""

from __future__ import annotations

import pytest

from prune_explorer.training.schedule import GradualSchedule, cubic_sparsity, fit_schedule


def test_cubic_schedule_matches_the_formula():
    s = GradualSchedule(final_sparsity=0.8, initial_sparsity=0.2, start_step=10, updates=4, every=5)
    assert s.end_step == 30
    assert cubic_sparsity(0, s) == pytest.approx(0.2)
    assert cubic_sparsity(10, s) == pytest.approx(0.2)
    # halfway: s_f + (s_i - s_f) (1/2)^3
    assert cubic_sparsity(20, s) == pytest.approx(0.8 + (0.2 - 0.8) / 8)
    assert cubic_sparsity(30, s) == pytest.approx(0.8)
    assert cubic_sparsity(1000, s) == pytest.approx(0.8)


def test_masks_change_only_at_update_steps():
    s = GradualSchedule(final_sparsity=0.5, start_step=2, updates=3, every=4)
    assert s.update_steps() == [2, 6, 10, 14]
    assert [t for t in range(20) if s.is_update(t)] == s.update_steps()
    curve = s.curve(20)
    assert curve[:2] == [0.0, 0.0]
    assert all(b >= a for a, b in zip(curve, curve[1:], strict=False))
    assert all(curve[t] == curve[t - 1] for t in range(1, 20) if not s.is_update(t))
    assert curve[-1] == pytest.approx(0.5)
    # fast at first, slow at the end
    rises = [curve[t] - curve[t - 4] for t in (6, 10, 14)]
    assert rises[0] > rises[1] > rises[2] > 0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(final_sparsity=1.0), "final_sparsity"),
        (dict(final_sparsity=-0.1), "final_sparsity"),
        (dict(final_sparsity=0.5, initial_sparsity=0.6), "initial_sparsity"),
        (dict(final_sparsity=0.5, start_step=-1), "start_step"),
        (dict(final_sparsity=0.5, updates=0), "updates"),
        (dict(final_sparsity=0.5, every=0), "every"),
        (dict(final_sparsity=0.5, every=2.5), "every"),
    ],
)
def test_bad_schedules_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GradualSchedule(**kwargs)


def test_fit_schedule_ends_inside_the_run():
    for steps in (2, 3, 17, 100, 1000):
        s = fit_schedule(0.7, steps)
        assert s.end_step < steps and s.final_sparsity == 0.7
        assert s.curve(steps)[-1] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="steps"):
        fit_schedule(0.7, 1)
