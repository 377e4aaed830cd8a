"""Shared fixtures: tiny seeded models with odd sizes, built in memory, offline."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def char_tokenizer():
    return CharTokenizer()


@pytest.fixture
def llama_dense(char_tokenizer):
    from prune_explorer.state import DenseModel

    return DenseModel(tiny_llama(), char_tokenizer, name="tiny-llama")


@pytest.fixture
def gpt2_dense(char_tokenizer):
    from prune_explorer.state import DenseModel

    return DenseModel(tiny_gpt2(), char_tokenizer, name="tiny-gpt2")


@pytest.fixture(scope="session")
def stories():
    """The built-in stories260K model, loaded once for the test session (treated as read-only)."""
    from prune_explorer.models import load_stories260k

    return load_stories260k()


@pytest.fixture
def one_thread():
    """Tiny models run faster on one torch thread, and the CPU may be shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def app_navigation():
    """AppTest routed through app.py's st.navigation on every rerun, as a real server does."""
    from ui.testing import navigation_not_pages_folder

    with navigation_not_pages_folder():
        yield
