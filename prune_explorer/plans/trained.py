"""What an export says of a trained model: the run's settings and report, in words and as JSON.

A recipe (``plans.recipe``) reproduces masks from one-shot settings on the dense weights; weights changed by
training (``prune_explorer.training``) are reproduced by no recipe, only by training again. So an export of a
trained model carries this record instead: the schedule, the loss, the steps, the data source and what the
run measured, in the model card's words (:func:`card_lines`) and as ``prune_explorer_training.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from prune_explorer.training.settings import TrainSettings

TRAINING_FILE = "prune_explorer_training.json"
LOSSES = {"distill": "distillation", "text": "next-token loss"}
PRECISION_WORDS = {
    "float32": "float32",
    "bfloat16": "bfloat16 mixed precision (forward matmuls in bfloat16; weights, optimizer, losses float32)",
}
# What a trained model's recipe would promise and cannot keep, said once for the app and the card.
NO_RECIPE = (
    "a recipe reproduces masks from one-shot settings on the dense weights; trained weights come back only "
    "by training again"
)


@dataclass(frozen=True)
class TrainingRecord:
    """How a model's weights were trained.

    Attributes:
        settings: the run's settings.
        info: what the run reported (``training.result.TrainResult.info``: steps_done, stopped, data, …).
        start: where it started: "dense" (gradual pruning from the dense model), or the one-shot pruning
            whose masks were held fixed, in words.
    """

    settings: TrainSettings
    info: Mapping = field(default_factory=dict)
    start: str = "dense"

    @property
    def gradual(self) -> bool:
        return self.settings.schedule is not None

    def schedule_words(self) -> str:
        """ "gradual magnitude unstructured to 70% (cubic, 20 updates every 7 steps from step 0)", or
        "recovery with the masks of <start> held fixed"."""
        schedule = self.settings.schedule
        if schedule is None:
            return f"recovery with the masks of {self.start} held fixed"
        every = "every step" if schedule.every == 1 else f"every {schedule.every} steps"
        return (
            f"gradual {self.settings.method} {self.settings.pattern} to {schedule.final_sparsity:.0%} "
            f"(cubic, {schedule.updates} updates {every} from step {schedule.start_step})"
        )

    def loss_words(self) -> str:
        """ "distillation (KL to the dense logits, T 1, hidden-state weight 0)" or "next-token loss"."""
        s = self.settings
        if s.recover != "distill":
            return LOSSES.get(s.recover, s.recover)
        return (
            f"distillation (KL to the dense model's logits, T {s.temperature:g}, hidden-state weight "
            f"{s.hidden_weight:g})"
        )

    def steps_words(self) -> str:
        """ "200 steps", or "120 of 200 steps (time budget)" for a run that stopped early."""
        done = self.info.get("steps_done", self.settings.steps)
        stopped = self.info.get("stopped", "done")
        if done == self.settings.steps and stopped == "done":
            return f"{done} steps"
        return f"{done} of {self.settings.steps} steps ({stopped})"

    def summary(self) -> str:
        """One line: "gradual magnitude unstructured to 70%, distillation, 200 steps"."""
        s = self.settings
        if s.schedule is None:
            how = f"recovery of {self.start} (masks fixed)"
        else:
            how = f"gradual {s.method} {s.pattern} to {s.schedule.final_sparsity:.0%}"
        return f"{how}, {LOSSES.get(s.recover, s.recover)}, {self.steps_words()}"

    def as_json(self) -> str:
        """The record as JSON: the settings (every field) and the run's report (plain values only)."""
        report = {k: v for k, v in self.info.items() if isinstance(v, (str, int, float, bool, type(None)))}
        body = {"start": self.start, "settings": asdict(self.settings), "report": report, "note": NO_RECIPE}
        return json.dumps(body, indent=2, default=str) + "\n"


def card_lines(record: TrainingRecord) -> list[str]:
    """The model card's "Training" section (a heading, a table and a note on reproducing it)."""
    s, info = record.settings, record.info
    seconds = info.get("train_seconds")
    rows = [
        ("Start", "the dense model" if record.gradual else record.start),
        ("Schedule", record.schedule_words()),
        ("Loss", record.loss_words()),
        ("Steps", record.steps_words() + (f", {seconds:.1f} s" if seconds is not None else "")),
        ("Optimizer", _optimizer_words(s)),
        ("Batches", f"{s.batch_size} × {s.seq_len} tokens, seed {s.seed}"),
        ("Arithmetic", PRECISION_WORDS.get(s.precision, s.precision)),
        ("Data", str(info.get("data", "not recorded"))),
        ("Layer kinds", ", ".join(s.kinds)),
    ]
    if "final_ppl" in info:
        rows.append(("Held-out perplexity in training", _curve_words(s, info)))
    if "used_step" in info:
        rows.append(("Weights", _checkpoint_words(info)))
    lines = ["## Training", "", "The weights were trained: the kept ones differ from the dense model's.", ""]
    lines += ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]
    lines.append(f"No recipe is included: {NO_RECIPE}. The settings are in `{TRAINING_FILE}`.")
    return lines


def _optimizer_words(s: TrainSettings) -> str:
    return (
        f"AdamW, lr {s.lr:g} (warm-up {s.warmup} steps, cosine to {s.min_lr:g}×), weight decay "
        f"{s.weight_decay:g}, grad clip {s.grad_clip:g}"
    )


def _checkpoint_words(info: Mapping) -> str:
    """Which state of the run the weights are, when it is not the last one."""
    return (
        f"the run's best checkpoint, after step {info['used_step']} of {info.get('steps_done', '?')} "
        f"(held-out perplexity {info['used_ppl']:.4f}; chosen on the evaluation text itself, so an "
        "optimistic estimate)"
    )


def _curve_words(s: TrainSettings, info: Mapping) -> str:
    """The run's own held-out perplexity: dense, at the start and at the end, and on which tokens."""
    held = f"the first {s.eval_tokens} tokens of" if s.eval_tokens else "all of"
    return (
        f"{info['dense_ppl']:.4f} dense, {info['start_ppl']:.4f} at the start, {info['final_ppl']:.4f} at "
        f"the end ({held} the built-in evaluation text)"
    )
