"""Shared fixtures: tiny seeded models with odd sizes, built in memory, offline (see ``tests.support``)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.support.models import CharTokenizer, tiny_model  # noqa: E402


@pytest.fixture
def char_tokenizer():
    return CharTokenizer()


@pytest.fixture
def llama_dense(char_tokenizer):
    from prune_explorer.models.dense import DenseModel

    return DenseModel(tiny_model("llama"), char_tokenizer, name="tiny-llama")


@pytest.fixture
def gpt2_dense(char_tokenizer):
    from prune_explorer.models.dense import DenseModel

    return DenseModel(tiny_model("gpt2"), char_tokenizer, name="tiny-gpt2")


@pytest.fixture(scope="session")
def stories():
    """The built-in stories260K model, loaded once for the test session (treated as read-only)."""
    from prune_explorer.models.loading import load_stories260k

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
    """AppTest routed through explorer.py's st.navigation on every rerun, as a real server does."""
    from tests.support.apptest import navigation_not_pages_folder

    with navigation_not_pages_folder():
        yield
