"""The row-dot kernel of decoding steps (prune_explorer.execution.few_rows): the same product as F.linear up
to float32 rounding, a row's bits independent of the rows beside it, used only inside ``decoding()`` on the
calling thread, and the greedy text it decodes the same as a plain forward's."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_explorer.execution import few_rows
from prune_explorer.measure import evaluate
from tests.support.models import tiny_model


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("rows", [1, 2, 5, 8])
@pytest.mark.parametrize("bias", [False, True])
def test_the_kernel_is_f_linear_up_to_rounding(rows, bias):
    gen = torch.Generator().manual_seed(rows)
    weight = torch.randn(97, 301, generator=gen)
    b = torch.randn(97, generator=gen) if bias else None
    x = torch.randn(1, rows, 301, generator=gen)
    out = few_rows.rows_times_weight(x, weight, b)
    assert out.shape == (1, rows, 97) and out.dtype == torch.float32
    reference = F.linear(x.double(), weight.double(), None if b is None else b.double())
    kernel_error = (out.double() - reference).abs().max().item()
    plain_error = (F.linear(x, weight, b).double() - reference).abs().max().item()
    assert kernel_error < 1e-4  # sums of 301 products of size ~20: float32 rounding, no more
    assert kernel_error <= 4 * plain_error + 1e-6  # as close to exact as torch's own float32 product


def test_a_rows_bits_do_not_depend_on_the_rows_beside_it():
    """A token verified with draft tokens beside it gets the logits it gets alone."""
    gen = torch.Generator().manual_seed(0)
    weight, x = torch.randn(64, 513, generator=gen), torch.randn(8, 513, generator=gen)
    together = few_rows.rows_times_weight(x, weight)
    for r in range(8):
        alone = few_rows.rows_times_weight(x[r : r + 1], weight)
        assert torch.equal(alone[0].view(torch.int32), together[r].view(torch.int32))


def _big_linear() -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(300, few_rows.MIN_WEIGHTS // 300 + 1).eval()


def test_install_takes_only_big_float32_plain_linears_and_changes_no_weight():
    class Other(nn.Linear):
        pass

    model = nn.Sequential(
        _big_linear(), nn.Linear(8, 8), Other(300, 300), _big_linear().to(torch.float64), nn.ReLU()
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert few_rows.install(model) == 1
    assert few_rows.install(model) == 1  # again: nothing more
    assert [type(m).__name__ for m in model] == ["FewRowsLinear", "Linear", "Other", "Linear", "ReLU"]
    assert isinstance(model[0], nn.Linear)  # layer discovery by isinstance still finds it
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_outside_decoding_an_installed_linear_is_f_linear_bit_for_bit(monkeypatch):
    layer = _big_linear()
    few_rows.install(layer)
    calls = []
    monkeypatch.setattr(few_rows, "_rows_times_weight", lambda *a: calls.append(a))
    x = torch.randn(1, 1, 300)
    with torch.no_grad():
        plain = F.linear(x, layer.weight, layer.bias)
        assert torch.equal(layer(x), plain)
        with few_rows.decoding():
            too_many = torch.randn(few_rows.MAX_ROWS + 1, 300)
            assert torch.equal(layer(too_many), F.linear(too_many, layer.weight, layer.bias))
    with few_rows.decoding():  # autograd on: training never takes the kernel
        assert torch.equal(layer(x), plain)
    assert calls == []


def test_decoding_is_per_thread():
    layer = _big_linear()
    few_rows.install(layer)
    x = torch.randn(1, 300)
    plain = F.linear(x, layer.weight, layer.bias)
    seen = {}
    inside, checked = threading.Event(), threading.Event()

    def other_thread():
        inside.wait(10)
        with torch.no_grad():
            seen["other"] = layer(x)
        checked.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with torch.no_grad(), few_rows.decoding():
        inside.set()
        assert checked.wait(10)
        seen["here"] = layer(x)
    thread.join()
    assert torch.equal(seen["other"], plain)
    _close(seen["here"], plain)
    assert few_rows._switch.on is False


def test_greedy_decoding_takes_the_kernel_and_picks_the_plain_forwards_tokens(monkeypatch):
    """A Llama whose MLP layers are big enough: every pass after the prompt's goes through the kernel, and
    the tokens and prompt logits are those of a plain token-by-token loop."""
    model = tiny_model(hidden_size=96, intermediate_size=720, num_attention_heads=4, num_key_value_heads=2)
    ids = [1, 17, 42, 99, 7]
    with torch.no_grad():
        plain, past, logits = [], None, None
        feed = torch.tensor([ids])
        for _ in range(12):
            out = model(input_ids=feed, cache=past, use_cache=True)
            logits = out.logits[0] if logits is None else logits
            past = out.cache
            plain.append(int(out.logits[0, -1].argmax()))
            feed = torch.tensor([[plain[-1]]])
    calls = []
    real = few_rows._rows_times_weight
    monkeypatch.setattr(few_rows, "_rows_times_weight", lambda *a: (calls.append(a[1].shape), real(*a)))
    cont = evaluate.continue_greedily(model, ids, max_new_tokens=12)
    assert cont.tokens == plain
    assert torch.equal(cont.prompt_logits, logits)  # the prompt's pass is a plain forward
    assert calls and all(shape[0] == 1 for shape in calls)  # one new token a pass, through the kernel
    assert len(calls) == 11 * 2 * 3  # 11 passes after the prompt's, gate/up/down of 2 blocks
    drafted = evaluate.continue_greedily(model, ids, max_new_tokens=12, draft=plain)
    assert drafted.tokens == plain
