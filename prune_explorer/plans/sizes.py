"""Sizes on disk of a pruned model in each form it could be stored in, measured on files written.

Forms (every one a safetensors file holding the whole model; layers that are not pruned stay dense):
    ``dense``: the dense model as loaded.
    ``pruned_zeros``: the pruned model with its zeros stored (the transformers export); the same bytes as
        dense, since a zero costs as much as any float.
    ``pruned_zeros.zlib`` / ``pruned_zeros.lzma``: that file compressed (zlib level 6, xz preset 1): what a
        general compressor finds in the zeros; ``dense.zlib`` / ``dense.lzma``, the dense file compressed
        alike, is the baseline (dequantized weights such as SmolLM2's compress well without any zeros).
    ``bitmask``: per pruned layer, 1 bit per weight (``numpy.packbits``) plus the kept values.
    ``csr``: per pruned layer, compressed sparse rows: row offsets (int64), column indices (int32) and the
        kept values.
"""

from __future__ import annotations

import lzma
import shutil
import tempfile
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from prune_explorer.plans.atomic import atomic_folder
from prune_explorer.plans.masks import pack_mask
from prune_explorer.state import PruningState

_CHUNK = 1 << 24
COMPRESSORS = ("zlib", "lzma")


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter once (tied ones under their first name), contiguous."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters()}


def _storage_masks(state: PruningState) -> dict[str, torch.Tensor]:
    """{parameter name: bool keep-mask in the weight's storage layout} of the pruned layers."""
    masks = {}
    for layer in state.dense.layers:
        if state.is_pruned(layer.name):
            keep = state.mask(layer.name)
            masks[f"{layer.name}.weight"] = (keep.T if layer.transposed else keep).contiguous()
    return masks


def bitmask_tensors(
    params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The bitmask form: ``<name>.bitmask`` (uint8 bits, row-major) and ``<name>.values`` (kept weights)."""
    out = {}
    for name, tensor in params.items():
        keep = masks.get(name)
        if keep is None:
            out[name] = tensor
            continue
        out[f"{name}.bitmask"] = torch.from_numpy(pack_mask(keep))
        out[f"{name}.values"] = tensor[keep]
    return out


def csr_tensors(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CSR form: ``<name>.crow`` (int64 (rows + 1,)), ``<name>.col`` (int32 (nnz,)), ``<name>.values``."""
    out = {}
    for name, tensor in params.items():
        keep = masks.get(name)
        if keep is None:
            out[name] = tensor
            continue
        rows = keep.sum(1, dtype=torch.int64)
        out[f"{name}.crow"] = torch.cat([torch.zeros(1, dtype=torch.int64), rows.cumsum(0)])
        out[f"{name}.col"] = keep.nonzero()[:, 1].to(torch.int32)
        out[f"{name}.values"] = tensor[keep]
    return out


def compress_file(source: Path, target: Path, method: str) -> int:
    """Compress ``source`` into ``target`` in chunks (zlib level 6 or xz preset 1); returns its bytes."""
    if method == "zlib":
        compressor = zlib.compressobj(6)
    elif method == "lzma":
        compressor = lzma.LZMACompressor(preset=1)
    else:
        raise ValueError(f"unknown compressor {method!r}; choose one of {COMPRESSORS}")
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(_CHUNK):
            dst.write(compressor.compress(chunk))
        dst.write(compressor.flush())
    return target.stat().st_size


def _save(tensors: dict[str, torch.Tensor], folder: Path, form: str) -> Path:
    path = folder / f"{form}.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "form": form})
    return path


def write_forms(
    state: PruningState, folder: Path, compressors: tuple[str, ...] = COMPRESSORS
) -> dict[str, int]:
    """Write every form of the session's model into ``folder``; returns {form: bytes on disk}.

    The pruned forms are written under the state's lock (a slider move waits); compressing runs after it.
    """
    with state.lock:
        state.restore_modules()
        params = _parameters(state.model)
        masks = _storage_masks(state)
        paths = {
            "pruned_zeros": _save(params, folder, "pruned_zeros"),
            "bitmask": _save(bitmask_tensors(params, masks), folder, "bitmask"),
            "csr": _save(csr_tensors(params, masks), folder, "csr"),
        }
    paths["dense"] = _save(_parameters(state.dense.model), folder, "dense")
    sizes = {form: paths[form].stat().st_size for form in ("dense", "pruned_zeros", "bitmask", "csr")}
    for form in ("dense", "pruned_zeros"):
        for method in compressors:
            source = paths[form]
            sizes[f"{form}.{method}"] = compress_file(source, folder / f"{source.name}.{method}", method)
    return sizes


def disk_sizes(
    state: PruningState, target: Path | str | None = None, compressors: tuple[str, ...] = COMPRESSORS
) -> dict[str, int]:
    """Bytes on disk of every form (see the module docstring), measured on the files written.

    Args:
        target: a new folder to keep the files in (written all or nothing); None: a temporary folder,
            removed afterwards.
        compressors: which compressed copies of ``dense`` and ``pruned_zeros`` to write ("zlib", "lzma").
    Raises:
        ExportError: ``target`` exists or cannot be written, or writing failed (nothing is left there).
    """
    if target is not None:
        with atomic_folder(target) as tmp:
            return write_forms(state, tmp, compressors)
    tmp = Path(tempfile.mkdtemp(prefix="prune-explorer-sizes-"))
    try:
        return write_forms(state, tmp, compressors)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
