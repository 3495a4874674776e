"""Atomic operations raced by real processes, under "spawn" and "fork".

Every worker opens its own `mn.Store` on the test's file, waits at one
barrier, then hammers the same key. Counters expose every lost update; the
single-winner operations expose every double grant. Each test runs in both
journal modes, because the contract must hold with a rollback journal on a
local disk as well as with WAL.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _workers_core import run_workers

import multinode as mn

pytestmark = pytest.mark.processes

METHODS = ["spawn", "fork"]
P = 4  # processes per race
M = 200  # operations per process


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    """Each start method."""
    return str(request.param)


def _seed(store: mn.Store, name: str, **items: Any) -> mn.SharedDict:
    d = store.get_dict(name)
    d.update(items)
    return d


@pytest.mark.parametrize(
    ("op", "start", "step", "expected"),
    [
        pytest.param("+=", 0, 1, P * M, id="int+="),
        pytest.param("-=", 0, 1, -P * M, id="int-="),
        pytest.param("+=", 0.0, 0.5, P * M * 0.5, id="float+="),
    ],
)
def test_numeric_counter_is_exact(
    store: mn.Store,
    store_path: Path,
    method: str,
    op: str,
    start: Any,
    step: Any,
    expected: Any,
) -> None:
    """P processes x M ``d["n"] op= step`` leave exactly the serial result."""
    d = _seed(store, "c", n=start)
    args = (str(store_path), store.journal_mode, "c", op, step, M)
    run_workers(method, "counter", [args] * P)
    assert d["n"] == expected
    assert type(d["n"]) is type(start)


def test_str_concat_loses_nothing(
    store: mn.Store, store_path: Path, method: str
) -> None:
    """P processes x M ``d["s"] += "ab"`` leave a string of length 2*P*M."""
    d = _seed(store, "s", n="")
    args = (str(store_path), store.journal_mode, "s", "+=", "ab", M)
    run_workers(method, "counter", [args] * P)
    assert type(d["n"]) is str
    assert len(d["n"]) == 2 * P * M
    assert d["n"] == "ab" * P * M


def test_list_extend_loses_nothing(
    store: mn.Store, store_path: Path, method: str
) -> None:
    """P processes x M ``d["l"] += [1]`` leave a list of P*M items."""
    d = _seed(store, "l", n=[])
    args = (str(store_path), store.journal_mode, "l", "+=", [1], M)
    run_workers(method, "counter", [args] * P)
    assert d["n"] == [1] * (P * M)


def test_cas_retry_loops_count_exactly(
    store: mn.Store, store_path: Path, method: str
) -> None:
    """Increments done by CAS retry loops in P processes sum to exactly P*M."""
    d = _seed(store, "cas", n=0)
    args = (str(store_path), store.journal_mode, "cas", M)
    retries = run_workers(method, "cas_counter", [args] * P)
    assert d["n"] == P * M
    assert all(r >= 0 for r in retries)


def test_set_if_absent_has_one_winner(
    store: mn.Store, store_path: Path, method: str
) -> None:
    """Among 8 racing processes exactly one set_if_absent wins, and its pid
    is the stored value."""
    d = store.get_dict("sia")
    args = (str(store_path), store.journal_mode, "sia")
    results = run_workers(method, "set_if_absent_race", [args] * 8)
    winners = [pid for pid, won in results if won]
    assert len(winners) == 1
    assert d["y"] == winners[0]
    assert len(d) == 1


def test_popitem_hands_out_each_item_once(
    store: mn.Store, store_path: Path, method: str
) -> None:
    """3 processes popping until empty receive every item exactly once."""
    d = store.get_dict("pop")
    d.update((f"k{i}", i) for i in range(150))
    args = (str(store_path), store.journal_mode, "pop")
    results = run_workers(method, "popitem_race", [args] * 3)
    got = [item for r in results for item in r]
    counts = Counter(k for k, _ in got)
    assert not [k for k, c in counts.items() if c > 1], "an item was popped twice"
    assert sorted(got, key=lambda kv: kv[1]) == [(f"k{i}", i) for i in range(150)]
    assert len(d) == 0
    # Each process sees items leave from the end: its own pops are descending.
    for r in results:
        values = [v for _, v in r]
        assert values == sorted(values, reverse=True)


def test_setdefault_returns_one_value_everywhere(
    store: mn.Store, store_path: Path, method: str
) -> None:
    """setdefault raced by 6 processes returns the same value in each, and
    that value is the stored one."""
    d = store.get_dict("sd")
    args = (str(store_path), store.journal_mode, "sd")
    got = run_workers(method, "setdefault_race", [args] * 6)
    assert len(set(got)) == 1
    assert d["z"] == got[0]


def test_transactions_serialise_read_then_write(
    store: mn.Store, store_path: Path, method: str
) -> None:
    """Read-then-write inside ``store.transaction()`` in P processes loses
    no update: transactions are serializable across processes."""
    d = _seed(store, "txn", n=0)
    args = (str(store_path), store.journal_mode, "txn", M // 2)
    run_workers(method, "txn_counter", [args] * P)
    assert d["n"] == P * (M // 2)


def test_cas_and_iadd_mix_exactly(
    store: mn.Store, store_path: Path, method: str
) -> None:
    """Processes mixing ``+= 1`` and CAS increments on one key lose nothing."""
    d = _seed(store, "mix", n=0)
    path, mode = str(store_path), store.journal_mode
    args: list[tuple[Any, ...]] = [
        (path, mode, "mix", "+=", 1, M),
        (path, mode, "mix", M),
    ] * (P // 2)
    fns = ["counter", "cas_counter"] * (P // 2)
    results = run_workers(
        method, "dispatch", [(fn, a) for fn, a in zip(fns, args, strict=True)]
    )
    assert len(results) == P
    assert d["n"] == P * M


def test_update_is_one_transaction_for_readers(
    store: mn.Store, store_path: Path, method: str
) -> None:
    """A reader process never sees half of an update() that a writer process
    is making: copy() and reads in a transaction see a == b."""
    _seed(store, "pair", a=0, b=0)
    args = (str(store_path), store.journal_mode, "pair", M)
    results = run_workers(
        method, "dispatch", [("pair_writer", args), ("pair_reader", args)]
    )
    assert dict(results) == {"pair_writer": M, "pair_reader": 0}
