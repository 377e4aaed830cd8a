"""The tokenizers behind the small interface the library uses (``encode``, ``decode``, ``token_pieces``,
``bos_token_id``, ``eos_token_id``, ``len``): a transformers tokenizer, and llama2.c's own BPE tokenizer."""

from __future__ import annotations

import logging
import math
import os
import re
import string
import struct
from collections.abc import Sequence
from pathlib import Path


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


logger = logging.getLogger(__name__)
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


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
