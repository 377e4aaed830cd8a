"""What the Train page's controls ask for (a :class:`Plan`), as the library's training settings, and the
library's errors said with the names of the widgets to change."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS
from prune_explorer.training.budget import job_bytes
from prune_explorer.training.data import TrainingData, training_data
from prune_explorer.training.schedule import GradualSchedule
from prune_explorer.training.settings import TrainSettings
from ui import session

# Library field names as the page's widgets call them (errors name the widget to change).
FIELDS = {
    "steps": "Steps",
    "lr": "Learning rate",
    "max_seconds": "Time budget",
    "batch_size": "Batch size",
    "seq_len": "Sequence length",
    "eval_every": "Points on the curves",
    "eval_tokens": "Held-out tokens",
    "hidden_weight": "Hidden-state weight",
    "precision": "Arithmetic",
    "final_sparsity": "Target sparsity",
    "start_step": "Start step",
    "every": "Interval dt",
    "updates": "Mask updates",
    "schedule": "Schedule",
    "method": "Gradual method",
    "pattern": "Pattern",
    "text": "Training text",
    "tokens": "Sampled tokens",
    "source": "Data source",
    "kinds": "Layer kinds (sidebar)",
}


@dataclass(frozen=True)
class Plan:
    """What the Train page's controls chose (``ui.train_controls.controls``); ``text``: an uploaded text."""

    schedule: str = "oneshot"  # "oneshot": the session's masks held fixed; "gradual": from dense
    recover: str = "distill"
    source: str = "sampled"  # "builtin", "upload" or "sampled"
    text: str | None = None
    steps: int = 200
    lr: float = 1e-3
    seconds: float = 0.0  # 0: no time budget
    target: float = 0.7
    start_step: int = 0
    every: int = 7
    updates: int = 20
    method: str = "magnitude"
    pattern: str = "unstructured"
    batch_size: int = 8
    seq_len: int = 128
    points: int = 10
    eval_tokens: int = 0  # 0: all of the evaluation text
    hidden_weight: float = 0.0
    precision: str = "float32"
    sampled_tokens: int = 8192
    watch: str = ""  # the layer whose |w| the ridgeline shows ("": the defaults only)


def kinds() -> tuple[str, ...]:
    """The layer kinds the sidebar prunes: those the run trains (and, gradually, prunes)."""
    return tuple(getattr(session.applied(), "kinds", None) or DEFAULT_KINDS)


def settings_for(plan: Plan) -> TrainSettings:
    """The library's settings for ``plan`` (not validated yet).

    Raises:
        ValueError: a schedule parameter out of range (``GradualSchedule`` checks its own).
    """
    schedule = None
    if plan.schedule == "gradual":
        schedule = GradualSchedule(plan.target, 0.0, plan.start_step, plan.updates, plan.every)
    return TrainSettings(
        steps=plan.steps,
        recover=plan.recover,
        lr=plan.lr,
        warmup=min(10, plan.steps // 10),
        batch_size=plan.batch_size,
        seq_len=plan.seq_len,
        hidden_weight=plan.hidden_weight if plan.recover == "distill" else 0.0,
        precision=plan.precision,
        schedule=schedule,
        method=plan.method,
        pattern=plan.pattern,
        kinds=kinds(),
        eval_every=max(1, plan.steps // plan.points) if plan.points else 0,
        eval_tokens=plan.eval_tokens or None,
        max_seconds=plan.seconds or None,
        keep_best=True,
    )


def memory_need(dense: DenseModel, settings: TrainSettings, watch: Sequence[str]) -> int:
    """Bytes the job needs beyond the dense model, its layers ``watch`` recorded (``training.budget``)."""
    return job_bytes(dense, settings, watch)


def training_stream(dense: DenseModel, plan: Plan) -> TrainingData | None:
    """The training stream, built now (fast, so a bad text is refused before anything starts), or None for
    text sampled from the dense model (slow: the thread samples it)."""
    if plan.source == "sampled":
        return None
    if plan.source == "upload":
        if plan.text is None:
            raise ValueError("text: no .txt file is uploaded; upload one or choose another data source")
        return training_data(dense, "text", plan.text, seq_len=plan.seq_len)
    return training_data(dense, "builtin", seq_len=plan.seq_len)


def field_message(exc: BaseException) -> str:
    """A library error with the widget it is about named first ("Steps: steps must be …"; a message that
    names its field as "schedule: …" gets the widget's label in place of the field's name)."""
    text = _widget_names(str(exc).strip())
    word = re.match(r"(\w+)(:\s*)?", text)
    label = FIELDS.get(word.group(1)) if word else None
    if label is None:
        return text
    return f"{label}: {text[word.end() :]}" if word.group(2) else f"{label}: {text}"


def _widget_names(text: str) -> str:
    """Field names inside a message ("windows of seq_len=128", "a shorter seq_len") said as the widgets'
    labels ("windows of Sequence length 128"). Only names with an underscore: "steps" is also a word."""

    def label(match: re.Match) -> str:
        return FIELDS[match.group(1)] + (" " if match.group(2) else "")

    names = "|".join(name for name in FIELDS if "_" in name)
    # The leading field of "seq_len: …" stays, to be replaced by field_message's label.
    head = re.match(rf"({names}):", text)
    start = head.end() if head else 0
    return text[:start] + re.sub(rf"\b({names})\b(=)?", label, text[start:])
