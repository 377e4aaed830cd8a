"""Command line: prune a model and print what it did to perplexity.

python -m prune_explorer prune --model stories260K --sparsity 0.5 [--save-recipe recipe.yaml]
python -m prune_explorer prune --sparsity 0.7 --allocation budget --budget-deviation 0.1
python -m prune_explorer apply recipe.yaml --out DIR      (a transformers folder with a model card)
python -m prune_explorer export recipe.yaml --masks masks.safetensors --llmcompressor llmc.yaml --sizes
python -m prune_explorer layers --model path/to/folder
python -m prune_explorer train --sparsity 0.7 --schedule oneshot --recover distill --steps 300 --out DIR
"""

from __future__ import annotations

import argparse
import logging
import sys

from prune_explorer.cli import prune, recipes, train
from prune_explorer.models.errors import ModelLoadError
from prune_explorer.training.budget import TrainingRefused


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prune_explorer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (prune, recipes, train):
        command.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a bad input prints ``error: <why>`` on stderr and returns 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ModelLoadError, ValueError, OSError, TrainingRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
