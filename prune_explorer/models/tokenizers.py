"""A transformers tokenizer behind the small interface the library uses (as ``llama2c.Llama2cTokenizer``)."""

from __future__ import annotations

from collections.abc import Sequence


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
