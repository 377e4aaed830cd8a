"""The ``train`` subcommand: one-shot pruning then recovery, or gradual pruning while training."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time

from prune_explorer.cli.common import eval_of, read_text
from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.layers import select
from prune_explorer.models.loading import load_model
from prune_explorer.plans.export import export_hf
from prune_explorer.plans.trained import TrainingRecord
from prune_explorer.pruning.methods import METHODS
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.settings import apply_settings, prune_settings
from prune_explorer.state import PruningState
from prune_explorer.training.checkpoints import save_checkpoint
from prune_explorer.training.data import SOURCES, training_data
from prune_explorer.training.histograms import snapshot_rows
from prune_explorer.training.job import train
from prune_explorer.training.schedule import fit_schedule
from prune_explorer.training.settings import PRECISIONS, RECOVER, TrainSettings


def add_parsers(sub) -> None:
    """The ``train`` subcommand on ``sub`` (argparse's subparsers)."""
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
        "schedule from dense to --sparsity over the first 70%% of the steps (magnitude or wanda; "
        "unstructured, N:M, or whole neurons or heads: --sparsity is then the share of units each block "
        "loses)",
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
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="the training forwards' arithmetic: bfloat16 is mixed precision (autocast; weights, optimizer "
        "and losses stay float32), faster on CPUs with AVX512-BF16 or AMX",
    )
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
    train_cmd.add_argument(
        "--use",
        choices=("final", "best"),
        default="final",
        help="the state reported and written to --out: the final one, or the evaluation point of lowest "
        "held-out perplexity at the final masks (chosen on the evaluation text: an optimistic number)",
    )
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
    train_cmd.set_defaults(run=run_train)


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


def run_train(args: argparse.Namespace) -> int:
    """Prune (one-shot) and recover, or prune gradually while training; print one JSON object."""
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
        precision=args.precision,
        schedule=schedule,
        method=args.method,
        pattern=args.pattern,
        eval_every=args.eval_every,
        max_seconds=args.seconds,
        checkpoint_dir=args.checkpoints,
        checkpoint_every=args.eval_every if args.checkpoints else 0,
        keep_best=args.use == "best",
        seed=args.seed,
    )
    settings.validate(dense)  # before any pruning or sampling
    state = PruningState(dense)
    result: dict = {"model": dense.name, "method": args.method, "pattern": args.pattern}
    if args.schedule == "oneshot":
        chosen = prune_settings(MagnitudeSettings(sparsity=args.sparsity), args.method, args.pattern)
        apply_settings(state, chosen)
        result["oneshot_ppl"] = round(perplexity(state.model, dense.tokenizer.encode(eval_of(dense))).ppl, 4)
    text = read_text(args.text) if args.text else None
    data = training_data(dense, args.data, text, seq_len=args.seq_len, seed=args.seed)
    trained = train(dense, data, settings, start=state, progress=_Bar(args.steps), watch=args.watch)
    best = trained.best is not None  # with --use best: the final state when it is the best one
    trained.apply(state, best=best)
    info = trained.report(best=best)
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
        "used": {"state": "best" if best else "final", "step": info.get("used_step", info["steps_done"])},
    }
    if best:
        result["used"]["ppl"] = round(info["used_ppl"], 4)
    if args.out:
        if hasattr(state.model, "save_pretrained"):
            oneshot = f"{args.method} {args.pattern} {args.sparsity:.0%} (one-shot)"
            start = "dense" if args.schedule == "gradual" else oneshot
            export_hf(state, args.out, training=TrainingRecord(settings, info, start))
        else:  # not a transformers model: the trained layers' weights and masks
            save_checkpoint(args.out, result["used"]["step"], trained.best.state if best else trained)
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
