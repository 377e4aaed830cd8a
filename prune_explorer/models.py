"""Load a model and its tokenizer: the built-ins, a local folder or a Hugging Face hub id.

Loading is safe by default: safetensors where the checkpoint has them, ``torch.load(weights_only=True)``
otherwise (transformers' default), never remote code. The memory a model needs is checked against free memory
*before* its weights are read. Every failure is a :class:`ModelLoadError` whose message a user can act on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from prune_explorer.smollm2 import NAME as SMOLLM2
from prune_explorer.smollm2 import load_smollm2
from prune_explorer.state import DenseModel

log = logging.getLogger(__name__)

STORIES260K = "stories260K"
BUILTINS = (STORIES260K, SMOLLM2)
# Headroom on top of the weights: activations, the session copies of pruned layers, the Python process.
MEMORY_HEADROOM = 1.5
# The shared magnitude rankings per prunable weight: int32 order + float32 sorted |w| + uint8 bucket.
RANKING_BYTES = 9


class ModelLoadError(Exception):
    """A model could not be loaded; the message says why and what to try."""


class HFTokenizer:
    """A transformers tokenizer behind the small interface the library uses (as ``Llama2cTokenizer``)."""

    def __init__(self, tokenizer):
        self.inner = tokenizer
        self.bos_token_id = tokenizer.bos_token_id
        self.eos_token_id = tokenizer.eos_token_id
        self.vocab_size = len(tokenizer)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """Token ids of ``text``; with ``bos``, the special tokens this tokenizer itself adds (if any)."""
        return list(self.inner.encode(text, add_special_tokens=bos))

    def decode(self, ids: Sequence[int]) -> str:
        return self.inner.decode(list(ids), skip_special_tokens=True)

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.inner.decode([i]) for i in ids]

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.inner, "chat_template", None))

    def chat_prompt(self, text: str) -> list[int]:
        """Token ids of ``text`` as one user turn, ready for the assistant's answer."""
        out = self.inner.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        return list(ids)


def available_memory_bytes() -> int:
    """Memory the OS could give this process now (MemAvailable), or a large number where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_memory(n_parameters: int, bytes_per_parameter: int = 4, available: int | None = None) -> None:
    """Refuse a model whose float32 weights, rankings and headroom do not fit in free memory."""
    need = int(n_parameters * (bytes_per_parameter * MEMORY_HEADROOM + RANKING_BYTES))
    free = available_memory_bytes() if available is None else available
    if need > free:
        raise ModelLoadError(
            f"this model has {n_parameters / 1e6:,.1f}M parameters and needs about {need / 2**30:.1f} GiB "
            f"for its float32 weights, pruning rankings and headroom, "
            f"but only {free / 2**30:.1f} GiB of memory is free; "
            "choose a smaller model or free memory"
        )


def load_stories260k() -> DenseModel:
    """The built-in 260K-parameter TinyStories Llama (MIT), read from the llama2.c checkpoint it ships as."""
    from prune_explorer import llama2c

    model = llama2c.load_llama2c_model(llama2c.STORIES260K_CHECKPOINT)
    tokenizer = llama2c.Llama2cTokenizer.from_file(llama2c.STORIES260K_TOKENIZER)
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


def _count_parameters(config) -> int:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


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
        raise ModelLoadError(f"could not read a model config from {where}{hint}: {_first_line(exc)}") from exc
    try:
        n_params = _count_parameters(config)
    except Exception as exc:
        raise ModelLoadError(
            f"{source!r} is not a causal language model transformers can build: {_first_line(exc)}"
        ) from exc
    check_memory(n_params, available=available)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path) if looks_local else source, dtype=torch.float32, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path) if looks_local else source, **kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the weights or tokenizer of {source!r}: {_first_line(exc)}"
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


LOADERS: dict[str, Callable[[], DenseModel]] = {STORIES260K: load_stories260k, SMOLLM2: load_smollm2}


def load_model(source: str, progress: Callable[[float, str], None] | None = None) -> DenseModel:
    """Load a built-in model by name, or anything else by folder or hub id.

    ``progress(fraction, stage)`` is called by loaders that take long (the first SmolLM2 conversion).
    """
    if source == SMOLLM2:
        return load_smollm2(progress=progress)
    if source in LOADERS:
        return LOADERS[source]()
    return load_pretrained(source)
