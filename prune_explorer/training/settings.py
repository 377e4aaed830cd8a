"""A training job's settings: one frozen dataclass, validated against the model before anything runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.models.layers import DEFAULT_KINDS, select
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.training.masking import check_gradual, check_gradual_units
from prune_explorer.training.schedule import GradualSchedule

RECOVER = ("distill", "text")
PRECISIONS = ("float32", "bfloat16")
MAX_STEPS = 1_000_000


@dataclass(frozen=True)
class TrainSettings:
    """How to train.

    Attributes:
        steps: optimizer steps, 1..MAX_STEPS.
        recover: "distill" (KL to the dense model's logits, plus ``hidden_weight`` × hidden-state MSE) or
            "text" (next-token cross-entropy on the training text).
        lr: AdamW peak learning rate; linear warm-up over ``warmup`` steps, then cosine to ``lr * min_lr``.
        weight_decay: AdamW's decoupled decay (pruned weights stay exactly zero with it on).
        batch_size, seq_len: windows of the training stream per step and their length.
        temperature: distillation temperature (KL of the softened distributions, times T²).
        hidden_weight: weight of the per-layer hidden-state MSE in distillation (0: logits only).
        precision: the forward passes' arithmetic. "float32": plain. "bfloat16": mixed precision (autocast:
            matmuls in bfloat16, weights, gradients, optimizer and losses in float32), about 1.6x more
            steps a second on a CPU with AVX512-BF16 or AMX (SmolLM2-135M here), at a gradient slightly
            noisier; the held-out perplexity is always measured in float32.
        schedule: gradual pruning on the cubic schedule, or None: masks held fixed (recovery).
        method, pattern: how gradual masks are chosen ("magnitude" or "wanda"; unstructured or N:M).
        kinds: the layer kinds trained (and pruned); others stay the dense tensors.
        grad_clip: max global grad norm (0: none).
        eval_every: steps between held-out perplexity points (0: only before and after).
        eval_tokens: evaluate on the first this many tokens of the evaluation text (None: all of it).
        max_seconds: stop after this much training time (evaluation not counted), None: no limit. With a
            budget the run's learning-rate and sparsity schedules are fitted to the steps that fit in it
            (``training.pacing``): a gradual run reaches ``schedule.final_sparsity`` before it stops.
        checkpoint_every: steps between checkpoints into ``checkpoint_dir`` (0: none).
        keep_best: also keep, in memory, the trained layers at the evaluation point of lowest held-out
            perplexity among those at the run's final masks (``TrainResult.best``): a run whose curve rises
            again (a learning rate too high, overfitting a short text) need not end on its worse state.
        seed: batches' and sampling's seed.
    """

    steps: int = 200
    recover: str = "distill"
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 0
    min_lr: float = 0.1
    batch_size: int = 8
    seq_len: int = 128
    temperature: float = 1.0
    hidden_weight: float = 0.0
    precision: str = "float32"
    schedule: GradualSchedule | None = None
    method: str = "magnitude"
    pattern: str = "unstructured"
    kinds: tuple[str, ...] = DEFAULT_KINDS
    grad_clip: float = 1.0
    eval_every: int = 0
    eval_tokens: int | None = None
    max_seconds: float | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    keep_best: bool = False
    seed: int = 0

    def validate(self, dense: DenseModel) -> None:
        """Raise ValueError naming the first field out of range and why."""
        _int_in("steps", self.steps, 1, MAX_STEPS)
        if self.recover not in RECOVER:
            raise ValueError(f"recover must be one of {RECOVER}, got {self.recover!r}")
        _float_in("lr", self.lr, 0.0, 1.0, low_open=True)
        _float_in("weight_decay", self.weight_decay, 0.0, 10.0)
        _float_in("min_lr", self.min_lr, 0.0, 1.0)
        _int_in("warmup", self.warmup, 0, self.steps - 1)
        _int_in("batch_size", self.batch_size, 1, 4096)
        context = context_length(dense.model)
        _int_in("seq_len", self.seq_len, 2, context)
        _float_in("temperature", self.temperature, 0.0, 100.0, low_open=True)
        _float_in("hidden_weight", self.hidden_weight, 0.0, 1e6)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _float_in("grad_clip", self.grad_clip, 0.0, 1e6)
        _int_in("eval_every", self.eval_every, 0, MAX_STEPS)
        _int_in("checkpoint_every", self.checkpoint_every, 0, MAX_STEPS)
        if self.eval_tokens is not None:
            _int_in("eval_tokens", self.eval_tokens, 2, 10**9)
        if self.max_seconds is not None:
            _float_in("max_seconds", self.max_seconds, 0.0, 1e9, low_open=True)
        if not isinstance(self.keep_best, bool):
            raise ValueError(f"keep_best must be True or False, got {self.keep_best!r}")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError("checkpoint_dir: checkpoint_every is set but no folder is given")
        if not select(dense.layers, self.kinds):
            raise ValueError(f"kinds: no prunable layers of kinds {list(self.kinds)} in this model")
        pattern = parse_pattern(self.pattern)
        if self.schedule is not None:
            check_gradual(self.method, pattern)
            check_gradual_units(
                dense, select(dense.layers, self.kinds), pattern, self.schedule.final_sparsity
            )
            if self.schedule.end_step >= self.steps:
                raise ValueError(
                    f"schedule: its last mask update is at step {self.schedule.end_step}, but the run has "
                    f"only {self.steps} steps (0..{self.steps - 1}); fewer updates, a shorter interval "
                    "or more steps"
                )
            fixed = pattern.fixed_sparsity
            if fixed is not None and not math.isclose(self.schedule.final_sparsity, fixed):
                raise ValueError(
                    f"schedule: {self.pattern} fixes the final sparsity at {fixed:.0%}, the schedule ends at "
                    f"{self.schedule.final_sparsity:.0%}"
                )

    def lr_at(self, step: int, steps: int | None = None) -> float:
        """The learning rate of step ``step``: linear warm-up, then cosine down to ``lr * min_lr``.

        ``steps``: the run's planned length when a time budget shortens it (default: ``self.steps``); the
        warm-up shrinks in proportion, so the whole shape fits the shorter run.
        """
        steps = self.steps if steps is None else max(1, min(steps, self.steps))
        warmup = self.warmup if steps == self.steps else round(self.warmup * steps / self.steps)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        span = max(1, steps - warmup - 1)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
        return self.lr * (self.min_lr + (1 - self.min_lr) * cosine)


def _int_in(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{field} must be an integer in [{low}, {high}], got {value!r}")


def _float_in(field: str, value: object, low: float, high: float, low_open: bool = False) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    ok = (low < number if low_open else low <= number) and number <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{field} must be in {bracket}{low}, {high}], got {value!r}")
