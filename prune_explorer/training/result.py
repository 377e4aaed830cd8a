"""What a training run produced: its curve points, its best checkpoint, and the :class:`TrainResult` a session
applies (``training.job.train`` makes them).

Best checkpoint (``TrainSettings.keep_best``): the trained layers at the evaluation point of lowest held-out
perplexity among those where the run's final masks are in force (every point of a recovery; for a gradual
run, from its last mask update on). It is chosen on the held-out text the curve is measured on, so its
perplexity is an optimistic estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prune_explorer.state import PruningState
from prune_explorer.training.histograms import WeightSnapshot
from prune_explorer.training.student import Start


@dataclass(frozen=True)
class CurvePoint:
    """One point of the live curves: after ``step`` steps (0: the start)."""

    step: int
    loss: float | None  # mean training loss since the previous point (None at step 0)
    ppl: float  # held-out perplexity on the evaluation text
    sparsity: float  # over the trained layers
    seconds: float  # training time so far (evaluation excluded)
    lr: float


@dataclass(frozen=True)
class Checkpoint:
    """The trained layers at one evaluation point of a run: after ``step`` steps, at perplexity ``ppl``."""

    step: int
    ppl: float
    state: Start


@dataclass(frozen=True)
class TrainResult:
    """What a job produced: (out, in) weights and bool masks of the trained layers, the curves, and info.

    ``info``: steps_done, stopped ("done", "cancelled", "time budget", "loss diverged"), train_seconds,
    tokens_seen, step_ms (median), dense_ppl, start_ppl, final_ppl, final sparsity, data source, checkpoints,
    planned_steps (the run's length as fitted to ``max_seconds``), final_masks_untrained (True where the
    budget ran out before the final mask update and the final masks were applied at the stop),
    schedule_done (the final masks are in force: always without a schedule; False for a gradual run
    cancelled before its last mask update), and histogram_seconds (the snapshots' time, not in
    train_seconds).

    ``histograms``: the watched layers' |w| snapshots (``training.histograms``), in step order.
    ``best``: with ``settings.keep_best``, the evaluation point of lowest perplexity at the final masks when
    it is not the final state itself (else None); ``info`` then has its ``best_step`` and ``best_ppl``.
    """

    weights: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    curve: list[CurvePoint] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    histograms: list[WeightSnapshot] = field(default_factory=list)
    best: Checkpoint | None = None

    @property
    def cancelled(self) -> bool:
        return self.info.get("stopped") == "cancelled"

    def report(self, best: bool = False) -> dict:
        """``info`` of the state used: with ``best``, also its ``used_step`` and ``used_ppl`` (what an export
        of the best checkpoint says of its weights).

        Raises:
            ValueError: ``best`` asked for but the run kept none.
        """
        self._chosen(best)
        if not best:
            return dict(self.info)
        return dict(self.info) | {"used_step": self.best.step, "used_ppl": self.best.ppl}

    def apply(self, state: PruningState, best: bool = False) -> None:
        """Make the trained model (its final state, or with ``best`` its best checkpoint) the session's pruned
        model (the dense model stays untouched).

        Raises:
            ValueError: ``best`` asked for but the run kept none.
        """
        chosen = self._chosen(best)
        state.apply_weights(chosen.weights, chosen.masks)

    def _chosen(self, best: bool) -> Start:
        if not best:
            return Start(self.weights, self.masks)
        if self.best is None:
            raise ValueError("this run kept no best checkpoint apart from its final state")
        return self.best.state
