"""The training loop: recovery with fixed masks, or gradual pruning on the cubic schedule, of a student.

``train(dense, start, data, settings)`` copies the start (a session's state or explicit weights + masks) into
a :class:`~prune_explorer.training.student.Student`, trains it against the dense model (the teacher: read,
never written) or the training text, and returns a :class:`TrainResult` whose :meth:`~TrainResult.apply`
writes it into a :class:`~prune_explorer.state.PruningState` the way SparseGPT's weights are written
(``apply_weights``), so ``state.reset()`` still gives back the exact dense weights.

Every optimizer step keeps pruned weights exactly +0.0: their gradients are zeroed before the step (AdamW's
moments stay zero there) and the masks are written again after it (decoupled weight decay, and moments left
from before a gradual mask update, could otherwise move them).

A time budget (``max_seconds``) fits the run: ``training.pacing`` lays the sparsity and learning-rate
schedules over the steps that fit in it, refitted after every step, so a gradual run ends at its final
sparsity.

Cancel: ``progress`` (share done, after every step) or ``on_point`` (each curve point) may raise
:class:`TrainingCancelled`; the job then returns the state after the last whole step, marked cancelled.

Best checkpoint (``settings.keep_best``): the trained layers are copied at each evaluation point that beats
the best one so far among those at the final masks (``training.result``), so a run whose curve rises again
can still give its best state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch

from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.models.layers import select
from prune_explorer.progress import Progress
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.state import PruningState
from prune_explorer.texts import calibration_text, eval_text
from prune_explorer.training.budget import check_job_memory, job_bytes, job_slot
from prune_explorer.training.checkpoints import save_checkpoint
from prune_explorer.training.data import TrainingData
from prune_explorer.training.histograms import WeightSnapshot, WeightWatch, default_layers
from prune_explorer.training.losses import distill_kl, hidden_mse, next_token_ce
from prune_explorer.training.masking import gradual_masks
from prune_explorer.training.pacing import Pace
from prune_explorer.training.result import Checkpoint, CurvePoint, TrainResult
from prune_explorer.training.settings import TrainSettings
from prune_explorer.training.student import Start, Student, dense_start, start_from_state

log = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Raised by a progress callback to stop a job; the job returns its last whole step."""


def _eval_ids(dense: DenseModel, settings: TrainSettings) -> torch.Tensor:
    ids = torch.tensor(dense.tokenizer.encode(eval_text(dense.info.get("text_set", "stories"))))
    return ids[: settings.eval_tokens] if settings.eval_tokens else ids


def _calibration_ids(dense: DenseModel, seq_len: int) -> torch.Tensor:
    ids = dense.tokenizer.encode(calibration_text(dense.info.get("text_set", "stories")))
    n = max(1, len(ids) // seq_len)
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, -1)[:32]


def _forwards(settings: TrainSettings) -> AbstractContextManager:
    """Where the student's and the teacher's forward passes run: in bfloat16 autocast or plain float32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.precision == "bfloat16")


def _loss(student: Student, dense: DenseModel, ids: torch.Tensor, settings: TrainSettings) -> torch.Tensor:
    hidden = settings.recover == "distill" and settings.hidden_weight > 0
    with _forwards(settings):
        out = student.model(input_ids=ids, use_cache=False, output_hidden_states=hidden)
    if settings.recover == "text":
        return next_token_ce(out.logits, ids)
    with torch.no_grad(), _forwards(settings):
        teacher = dense.model(input_ids=ids, use_cache=False, output_hidden_states=hidden)
    loss = distill_kl(out.logits, teacher.logits, settings.temperature)
    if hidden:
        loss = loss + settings.hidden_weight * hidden_mse(out.hidden_states[1:], teacher.hidden_states[1:])
    return loss


def _adamw(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW, fused where torch has the kernel (one pass over weights, gradients and moments: 55 ms a step
    on SmolLM2 here against 140-250 ms for the per-tensor-list version)."""
    kwargs = {"lr": settings.lr, "betas": (0.9, 0.95), "weight_decay": settings.weight_decay}
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, **kwargs)


