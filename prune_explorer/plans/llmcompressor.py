"""The same plan as an llm-compressor recipe, so it can run on a GPU cluster with an existing engine.

Modifier names and fields as llm-compressor's source spells them (``vllm-project/llm-compressor``, read at
commit ab1ba3e, release 0.13): ``WandaPruningModifier`` and ``SparseGPTModifier`` (``SparsityModifierBase``:
``sparsity`` a float or one float per target module, ``mask_structure`` "0:0" or "N:M", ``targets``,
``ignore``; SparseGPT adds ``block_size`` and ``dampening_frac``), and ``MagnitudePruningModifier``
(``targets``, ``init_sparsity``, ``final_sparsity``, ``update_scheduler``, ``mask_structure`` "unstructured"
or "N:M", ``start``/``end``/``update``). The per-layer sparsities are written out as an explicit list, one per
target module in model order (llm-compressor indexes ``sparsity`` by the modules ``targets`` matches, which
compressed-tensors' ``match_named_modules`` yields in ``named_modules()`` order; a target without "re:" is an
exact module name), and the targets are the exact module names, not ``sparsity_profile: owl``. Magnitude
takes one sparsity per modifier, so layers are grouped by sparsity into one modifier group each.

llm-compressor does not install beside this project's pins (every release pins an older transformers and
PyYAML: pip reports ResolutionImpossible), so the tests check these field names; where ``llmcompressor`` is
importable they also parse the file with its own loader (``Recipe.create_instance``), as its 0.14.0.1 did,
installed with ``--no-deps`` in a scratch environment over this project's packages.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from prune_explorer.models.dense import DenseModel
from prune_explorer.plans.apply import check_recipe
from prune_explorer.plans.atomic import atomic_file
from prune_explorer.plans.recipe import Recipe, RecipeError
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.sparsegpt_layer import DEFAULT_BLOCKSIZE, DEFAULT_PERCDAMP

STAGE = "sparsity_stage"
MODIFIERS = {
    "wanda": "WandaPruningModifier",
    "sparsegpt": "SparseGPTModifier",
    "magnitude": "MagnitudePruningModifier",
}


def llmcompressor_recipe(recipe: Recipe, dense: DenseModel) -> dict:
    """The llm-compressor recipe (a dict to dump as YAML) for ``recipe`` on ``dense``.

    Raises:
        RecipeError: the recipe does not fit ``dense``, or llm-compressor has no modifier for it (random
            pruning, whole neurons or heads, GPT-2 Conv1D or embedding layers, which its pruning modifiers do
            not take).
    """
    check_recipe(recipe, dense)
    pattern = parse_pattern(recipe.pattern)
    if recipe.method not in MODIFIERS:
        raise RecipeError(
            f"llm-compressor has no {recipe.method} pruning modifier; use wanda, sparsegpt or magnitude"
        )
    if pattern.structured:
        raise RecipeError(
            f"llm-compressor's pruning modifiers prune single weights or N:M groups, not whole {pattern.kind}"
        )
    layers = [layer for layer in dense.layers if layer.name in recipe.allocation.layers]
    odd = [layer.name for layer in layers if layer.transposed or layer.kind == "embedding"]
    if odd:
        raise RecipeError(
            f"llm-compressor prunes torch Linear modules; {', '.join(odd[:3])} "
            f"{'is' if len(odd) == 1 else 'are'} GPT-2 Conv1D or embedding layers: deselect them"
        )
    names = [layer.name for layer in layers]
    sparsities = [float(recipe.allocation.layers[name]) for name in names]
    structure = f"{pattern.n}:{pattern.m}" if pattern.kind == "n:m" else None
    if recipe.method == "magnitude":
        groups: dict[float, list[str]] = {}
        for name, sparsity in zip(names, sparsities, strict=True):
            groups.setdefault(sparsity, []).append(name)
        stage = {
            f"magnitude_{i}_modifiers": {
                "MagnitudePruningModifier": {
                    "targets": group,
                    "init_sparsity": sparsity,
                    "final_sparsity": sparsity,
                    "update_scheduler": "calc(final_sparsity)",
                    "mask_structure": structure or "unstructured",
                    "start": 0,
                    "end": 1,
                    "update": 1,
                }
            }
            for i, (sparsity, group) in enumerate(groups.items())
        }
        return {STAGE: stage}
    modifier = {
        "sparsity": sparsities,
        "mask_structure": structure or "0:0",
        "targets": names,
        "ignore": [],
    }
    if recipe.method == "sparsegpt":
        modifier |= {"block_size": DEFAULT_BLOCKSIZE, "dampening_frac": DEFAULT_PERCDAMP}
    return {STAGE: {"sparsity_modifiers": {MODIFIERS[recipe.method]: modifier}}}


def _header(recipe: Recipe) -> str:
    calib = recipe.calibration
    lines = [
        f"llm-compressor recipe for {recipe.model.id} (dense weights sha256 {recipe.model.sha256}),",
        f"made by Prune Explorer {recipe.project_version}: {recipe.method}, {recipe.pattern}, allocation "
        f"{recipe.allocation.name} ({len(recipe.allocation.layers)} layers, one sparsity per target).",
    ]
    if calib is not None:
        lines.append(
            f"Calibration used here: {calib.n_sequences} x {calib.seq_len} tokens of the {calib.source} "
            f"(sha256 {calib.text_sha256}); give oneshot() the same data to come close."
        )
        lines.append("llm-compressor calibrates block by block on the already-pruned model (sequential).")
    if recipe.method == "magnitude":
        lines.append("MagnitudePruningModifier is a training-time modifier: masks set at start, kept to end.")
    return "".join(f"# {line}\n" for line in lines)


def llmcompressor_yaml(recipe: Recipe, dense: DenseModel) -> str:
    """:func:`llmcompressor_recipe` as YAML text, with a comment header saying where it came from."""
    body = yaml.safe_dump(llmcompressor_recipe(recipe, dense), sort_keys=False, default_flow_style=None)
    return _header(recipe) + body


def export_llmcompressor(recipe: Recipe, dense: DenseModel, target: Path | str) -> Path:
    """Write :func:`llmcompressor_yaml` to a new file at ``target`` (all or nothing).

    Raises:
        RecipeError: as :func:`llmcompressor_recipe`; ExportError: the target exists or cannot be written.
    """
    text = llmcompressor_yaml(recipe, dense)
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
