"""The ``apply`` and ``export`` subcommands: a recipe applied again, and what it exports."""

from __future__ import annotations

import argparse
import json
import time

from prune_explorer.cli.common import read_text
from prune_explorer.models.loading import load_model
from prune_explorer.plans.apply import apply_recipe
from prune_explorer.plans.export import evaluate, export_hf
from prune_explorer.plans.llmcompressor import export_llmcompressor
from prune_explorer.plans.masks import export_masks
from prune_explorer.plans.recipe_io import load_recipe
from prune_explorer.plans.sizes import disk_sizes
from prune_explorer.state import PruningState


def add_parsers(sub) -> None:
    """The ``apply`` and ``export`` subcommands on ``sub`` (argparse's subparsers)."""
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
    apply.set_defaults(run=run_apply)
    export.set_defaults(run=run_export)


def _recipe_state(args: argparse.Namespace) -> tuple:
    """Load the recipe, its model, and a state brought to it; (recipe, state, seconds to apply)."""
    recipe = load_recipe(args.recipe)
    dense = load_model(args.model or recipe.model.id)
    state = PruningState(dense)
    start = time.perf_counter()
    apply_recipe(state, recipe, read_text(args.calib_text) if args.calib_text else None)
    return recipe, state, time.perf_counter() - start


def run_apply(args: argparse.Namespace) -> int:
    """Apply a recipe and write the pruned model as a transformers folder with its card."""
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


def run_export(args: argparse.Namespace) -> int:
    """Apply a recipe and write its masks, its llm-compressor recipe and sizes on disk."""
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
