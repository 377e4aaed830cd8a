"""Load llama2.c "legacy v0" checkpoints for use with transformers.

The bundled demo model (Karpathy's stories260K, see ``assets/stories260K/SOURCES.md``)
ships in llama2.c's raw binary format, which transformers cannot read. This module
parses that format into a ``transformers.LlamaForCausalLM``; its tokenizer is
``tokenizers.Llama2cTokenizer``, which reproduces run.c's token ids.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import transformers

logger = logging.getLogger(__name__)

STORIES260K_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "stories260K"
STORIES260K_CHECKPOINT: Path = STORIES260K_DIR / "stories260K.bin"
STORIES260K_TOKENIZER: Path = STORIES260K_DIR / "tok512.bin"

_HEADER_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
_HEADER_BYTES = 4 * len(_HEADER_FIELDS)
# llama2.c per-layer array -> HF module path inside ``model.layers.{i}``
_LAYER_KEYS = {
    "attention_norm": "input_layernorm",
    "wq": "self_attn.q_proj",
    "wk": "self_attn.k_proj",
    "wv": "self_attn.v_proj",
    "wo": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "w1": "mlp.gate_proj",
    "w2": "mlp.down_proj",
    "w3": "mlp.up_proj",
}


def _rope_to_rotate_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder wq/wk rows from llama2.c's interleaved RoPE pairs to HF's rotate-half layout.

    llama2.c rotates adjacent pairs (0,1), (2,3), ... of each head; HF rotates the first
    half of the head against the second half, so each head's rows must be de-interleaved.
    """
    out_features, dim = w.shape
    head_dim = out_features // n_heads
    return w.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(out_features, dim)


def _read_header(path: Path) -> dict[str, int]:
    """The seven header integers, checked for plausibility (ValueError names the file and the header)."""
    actual = path.stat().st_size
    if actual < _HEADER_BYTES:
        raise ValueError(
            f"{path}: not a llama2.c checkpoint, expected at least {_HEADER_BYTES} bytes "
            f"of header but the file has {actual} bytes"
        )
    values = [int(v) for v in np.fromfile(path, dtype="<i4", count=len(_HEADER_FIELDS))]
    header = dict(zip(_HEADER_FIELDS, values, strict=True))
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = values
    if (
        min(dim, hidden, n_layers, n_heads, n_kv, abs(vocab), seq_len) <= 0
        or dim % n_heads
        or n_heads % n_kv
        or (dim // n_heads) % 2
    ):
        raise ValueError(f"{path}: implausible llama2.c checkpoint header {header}")
    return header


def _file_layout(h: dict[str, int]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every array in file order; per-layer arrays are stacked over layers."""
    dim, hidden, layers, vocab, seq_len = (
        h["dim"],
        h["hidden_dim"],
        h["n_layers"],
        abs(h["vocab_size"]),
        h["seq_len"],
    )
    head_dim = dim // h["n_heads"]
    kv_dim = h["n_kv_heads"] * head_dim
    layout: list[tuple[str, tuple[int, ...]]] = [
        ("tok_embeddings", (vocab, dim)),
        ("attention_norm", (layers, dim)),
        ("wq", (layers, dim, dim)),
        ("wk", (layers, kv_dim, dim)),
        ("wv", (layers, kv_dim, dim)),
        ("wo", (layers, dim, dim)),
        ("ffn_norm", (layers, dim)),
        ("w1", (layers, hidden, dim)),
        ("w2", (layers, dim, hidden)),
        ("w3", (layers, hidden, dim)),
        ("norm", (dim,)),
        ("freq_cos", (seq_len, head_dim // 2)),
        ("freq_sin", (seq_len, head_dim // 2)),
    ]
    if h["vocab_size"] < 0:  # a separate classifier follows the RoPE tables
        layout.append(("output", (vocab, dim)))
    return layout


def _hf_state_dict(arrays: dict[str, torch.Tensor], h: dict[str, int]) -> dict[str, torch.Tensor]:
    """llama2.c arrays renamed to ``LlamaForCausalLM`` keys, wq/wk permuted to HF's RoPE layout."""
    shared = h["vocab_size"] > 0
    sd: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": arrays["tok_embeddings"],
        "model.norm.weight": arrays["norm"],
        "lm_head.weight": arrays["tok_embeddings"] if shared else arrays["output"],
    }
    for i in range(h["n_layers"]):
        for src, dst in _LAYER_KEYS.items():
            w = arrays[src][i]
            if src in ("wq", "wk"):
                w = _rope_to_rotate_half(w, h["n_heads"] if src == "wq" else h["n_kv_heads"])
            sd[f"model.layers.{i}.{dst}.weight"] = w
    return sd


def _config(h: dict[str, int]) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=abs(h["vocab_size"]),
        hidden_size=h["dim"],
        intermediate_size=h["hidden_dim"],
        num_hidden_layers=h["n_layers"],
        num_attention_heads=h["n_heads"],
        num_key_value_heads=h["n_kv_heads"],
        head_dim=h["dim"] // h["n_heads"],
        max_position_embeddings=h["seq_len"],
        rms_norm_eps=1e-5,
        hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=h["vocab_size"] > 0,
        bos_token_id=1,
        eos_token_id=2,
        dtype="float32",
    )


def read_checkpoint(path: str | os.PathLike) -> tuple[transformers.LlamaConfig, dict[str, torch.Tensor]]:
    """Parse a llama2.c legacy (v0) checkpoint into a LlamaConfig and an HF-named state dict.

    The returned tensors are float32, already renamed to ``LlamaForCausalLM`` keys and with
    wq/wk permuted to HF's RoPE layout, so they load strictly into the model. A positive
    header vocab_size means the classifier is tied to the embedding (``lm_head.weight`` is
    then the same tensor as the embedding); a negative one means a separate classifier
    follows the RoPE tables. Raises ``ValueError`` if the header is implausible or the
    file size does not match what the header implies (truncated or corrupt file).
    """
    path = Path(path)
    header = _read_header(path)
    layout = _file_layout(header)
    expected = _HEADER_BYTES + 4 * sum(int(np.prod(shape)) for _, shape in layout)
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(
            f"{path}: llama2.c checkpoint size mismatch: header {header} implies "
            f"{expected} bytes but the file has {actual} bytes (truncated or corrupt?)"
        )
    flat = torch.from_numpy(np.fromfile(path, dtype="<f4", offset=_HEADER_BYTES).astype(np.float32))
    arrays: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in layout:
        n = int(np.prod(shape))
        arrays[name] = flat[offset : offset + n].view(shape)
        offset += n
    logger.debug("Read llama2.c checkpoint %s: %s", path, header)
    return _config(header), _hf_state_dict(arrays, header)


def load_llama2c_model(path: str | os.PathLike) -> transformers.LlamaForCausalLM:
    """Build a float32 ``LlamaForCausalLM`` in eval mode from a llama2.c checkpoint.

    Every tensor of the checkpoint is loaded strictly, so a mapping mistake fails loudly
    instead of leaving randomly initialised weights behind.
    """
    config, state_dict = read_checkpoint(path)
    model = transformers.LlamaForCausalLM(config).to(torch.float32)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Loaded llama2.c model %s (%d parameters)", path, n_params)
    return model
