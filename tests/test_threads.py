"""One SharedDict object shared by many threads of one process.

The totals must be as exact as between processes, a transaction belongs to
the thread that opened it (the others wait for it), and the store may be
closed from any thread.
"""

from __future__ import annotations

import gc
import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

import multinode as mn

T = 4  # threads
M = 150  # operations per thread
JOIN = 120.0  # hang guard, seconds


def run_threads(target: Callable[[int], object], n: int = T) -> list[object]:
    """Run ``target(i)`` in n threads started together; return the results,
    failing on any exception or hang."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    errors: list[str] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=JOIN)
            results[i] = target(i)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, "\n".join(errors)
    return results


def test_shared_object_counter_is_exact(store: mn.Store) -> None:
    """T threads x M ``d["n"] += 1`` on one object leave exactly T*M, an int."""
    d = store.get_dict("t")
    d["n"] = 0

    def work(i: int) -> None:
        for _ in range(M):
            d["n"] += 1

    run_threads(work)
    assert d["n"] == T * M
    assert type(d["n"]) is int


def test_shared_object_mixed_operators(store: mn.Store) -> None:
    """Threads mixing ``+= 3`` and ``-= 1`` on one key lose no update."""
    d = store.get_dict("t")
    d["n"] = 0

    def work(i: int) -> None:
        for _ in range(M):
            if i % 2:
                d["n"] += 3
            else:
                d["n"] -= 1

    run_threads(work)
    assert d["n"] == (T // 2) * M * 3 - (T - T // 2) * M


def test_shared_object_cas_loops_are_exact(store: mn.Store) -> None:
    """CAS retry loops in T threads add up to exactly T*M."""
    d = store.get_dict("t")
    d["n"] = 0

    def work(i: int) -> None:
        for _ in range(M):
            while True:
                cur = d["n"]
                if d.update("n", new_value=cur + 1, expected_current_value=cur):
                    break

    run_threads(work)
    assert d["n"] == T * M


def test_shared_object_set_if_absent_one_winner(store: mn.Store) -> None:
    """Among 8 threads racing set_if_absent exactly one wins."""
    d = store.get_dict("t")
    results = run_threads(lambda i: d.set_if_absent("y", value=i), n=8)
    winners = [i for i, won in enumerate(results) if won]
    assert len(winners) == 1
    assert d["y"] == winners[0]


def test_threads_each_with_own_handle(store: mn.Store) -> None:
    """Threads that each call get_dict and also open their own Store on the
    same file still count exactly."""
    store.get_dict("t")["n"] = 0

    def work(i: int) -> None:
        if i % 2:
            with mn.Store(store.path, journal_mode=store.journal_mode) as s:
                d = s.get_dict("t")
                for _ in range(M):
                    d["n"] += 1
        else:
            d = store.get_dict("t")
            for _ in range(M):
                d["n"] += 1

    run_threads(work)
    assert store.get_dict("t")["n"] == T * M


def test_transaction_makes_other_threads_wait(store: mn.Store) -> None:
    """While one thread is inside a transaction, another thread's write waits
    for it to end and is not part of it; afterwards the write lands."""
    d = store.get_dict("t")
    d["x"] = 0
    inside = threading.Event()
    b_started = threading.Event()
    b_done = threading.Event()
    seen: dict[str, object] = {}

    def writer() -> None:
        assert inside.wait(JOIN)
        b_started.set()
        d["x"] = 2
        b_done.set()

    t = threading.Thread(target=writer)
    t.start()
    try:
        with store.transaction():
            d["x"] = 1
            inside.set()
            assert b_started.wait(JOIN)
            # Give the writer every chance to slip in; it must not.
            b_done.wait(0.5)
            seen["done_inside"] = b_done.is_set()
            seen["x_inside"] = d["x"]
            d["x"] = 3
    finally:
        t.join(JOIN)
    assert not t.is_alive()
    assert seen == {"done_inside": False, "x_inside": 1}
    assert b_done.is_set()
    assert d["x"] == 2


def test_transaction_rollback_is_invisible_to_other_threads(store: mn.Store) -> None:
    """A transaction rolled back by an exception leaves nothing another thread
    can see, and releases the lock so that thread can write."""
    d = store.get_dict("t")
    d["x"] = "before"

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction():
        d["x"] = "during"
        d["y"] = "new"
        raise Boom

    def other(i: int) -> tuple[object, bool]:
        value = d["x"]
        d["z"] = i
        return value, "y" in d

    assert run_threads(other, n=1) == [("before", False)]
    assert d["z"] == 0


def test_close_from_non_creator_thread(store_path: Path, journal_mode: str) -> None:
    """A store opened in one thread and used in several can be closed from
    another thread; afterwards every call raises StoreClosedError."""
    s = mn.Store(store_path, journal_mode=journal_mode)
    d = s.get_dict("t")
    d["n"] = 0

    def use(i: int) -> None:
        for _ in range(20):
            d["n"] += 1

    run_threads(use)
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join(JOIN)
    assert not closer.is_alive()
    with pytest.raises(mn.StoreClosedError):
        d["n"]
    with pytest.raises(mn.StoreClosedError):
        s.get_dict("t")
    s.close()  # closing twice is harmless
    with mn.Store(store_path) as again:
        assert again.get_dict("t")["n"] == T * 20


def test_store_created_in_thread_closed_in_main(
    store_path: Path, journal_mode: str
) -> None:
    """A store created and used by a worker thread can be used and closed by
    the main thread."""
    box: list[mn.Store] = []

    def make(i: int) -> None:
        s = mn.Store(store_path, journal_mode=journal_mode)
        s.get_dict("t")["k"] = "v"
        box.append(s)

    run_threads(make, n=1)
    s = box[0]
    assert s.get_dict("t")["k"] == "v"
    s.close()
    with pytest.raises(mn.StoreClosedError):
        s.get_dict("t")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_short_lived_threads_leak_no_connections(store: mn.Store) -> None:
    """Hundreds of threads that each write once and end leave no open file
    descriptors behind (each thread's connection goes with it)."""
    d = store.get_dict("t")
    d["warm"] = 1
    gc.collect()
    before = _open_fds()
    for i in range(300):
        run_threads(lambda _, i=i: d.__setitem__(f"k{i}", i), n=1)
    gc.collect()
    after = _open_fds()
    assert len(d) == 301
    assert after - before < 10, f"{after - before} descriptors more than before"
