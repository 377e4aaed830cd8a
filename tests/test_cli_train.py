"""python -m prune_explorer train: one-shot + recovery and gradual end in a JSON line; bad input exits 2."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from prune_explorer.cli import main
from prune_explorer.measure.evaluate import perplexity
from prune_explorer.texts import eval_text

FAST = ["--steps", "4", "--batch-size", "4", "--seq-len", "64", "--eval-every", "2"]


def _run(capsys, *args: str) -> dict:
    assert main(["train", *args]) == 0
    captured = capsys.readouterr()
    assert "step 4/4" in captured.err  # the progress bar
    return json.loads(captured.out.strip().splitlines()[-1])


def test_oneshot_recovery_writes_a_transformers_folder(capsys, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "trained"
    result = _run(capsys, "--sparsity", "0.7", "--recover", "distill", "--out", str(out), *FAST)
    assert result["schedule"] == "oneshot" and result["steps"] == 4 and result["stopped"] == "done"
    assert result["sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert result["start_ppl"] == result["oneshot_ppl"] > result["final_ppl"] > result["dense_ppl"]
    assert [point[0] for point in result["curve"]] == [0, 2, 4]
    assert result["used"] == {"state": "final", "step": 4}
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    weight = model.model.layers[0].mlp.down_proj.weight
    assert float((weight == 0).float().mean()) == pytest.approx(0.7, abs=2e-3)
    from prune_explorer.models.tokenizers import Llama2cTokenizer

    tokenizer = Llama2cTokenizer.from_file(out / "tokenizer.bin")
    ppl = perplexity(model, torch.tensor(tokenizer.encode(eval_text("stories")))).ppl
    assert ppl == pytest.approx(result["final_ppl"], rel=1e-4)


def test_use_best_writes_the_lowest_held_out_state(capsys, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    from prune_explorer.models.tokenizers import Llama2cTokenizer

    out = tmp_path / "best"
    fast = ["--steps", "4", "--batch-size", "4", "--seq-len", "64", "--eval-every", "1"]
    # A rate far too high for a lightly pruned model: the curve rises above its start.
    result = _run(capsys, "--sparsity", "0.1", "--lr", "0.5", "--use", "best", "--out", str(out), *fast)
    curve = {step: ppl for step, ppl, _ in result["curve"]}
    used = result["used"]
    assert used["state"] == "best", curve
    assert used["step"] < 4 and used["ppl"] == min(curve.values()) == curve[used["step"]] < curve[4]
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = Llama2cTokenizer.from_file(out / "tokenizer.bin")
    ppl = perplexity(model, torch.tensor(tokenizer.encode(eval_text("stories")))).ppl
    assert ppl == pytest.approx(used["ppl"], rel=1e-4)
    card = (out / "README.md").read_text()
    assert f"the run's best checkpoint, after step {used['step']} of 4" in card


def test_gradual_heads(capsys, one_thread):
    from prune_explorer.models.loading import load_model

    result = _run(capsys, "--schedule", "gradual", "--pattern", "heads", "--sparsity", "0.5", *FAST)
    assert result["stopped"] == "done" and result["pattern"] == "heads"
    layers = [layer for layer in load_model("stories260K").layers if layer.kind != "embedding"]
    share = sum(layer.numel for layer in layers if layer.kind.startswith("attn")) / sum(
        layer.numel for layer in layers
    )
    assert 0 < result["sparsity"] <= share  # only attention layers lose weights (whole heads)


def test_gradual_text_recovery(capsys, tmp_path, one_thread):
    text = tmp_path / "train.txt"
    text.write_text("A boy named Sam had a dog. The dog liked to run and jump in the sun. " * 40)
    result = _run(
        capsys, "--schedule", "gradual", "--sparsity", "0.5", "--recover", "text", "--data", "text",
        "--text", str(text), *FAST,
    )  # fmt: skip
    assert result["schedule"] == "gradual" and result["start_ppl"] == pytest.approx(result["dense_ppl"])
    assert result["sparsity"] == pytest.approx(0.5, abs=1e-3) and result["data"] == "uploaded text"


def test_histograms_csv_of_the_watched_layer(capsys, tmp_path, one_thread):
    path = tmp_path / "weights.csv"
    layer = "model.layers.1.mlp.up_proj"
    result = _run(capsys, "--schedule", "gradual", "--histograms", str(path), "--watch", layer, *FAST)
    assert result["histograms"] == str(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["layer"] for r in rows} == {layer} and sorted({int(r["step"]) for r in rows}) == [0, 1, 2, 3, 4]
    for step in range(5):
        at_step = [r for r in rows if int(r["step"]) == step]
        total = sum(int(r["weights"]) + int(r["pruned_weights"]) for r in at_step)
        assert total == 64 * 172  # stories260K's up_proj: (172, 64)
    last = [r for r in rows if r["step"] == "4"]
    assert sum(int(r["pruned_weights"]) for r in last) / (64 * 172) == pytest.approx(0.5, abs=1e-3)
    assert last[0]["abs_w_from"] == "0.0" and last[-1]["abs_w_to"] == "inf"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sparsity", "1.5"], "--sparsity"),
        (["--steps", "0"], "steps"),
        (["--schedule", "gradual", "--method", "sparsegpt"], "cannot prune gradually"),
        (["--data", "text"], "needs a text"),
        (["--lr", "-1"], "lr"),
        (["--watch", "model.nothing"], "not trained layers"),
    ],
)
def test_bad_input_exits_2_with_a_message(capsys, args, message):
    assert main(["train", *args]) == 2
    assert message in capsys.readouterr().err