def _reset_moments(optimizer: torch.optim.Optimizer, student: Student) -> None:
    """Zero AdamW's moments of newly pruned weights (zero now; old momentum must not move them)."""
    for name, param in student.params.items():
        state = optimizer.state.get(param)
        for key in ("exp_avg", "exp_avg_sq"):
            if state and key in state:
                state[key].mul_(student.float_mask(name))


def _finish_schedule(pace: Pace, student: Student, settings, pattern, calib, info: dict) -> None:
    """A budget ran out before the final mask update (a step far slower than the plan): prune to the final
    sparsity now, untrained at it, rather than end short of it."""
    target = pace.final()
    if target is not None:
        log.warning(
            "time budget spent before the last mask update; pruning to %.0f%% untrained", 100 * target
        )
        student.set_masks(gradual_masks(student, settings.method, pattern, target, calib))
        info["final_masks_untrained"] = True


def train(
    dense: DenseModel,
    data: TrainingData,
    settings: TrainSettings,
    start: Start | PruningState | None = None,
    progress: Progress = None,
    on_point: Callable[[CurvePoint], None] | None = None,
    watch: Sequence[str] | None = None,
    watch_edges: dict[str, np.ndarray] | None = None,
    on_snapshot: Callable[[list[WeightSnapshot]], None] | None = None,
) -> TrainResult:
    """Train the selected layers of a private student; the dense model is the teacher and is never written.

    Args:
        dense: the shared dense model.
        data: the training stream (``training.data.training_data``).
        settings: :class:`TrainSettings` (validated first).
        start: a session's state (its current weights and masks are copied), explicit weights + masks, or
            None (the dense weights, nothing pruned).
        progress: called with the share of steps done after every step; may raise :class:`TrainingCancelled`.
        on_point: called with each :class:`CurvePoint` (at step 0, every ``eval_every`` steps, at the end);
            may raise :class:`TrainingCancelled`.
        watch: names of trained layers whose |w| histograms are recorded (``training.histograms``; at most
            about ``MAX_SNAPSHOTS`` snapshots a run); None: one attention and one MLP layer; empty: none.
        watch_edges: float (bins + 1,) bin edges per watched layer (missing: linear over its start |w|).
        on_snapshot: called with each step's new snapshots (one per watched layer).
    Returns:
        :class:`TrainResult` (also when cancelled: the last whole step).
    Raises:
        ValueError: a setting out of range (named), a stream too short for ``seq_len``.
        TrainingRefused: the job does not fit in free memory, or the process's job slots are taken.
    """
    settings.validate(dense)
    if data.tokens < settings.seq_len:
        raise ValueError(f"data: {data.tokens} training tokens, fewer than one window of {settings.seq_len}")
    layers = select(dense.layers, settings.kinds)
    names = [layer.name for layer in default_layers(layers)] if watch is None else list(watch)
    check_job_memory(job_bytes(dense, settings, names))
    with job_slot():
        if isinstance(start, PruningState):
            start = start_from_state(start, layers)
        student = Student(dense, layers, start or dense_start(dense, layers))
        watcher = WeightWatch(student, names, watch_edges)
        return _run(dense, data, settings, student, progress, on_point, watcher, on_snapshot)


