"""Load a model and its tokenizer: the built-ins, a local folder or a Hugging Face hub id.

Loading is safe by default: safetensors where the checkpoint has them, ``torch.load(weights_only=True)``
otherwise (transformers' default), never remote code. The memory a model needs is checked against free memory
*before* its weights are read. Every failure is a :class:`ModelLoadError` whose message a user can act on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from prune_explorer.models import llama2c
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.errors import ModelLoadError, first_line
from prune_explorer.models.memory import check_memory, count_parameters
from prune_explorer.models.smollm2 import NAME as SMOLLM2
from prune_explorer.models.smollm2 import load_smollm2
from prune_explorer.models.tokenizers import HFTokenizer, Llama2cTokenizer
from prune_explorer.progress import StagedProgress

log = logging.getLogger(__name__)

STORIES260K = "stories260K"
BUILTINS = (STORIES260K, SMOLLM2)


def load_stories260k() -> DenseModel:
    """The built-in 260K-parameter TinyStories Llama (MIT), read from the llama2.c checkpoint it ships as."""
    model = llama2c.load_llama2c_model(llama2c.STORIES260K_CHECKPOINT)
    tokenizer = Llama2cTokenizer.from_file(llama2c.STORIES260K_TOKENIZER)
    return DenseModel(
        model,
        tokenizer,
        name=STORIES260K,
        source="built-in (llama2.c checkpoint)",
        chat=False,
        text_set="stories",
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def load_pretrained(source: str, available: int | None = None) -> DenseModel:
    """Load a causal LM from a local folder or a hub id with transformers' Auto classes.

    Raises:
        ModelLoadError: a missing folder, an unknown hub id, a corrupt or unsafe checkpoint, or too little
            free memory.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = source.strip()
    if not source:
        raise ModelLoadError("give a local folder or a Hugging Face hub id")
    path = Path(source).expanduser()
    looks_local = source.startswith((".", "/", "~")) or path.exists() or source.count("/") > 1
    if looks_local and path.is_file():
        raise ModelLoadError(
            f"{source!r} is a file, not a model folder: give the folder holding config.json and the weights"
        )
    if looks_local and not path.is_dir():
        raise ModelLoadError(f"folder {source!r} does not exist")
    local_only = looks_local or _offline()
    kwargs = dict(local_files_only=local_only, trust_remote_code=False)
    try:
        config = AutoConfig.from_pretrained(str(path) if looks_local else source, **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        where = f"folder {source!r}" if looks_local else f"hub id {source!r}"
        hint = (
            " (offline: only models already in the local cache can be loaded)"
            if local_only and not looks_local
            else ""
        )
        raise ModelLoadError(f"could not read a model config from {where}{hint}: {first_line(exc)}") from exc
    try:
        n_params = count_parameters(config)
    except Exception as exc:
        raise ModelLoadError(
            f"{source!r} is not a causal language model transformers can build: {first_line(exc)}"
        ) from exc
    check_memory(n_params, available=available)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path) if looks_local else source, dtype=torch.float32, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path) if looks_local else source, **kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the weights or tokenizer of {source!r}: {first_line(exc)}"
        ) from exc
    wrapped = HFTokenizer(tokenizer)
    return DenseModel(
        model,
        wrapped,
        name=source,
        source=str(path) if looks_local else "hub",
        chat=wrapped.has_chat_template,
        text_set="shakespeare",
    )


LOADERS: dict[str, Callable[[], DenseModel]] = {STORIES260K: load_stories260k, SMOLLM2: load_smollm2}


def load_model(source: str, progress: StagedProgress = None) -> DenseModel:
    """Load a built-in model by name, or anything else by folder or hub id.

    ``progress(fraction, stage)`` is called by loaders that take long (the first SmolLM2 conversion).
    """
    if source == SMOLLM2:
        return load_smollm2(progress=progress)
    if source in LOADERS:
        return LOADERS[source]()
    return load_pretrained(source)


def resolve_source(source: str) -> str:
    """The one name of a model source: a built-in name as is, a local folder as its resolved absolute path,
    anything else (a hub id) stripped. ``./m`` and ``/abs/m`` resolve alike, so they load once."""
    source = source.strip()
    if source in LOADERS:
        return source
    path = Path(source).expanduser()
    if source.startswith((".", "/", "~")) or path.exists():
        return str(path.resolve())
    return source
