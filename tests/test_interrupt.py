"""A stale script run stops inside the pruned model's forward passes (ui.interrupt): before a transformer
block, in the run's own thread only, with the hooks gone afterwards and the shared dense model untouched."""

from __future__ import annotations

import threading

import pytest
import torch

from prune_explorer.measure import evaluate
from prune_explorer.state import PruningState

pytestmark = pytest.mark.usefixtures("one_thread")


class Stale(BaseException):
    """Stands in for Streamlit's StopException (a BaseException too: ``except Exception`` must not eat it)."""


def _checks(monkeypatch, stop_at: int | None) -> list[str]:
    """Patch Streamlit's yield check: count calls (by thread name), raise Stale at call ``stop_at``."""
    from ui import interrupt

    calls: list[str] = []

    def check() -> None:
        calls.append(threading.current_thread().name)
        if stop_at is not None and len(calls) >= stop_at:
            raise Stale

    monkeypatch.setattr(interrupt, "get_run_yield_check", lambda: check)
    return calls


def test_the_check_is_streamlits_own():
    from ui import interrupt

    assert interrupt.get_run_yield_check.__module__.startswith("streamlit."), "fell back to no check"


def test_a_stale_run_stops_before_the_next_block(monkeypatch, stories):
    from ui import interrupt

    state = PruningState(stories)
    ids = torch.tensor([[1, 403, 407, 261]])
    blocks = stories.model.config.num_hidden_layers
    calls = _checks(monkeypatch, stop_at=3)
    with pytest.raises(Stale), interrupt.between_blocks(state):
        state.model(input_ids=ids)
    assert len(calls) == 3  # stopped in the third block, not at the end of the forward
    calls = _checks(monkeypatch, stop_at=None)  # nothing stale: one check per block, the logits unchanged
    with interrupt.between_blocks(state):
        checked = state.model(input_ids=ids).logits
    assert len(calls) == blocks
    assert torch.equal(checked, state.model(input_ids=ids).logits)
    assert len(calls) == blocks  # the hooks went with the block


def test_a_stale_generation_stops_within_one_token(monkeypatch, stories):
    from ui import interrupt

    state = PruningState(stories)
    calls = _checks(monkeypatch, stop_at=None)
    with interrupt.between_blocks(state):
        evaluate.continue_greedily(state.model, [1, 403, 407], max_new_tokens=5)
    per_generation = len(calls)
    assert per_generation >= 5 * stories.model.config.num_hidden_layers  # every pass, prompt and decode
    calls = _checks(monkeypatch, stop_at=per_generation // 2)
    tokens: list[int] = []
    with pytest.raises(Stale), interrupt.between_blocks(state):
        evaluate.continue_greedily(state.model, [1, 403, 407], max_new_tokens=5, on_token=tokens.append)
    assert 0 < len(tokens) < 5


def test_other_threads_and_the_dense_model_are_not_checked(monkeypatch, stories):
    from ui import interrupt

    state = PruningState(stories)
    ids = torch.tensor([[1, 403, 407]])
    calls = _checks(monkeypatch, stop_at=1)  # any check would raise
    errors: list[BaseException] = []

    def other_thread() -> None:  # the session's look-ahead or a measurement, on the same model
        try:
            state.model(input_ids=ids)
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever escaped
            errors.append(exc)

    with interrupt.between_blocks(state):
        stories.model(input_ids=ids)  # the shared dense model has no hooks
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert calls == [] and errors == []
