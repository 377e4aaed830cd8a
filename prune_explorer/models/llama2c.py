"""Load llama2.c "legacy v0" checkpoints and tokenizers for use with transformers.

The bundled demo model (Karpathy's stories260K, see ``assets/stories260K/SOURCES.md``)
ships in llama2.c's raw binary format, which transformers cannot read. This module
parses that format into a ``transformers.LlamaForCausalLM`` and re-implements the
llama2.c tokenizer so that token ids match what the model was trained with.
"""

from __future__ import annotations

import logging
import math
import os
import re
import string
import struct
from collections.abc import Sequence
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
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


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


class Llama2cTokenizer:
    """The llama2.c BPE tokenizer (``tokenizer.bin`` format), reproducing run.c's encode/decode.

    Pieces are kept as raw bytes; ids 3..258 are the byte-fallback tokens ``<0x00>``..``<0xFF>``.
    """

    bos_token_id: int = 1
    eos_token_id: int = 2

    def __init__(self, pieces: Sequence[bytes], scores: Sequence[float], max_token_length: int) -> None:
        """Create a tokenizer from its vocabulary; ``pieces[i]`` and ``scores[i]`` describe id ``i``."""
        if len(pieces) != len(scores):
            raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
        self.pieces: list[bytes] = list(pieces)
        self.scores: list[float] = [float(s) for s in scores]
        self.max_token_length = max_token_length
        self.vocab_size = len(self.pieces)
        self._ids: dict[bytes, int] = {}
        self._byte_of: dict[int, int] = {}  # id -> byte value for <0xXX> pieces
        for i, piece in enumerate(self.pieces):
            self._ids.setdefault(piece, i)  # first id wins for a duplicated piece
            if m := _BYTE_PIECE.fullmatch(piece):
                self._byte_of[i] = int(m.group(1), 16)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Llama2cTokenizer:
        """Read a llama2.c tokenizer file: int32 max_token_length, then (f32 score, i32 len, bytes) records.

        Raises ``ValueError`` naming the file if a record runs past the end of the file, a
        length is out of range, or the byte-fallback tokens are not where llama2.c expects them.
        """
        path = Path(path)
        data = path.read_bytes()
        if len(data) < 4:
            raise ValueError(f"{path}: not a llama2.c tokenizer file ({len(data)} bytes)")
        (max_len,) = struct.unpack_from("<i", data)
        if not 0 < max_len <= 1 << 16:
            raise ValueError(f"{path}: corrupt llama2.c tokenizer, implausible max_token_length {max_len}")
        pieces: list[bytes] = []
        scores: list[float] = []
        pos = 4
        while pos < len(data):
            if pos + 8 > len(data):
                raise ValueError(
                    f"{path}: corrupt llama2.c tokenizer, record {len(pieces)} header at byte "
                    f"{pos} needs 8 bytes but only {len(data) - pos} remain"
                )
            score, n = struct.unpack_from("<fi", data, pos)
            if not 0 < n <= max_len or pos + 8 + n > len(data):
                raise ValueError(
                    f"{path}: corrupt llama2.c tokenizer, record {len(pieces)} at byte {pos} "
                    f"has length {n} (max_token_length {max_len}, {len(data) - pos - 8} bytes left)"
                )
            pieces.append(data[pos + 8 : pos + 8 + n])
            scores.append(score)
            pos += 8 + n
        bad = [b for b in range(256) if len(pieces) < 259 or pieces[b + 3] != b"<0x%02X>" % b]
        if bad or not all(math.isfinite(x) for x in scores):
            raise ValueError(
                f"{path}: corrupt llama2.c tokenizer, {len(pieces)} tokens read but byte tokens "
                f"<0x00>..<0xFF> are not ids 3..258 or a score is not finite"
            )
        logger.debug("Read llama2.c tokenizer %s: %d tokens", path, len(pieces))
        return cls(pieces, scores, max_len)

    def __len__(self) -> int:
        """Vocabulary size."""
        return self.vocab_size

    def _lookup_or_bytes(self, chunk: bytes) -> list[int]:
        """Id of ``chunk`` if it is a piece, else its byte-fallback ids (byte value + 3)."""
        i = self._ids.get(chunk)
        return [i] if i is not None else [b + 3 for b in chunk]

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """Encode like llama2.c: [BOS], " " prefix if text is non-empty, chars, then greedy merges.

        Each merge step joins the adjacent pair whose concatenation is a piece with the highest
        score (leftmost on ties), until no pair can be merged.
        """
        ids: list[int] = [self.bos_token_id] if bos else []
        if not text:
            return ids
        tokens = self._lookup_or_bytes(b" ")
        for ch in text:
            tokens.extend(self._lookup_or_bytes(ch.encode("utf-8")))

        def pair(i: int) -> tuple[float, int]:
            j = self._ids.get(self.pieces[tokens[i]] + self.pieces[tokens[i + 1]])
            return (self.scores[j], j) if j is not None else (float("-inf"), -1)

        pairs = [pair(i) for i in range(len(tokens) - 1)]
        while pairs:
            best = max(range(len(pairs)), key=lambda k: pairs[k][0])  # max() keeps the first (leftmost)
            if pairs[best][1] < 0:
                break
            tokens[best : best + 2] = [pairs[best][1]]
            del pairs[best]
            for k in (best - 1, best):
                if 0 <= k < len(pairs):
                    pairs[k] = pair(k)
        return ids + tokens

    def _check_id(self, i: int) -> None:
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {i} out of range for vocabulary of size {self.vocab_size}")

    def decode(self, ids: Sequence[int]) -> str:
        """Decode like llama2.c: skip BOS/EOS, strip the leading space right after BOS, bytes for <0xXX>."""
        out = bytearray()
        prev = -1
        for i in (int(t) for t in ids):
            self._check_id(i)
            if i in (self.bos_token_id, self.eos_token_id):
                prev = i
                continue
            if i in self._byte_of:
                out.append(self._byte_of[i])
            else:
                piece = self.pieces[i]
                out += piece[1:] if prev == self.bos_token_id and piece.startswith(b" ") else piece
            prev = i
        return out.decode("utf-8", errors="replace")

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        """Display text of each token (one string per id, for per-token highlighting).

        BOS/EOS show as ``<s>``/``</s>``; byte tokens show as their character when it is
        printable ASCII (whitespace included), else as ``<0xXX>``; other pieces are decoded
        as UTF-8, keeping their leading space except right after BOS (as in ``decode``).
        """
        shown: list[str] = []
        prev = -1
        for i in (int(t) for t in ids):
            self._check_id(i)
            if i == self.bos_token_id:
                shown.append("<s>")
            elif i == self.eos_token_id:
                shown.append("</s>")
            elif i in self._byte_of:
                ch = chr(self._byte_of[i])
                shown.append(ch if ch in string.printable else self.pieces[i].decode("ascii"))
            else:
                piece = self.pieces[i]
                if prev == self.bos_token_id and piece.startswith(b" "):
                    piece = piece[1:]
                shown.append(piece.decode("utf-8", errors="replace"))
            prev = i
        return shown
