"""Exports on the Save & export page: each built only when its Prepare button is pressed, in a temporary
folder that is removed afterwards, then offered as a download.

The files are kept in the session for the pruning they were made of (``session.pruned_key``): a slider move
makes them stale and the download goes until Prepare is pressed again. Every failure (no writable temporary
folder, a full disk, an export the plan cannot take) is shown as a message; nothing of the session changes.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from prune_explorer.plans.atomic import WRITE_ERRORS, ExportError, reason
from prune_explorer.plans.export import evaluate, export_hf
from prune_explorer.plans.llmcompressor import llmcompressor_yaml
from prune_explorer.plans.masks import export_masks
from prune_explorer.plans.recipe import Recipe, RecipeError
from prune_explorer.plans.sizes import disk_sizes
from prune_explorer.plans.trained import TRAINING_FILE
from ui import formats, session
from ui.train_job import Trained

PREPARED = "export_prepared"  # {name: (pruned key, bytes or DataFrame, file name)}
FAILED = "export_failed"  # {name: message} of the last Prepare that failed
SIZE_FORMS = {
    "dense": "dense (as loaded)",
    "pruned_zeros": "dense with zeros (the transformers export)",
    "pruned_zeros.zlib": "dense with zeros, zlib",
    "pruned_zeros.lzma": "dense with zeros, xz",
    "bitmask": "bitmask (1 bit a weight + kept values)",
    "csr": "CSR (row offsets, int32 columns, kept values)",
    "dense.zlib": "dense, zlib (baseline)",
    "dense.lzma": "dense, xz (baseline)",
}
MASKS_NOTE = (
    "Load them onto the dense model with `prune_explorer.plans.masks.apply_masks_file(state, path)` "
    "(a `PruningState` of the same model; other weights are refused)."
)
TRAINED_MASKS_NOTE = (
    " These are the trained model's final masks; loaded, they zero the same weights of the *dense* model, "
    "without the trained values (the transformers folder holds those)."
)
LLMC_TRAINED = (
    "Not offered for a trained model: llm-compressor's oneshot prunes the dense weights once, so a recipe "
    "for it would re-prune the dense model and give neither these masks' training nor its weights. Export "
    "the transformers folder, which holds the trained weights."
)


def in_temporary_folder(build: Callable[[Path], bytes]) -> bytes:
    """``build(folder)`` in a new temporary folder, removed afterwards whatever happens.

    Raises:
        ExportError: no temporary folder can be made (e.g. not writable, disk full), or a write in it
            failed (``atomic.WRITE_ERRORS``: an OSError, or safetensors' writer reporting one).
    """
    try:
        folder = Path(tempfile.mkdtemp(prefix="prune-explorer-export-"))
    except OSError as exc:
        raise ExportError(f"no temporary folder can be made: {reason(exc)}") from exc
    try:
        return build(folder)
    except WRITE_ERRORS as exc:
        raise ExportError(f"writing the export failed: {reason(exc)} (nothing was kept)") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def zipped(folder: Path) -> bytes:
    """Every file under ``folder`` in one zip (paths under the folder's name)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, Path(folder.name) / path.relative_to(folder))
    return out.getvalue()


def hf_name(trained: Trained | None) -> str:
    """The transformers folder's name: "<model>-pruned", or "<model>-trained" for a trained model."""
    return f"{session.dense().name}-{'pruned' if trained is None else 'trained'}"


def hf_note(trained: Trained | None) -> str:
    """What the transformers folder holds: the recipe, or for a trained model its training record."""
    if trained is None:
        return "safetensors (zeros stored), config, tokenizer, the recipe and a model card with perplexity."
    return (
        f"The trained weights as safetensors (zeros stored), config, tokenizer, the training settings "
        f"(`{TRAINING_FILE}`) and a model card with the schedule, loss, steps, data, per-layer sparsity and "
        "perplexity."
    )


def hf_zip(recipe: Recipe | None, trained: Trained | None = None) -> bytes:
    """The session's model as a transformers folder (``export_hf``, perplexity in its card), zipped: with
    the recipe, or for a trained model with its training record and no recipe (none gives its weights)."""
    state = session.state()
    name = hf_name(trained)
    training = None if trained is None else trained.record
    plan = None if trained is not None else recipe

    def build(folder: Path) -> bytes:
        return zipped(export_hf(state, folder / name, plan, evaluate(state), training))

    return in_temporary_folder(build)


def masks_file() -> bytes:
    state = session.state()
    return in_temporary_folder(lambda folder: export_masks(state, folder / "masks.safetensors").read_bytes())


def llmcompressor(recipe: Recipe) -> bytes:
    """The plan as llm-compressor's recipe (``plans.llmcompressor``); RecipeError where it has none."""
    return llmcompressor_yaml(recipe, session.dense()).encode("utf-8")


def llmcompressor_offer(recipe: Recipe | None, trained: Trained | None) -> None:
    """The llm-compressor column: its Prepare button and download, or why a trained model has none."""
    if trained is not None or recipe is None:
        st.info(LLMC_TRAINED)
        return
    st.caption("The same plan for llm-compressor's oneshot: one sparsity per target module, exact names.")
    name = f"{session.dense().name}-llmcompressor.yaml"
    prepare("llmc", "the llm-compressor recipe", lambda: llmcompressor(recipe), name)
    offer("llmc", "llm-compressor recipe", "application/x-yaml")


def sizes_table() -> pd.DataFrame:
    """Bytes on disk of every form, measured on files written (``plans.sizes.disk_sizes``)."""
    sizes = in_temporary_folder(lambda folder: disk_sizes(session.state(), folder / "forms"))
    dense = sizes["dense"]
    return pd.DataFrame(
        [
            {
                "form": SIZE_FORMS.get(form, form),
                "bytes": size,
                "size": formats.megabytes(size),
                "vs dense": size / dense,
            }
            for form, size in sizes.items()
        ]
    )


def prepared(name: str):
    """The prepared value of ``name`` if it was made of the pruning the session has now, else None."""
    hit = st.session_state.get(PREPARED, {}).get(name)
    return hit[1:] if hit is not None and hit[0] == session.pruned_key() else None


def prepare(name: str, label: str, build: Callable[[], object], file_name: str = "") -> None:
    """A Prepare button; pressed, ``build()`` runs under a status box and its result is kept."""
    if not st.button(f"Prepare {label}", key=f"export_prepare_{name}", icon=":material/build:"):
        return
    st.session_state.setdefault(FAILED, {}).pop(name, None)
    with st.status(f"Preparing {label}…", expanded=False) as status:
        try:
            with session.exclusive():
                value = build()
        except (ExportError, RecipeError, ValueError, RuntimeError, OSError) as exc:
            status.update(label=f"{label}: failed", state="error")
            st.session_state[FAILED][name] = (
                f"{label} could not be made: {exc}. Nothing of your session changed."
            )
            return
        status.update(label=f"{label}: ready", state="complete")
    st.session_state.setdefault(PREPARED, {})[name] = (session.pruned_key(), value, file_name)


def failure(name: str) -> None:
    message = st.session_state.get(FAILED, {}).get(name)
    if message:
        st.error(message)


def offer(name: str, label: str, mime: str) -> None:
    """The download of a prepared file, or a caption saying Prepare makes it."""
    failure(name)
    found = prepared(name)
    if found is None:
        st.caption("Press Prepare to build it for the pruning you have now.")
        return
    data, file_name = found
    st.download_button(
        f"Download {label} ({formats.megabytes(len(data))})",
        lambda: data,
        file_name=file_name,
        mime=mime,
        key=f"export_download_{name}",
        on_click="ignore",
        icon=":material/download:",
    )
