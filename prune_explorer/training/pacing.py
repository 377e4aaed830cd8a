"""Fitting a run to its time budget: how many steps fit, and where the schedules' steps fall among them.

A run with ``max_seconds`` may stop long before ``settings.steps`` (a slower machine, a loaded one). Its
cubic sparsity schedule and its learning-rate schedule are therefore laid out over the *planned* steps, not
the asked ones: after every step the plan is fitted again to what is left of the budget (the median of the
recent steps' times, plus the measured cost of each mask update still to come), and both schedules are
stretched by ``r = planned / steps``. A gradual run cut by its budget still reaches its final sparsity
inside it, its last share (as in the given schedule) still trains at that sparsity, and its cosine ends
where the run does. Without a budget ``r = 1``: the schedules are exactly the settings' own.

Mask updates are counted by index, not by step: update ``k`` of ``n`` (Zhu & Gupta's
``s_k = s_f + (s_i - s_f)(1 - k / n)^3``) falls due at step ``r (t0 + k dt)``, and a step applies the highest
index due. A plan that shrinks therefore skips intermediate sparsities, never the final one; the last
planned step applies the final one whatever is left.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from prune_explorer.training.schedule import cubic_sparsity
from prune_explorer.training.settings import TrainSettings

# Recent steps whose median times the next one: long enough to ignore a hiccup, short enough to follow a
# machine whose load changes.
WINDOW = 16


class Pace:
    """The plan of one run: its length in steps, its learning rate and its due mask updates.

    Args:
        settings: the run's settings (``steps`` is the most it may take, ``max_seconds`` its budget).
    """

    def __init__(self, settings: TrainSettings):
        self.settings = settings
        self.planned = settings.steps
        self.applied = -1  # the last mask update index applied (-1: none yet)
        self._steps: deque[float] = deque(maxlen=WINDOW)
        self._updates: list[float] = []
        self._first: float | None = None

    @property
    def scale(self) -> float:
        """r = planned / asked steps."""
        return self.planned / self.settings.steps

    @property
    def final_applied(self) -> bool:
        """Whether the final sparsity is in force (always, without a schedule)."""
        schedule = self.settings.schedule
        return schedule is None or self.applied >= schedule.updates

    def lr(self, step: int) -> float:
        """The learning rate of ``step`` on the planned run."""
        return self.settings.lr_at(step, self.planned)

    def due(self, step: int) -> float | None:
        """The sparsity to prune to before ``step``, or None: no update falls due there."""
        schedule = self.settings.schedule
        if schedule is None:
            return None
        if step >= self.planned - 1:
            index = schedule.updates
        else:
            offset = step - self.scale * schedule.start_step
            if offset < 0:
                return None
            index = min(schedule.updates, math.floor(offset / (self.scale * schedule.every) + 1e-9))
        return None if index <= self.applied else self._apply(index)

    def final(self) -> float | None:
        """The final sparsity if it is not in force yet (the run stops early), else None."""
        schedule = self.settings.schedule
        return None if self.final_applied else self._apply(schedule.updates)

    def _apply(self, index: int) -> float:
        self.applied = index
        schedule = self.settings.schedule
        return cubic_sparsity(schedule.start_step + index * schedule.every, schedule)

    def record(self, step_seconds: float, update_seconds: float | None) -> None:
        """One step's time without its mask update, and the update's if there was one."""
        if update_seconds is not None:
            self._updates.append(update_seconds)
        if self._first is None:  # the first step allocates everything: it times only itself
            self._first = step_seconds
        else:
            self._steps.append(step_seconds)

    def refit(self, done: int, train_seconds: float) -> int:
        """Fit the plan to the budget left after ``done`` steps and ``train_seconds``; returns it."""
        budget = self.settings.max_seconds
        if budget is None or self._first is None:
            return self.planned
        step = statistics.median(self._steps) if self._steps else self._first
        schedule = self.settings.schedule
        left = 0 if schedule is None else max(0, schedule.updates - self.applied)
        update = statistics.fmean(self._updates) if self._updates else 0.0
        room = budget - train_seconds - left * update
        fitted = done + max(1, math.floor(room / step)) if step > 0 else self.settings.steps
        self.planned = max(done + 1, min(self.settings.steps, fitted))
        return self.planned
