"""Export the session's pruned model as a transformers folder, with a model card that says what was done.

The folder holds ``model.safetensors`` (pruned weights stored as dense zeros: it runs anywhere, no sparse
kernel), ``config.json``, the tokenizer where the model has one (a transformers tokenizer is saved as
transformers saves it; llama2.c's BPE tokenizer, which transformers cannot read, as ``tokenizer.bin`` in its
own format), the recipe (``prune_explorer_recipe.yaml``) and ``README.md``: method, pattern, allocation,
sparsity of every layer and, when measured, perplexity with its protocol. A trained model's folder holds its
training record (``plans.trained``: ``prune_explorer_training.json`` and a Training section) instead of a
recipe, which could not reproduce its weights. ``AutoModelForCausalLM
.from_pretrained(folder)`` loads it without remote code and gives the session's logits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from prune_explorer.measure.evaluate import calibration_words, perplexity, protocol_text
from prune_explorer.models.dense import context_length
from prune_explorer.models.digest import weights_digest
from prune_explorer.models.tokenizers import HFTokenizer, Llama2cTokenizer
from prune_explorer.plans.atomic import atomic_folder
from prune_explorer.plans.recipe import Recipe
from prune_explorer.plans.recipe_io import recipe_yaml
from prune_explorer.plans.trained import TRAINING_FILE, TrainingRecord, card_lines
from prune_explorer.pruning.methods import get_method
from prune_explorer.state import PruningState
from prune_explorer.texts import eval_text

RECIPE_FILE = "prune_explorer_recipe.yaml"
LLAMA2C_TOKENIZER_FILE = "tokenizer.bin"


@dataclass(frozen=True)
class Evaluation:
    """Perplexity of the dense and the pruned model over one text, and how it was measured."""

    dense_ppl: float
    pruned_ppl: float
    tokens: int
    window: int
    text: str

    def protocol(self, calibration: str | None = None) -> str:
        """The protocol card's words (``measure.evaluate.protocol_text``, as the app shows them)."""
        return protocol_text(self.text, self.tokens, self.window, calibration=calibration)


def evaluate(state: PruningState, text: str | None = None, text_name: str | None = None) -> Evaluation:
    """Perplexity of the dense and the pruned model (default: the model's built-in held-out text)."""
    dense = state.dense
    if text is None:
        text_set = dense.info.get("text_set", "stories")
        text, text_name = eval_text(text_set), f"built-in {text_set} evaluation text"
    ids = dense.tokenizer.encode(text)
    window = context_length(dense.model)
    with state.lock:
        state.restore_modules()
        before, after = perplexity(dense.model, ids, window), perplexity(state.model, ids, window)
    return Evaluation(before.ppl, after.ppl, after.tokens, min(window, len(ids)), text_name or "given text")


def write_llama2c_tokenizer(tokenizer: Llama2cTokenizer, path: Path) -> None:
    """Write llama2.c's tokenizer file: int32 max_token_length, then (float32 score, int32 length, bytes)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<i", tokenizer.max_token_length))
        for piece, score in zip(tokenizer.pieces, tokenizer.scores, strict=True):
            f.write(struct.pack("<fi", score, len(piece)) + piece)


def _save_tokenizer(tokenizer, folder: Path) -> str:
    if isinstance(tokenizer, HFTokenizer):
        tokenizer.inner.save_pretrained(folder)
        return "the model's transformers tokenizer (load it with `AutoTokenizer.from_pretrained`)"
    if isinstance(tokenizer, Llama2cTokenizer):
        write_llama2c_tokenizer(tokenizer, folder / LLAMA2C_TOKENIZER_FILE)
        return (
            f"llama2.c's BPE tokenizer in its own format (`{LLAMA2C_TOKENIZER_FILE}`; transformers has no "
            "reader for it: `prune_explorer.models.tokenizers.Llama2cTokenizer.from_file`)"
        )
    return "none (the model was loaded without a tokenizer that can be saved)"


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _allocation(recipe: Recipe) -> str:
    """ "budget, 70.00% asked, each layer within 60.00%–80.00%" for the card's table."""
    allocated = recipe.allocation
    words = f"{allocated.name}, {_percent(allocated.sparsity)} asked"
    if allocated.bounds is not None:
        words += f", each layer within {_percent(allocated.bounds[0])}–{_percent(allocated.bounds[1])}"
    return words


def _method(recipe: Recipe | None, training: TrainingRecord | None) -> str:
    """The card's method: the recipe's, or the training's schedule ("trained: gradual magnitude …")."""
    if training is not None:
        return f"trained: {training.summary()}"
    return get_method(recipe.method).label if recipe else "not recorded (no recipe given)"


