"""The gradual pruning schedule of Zhu & Gupta (2017, "To prune, or not to prune"), as a pure function.

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3      for t0 <= t <= t0 + n dt

Sparsity rises from ``s_i`` at step ``t0`` to ``s_f`` at step ``t0 + n dt``, fast at first (many redundant
weights) and slowly at the end (few left to lose); masks are recomputed only at the update steps
``t0, t0 + dt, ..., t0 + n dt``. Before ``t0`` the sparsity is ``s_i``, after the last update ``s_f``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GradualSchedule:
    """Parameters of the cubic schedule.

    Attributes:
        final_sparsity: s_f, in [0, 1).
        initial_sparsity: s_i, in [0, s_f] (0: start from the dense weights).
        start_step: t0, the first mask update (>= 0).
        updates: n, the number of mask updates after the first (>= 1).
        every: dt, steps between mask updates (>= 1).
    """

    final_sparsity: float
    initial_sparsity: float = 0.0
    start_step: int = 0
    updates: int = 10
    every: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.final_sparsity < 1.0:
            raise ValueError(f"final_sparsity must be in [0, 1), got {self.final_sparsity}")
        if not 0.0 <= self.initial_sparsity <= self.final_sparsity:
            raise ValueError(
                f"initial_sparsity must be in [0, final_sparsity={self.final_sparsity}], "
                f"got {self.initial_sparsity}"
            )
        for field, value, low in (("start_step", self.start_step, 0), ("updates", self.updates, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{field} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(
                f"every (steps between mask updates) must be an integer >= 1, got {self.every!r}"
            )

    @property
    def end_step(self) -> int:
        """The last mask update, t0 + n dt: from here on the sparsity is s_f."""
        return self.start_step + self.updates * self.every

    def is_update(self, step: int) -> bool:
        """Whether masks are recomputed before optimizer step ``step`` (0-based)."""
        return self.start_step <= step <= self.end_step and (step - self.start_step) % self.every == 0

    def update_steps(self) -> list[int]:
        """Every step at which masks are recomputed, in order."""
        return list(range(self.start_step, self.end_step + 1, self.every))

    def curve(self, steps: int) -> list[float]:
        """The sparsity in force at each of ``steps`` steps (the masks' own; to draw before a run)."""
        current, out = self.initial_sparsity, []
        for step in range(steps):
            if self.is_update(step):
                current = cubic_sparsity(step, self)
            out.append(current)
        return out


def cubic_sparsity(step: int, schedule: GradualSchedule) -> float:
    """Zhu & Gupta's s_t at ``step`` (clamped: s_i before t0, s_f after t0 + n dt)."""
    s_i, s_f = schedule.initial_sparsity, schedule.final_sparsity
    span = schedule.updates * schedule.every
    progress = min(max((step - schedule.start_step) / span, 0.0), 1.0)
    return s_f + (s_i - s_f) * (1.0 - progress) ** 3


def fit_schedule(
    final_sparsity: float, steps: int, initial_sparsity: float = 0.0, every: int | None = None
) -> GradualSchedule:
    """A schedule over a run of ``steps``: updates from step 0 to about 70% of the run (the last 30% train at
    s_f, as in Zhu & Gupta's recipe of pruning in the first part of training), ``every`` steps apart
    (default: about 20 updates).

    Raises:
        ValueError: ``steps`` < 2, or a sparsity out of range.
    """
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"a gradual schedule needs at least 2 steps, got steps={steps!r}")
    prune_steps = max(1, int(0.7 * steps))
    every = every or max(1, prune_steps // 20)
    updates = max(1, prune_steps // every)
    return GradualSchedule(final_sparsity, initial_sparsity, 0, updates, every)
