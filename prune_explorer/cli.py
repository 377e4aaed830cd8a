"""Command line: prune a model and print what it did to perplexity.

python -m prune_explorer prune --model stories260K --sparsity 0.5 [--save-recipe recipe.yaml]
python -m prune_explorer apply recipe.yaml --out DIR      (a transformers folder with a model card)
python -m prune_explorer export recipe.yaml --masks masks.safetensors --llmcompressor llmc.yaml --sizes
python -m prune_explorer layers --model path/to/folder
python -m prune_explorer train --sparsity 0.7 --schedule oneshot --recover distill --steps 300 --out DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time

from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.errors import ModelLoadError
from prune_explorer.models.layers import ALL_KINDS, DEFAULT_KINDS, select
from prune_explorer.models.loading import load_model
from prune_explorer.plans.apply import apply_recipe
from prune_explorer.plans.export import evaluate, export_hf
from prune_explorer.plans.llmcompressor import export_llmcompressor
from prune_explorer.plans.masks import export_masks
from prune_explorer.plans.recipe import load_recipe, recipe_from_state, save_recipe
from prune_explorer.plans.sizes import disk_sizes
from prune_explorer.plans.trained import TrainingRecord
from prune_explorer.pruning.methods import METHODS
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import POLICIES, MagnitudeSettings
from prune_explorer.pruning.settings import apply_settings, prune_settings
from prune_explorer.state import PruningState
from prune_explorer.texts import eval_text
from prune_explorer.training.budget import TrainingRefused
from prune_explorer.training.checkpoints import save_checkpoint
from prune_explorer.training.data import SOURCES, training_data
from prune_explorer.training.histograms import snapshot_rows
from prune_explorer.training.job import train
from prune_explorer.training.schedule import fit_schedule
from prune_explorer.training.settings import RECOVER, TrainSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prune_explorer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prune = sub.add_parser("prune", help="prune a model and compare dense vs pruned perplexity")
    prune.add_argument("--model", default="stories260K", help="built-in name, local folder or hub id")
    prune.add_argument("--sparsity", type=float, default=0.5, help="share of weights to prune, 0..1")
    prune.add_argument("--policy", choices=POLICIES, default="uniform")
    prune.add_argument("--threshold", type=float, default=0.0, help="|w| threshold for --policy threshold")
    prune.add_argument("--kinds", nargs="+", choices=ALL_KINDS, default=list(DEFAULT_KINDS))
    prune.add_argument("--method", choices=list(METHODS), default="magnitude")
    prune.add_argument(
        "--pattern", default="unstructured", help="unstructured, N:M (e.g. 2:4), neurons, heads"
    )
    prune.add_argument("--calib-text", help="calibration text file for wanda/sparsegpt (default: built-in)")
    prune.add_argument(
        "--sequential",
        choices=("default", "yes", "no"),
        default="default",
        help="wanda/sparsegpt: prune block by block on the already-pruned blocks (yes) or calibrate every "
        "block on the dense model (no); default: the method's own (sparsegpt yes, wanda no)",
    )
    prune.add_argument("--text", help="evaluation text file (default: the model's built-in held-out text)")
    prune.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    prune.add_argument("--save-recipe", metavar="PATH", help="write the plan applied as a recipe (YAML)")
    apply = sub.add_parser(
        "apply", help="apply a recipe and export the pruned model as a transformers folder"
    )
    export = sub.add_parser("export", help="apply a recipe and export masks, an llm-compressor recipe, sizes")
    for command in (apply, export):
        command.add_argument("recipe", help="recipe file (YAML), e.g. from prune --save-recipe")
        command.add_argument("--model", help="where to load the model from (default: the recipe's model id)")
        command.add_argument(
            "--calib-text", help="the recipe's calibration text, if it was a user's own text"
        )
    apply.add_argument("--out", required=True, help="new folder to write (must not exist)")
    apply.add_argument("--no-eval", action="store_true", help="do not measure perplexity for the model card")
    export.add_argument("--masks", metavar="PATH", help="new file: the masks, bit-packed, in safetensors")
    export.add_argument(
        "--llmcompressor", metavar="PATH", help="new file: the plan as an llm-compressor recipe"
    )
    export.add_argument(
        "--sizes", nargs="?", const="", metavar="DIR", help="measure sizes on disk (keep the files in DIR)"
    )
    layers = sub.add_parser("layers", help="list a model's prunable layers")
    layers.add_argument("--model", default="stories260K")
    _train_parser(sub)
    return parser


def _train_parser(sub) -> None:
    train_cmd = sub.add_parser(
        "train", help="prune one-shot then recover, or prune gradually while training; JSON line last"
    )
    train_cmd.add_argument("--model", default="stories260K", help="built-in name, local folder or hub id")
    train_cmd.add_argument("--method", choices=list(METHODS), default="magnitude")
    train_cmd.add_argument("--pattern", default="unstructured", help="unstructured or N:M (e.g. 2:4)")
    train_cmd.add_argument("--sparsity", type=float, default=0.5, help="final share of weights pruned, 0..1")
    train_cmd.add_argument(
        "--schedule",
        choices=("oneshot", "gradual"),
        default="oneshot",
        help="oneshot: prune with --method, then train with the masks fixed; gradual: Zhu & Gupta's cubic "
        "schedule from dense to --sparsity over the first 70%% of the steps (magnitude or wanda)",
    )
    train_cmd.add_argument("--recover", choices=RECOVER, default="distill")
    train_cmd.add_argument("--steps", type=int, default=200)
    train_cmd.add_argument("--lr", type=float, default=1e-2)
    train_cmd.add_argument("--weight-decay", type=float, default=0.0)
    train_cmd.add_argument("--batch-size", type=int, default=16)
    train_cmd.add_argument("--seq-len", type=int, default=128)
    train_cmd.add_argument("--hidden-weight", type=float, default=0.0, help="hidden-state MSE weight")
    train_cmd.add_argument("--temperature", type=float, default=1.0)
    train_cmd.add_argument(
        "--data",
        choices=("auto",) + SOURCES,
        default="auto",
        help="training text: builtin, text (--text FILE), sampled from the dense model; auto: the built-in "
        "text where the model has one, else sampled",
    )
    train_cmd.add_argument("--text", help="training text file (with --data text)")
    train_cmd.add_argument("--seconds", type=float, help="stop after this much training time")
    train_cmd.add_argument("--eval-every", type=int, default=0, help="steps between perplexity points")
    train_cmd.add_argument("--checkpoints", metavar="DIR", help="write a checkpoint every --eval-every steps")
    train_cmd.add_argument("--seed", type=int, default=0)
    train_cmd.add_argument("--out", help="new folder: the trained model (transformers folder where possible)")
    train_cmd.add_argument(
        "--histograms",
        metavar="CSV",
        help="write |w| histograms of the watched layers over training (about 20 snapshots) to this file",
    )
    train_cmd.add_argument(
        "--watch",
        metavar="LAYER",
        action="append",
        help="a layer to record (repeat for more); default: one attention and one MLP layer",
    )


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _prune(args: argparse.Namespace) -> int:
    dense = load_model(args.model)
    settings = MagnitudeSettings(
        sparsity=args.sparsity, policy=args.policy, threshold=args.threshold, kinds=tuple(args.kinds)
    )
    text = _read(args.text) if args.text else eval_text(dense.info.get("text_set", "stories"))
    ids = dense.tokenizer.encode(text)
    state = PruningState(dense)
    start = time.perf_counter()
    calibration = _read(args.calib_text) if args.calib_text else None
    sequential = {"default": None, "yes": True, "no": False}[args.sequential]
    chosen = prune_settings(settings, args.method, args.pattern, sequential=sequential)
    info = apply_settings(state, chosen, calibration)
    for message in (info or {}).get("messages", []):
        print(f"note: {message}", file=sys.stderr)
    prune_ms = (time.perf_counter() - start) * 1000
    if args.save_recipe:
        save_recipe(recipe_from_state(state, chosen, calibration, model_id=args.model), args.save_recipe)
    before = perplexity(dense.model, ids)
    after = perplexity(state.model, ids)
    selected = select(dense.layers, settings.kinds)
    result = {
        "model": dense.name,
        "method": args.method,
        "pattern": args.pattern,
        "policy": settings.policy,
        "sparsity": round(state.overall_sparsity(selected), 6),
        "tokens": before.tokens,
        "dense_ppl": round(before.ppl, 4),
        "pruned_ppl": round(after.ppl, 4),
        "prune_ms": round(prune_ms, 2),
        "variant": info["variant"] if info else "magnitude slider path (shared |w| ranking)",
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"model {dense.name}: {len(selected)} layers pruned to {result['sparsity']:.1%} "
            f"({args.method}, {args.pattern}, {settings.policy} policy)"
        )
        print(f"perplexity over {before.tokens} tokens: dense {before.ppl:.4f}  pruned {after.ppl:.4f}")
        print(f"ran: {result['variant']}")
    return 0


def _recipe_state(args: argparse.Namespace) -> tuple:
    """Load the recipe, its model, and a state brought to it; (recipe, state, seconds to apply)."""
    recipe = load_recipe(args.recipe)
    dense = load_model(args.model or recipe.model.id)
    state = PruningState(dense)
    start = time.perf_counter()
    apply_recipe(state, recipe, _read(args.calib_text) if args.calib_text else None)
    return recipe, state, time.perf_counter() - start


def _apply(args: argparse.Namespace) -> int:
    recipe, state, apply_s = _recipe_state(args)
    evaluation = None if args.no_eval else evaluate(state)
    start = time.perf_counter()
    export_hf(state, args.out, recipe, evaluation)
    layers = [state.dense.by_name[name] for name in recipe.allocation.layers]
    result = {
        "model": recipe.model.id,
        "method": recipe.method,
        "pattern": recipe.pattern,
        "allocation": recipe.allocation.name,
        "sparsity": round(state.overall_sparsity(layers), 6),
        "dense_ppl": round(evaluation.dense_ppl, 4) if evaluation else None,
        "pruned_ppl": round(evaluation.pruned_ppl, 4) if evaluation else None,
        "apply_s": round(apply_s, 3),
        "export_s": round(time.perf_counter() - start, 3),
        "out": str(args.out),
    }
    print(f"wrote {args.out}: {result['sparsity']:.1%} of {len(layers)} layers pruned ({recipe.method})")
    print(json.dumps(result))
    return 0


def _export(args: argparse.Namespace) -> int:
    recipe, state, apply_s = _recipe_state(args)
    result: dict = {"model": recipe.model.id, "method": recipe.method, "apply_s": round(apply_s, 3)}
    if args.masks:
        result["masks"] = str(export_masks(state, args.masks, model_id=recipe.model.id))
    if args.llmcompressor:
        result["llmcompressor"] = str(export_llmcompressor(recipe, state.dense, args.llmcompressor))
    if args.sizes is not None:
        result["sizes_bytes"] = disk_sizes(state, args.sizes or None)
    print(json.dumps(result))
    return 0


def _layers(args: argparse.Namespace) -> int:
    dense = load_model(args.model)
    print(f"{'name':<48} {'kind':<10} {'shape':>12} {'params':>10}")
    for layer in dense.layers:
        print(f"{layer.name:<48} {layer.kind:<10} {str(layer.shape):>12} {layer.numel:>10,}")
    return 0


class _Bar:
    """A progress bar on stderr: share done, steps and time left."""

    def __init__(self, steps: int):
        self.steps, self.start = steps, time.perf_counter()

    def __call__(self, share: float) -> None:
        elapsed = time.perf_counter() - self.start
        left = elapsed * (1 - share) / share if share else 0.0
        bar = "#" * int(30 * share)
        step = round(share * self.steps)
        print(
            f"\r[{bar:<30}] {share:4.0%} step {step}/{self.steps}, {left:.0f} s left", end="", file=sys.stderr
        )
        if share >= 1:
            print(file=sys.stderr)


def _train(args: argparse.Namespace) -> int:
    dense = load_model(args.model)
    if not 0.0 <= args.sparsity < 1.0:
        raise ValueError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    schedule = None
    if args.schedule == "gradual":
        fixed = parse_pattern(args.pattern).fixed_sparsity
        schedule = fit_schedule(args.sparsity if fixed is None else fixed, args.steps)
    settings = TrainSettings(
        steps=args.steps,
        recover=args.recover,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=min(10, args.steps - 1),
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        temperature=args.temperature,
        hidden_weight=args.hidden_weight,
        schedule=schedule,
        method=args.method,
        pattern=args.pattern,
        eval_every=args.eval_every,
        max_seconds=args.seconds,
        checkpoint_dir=args.checkpoints,
        checkpoint_every=args.eval_every if args.checkpoints else 0,
        seed=args.seed,
    )
    settings.validate(dense)  # before any pruning or sampling
    state = PruningState(dense)
    result: dict = {"model": dense.name, "method": args.method, "pattern": args.pattern}
    if args.schedule == "oneshot":
        chosen = prune_settings(MagnitudeSettings(sparsity=args.sparsity), args.method, args.pattern)
        apply_settings(state, chosen)
        result["oneshot_ppl"] = round(perplexity(state.model, dense.tokenizer.encode(_eval(dense))).ppl, 4)
    text = _read(args.text) if args.text else None
    data = training_data(dense, args.data, text, seq_len=args.seq_len, seed=args.seed)
    trained = train(dense, data, settings, start=state, progress=_Bar(args.steps), watch=args.watch)
    trained.apply(state)
    info = trained.info
    result |= {
        "schedule": args.schedule,
        "recover": args.recover,
        "sparsity": round(state.overall_sparsity(select(dense.layers)), 6),
        "steps": info["steps_done"],
        "stopped": info["stopped"],
        "dense_ppl": round(info["dense_ppl"], 4),
        "start_ppl": round(info["start_ppl"], 4),
        "final_ppl": round(info["final_ppl"], 4),
        "train_s": round(info["train_seconds"], 2),
        "step_ms": round(info["step_ms"], 2),
        "tokens_seen": info["tokens_seen"],
        "data": info["data"],
        "curve": [[p.step, round(p.ppl, 4), round(p.sparsity, 4)] for p in trained.curve],
    }
    if args.out:
        if hasattr(state.model, "save_pretrained"):
            oneshot = f"{args.method} {args.pattern} {args.sparsity:.0%} (one-shot)"
            start = "dense" if args.schedule == "gradual" else oneshot
            export_hf(state, args.out, training=TrainingRecord(settings, info, start))
        else:  # not a transformers model: the trained layers' weights and masks
            save_checkpoint(args.out, info["steps_done"], trained)
        result["out"] = str(args.out)
    if args.histograms:
        _write_rows(args.histograms, snapshot_rows(trained.histograms))
        result["histograms"] = str(args.histograms)
    print(json.dumps(result))
    return 0


def _write_rows(path: str, rows: list[dict]) -> None:
    """A CSV with a header row (nothing written for no rows but the file)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _eval(dense) -> str:
    return eval_text(dense.info.get("text_set", "stories"))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        commands = {"prune": _prune, "apply": _apply, "export": _export, "layers": _layers, "train": _train}
        return commands[args.command](args)
    except (ModelLoadError, ValueError, OSError, TrainingRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
