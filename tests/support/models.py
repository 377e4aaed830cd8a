"""Tiny seeded models with odd sizes, built in memory and offline, and the tokenizers that drive them.

One model factory (:func:`tiny_model`) and one tokenizer helper: :class:`CharTokenizer` for models kept in
memory, :func:`save_tokenizer` for models saved to a folder (loaded through ``transformers``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# tiny Llama: hidden 32, 4 heads of 8 over 2 KV heads (GQA), intermediate 37 (no multiple of 4 or 8),
# 2 blocks, vocab 300; tiny GPT-2: hidden 32, 4 heads, fused qkv Conv1D, MLP 128, 2 blocks, vocab 300.
LLAMA = dict(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)
GPT2 = dict(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2)
# Random weights with SmolLM2-135M's shapes (for benchmarks without the download).
SMOLLM2_SHAPES = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def tiny_model(arch: str = "llama", seed: int = 0, **config) -> nn.Module:
    """A randomly initialised causal LM in eval mode: ``arch`` "llama" or "gpt2"; ``config`` overrides the
    tiny defaults above (e.g. ``tie_word_embeddings=True``, ``num_hidden_layers=1``)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**(LLAMA | config))).eval()
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(**(GPT2 | config))).eval()
    raise ValueError(f"unknown tiny architecture {arch!r}; choose llama or gpt2")


class CharTokenizer:
    """Bytes as tokens (ids 3..258), BOS 1, EOS 2: enough to drive the library on a random model."""

    bos_token_id = 1
    eos_token_id = 2
    vocab_size = 300

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return ([1] if bos else []) + [b + 3 for b in text.encode()]

    def decode(self, ids) -> str:
        return bytes(i - 3 for i in ids if 3 <= i < 259).decode(errors="replace")

    def token_pieces(self, ids) -> list[str]:
        return [self.decode([i]) for i in ids]


CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def save_tokenizer(folder: Path | str, chat: bool = False):
    """Save a small BPE tokenizer (300 tokens, trained on the Shakespeare calibration text; <unk> 0, <s> 1,
    </s> 2) to ``folder`` as transformers reads it; ``chat`` adds a chat template. Returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from prune_explorer.texts import calibration_text

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60)
    tok.train_from_iterator(calibration_text("shakespeare").splitlines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def saved_model(folder: Path | str, arch: str = "llama", chat: bool = False, seed: int = 0) -> nn.Module:
    """Save :func:`tiny_model` and :func:`save_tokenizer` into ``folder`` (a model folder a user could load);
    returns the model."""
    model = tiny_model(arch, seed)
    model.save_pretrained(folder)
    save_tokenizer(folder, chat=chat)
    return model
