"""The shared cache: each key computed once however many threads ask, byte-bounded LRU, pinned entries."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import torch

from prune_explorer.models import cache as cache_module
from prune_explorer.models.cache import SharedCache, size_of

THREADS = 8
WAIT = 10.0  # seconds a thread waits for another before the test gives up (never reached when all is well)


def kib(n: int = 1) -> torch.Tensor:
    """A fresh float32 tensor of exactly ``n`` × 1000 bytes."""
    return torch.zeros(250 * n, dtype=torch.float32)


def run_together(n: int, fn) -> list:
    """Run ``fn(i)`` in ``n`` threads released together by a barrier; re-raise the first error."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=WAIT)
            results[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a thread never finished (deadlock?)"
    if errors:
        raise errors[0]
    return results


# ----- computed once


def test_threads_asking_at_once_compute_once_and_share_one_object():
    cache = SharedCache(1 << 20)
    calls = []
    started = threading.Event()

    def compute():
        calls.append(threading.get_ident())
        started.set()
        # Stay inside compute while the other threads ask (they must wait, not compute).
        threading.Event().wait(0.2)
        return kib()

    results = run_together(THREADS, lambda i: cache.get("k", compute))

    assert len(calls) == 1
    assert all(r is results[0] for r in results)
    stats = cache.stats()
    assert (stats.misses, stats.hits, stats.entries) == (1, THREADS - 1, 1)
    assert stats.nbytes == 1000


def test_different_keys_compute_at_the_same_time():
    """One key's compute does not block another key's: A waits for B's compute to have started."""
    cache = SharedCache(1 << 20)
    b_started = threading.Event()
    seen = {}

    def compute_a():
        seen["a saw b"] = b_started.wait(WAIT)
        return "a"

    def compute_b():
        b_started.set()
        return "b"

    a = threading.Thread(target=lambda: seen.setdefault("a", cache.get("a", compute_a)))
    a.start()
    seen["b"] = cache.get("b", compute_b)
    a.join(timeout=60)
    assert seen == {"a saw b": True, "a": "a", "b": "b"}


def test_a_thread_arriving_while_the_value_is_being_stored_does_not_compute_again(monkeypatch):
    """The window between compute() returning and the entry being stored (its bytes are counted then) must not
    let a newcomer compute the same key a second time."""
    cache = SharedCache(1 << 20)
    in_store = threading.Event()
    proceed = threading.Event()
    real_size_of = cache_module.size_of
    first_value = {"first": kib()}

    def slow_size_of(value, *args):
        if value is first_value:
            in_store.set()
            proceed.wait(WAIT)
        return real_size_of(value, *args)

    monkeypatch.setattr(cache_module, "size_of", slow_size_of)
    calls = []
    recomputed = threading.Event()

    def first():
        calls.append("first")
        return first_value

    def second():
        calls.append("second")
        recomputed.set()
        return {"second": kib()}

    got = {}
    t1 = threading.Thread(target=lambda: got.setdefault(1, cache.get("k", first)))
    t1.start()
    assert in_store.wait(WAIT)
    t2 = threading.Thread(target=lambda: got.setdefault(2, cache.get("k", second)))
    t2.start()
    recomputed.wait(1.0)  # give a newcomer the chance to (wrongly) compute while the first value is stored
    proceed.set()
    t1.join(timeout=60)
    t2.join(timeout=60)

    assert calls == ["first"]
    assert got[1] is first_value and got[2] is first_value
    assert cache.stats().misses == 1


def test_an_error_in_compute_propagates_and_a_later_get_computes_again():
    cache = SharedCache(1 << 20)
    calls = []

    def failing():
        calls.append("fail")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.get("k", failing)
    assert "k" not in cache
    assert cache.peek("k") is None
    value = cache.get("k", lambda: calls.append("ok") or "value")
    assert value == "value"
    assert calls == ["fail", "ok"]
    assert cache.get("k", failing) == "value"  # now cached: compute not called
    assert calls == ["fail", "ok"]


def test_an_error_seen_by_waiting_threads_leaves_the_cache_usable():
    cache = SharedCache(1 << 20)
    calls = []
    lock = threading.Lock()

    def failing():
        with lock:
            calls.append(1)
        threading.Event().wait(0.05)
        raise RuntimeError("boom")

    def ask(i):
        try:
            cache.get("k", failing)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    results = run_together(4, ask)
    assert results == ["boom"] * 4  # every asker sees the failure (none gets a value that was never made)
    assert "k" not in cache
    assert cache.stats().entries == 0
    assert cache.get("k", lambda: 42) == 42


# ----- bounded by bytes, least recently used first


def test_oldest_unpinned_entry_is_evicted_first():
    cache = SharedCache(3000)
    for key in "abc":
        cache.get(key, kib)
    assert cache.stats().nbytes == 3000 and cache.stats().evictions == 0
    cache.get("d", kib)
    assert "a" not in cache
    assert all(k in cache for k in "bcd")
    stats = cache.stats()
    assert (stats.entries, stats.nbytes, stats.evictions) == (3, 3000, 1)


def test_a_recently_peeked_or_got_entry_survives():
    cache = SharedCache(3000)
    for key in "abc":
        cache.get(key, kib)
    a = cache.peek("a")  # a is now the most recently used
    assert a is not None
    cache.get("d", kib)
    assert "a" in cache and "b" not in cache
    assert cache.get("c", lambda: pytest.fail("c is cached")) is not None  # c is now used after a
    cache.get("e", kib)  # a is now the least recently used
    assert "a" not in cache
    assert all(k in cache for k in "dce")
    assert cache.peek("a") is None


def test_pinned_entries_are_never_evicted_and_still_counted():
    cache = SharedCache(2000)
    pinned = cache.get("pinned", lambda: kib(3), pin=True)
    for key in "abcdef":
        cache.get(key, kib)
    assert cache.peek("pinned") is pinned
    stats = cache.stats()
    assert stats.pinned_bytes == 3000
    assert stats.nbytes == 3000 + 2000  # pinned counted, and the bound holds for the rest
    assert stats.entries == 3
    assert set(k for k in "abcdef" if k in cache) == {"e", "f"}
    assert stats.evictions == 4


def test_the_newest_entry_stays_even_when_alone_bigger_than_the_bound():
    cache = SharedCache(1000)
    cache.get("small", kib)
    big = cache.get("big", lambda: kib(5))
    assert "big" in cache and "small" not in cache
    assert cache.peek("big") is big
    assert cache.stats().nbytes == 5000
    cache.get("next", kib)  # now big is the oldest and goes
    assert "big" not in cache and "next" in cache
    assert cache.stats().nbytes == 1000


def test_peek_of_a_missing_key_computes_nothing():
    cache = SharedCache(1000)
    assert cache.peek("nothing") is None
    assert len(cache) == 0


# ----- size_of


def test_size_of_counts_a_shared_storage_once():
    t = torch.zeros(100, dtype=torch.float32)
    assert size_of(t) == 400
    assert size_of([t, t[:50], t.view(10, 10)]) == 400
    assert size_of((t, torch.zeros(100, dtype=torch.float32))) == 800

    @dataclass
    class Pair:
        left: torch.Tensor
        right: torch.Tensor

    assert size_of({"pair": Pair(t, t[10:])}) == len("pair") + 400
    cache = SharedCache(1 << 20)
    cache.get("views", lambda: (t, t.view(4, 25).T, t[::2]))
    assert cache.stats().nbytes == 400


# ----- many sessions ranking one model


def test_many_sessions_ranking_one_model_rank_each_layer_once(llama_dense, one_thread):
    from prune_explorer.pruning.ranking import layer_rankings

    dense = llama_dense
    assert dense.cache.stats().misses == 0
    results = run_together(THREADS, lambda i: layer_rankings(dense, dense.layers))

    assert dense.cache.stats().misses == len(dense.layers)
    for layer in dense.layers:
        assert all(r[layer.name] is results[0][layer.name] for r in results)
        assert results[0][layer.name].numel == layer.numel
    stats = dense.cache.stats()
    assert stats.pinned_bytes == stats.nbytes > 0  # rankings are pinned: a slider move reads them
