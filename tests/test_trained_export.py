"""A trained model's transformers folder (``plans.trained``): its card says how the weights were trained, its
training record is written beside them as JSON, and no recipe goes with it (none could give its weights)."""

from __future__ import annotations

import json

import pytest

from prune_explorer.cli import main
from prune_explorer.plans import export
from prune_explorer.plans.trained import NO_RECIPE, TRAINING_FILE, TrainingRecord, card_lines
from prune_explorer.training.schedule import GradualSchedule
from prune_explorer.training.settings import TrainSettings
from tests.support.plans import pruned

FAST = ["--steps", "4", "--batch-size", "4", "--seq-len", "64", "--eval-every", "2"]


def test_cli_train_out_writes_the_training_record_and_no_recipe(capsys, tmp_path, one_thread):
    out = tmp_path / "trained"
    argv = ["train", "--schedule", "gradual", "--sparsity", "0.5", "--out", str(out), *FAST]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    card = (out / "README.md").read_text()
    assert "## Training" in card and "trained: gradual magnitude unstructured to 50%" in card
    assert "| Loss | distillation (KL to the dense model's logits" in card
    assert "| Steps | 4 steps" in card and f"| Data | {result['data']} |" in card
    assert f"{result['final_ppl']:.4f} at the end" in card
    assert "| `model.layers.0.mlp.down_proj` | mlp_down | " in card  # final sparsity per layer
    assert NO_RECIPE in card and "Reproduce: `python -m prune_explorer apply" not in card
    assert not (out / export.RECIPE_FILE).exists()
    record = json.loads((out / TRAINING_FILE).read_text())
    assert record["start"] == "dense" and record["settings"]["schedule"]["final_sparsity"] == 0.5
    assert record["report"]["steps_done"] == 4 and record["report"]["stopped"] == "done"


def test_the_card_words_of_a_recovery_run_and_a_run_stopped_early():
    settings = TrainSettings(steps=10, recover="text", eval_tokens=64)
    info = {"steps_done": 6, "stopped": "time budget", "dense_ppl": 2.0, "start_ppl": 9.0, "final_ppl": 4.0}
    record = TrainingRecord(settings, info, "Wanda · unstructured · 50%")
    words = "recovery of Wanda · unstructured · 50% (masks fixed), next-token loss"
    assert record.summary() == f"{words}, 6 of 10 steps (time budget)"
    text = "\n".join(card_lines(record))
    assert "recovery with the masks of Wanda · unstructured · 50% held fixed" in text
    assert "the first 64 tokens of the built-in evaluation text" in text
    gradual = TrainSettings(steps=8, schedule=GradualSchedule(0.7, updates=2, every=3))
    assert TrainingRecord(gradual, {"steps_done": 8}).summary() == (
        "gradual magnitude unstructured to 70%, distillation, 8 steps"
    )


def test_a_recipe_is_refused_beside_a_training_record(stories, tmp_path):
    state, plan = pruned(stories)
    record = TrainingRecord(TrainSettings(steps=4), {"steps_done": 4})
    with pytest.raises(ValueError, match="without a recipe"):
        export.export_hf(state, tmp_path / "out", plan, None, record)
    assert not (tmp_path / "out").exists()
