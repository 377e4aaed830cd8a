"""Command line: prune a model and print what it did to perplexity.

python -m prune_explorer prune --model stories260K --sparsity 0.5
python -m prune_explorer layers --model path/to/folder
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.errors import ModelLoadError
from prune_explorer.models.layers import ALL_KINDS, DEFAULT_KINDS, select
from prune_explorer.models.loading import load_model
from prune_explorer.pruning.methods import METHODS
from prune_explorer.pruning.policies import POLICIES, MagnitudeSettings
from prune_explorer.pruning.settings import apply_settings, prune_settings
from prune_explorer.state import PruningState
from prune_explorer.texts import eval_text


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
    layers = sub.add_parser("layers", help="list a model's prunable layers")
    layers.add_argument("--model", default="stories260K")
    return parser


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
    info = apply_settings(
        state, prune_settings(settings, args.method, args.pattern, sequential=sequential), calibration
    )
    for message in (info or {}).get("messages", []):
        print(f"note: {message}", file=sys.stderr)
    prune_ms = (time.perf_counter() - start) * 1000
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


def _layers(args: argparse.Namespace) -> int:
    dense = load_model(args.model)
    print(f"{'name':<48} {'kind':<10} {'shape':>12} {'params':>10}")
    for layer in dense.layers:
        print(f"{layer.name:<48} {layer.kind:<10} {str(layer.shape):>12} {layer.numel:>10,}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return {"prune": _prune, "layers": _layers}[args.command](args)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
