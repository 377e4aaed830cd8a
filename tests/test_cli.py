"""The command line: the same load → prune → evaluate loop as the app."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from prune_explorer.cli import main
from prune_explorer.texts import eval_text

ROOT = Path(__file__).resolve().parents[1]


def run_json(capsys, *args: str) -> dict:
    assert main(["prune", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def reference_perplexity(dense, text: str) -> tuple[float, int]:
    """Perplexity by hand: a plain transformers forward per window of the model's context (non-overlapping,
    each window's first token context only, as the papers evaluate) and torch's cross-entropy."""
    ids = torch.tensor(dense.tokenizer.encode(text))
    window = dense.model.config.max_position_embeddings
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, ids.numel() - 1, window):
            chunk = ids[start : start + window]
            logits = dense.model(input_ids=chunk.view(1, -1)).logits[0, :-1]
            nll += F.cross_entropy(logits.double(), chunk[1:], reduction="sum").item()
            count += chunk.numel() - 1
    return math.exp(nll / count), count


def test_prune_reports_dense_and_pruned_perplexity(capsys, stories):
    out = run_json(capsys, "--sparsity", "0.5")
    assert out["sparsity"] == pytest.approx(0.5, abs=1e-3)
    ppl, tokens = reference_perplexity(stories, eval_text("stories"))  # the CLI's default model and text
    assert out["tokens"] == tokens
    assert out["dense_ppl"] == pytest.approx(ppl, abs=1e-3)
    assert out["pruned_ppl"] > out["dense_ppl"]
    assert run_json(capsys, "--sparsity", "0")["pruned_ppl"] == out["dense_ppl"]


def test_methods_and_patterns_from_the_cli(capsys):
    wanda = run_json(capsys, "--method", "wanda", "--sparsity", "0.5")
    magnitude = run_json(capsys, "--method", "magnitude", "--sparsity", "0.5")
    assert wanda["pruned_ppl"] < magnitude["pruned_ppl"]
    nm = run_json(capsys, "--method", "magnitude", "--pattern", "2:4")
    assert nm["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_the_cli_runs_either_wanda_variant_and_says_which(capsys):
    from prune_explorer.models.loading import load_model
    from prune_explorer.pruning.methods import get_method
    from prune_explorer.pruning.prune import prune_masks
    from prune_explorer.state import PruningState

    wanda = get_method("wanda")
    one_pass = run_json(capsys, "--method", "wanda", "--pattern", "2:4", "--sequential", "no")
    blocks = run_json(capsys, "--method", "wanda", "--pattern", "2:4", "--sequential", "yes")
    assert one_pass["variant"] == wanda.variant and blocks["variant"] == wanda.sequential_variant
    assert run_json(capsys, "--method", "wanda", "--pattern", "2:4")["pruned_ppl"] == one_pass["pruned_ppl"]
    # The CLI prunes what the library's block-by-block Wanda decides (the same masks, the same perplexity).
    dense = load_model("stories260K")
    state = PruningState(dense)
    prune_masks(dense, "wanda", "2:4", sequential=True).apply(state)
    assert one_pass["pruned_ppl"] != blocks["pruned_ppl"]
    assert eval_ppl(dense, state) == pytest.approx(blocks["pruned_ppl"], abs=1e-4)
    assert run_json(capsys, "--sparsity", "0.5")["variant"].startswith("magnitude slider path")


def test_bad_input_exits_2_with_a_message(capsys, tmp_path):
    assert main(["prune", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["prune", "--policy", "threshold", "--threshold", "99"]) == 2
    assert "above the largest" in capsys.readouterr().err
    assert main(["prune", "--method", "wanda", "--pattern", "4:4"]) == 2
    assert "N must be smaller than M" in capsys.readouterr().err


def test_module_entry_point_lists_layers():
    out = subprocess.run(
        [sys.executable, "-m", "prune_explorer", "layers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "model.layers.0.self_attn.q_proj" in out.stdout and "attn_q" in out.stdout


def eval_ppl(dense, state) -> float:
    """Perplexity of ``state``'s model on the model's evaluation text, as the CLI measures it."""
    from prune_explorer.measure.evaluate import perplexity
    from prune_explorer.texts import eval_text

    return perplexity(state.model, dense.tokenizer.encode(eval_text("stories"))).ppl


def test_a_recipe_saved_by_prune_applies_and_exports(capsys, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    pruned = run_json(capsys, "--method", "wanda", "--sparsity", "0.5", "--save-recipe", str(recipe))
    assert main(["apply", str(recipe), "--out", str(tmp_path / "hf")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["sparsity"] == pruned["sparsity"] and out["pruned_ppl"] == pruned["pruned_ppl"]
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "README.md").is_file()
    assert main(["apply", str(recipe), "--out", str(tmp_path / "hf")]) == 2
    assert "already exists" in capsys.readouterr().err
    masks, llmc = tmp_path / "masks.safetensors", tmp_path / "llmc.yaml"
    args = ["export", str(recipe), "--masks", str(masks), "--llmcompressor", str(llmc), "--sizes"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert masks.is_file() and "WandaPruningModifier" in llmc.read_text()
    assert out["sizes_bytes"]["bitmask"] < out["sizes_bytes"]["dense"]
    (tmp_path / "bad.yaml").write_text("method: [wanda\n")
    assert main(["apply", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_prune_shares_the_sparsity_by_an_allocation_and_its_recipe_keeps_the_bound(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("PRUNE_EXPLORER_CACHE", str(tmp_path / "cache"))  # no stored curves: measured now
    owl = run_json(capsys, "--sparsity", "0.6", "--allocation", "owl", "--owl-lam", "0.05")
    assert (owl["allocation"], owl["owl_lam"]) == ("owl", 0.05)
    low, high = owl["layer_sparsity_range"]
    assert low < 0.6 < high and high - low <= 2 * 0.05 + 1e-6  # OWL: a spread of 2λ, shifted to the average
    assert owl["sparsity"] == pytest.approx(0.6, abs=1e-3)

    recipe = tmp_path / "budget.yaml"
    args = ["--sparsity", "0.7", "--allocation", "budget", "--budget-deviation", "0.05"]
    assert main(["prune", *args, "--json", "--save-recipe", str(recipe)]) == 0
    said = capsys.readouterr()
    assert "measuring magnitude sensitivity curves of 35 layers" in said.err
    budget = json.loads(said.out.strip().splitlines()[-1])
    assert budget["budget_deviation"] == 0.05 and budget["sparsity"] == pytest.approx(0.7, abs=1e-3)
    low, high = budget["layer_sparsity_range"]
    assert 0.65 - 1e-6 <= low and high <= 0.75 + 1e-6 and low < high
    from prune_explorer.plans.recipe_io import load_recipe

    saved = load_recipe(recipe).allocation
    assert saved.name == "budget" and saved.bounds == pytest.approx((0.65, 0.75))
    assert main(["apply", str(recipe), "--out", str(tmp_path / "hf")]) == 0
    applied = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert applied["sparsity"] == budget["sparsity"] and applied["pruned_ppl"] == budget["pruned_ppl"]
    assert main(["prune", *args, "--json"]) == 0
    said = capsys.readouterr()
    assert "measuring" not in said.err  # the curves are stored now: read, not measured again
    assert json.loads(said.out.strip().splitlines()[-1])["pruned_ppl"] == budget["pruned_ppl"]

    assert main(["prune", "--pattern", "2:4", "--allocation", "owl"]) == 2
    assert "N:M fixes it" in capsys.readouterr().err
    assert main(["prune", "--allocation", "budget", "--budget-deviation", "2"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
