"""Which held-out tokens a KL or perplexity is measured on, said once so every number can carry it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from prune_explorer import texts
from prune_explorer.models.dense import DenseModel, context_length


@dataclass(frozen=True)
class TokenProtocol:
    """The first ``n_tokens`` tokens of an evaluation text (BOS first), cut into sequences of ``seq_len``
    (at most the model's context). A sequence of T tokens gives T-1 next-token predictions.

    Attributes:
        n_tokens: tokens measured (rounded down to whole sequences).
        seq_len: tokens per sequence; None: one sequence, or the model's context when that is shorter.
        text_set: a ``texts.TEXT_SETS`` entry; None: the model's own text set (``dense.info["text_set"]``).
    """

    n_tokens: int = 256
    seq_len: int | None = None
    text_set: str | None = None

    def text_set_of(self, dense: DenseModel) -> str:
        return self.text_set or dense.info.get("text_set", "stories")

    def ids(self, dense: DenseModel) -> torch.Tensor:
        """int64 (n_seq, seq_len) token ids, the same for every call on the same model.

        Raises:
            ValueError: fewer than 2 tokens per sequence, or an evaluation text shorter than asked.
        """
        text_set = self.text_set_of(dense)
        seq_len = min(self.seq_len or self.n_tokens, self.n_tokens, context_length(dense.model))
        if seq_len < 2:
            raise ValueError(f"a measurement needs at least 2 tokens per sequence, got {seq_len}")
        ids = dense.tokenizer.encode(texts.eval_text(text_set), bos=True)
        n_seq = self.n_tokens // seq_len
        if len(ids) < n_seq * seq_len:
            raise ValueError(
                f"the {text_set} evaluation text has {len(ids)} tokens; {n_seq * seq_len} were asked"
            )
        return torch.tensor(ids[: n_seq * seq_len], dtype=torch.long).view(n_seq, seq_len)

    def describe(self, dense: DenseModel, ids: torch.Tensor | None = None) -> dict:
        """What a protocol card shows: text, tokens, sequences, tokens per sequence, predictions, and a
        sha256 of the ids (a cache key). ``ids``: this protocol's :meth:`ids`, when already at hand (a
        tokenizer in pure Python takes a while on a long text)."""
        ids = self.ids(dense) if ids is None else ids
        return {
            "text": f"built-in {self.text_set_of(dense)} evaluation text",
            "tokens": int(ids.numel()),
            "sequences": int(ids.shape[0]),
            "seq_len": int(ids.shape[1]),
            "predictions": int(ids.shape[0] * (ids.shape[1] - 1)),
            "ids_sha256": hashlib.sha256(ids.contiguous().numpy().tobytes()).hexdigest(),
        }
