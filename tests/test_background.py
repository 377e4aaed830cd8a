"""The per-session measuring worker (ui.worker, behind ui.background): it measures after a run, yields to
the next one, and never leaves the session's model to a stale measurement."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

import ui.worker
from ui.worker import Task, Worker

WAIT = 10.0


def wait_for(condition, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def steps_task(name: str, steps: int, started: threading.Event, on_session_model: bool = True, delay=0.01):
    """A task of ``steps`` progress reports ``delay`` apart; counts how often it was (re)started."""
    calls = {"starts": 0, "steps": 0}

    def compute(progress):
        calls["starts"] += 1
        started.set()
        for i in range(steps):
            time.sleep(delay)
            calls["steps"] += 1
            progress((i + 1) / steps)
        return f"{name} done"

    return Task(name, ("key", name), name, compute, on_session_model=on_session_model), calls


def test_a_task_is_measured_after_the_run_and_stored_under_its_key():
    worker, store, started = Worker(threading.RLock()), {}, threading.Event()
    task, calls = steps_task("latency", 3, started)
    worker.end_run([task], store)
    wait_for(lambda: not worker.pending())
    assert store["latency"] == (("key", "latency"), "latency done")
    assert calls["starts"] == 1 and task.fraction == 1.0


def test_a_new_run_stops_a_task_on_the_session_model_and_gets_the_lock_at_once():
    lock = threading.RLock()
    worker, store, started = Worker(lock), {}, threading.Event()
    task, calls = steps_task("perplexity", 500, started)
    worker.end_run([task], store)
    assert started.wait(WAIT)
    begun = time.perf_counter()
    worker.begin_run()
    with lock:  # what session.exclusive does next: the worker gives the lock up at its next report
        waited = time.perf_counter() - begun
        assert "perplexity" not in store
        assert calls["steps"] < 500
    assert waited < 1.0, waited  # one report is 10 ms; a second is a generous bound on a busy machine
    worker.end_run([task], store)  # the next run asks again: measured from the start
    wait_for(lambda: "perplexity" in store)
    assert calls["starts"] == 2


def test_a_task_off_the_session_model_waits_for_the_run_and_keeps_its_progress():
    worker, store, started = Worker(threading.RLock()), {}, threading.Event()
    task, calls = steps_task("sweep", 60, started, on_session_model=False)
    worker.end_run([task], store)
    assert started.wait(WAIT)
    worker.begin_run()
    time.sleep(0.1)
    paused_at = calls["steps"]
    time.sleep(0.1)
    assert calls["steps"] in (paused_at, paused_at + 1)  # held at its next report
    worker.end_run([task], store)
    wait_for(lambda: "sweep" in store)
    assert calls["starts"] == 1  # resumed, not restarted


def test_a_task_the_next_run_does_not_ask_for_is_dropped():
    worker, store, started = Worker(threading.RLock()), {}, threading.Event()
    old, _ = steps_task("old", 500, started)
    new, _ = steps_task("new", 2, threading.Event())
    worker.end_run([old], store)
    assert started.wait(WAIT)
    worker.begin_run()
    worker.end_run([new], store)
    wait_for(lambda: not worker.pending())
    assert "new" in store and "old" not in store


def test_a_failing_task_reports_why_and_leaves_the_queue():
    worker, store = Worker(threading.RLock()), {}

    def broken(progress):
        raise RuntimeError("no memory left")

    task = Task("perplexity", "k", "Scoring the held-out text", broken)
    worker.end_run([task], store)
    wait_for(lambda: not worker.pending())
    assert worker.errors[task.ident] == "Scoring the held-out text failed: no memory left"
    worker.end_run([task], store)  # asked again, it is not retried: the page shows the error instead
    assert not worker.pending()


class Slow(nn.Module):
    """Many linear layers, each slow enough that a whole forward takes seconds."""

    def __init__(self, layers: int = 200):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(layers))
        self.done = 0

    def forward(self, x):
        for layer in self.layers:
            time.sleep(0.01)
            x = layer(x)
            self.done += 1
        return x


def test_a_run_stops_a_long_forward_of_the_session_model_between_two_layers():
    lock = threading.RLock()
    worker, store, model = Worker(lock), {}, Slow()
    started = threading.Event()

    def forward(progress):
        started.set()
        with torch.no_grad():
            return model(torch.ones(1, 8))

    worker.end_run([Task("logits", "k", "forward", forward, model=model)], store)
    assert started.wait(WAIT)
    time.sleep(0.05)
    worker.begin_run()
    with lock:
        assert 0 < model.done < len(model.layers)  # stopped mid-forward, not after the last layer
    assert "logits" not in store
    assert not model.layers[0]._forward_pre_hooks  # its hooks are gone with it


@pytest.mark.parametrize("on_session_model", [True, False])
def test_nothing_starts_before_the_quiet_spell_after_a_run(on_session_model):
    worker, store, started = Worker(threading.RLock()), {}, threading.Event()
    task, calls = steps_task("latency", 1, started, on_session_model=on_session_model)
    for _ in range(5):  # a burst of runs, each ending 20 ms before the next begins
        worker.end_run([task], store)
        time.sleep(0.02)
        worker.begin_run()
    assert calls["starts"] == 0
    worker.end_run([task], store)
    wait_for(lambda: "latency" in store)


def test_quiet_tasks_come_after_the_rest_and_close_stops_the_thread():
    worker, store, started = Worker(threading.RLock()), {}, threading.Event()
    ahead, _ = steps_task("lookahead", 10_000, started, on_session_model=False)
    ahead.quiet = True
    shown, _ = steps_task("latency", 2, threading.Event())
    worker.end_run([ahead, shown], store)
    assert [task.name for task in worker.pending()] == ["latency", "lookahead"]
    assert started.wait(WAIT)  # the quiet task runs once the other is in
    assert "latency" in store
    thread = worker._thread
    worker.close()  # what the interpreter's exit does: torch aborts if a thread is inside an op then
    assert not thread.is_alive()
    assert "lookahead" not in store and not worker.pending()


def _scratch_forward_task(model):
    started = threading.Event()

    def forward(progress):
        started.set()
        with torch.no_grad():
            return model(torch.ones(1, 8))

    return Task("logits", "k", "forward", forward, on_session_model=False, model=model), started


def test_a_run_holds_a_scratch_model_forward_between_two_layers_and_it_then_goes_on():
    """The look-ahead's case: a task off the session's model that names its scratch model pauses inside a
    forward while a short run goes, computes nothing meanwhile, and finishes from where it paused."""
    worker, store, model = Worker(threading.RLock()), {}, Slow()
    task, started = _scratch_forward_task(model)
    assert task.hold_seconds == ui.worker.HOLD_SECONDS
    worker.end_run([task], store)
    assert started.wait(WAIT)
    time.sleep(0.05)
    worker.begin_run()
    time.sleep(0.05)  # a layer in flight when the run began may finish
    held_at = model.done
    time.sleep(0.2)
    assert 0 < held_at < len(model.layers)
    assert model.done == held_at  # nothing computed while the run goes
    worker.end_run([task], store)  # the run ended asking for it again: it goes on
    wait_for(lambda: "logits" in store)
    assert model.done == len(model.layers)  # one pass, resumed, not restarted
    assert not model.layers[0]._forward_pre_hooks


def test_a_run_that_outlasts_the_hold_stops_the_scratch_model_task(monkeypatch):
    """A session whose run never ends must not keep the scratch copy (and its lock) from the others."""
    monkeypatch.setattr(ui.worker, "HOLD_SECONDS", 0.2)
    worker, store, model = Worker(threading.RLock()), {}, Slow()
    task, started = _scratch_forward_task(model)
    worker.end_run([task], store)
    assert started.wait(WAIT)
    time.sleep(0.05)
    worker.begin_run()
    wait_for(lambda: worker.current is None, timeout=2.0)  # stopped after the hold, the forward abandoned
    stopped_at = model.done
    assert 0 < stopped_at < len(model.layers)
    assert not model.layers[0]._forward_pre_hooks
    assert "logits" not in store
    worker.end_run([task], store)  # asked again: measured from the start
    wait_for(lambda: "logits" in store)
    assert model.done == stopped_at + len(model.layers)
