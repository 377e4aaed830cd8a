"""Tests for the llama2.c checkpoint/tokenizer loader against the stories260K golden values."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from prune_explorer.models.llama2c import (
    STORIES260K_CHECKPOINT,
    STORIES260K_DIR,
    STORIES260K_TOKENIZER,
    load_llama2c_model,
    read_checkpoint,
)
from prune_explorer.models.tokenizers import Llama2cTokenizer

GOLDEN_TEXT = "One day, a clever fox found a shiny key under the old oak tree."
GOLDEN_NLL = 54.4041
GOLDEN_PPL = 4.9536
REFERENCE_STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high."
)


@pytest.fixture(scope="module")
def model():
    return load_llama2c_model(STORIES260K_CHECKPOINT)


@pytest.fixture(scope="module")
def tok() -> Llama2cTokenizer:
    return Llama2cTokenizer.from_file(STORIES260K_TOKENIZER)


def test_assets_ship_with_package() -> None:
    assert STORIES260K_CHECKPOINT.parent == STORIES260K_DIR
    assert STORIES260K_CHECKPOINT.stat().st_size == 1_056_540
    assert STORIES260K_TOKENIZER.stat().st_size == 6_227
    assert (STORIES260K_DIR / "SOURCES.md").is_file()


def test_config_and_parameter_count(model) -> None:
    cfg = model.config
    assert cfg.hidden_size == 64
    assert cfg.intermediate_size == 172
    assert cfg.num_hidden_layers == 5
    assert cfg.num_attention_heads == 8
    assert cfg.num_key_value_heads == 4
    assert cfg.vocab_size == 512
    assert cfg.max_position_embeddings == 512
    assert cfg.tie_word_embeddings is True
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # parameters() yields the tied embedding/classifier once
    assert sum(p.numel() for p in model.parameters()) == 260_032


def test_golden_teacher_forced_nll(model, tok) -> None:
    ids = tok.encode(GOLDEN_TEXT)
    assert len(ids) == 35 and ids[0] == tok.bos_token_id
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    targets = torch.tensor(ids[1:])
    logp = torch.log_softmax(logits[:-1].double(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    nll = -logp.sum().item()
    assert len(targets) == 34
    assert nll == pytest.approx(GOLDEN_NLL, abs=1e-3)
    assert math.exp(nll / len(targets)) == pytest.approx(GOLDEN_PPL, abs=1e-3)


def test_greedy_story_from_bos(model, tok) -> None:
    out = model.generate(
        torch.tensor([[tok.bos_token_id]]),
        do_sample=False,
        max_new_tokens=80,
        pad_token_id=tok.eos_token_id,
    )
    assert tok.decode(out[0].tolist()).startswith(REFERENCE_STORY)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        GOLDEN_TEXT,
        "café — naïve 😀",
        "  two  spaces\n\ttab",
        "日本語テキスト",
        "Lily said, “Hi!”",
    ],
)
def test_encode_decode_round_trip(tok, text: str) -> None:
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id
    assert all(0 <= i < len(tok) for i in ids)
    assert tok.decode(ids) == text
    assert len(tok.token_pieces(ids)) == len(ids)


def test_encode_details(tok) -> None:
    assert len(tok) == tok.vocab_size == 512
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    assert tok.encode("") == [1]
    assert tok.encode("", bos=False) == []
    assert tok.encode("Once", bos=False) == tok.encode("Once")[1:]
    # an emoji is not in the vocab: it falls back to its 4 UTF-8 bytes (+3)
    ids = tok.encode("😀", bos=False)
    assert ids[-4:] == [b + 3 for b in "😀".encode()]
    assert tok.decode(ids[-4:]) == "😀"
    assert tok.decode([1, *tok.encode("Hi", bos=False), 2]) == "Hi"


def test_token_pieces(tok) -> None:
    ids = tok.encode("The fox\n😀")
    pieces = tok.token_pieces(ids)
    assert pieces[0] == "<s>"
    assert "\n" in pieces  # printable byte token shown as its character
    assert pieces[-4:] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    assert "".join(pieces[1:-4]) == "The fox\n"
    assert tok.token_pieces([2]) == ["</s>"]
    with pytest.raises(ValueError):
        tok.token_pieces([512])


@pytest.mark.parametrize("n_bytes", [0, 10, 28, 1000, 1_056_539])
def test_truncated_checkpoint_raises(tmp_path: Path, n_bytes: int) -> None:
    bad = tmp_path / "truncated.bin"
    bad.write_bytes(STORIES260K_CHECKPOINT.read_bytes()[:n_bytes])
    with pytest.raises(ValueError, match=re.escape(str(bad))) as excinfo:
        read_checkpoint(bad)
    assert str(n_bytes) in str(excinfo.value)
    if n_bytes >= 28:
        assert "1056540" in str(excinfo.value)


def test_corrupt_header_raises(tmp_path: Path) -> None:
    data = bytearray(STORIES260K_CHECKPOINT.read_bytes())
    data[12:16] = np.int32(7).tobytes()  # n_heads = 7 does not divide dim 64
    bad = tmp_path / "badheader.bin"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_llama2c_model(bad)


def test_untied_classifier(tmp_path: Path, model) -> None:
    """A negative vocab_size means a separate classifier follows the RoPE tables."""
    data = bytearray(STORIES260K_CHECKPOINT.read_bytes())
    data[20:24] = np.int32(-512).tobytes()
    embedding = np.frombuffer(bytes(data), dtype="<f4", count=512 * 64, offset=28)
    untied_path = tmp_path / "untied.bin"
    untied_path.write_bytes(bytes(data) + (embedding * 2).astype("<f4").tobytes())
    untied = load_llama2c_model(untied_path)
    assert untied.config.tie_word_embeddings is False
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    assert torch.equal(untied.lm_head.weight, 2 * model.lm_head.weight)
    ids = torch.tensor([[1, 385, 328, 432]])
    with torch.no_grad():
        assert torch.allclose(untied(ids).logits, 2 * model(ids).logits, atol=1e-5)
    # without the trailing classifier the size check must fail
    short = tmp_path / "untied_short.bin"
    short.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bytes"):
        read_checkpoint(short)


def test_read_checkpoint_state_dict_is_strict_mapping(model) -> None:
    config, sd = read_checkpoint(STORIES260K_CHECKPOINT)
    assert config.vocab_size == 512
    assert set(sd) == set(model.state_dict())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:3000],  # truncated mid-vocabulary
        lambda b: b[:2],  # too short for the header
        lambda b: np.int32(-5).tobytes() + b[4:],  # bad max_token_length
        lambda b: b[:8] + np.int32(10_000).tobytes() + b[12:],  # first record length out of range
        lambda b: b[:-1],  # last record cut short
        lambda b: b + b"\x00\x00",  # trailing garbage
    ],
)
def test_corrupt_tokenizer_raises(tmp_path: Path, mutate) -> None:
    bad = tmp_path / "tok_bad.bin"
    bad.write_bytes(mutate(STORIES260K_TOKENIZER.read_bytes()))
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        Llama2cTokenizer.from_file(bad)
