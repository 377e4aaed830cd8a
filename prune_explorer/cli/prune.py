"""The ``prune`` and ``layers`` subcommands: prune a model as the app's sidebar would, and list its layers."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

from prune_explorer.cli.common import eval_of, read_text
from prune_explorer.measure.evaluate import perplexity
from prune_explorer.measure.sensitivity import cached_sensitivity, measure_sensitivity
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import ALL_KINDS, DEFAULT_KINDS, select
from prune_explorer.models.loading import load_model
from prune_explorer.plans.recipe_capture import recipe_from_state
from prune_explorer.plans.recipe_io import save_recipe
from prune_explorer.pruning import allocation as alloc
from prune_explorer.pruning import outliers
from prune_explorer.pruning.allocation import ALLOCATIONS
from prune_explorer.pruning.budget_bounds import (
    DEVIATION,
    bounded,
    budget_bounds,
    check_deviation,
    deviation_in,
)
from prune_explorer.pruning.methods import METHODS
from prune_explorer.pruning.policies import POLICIES, MagnitudeSettings
from prune_explorer.pruning.settings import (
    PruneSettings,
    apply_settings,
    find_basis,
    prune_settings,
    with_basis,
)
from prune_explorer.state import PruningState


def add_parsers(sub) -> None:
    """The ``prune`` and ``layers`` subcommands on ``sub`` (argparse's subparsers)."""
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
    prune.add_argument(
        "--allocation",
        choices=ALLOCATIONS,
        default="uniform",
        help="how --sparsity is shared among layers: uniform, owl (fewer outliers, pruned more) or budget "
        "(least damage predicted by per-layer sensitivity curves, measured first if none are stored)",
    )
    prune.add_argument("--owl-m", type=float, default=outliers.OWL_M, help="OWL: outlier threshold M x mean")
    prune.add_argument("--owl-lam", type=float, default=alloc.OWL_LAMBDA, help="OWL: largest deviation λ")
    prune.add_argument(
        "--budget-deviation",
        type=float,
        default=DEVIATION,
        help="budget: no layer leaves --sparsity ± this (1: unbounded)",
    )
    prune.set_defaults(run=run_prune)
    layers = sub.add_parser("layers", help="list a model's prunable layers")
    layers.add_argument("--model", default="stories260K")
    layers.set_defaults(run=run_layers)


def run_prune(args: argparse.Namespace) -> int:
    """Prune, evaluate dense and pruned, print a table or one JSON object."""
    dense = load_model(args.model)
    settings = MagnitudeSettings(
        sparsity=args.sparsity, policy=args.policy, threshold=args.threshold, kinds=tuple(args.kinds)
    )
    text = read_text(args.text) if args.text else eval_of(dense)
    ids = dense.tokenizer.encode(text)
    state = PruningState(dense)
    start = time.perf_counter()
    calibration = read_text(args.calib_text) if args.calib_text else None
    sequential = {"default": None, "yes": True, "no": False}[args.sequential]
    chosen = prune_settings(
        settings,
        args.method,
        args.pattern,
        sequential=sequential,
        allocation=args.allocation,
        owl_m=args.owl_m,
        owl_lam=args.owl_lam,
    )
    if chosen.allocation != args.allocation:
        raise ValueError(
            f"--allocation {args.allocation}: the allocation shares one sparsity among layers, which "
            f"{args.pattern} with the {args.policy} policy does not have (N:M fixes it; the global and typed "
            "thresholds decide per layer)"
        )
    if chosen.allocation == "budget":
        chosen = replace(chosen, basis=_budget_basis(dense, chosen, calibration, args.budget_deviation))
    chosen = with_basis(dense, chosen, calibration)  # OWL: the per-layer shares known before applying
    info = apply_settings(state, chosen, calibration)
    for message in (info or {}).get("messages", []):
        print(f"note: {message}", file=sys.stderr)
    prune_ms = (time.perf_counter() - start) * 1000
    if args.save_recipe:
        deviation = deviation_in(chosen)
        bounds = None if deviation is None else budget_bounds(chosen.sparsity, deviation)
        recipe = recipe_from_state(state, chosen, calibration, model_id=args.model, bounds=bounds)
        save_recipe(recipe, args.save_recipe)
    before = perplexity(dense.model, ids)
    after = perplexity(state.model, ids)
    selected = select(dense.layers, settings.kinds)
    result = {
        "model": dense.name,
        "method": args.method,
        "pattern": args.pattern,
        "policy": settings.policy,
        "allocation": chosen.allocation,
        "sparsity": round(state.overall_sparsity(selected), 6),
        "tokens": before.tokens,
        "dense_ppl": round(before.ppl, 4),
        "pruned_ppl": round(after.ppl, 4),
        "prune_ms": round(prune_ms, 2),
        "variant": info["variant"] if info else "magnitude slider path (shared |w| ranking)",
    }
    if chosen.allocation == "owl":
        result |= {"owl_m": chosen.owl_m, "owl_lam": chosen.owl_lam}
    if chosen.allocation == "budget":
        result["budget_deviation"] = deviation_in(chosen)
    if chosen.layer_sparsity:
        shares = chosen.layer_sparsity.values()
        result["layer_sparsity_range"] = [round(min(shares), 6), round(max(shares), 6)]
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"model {dense.name}: {len(selected)} layers pruned to {result['sparsity']:.1%} "
            f"({args.method}, {args.pattern}, {settings.policy} policy, {chosen.allocation} allocation)"
        )
        print(f"perplexity over {before.tokens} tokens: dense {before.ppl:.4f}  pruned {after.ppl:.4f}")
        print(f"ran: {result['variant']}")
    return 0


def _budget_basis(
    dense: DenseModel, settings: PruneSettings, calibration: str | None, deviation: float
) -> alloc.Basis:
    """The budget's basis from the layers' sensitivity curves (stored ones, as the app's Sensitivity page
    writes them, else measured now and stored), each layer held within the average ± ``deviation``."""
    check_deviation(deviation)  # before a long measurement
    args = {"mode": "layer", "kinds": settings.kinds, "calibration": calibration}
    found = cached_sensitivity(dense, settings.method, **args)
    if found is None:
        count = len(select(dense.layers, settings.kinds))
        print(
            f"note: measuring {settings.method} sensitivity curves of {count} layers for the budget "
            "(stored for the app and later runs)",
            file=sys.stderr,
        )
        found = measure_sensitivity(dense, settings.method, **args)
    return bounded(find_basis(dense, settings, calibration, found.curves()), deviation)


def run_layers(args: argparse.Namespace) -> int:
    """List the model's prunable layers."""
    dense = load_model(args.model)
    print(f"{'name':<48} {'kind':<10} {'shape':>12} {'params':>10}")
    for layer in dense.layers:
        print(f"{layer.name:<48} {layer.kind:<10} {str(layer.shape):>12} {layer.numel:>10,}")
    return 0