def model_card(
    state: PruningState,
    recipe: Recipe | None,
    evaluation: Evaluation | None,
    tokenizer_note: str,
    training: TrainingRecord | None = None,
) -> str:
    """README.md of the exported folder: what was pruned, how (the recipe's plan or the training's record),
    per layer, and the measured perplexity."""
    dense = state.dense
    pruned = [layer for layer in dense.layers if state.is_pruned(layer.name)]
    overall = state.overall_sparsity(pruned) if pruned else 0.0
    model_id = recipe.model.id if recipe else dense.name
    method = _method(recipe, training)
    lines = [
        "---",
        "library_name: transformers",
        "tags: [pruned, sparse, prune-explorer]",
        "---",
        f"# {model_id}, pruned ({method}, {_percent(overall)} of the pruned layers' weights are zero)",
        "",
        f"Pruned with Prune Explorer from `{model_id}` (dense weights sha256 `{weights_digest(dense)}`).",
        "Pruned weights are stored as zeros in a dense `model.safetensors`: the model runs anywhere, "
        "at dense speed.",
        "",
        "| | |",
        "|---|---|",
        f"| Method | {method} |",
    ]
    if recipe is not None:
        calib = recipe.calibration
        lines += [
            f"| Pattern | {recipe.pattern} |",
            f"| Allocation | {_allocation(recipe)} |",
            f"| Layer kinds | {', '.join(recipe.layer_kinds)} |",
            f"| Seed | {recipe.seed} |",
            "| Calibration | "
            + (
                f"{calib.n_sequences} × {calib.seq_len} tokens of the {calib.source} (sha256 "
                f"`{calib.text_sha256[:16]}…`) |"
                if calib
                else "none (the method reads no activations) |"
            ),
        ]
    lines += [
        f"| Sparsity | {_percent(overall)} of {sum(layer.numel for layer in pruned):,} weights in "
        f"{len(pruned)} pruned layers |",
        f"| Tokenizer | {tokenizer_note} |",
        "",
    ]
    if training is not None:
        lines += [*card_lines(training), ""]
    lines += ["## Perplexity", ""]
    calib = recipe.calibration if recipe is not None else None
    if evaluation is None:
        lines.append("Not measured for this export.")
    else:
        lines += [
            f"Dense {evaluation.dense_ppl:.4f}, {'trained' if training else 'pruned'} "
            f"{evaluation.pruned_ppl:.4f}.",
            "",
            evaluation.protocol(
                calibration_words(calib.source, calib.n_sequences, calib.seq_len) if calib else None
            )
            + ".",
        ]
    lines += [
        "",
        "## Sparsity per layer",
        "",
        "| layer | kind | shape (out, in) | sparsity |",
        "|---|---|---|---|",
    ]
    for layer in dense.layers:
        sparsity = state.sparsity(layer.name) if state.is_pruned(layer.name) else 0.0
        lines.append(f"| `{layer.name}` | {layer.kind} | {layer.shape} | {_percent(sparsity)} |")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM",
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
        "```",
    ]
    if recipe is not None:
        lines += [
            "",
            f"Reproduce: `python -m prune_explorer apply {RECIPE_FILE} --out DIR` on the dense model.",
        ]
    return "\n".join(lines) + "\n"


def export_hf(
    state: PruningState,
    target: Path | str,
    recipe: Recipe | None = None,
    evaluation: Evaluation | None = None,
    training: TrainingRecord | None = None,
) -> Path:
    """Write the session's pruned model as a new transformers folder at ``target`` (all or nothing).

    Args:
        recipe: the plan that made the pruning (written beside the weights and described in the card).
        evaluation: perplexity to state in the card, with its protocol.
        training: how the weights were trained, if they were (``TRAINING_FILE`` and the card's section);
            a recipe given with it is refused, as it would not give these weights.
    Returns:
        The folder written.
    Raises:
        ExportError: ``target`` exists or cannot be written, or writing failed (nothing is left there).
        ValueError: both a recipe and a training record are given.
    """
    if recipe is not None and training is not None:
        raise ValueError("a trained model is exported without a recipe: a recipe would not give its weights")
    with atomic_folder(target) as tmp:
        with state.lock:
            state.restore_modules()  # the masked-dense modules, not a speed measurement's swapped ones
            state.model.save_pretrained(tmp)  # safetensors (transformers 5 writes no other format)
        note = _save_tokenizer(state.dense.tokenizer, tmp)
        if recipe is not None:
            (tmp / RECIPE_FILE).write_text(recipe_yaml(recipe), encoding="utf-8")
        if training is not None:
            (tmp / TRAINING_FILE).write_text(training.as_json(), encoding="utf-8")
        card = model_card(state, recipe, evaluation, note, training)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return Path(target)
