"""prune_explorer.threads: the live path narrows the calling thread to one torch thread and puts it back;
a worker takes every core whatever it inherited; and the prompt logits reach a page before any new token."""

from __future__ import annotations

import threading

import torch

from prune_explorer import threads
from prune_explorer.measure.evaluate import continue_greedily
from tests.support.models import tiny_model


def test_interactive_narrows_to_one_thread_and_restores_the_count_even_on_error():
    before = torch.get_num_threads()
    try:
        with threads.interactive():
            assert torch.get_num_threads() == threads.INTERACTIVE == 1
            raise KeyError("a failing generation")
    except KeyError:
        pass
    assert torch.get_num_threads() == before


def test_a_worker_takes_every_core_whatever_it_inherited():
    seen = {}

    def worker() -> None:
        seen["inherited"] = torch.get_num_threads()
        threads.use_all_cores()
        seen["after"] = torch.get_num_threads()

    with threads.interactive():  # a thread started meanwhile inherits the narrowed count...
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen["after"] == threads.ALL_CORES  # ...and takes every core back for itself


def test_the_prompt_logits_come_before_the_first_new_token_and_equal_the_returned_ones():
    model = tiny_model("llama")
    events = []
    cont = continue_greedily(
        model,
        [1, 5, 7, 9],
        max_new_tokens=5,
        on_prompt=lambda logits: events.append(("prompt", logits.clone())),
        on_token=lambda token: events.append(("token", token)),
    )
    assert [kind for kind, _ in events] == ["prompt"] + ["token"] * len(cont.tokens)
    assert torch.equal(events[0][1], cont.prompt_logits)
    assert [t for kind, t in events[1:]] == cont.tokens