def _run(dense, data, settings, student, progress, on_point, watcher, on_snapshot) -> TrainResult:
    pattern = parse_pattern(settings.pattern)
    calib = (
        _calibration_ids(dense, min(128, context_length(dense.model))) if settings.method == "wanda" else None
    )
    optimizer = _adamw(list(student.params.values()), settings)
    generator = torch.Generator().manual_seed(settings.seed)
    eval_ids = _eval_ids(dense, settings)
    curve: list[CurvePoint] = []
    info: dict = {"data": data.source, "checkpoints": [], "stopped": "done"}
    info["dense_ppl"] = perplexity(dense.model, eval_ids).ppl
    losses: list[float] = []
    step_times: list[float] = []
    train_s, step, lr = 0.0, 0, settings.lr
    pace = Pace(settings)
    best: Checkpoint | None = None

    def point(at: int) -> None:
        nonlocal best
        loss = sum(losses) / len(losses) if losses else None
        losses.clear()
        p = CurvePoint(at, loss, perplexity(student.model, eval_ids).ppl, student.sparsity(), train_s, lr)
        curve.append(p)
        if settings.keep_best and pace.final_applied and _better(p.ppl, best):
            best = None  # the old copy goes before the new one is made: one copy at a time, as estimated
            best = Checkpoint(at, p.ppl, student.snapshot())
        if on_point:
            on_point(p)

    def snapshot(at: int) -> None:
        new = watcher.record(at)
        if new and on_snapshot:
            on_snapshot(new)

    try:
        snapshot(0)
        point(0)
        for step in range(settings.steps):
            began = time.perf_counter()
            target = pace.due(step)
            if target is not None:
                student.set_masks(gradual_masks(student, settings.method, pattern, target, calib))
                _reset_moments(optimizer, student)
            updated = time.perf_counter()
            lr = pace.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = _loss(
                student, dense, data.batch(settings.batch_size, settings.seq_len, generator), settings
            )
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                info["stopped"] = "loss diverged"
                log.warning("training loss is %s at step %d; stopping (lower the learning rate)", loss, step)
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            student.mask_grads()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(student.params.values(), settings.grad_clip)
            optimizer.step()
            student.enforce()
            ended = time.perf_counter()
            elapsed = ended - began
            train_s += elapsed
            step_times.append(elapsed)
            losses.append(loss_value)
            pace.record(ended - updated, updated - began if target is not None else None)
            done = step + 1
            planned = pace.refit(done, train_s)
            last = done == settings.steps or (
                settings.max_seconds is not None and train_s >= settings.max_seconds
            )
            if last and done < settings.steps:
                info["stopped"] = "time budget"
                _finish_schedule(pace, student, settings, pattern, calib, info)
            if settings.checkpoint_every and done % settings.checkpoint_every == 0:
                info["checkpoints"].append(
                    str(save_checkpoint(settings.checkpoint_dir, done, student.snapshot()))
                )
            if watcher.due(done, planned) or last:
                snapshot(done)
            if (settings.eval_every and done % settings.eval_every == 0) or last:
                point(done)
            if progress:
                progress(1.0 if last else min(done / planned, 1.0))
            if last:
                break
    except TrainingCancelled:
        info["stopped"] = "cancelled"
    steps_done = len(step_times)
    watcher.record(steps_done)  # a cancel between snapshots: the stop's (no callback: the run is over)
    if not curve or curve[-1].step != steps_done:
        point_loss = sum(losses) / len(losses) if losses else None
        ppl = perplexity(student.model, eval_ids).ppl
        curve.append(CurvePoint(steps_done, point_loss, ppl, student.sparsity(), train_s, lr))
    final = curve[-1]
    if best is not None and (best.step == steps_done or (math.isfinite(final.ppl) and final.ppl <= best.ppl)):
        best = None  # the final state is the best one
    if best is not None:
        info |= {"best_step": best.step, "best_ppl": best.ppl}
    step_times.sort()
    info |= {
        "steps_done": steps_done,
        "train_seconds": train_s,
        "step_ms": 1000 * step_times[len(step_times) // 2] if step_times else None,
        "tokens_seen": steps_done * settings.batch_size * settings.seq_len,
        "start_ppl": curve[0].ppl,
        "final_ppl": curve[-1].ppl,
        "sparsity": student.sparsity(),
        "planned_steps": pace.planned,
        "histogram_seconds": watcher.seconds,
        "schedule_done": pace.final_applied,
    }
    snap = student.snapshot()
    return TrainResult(snap.weights, snap.masks, curve, info, list(watcher.snapshots), best)


def _better(ppl: float, than: Checkpoint | None) -> bool:
    """Whether a held-out perplexity ``ppl`` is finite and below ``than``'s (anything finite beats None)."""
    return math.isfinite(ppl) and (than is None or ppl < than.ppl)
