"""Recipe round trip and export time, and the sizes on disk of every stored form.

    python bench/export.py --model smollm2-135m
    python bench/export.py --model stories260K --method magnitude

Prunes the attention and MLP weights (embeddings and LM head kept) with ``--method`` at ``--sparsity``
(unstructured; calibrated methods on the model's built-in calibration text), then times: the weights' sha256
(once per model), writing the recipe and reading it back, applying it to a fresh session (the masks are
checked equal, bit for bit), the transformers export (loaded back with ``AutoModelForCausalLM``, logits
compared), the masks file and the llm-compressor recipe; and measures on written files the sizes of the dense,
dense-with-zeros (raw, zlib, xz), bitmask and CSR forms (``prune_explorer.plans.sizes``). Each time is one
run (these are one-off jobs, not a hot path). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
from _common import emit, machine

from prune_explorer.models.digest import weights_digest
from prune_explorer.models.loading import load_model
from prune_explorer.plans.apply import apply_recipe
from prune_explorer.plans.export import export_hf
from prune_explorer.plans.llmcompressor import export_llmcompressor
from prune_explorer.plans.masks import export_masks
from prune_explorer.plans.recipe_capture import recipe_from_state
from prune_explorer.plans.recipe_io import load_recipe, save_recipe
from prune_explorer.plans.sizes import disk_sizes
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.settings import apply_settings, prune_settings
from prune_explorer.state import PruningState


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 3)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="wanda", choices=("magnitude", "wanda", "sparsegpt", "random"))
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    dense, load_s = _timed(lambda: load_model(args.model))
    settings = prune_settings(MagnitudeSettings(args.sparsity), args.method, "unstructured")
    state = PruningState(dense)
    _, prune_s = _timed(lambda: apply_settings(state, settings))
    _, hash_s = _timed(lambda: weights_digest(dense))
    result: dict = {"bench": "export", "model": dense.name, "method": args.method, "sparsity": args.sparsity}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp)
        recipe, from_state_s = _timed(lambda: recipe_from_state(state, settings, model_id=args.model))
        _, save_s = _timed(lambda: save_recipe(recipe, root / "recipe.yaml"))
        loaded, load_recipe_s = _timed(lambda: load_recipe(root / "recipe.yaml"))
        fresh = PruningState(dense)
        _, apply_s = _timed(lambda: apply_recipe(fresh, loaded))
        same = all(torch.equal(state.mask(layer.name), fresh.mask(layer.name)) for layer in dense.layers)
        out, export_s = _timed(lambda: export_hf(state, root / "hf", recipe))
        logits_diff = _reload_difference(out, state, dense)
        masks_path, masks_s = _timed(lambda: export_masks(state, root / "masks.safetensors"))
        llmc_path, llmc_s = _timed(lambda: export_llmcompressor(recipe, dense, root / "llmcompressor.yaml"))
        sizes, sizes_s = _timed(lambda: disk_sizes(state))
        result |= {
            "load_s": round(load_s, 3),
            "prune_s": prune_s,
            "weights_sha256_s": hash_s,
            "recipe_from_state_s": from_state_s,
            "recipe_save_s": save_s,
            "recipe_load_s": load_recipe_s,
            "recipe_apply_s": apply_s,
            "recipe_round_trip_s": round(from_state_s + save_s + load_recipe_s + apply_s, 3),
            "recipe_masks_equal": same,
            "recipe_bytes": (root / "recipe.yaml").stat().st_size,
            "export_hf_s": export_s,
            "export_hf_bytes": _folder_bytes(out),
            "reloaded_logits_max_abs_diff": logits_diff,
            "masks_export_s": masks_s,
            "masks_bytes": masks_path.stat().st_size,
            "llmcompressor_export_s": llmc_s,
            "llmcompressor_bytes": llmc_path.stat().st_size,
            "sizes_s": sizes_s,
            "sizes_bytes": sizes,
            "sizes_vs_dense": {form: round(nbytes / sizes["dense"], 4) for form, nbytes in sizes.items()},
        }
    emit(result | {"machine": machine()})


def _reload_difference(folder: Path, state: PruningState, dense) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False).eval()
    ids = torch.tensor([dense.tokenizer.encode("Once upon a time, in a quiet village by the sea,")])
    with torch.inference_mode():
        return float((model(input_ids=ids).logits - state.model(input_ids=ids).logits).abs().max())


if __name__ == "__main__":
    main()
