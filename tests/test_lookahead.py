"""The slider's look-ahead (ui.lookahead): the outputs of the neighbouring positions are computed while the
page is idle, a step to one of them runs no pruned forward pass and shows exactly what the live path would
compute, and only settings every session shares (the slider path) are shared."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from prune_explorer import threads
from prune_explorer.measure import evaluate
from prune_explorer.pruning.policies import MagnitudeSettings
from tests.support.apptest import choose, idle, set_sparsity, start

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


def _prompt(at):
    from ui import outputs

    dense = at.session_state["pruning_state"].dense
    return (
        dense,
        outputs.prompt_ids(dense, at.session_state["prune_prompt"]),
        at.session_state["prune_new_tokens"],
    )


def _applied(at):
    return at.session_state["pruning_applied"]


def test_neighbours_follow_the_last_move_and_stay_in_range():
    from ui import lookahead

    at_40 = MagnitudeSettings(sparsity=0.4)
    assert [s.sparsity for s in lookahead.neighbours(at_40, None)] == [0.41, 0.39]
    assert [s.sparsity for s in lookahead.neighbours(at_40, 45)] == [0.39, 0.41]  # moving down: below first
    assert [s.sparsity for s in lookahead.neighbours(MagnitudeSettings(sparsity=1.0), 99)] == [0.99]
    assert [s.sparsity for s in lookahead.neighbours(MagnitudeSettings(sparsity=0.01), None)] == [0.02]
    assert (
        lookahead.neighbours(MagnitudeSettings(sparsity=0.4, policy="threshold", threshold=0.1), None) == []
    )


def test_a_step_to_a_looked_ahead_position_runs_no_pruned_pass_and_shows_the_live_result(monkeypatch):
    from ui import lookahead

    at = idle(set_sparsity(start(), 40))
    dense, ids, max_new = _prompt(at)
    applied = _applied(at)
    up, down = replace(applied, sparsity=0.41), replace(applied, sparsity=0.39)
    assert lookahead.cached(dense, up, ids, max_new) is not None
    assert lookahead.cached(dense, down, ids, max_new) is not None

    state = at.session_state["pruning_state"]
    draft = at.session_state["memo"]["continue"][1].tokens  # the text at 40%: what a live step drafts from
    passes = []
    forward = type(state.model).forward

    def counting(self, *args, **kwargs):
        if self is state.model:
            passes.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(state.model), "forward", counting)
    at.slider(key="sidebar_sparsity").set_value(41).run()
    assert not at.exception, at.exception
    assert passes == []  # the text, the next-token chart and KL came from the look-ahead

    shown = at.session_state["memo"]["continue"][1]
    monkeypatch.setattr(type(state.model), "forward", forward)
    with threads.interactive():
        live = evaluate.continue_greedily(
            state.model,
            ids,
            max_new_tokens=max_new,
            stop_ids=(dense.tokenizer.eos_token_id,) if dense.tokenizer.eos_token_id is not None else (),
            draft=draft,
        )
        plain = evaluate.continue_greedily(state.model, ids, max_new_tokens=max_new)  # no draft at all
    assert shown.tokens == live.tokens
    assert torch.equal(shown.prompt_logits, live.prompt_logits)
    assert shown.tokens[: len(plain.tokens)] == plain.tokens  # a draft saves passes, never changes tokens


def test_a_step_elsewhere_computes_live_and_shares_what_it_computed():
    from ui import lookahead

    at = idle(set_sparsity(start(), 20))
    dense, ids, max_new = _prompt(at)
    set_sparsity(at, 63)  # not a neighbour: computed by the live path
    assert lookahead.cached(dense, _applied(at), ids, max_new) is not None  # and kept for every session
    assert at.session_state["memo"]["continue"][1] is lookahead.cached(dense, _applied(at), ids, max_new)


def test_a_method_setting_is_neither_shared_nor_looked_ahead():
    from ui import lookahead

    at = idle(choose(start(), method="wanda"))
    dense, ids, max_new = _prompt(at)
    assert not lookahead.shareable(_applied(at))
    worker = at.session_state["background_worker"]
    at.slider(key="sidebar_sparsity").set_value(45).run()
    assert not at.exception, at.exception
    assert all(task.name != "lookahead" for task in worker.pending())
    assert lookahead.cached(dense, _applied(at), ids, max_new) is None
