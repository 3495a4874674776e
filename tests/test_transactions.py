"""The transaction contract, checked at the SQL level.

A trace callback on the store's own connection records the statements each
call runs, and a second, raw sqlite3 connection on the same file shows what
other processes can see and when.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import multinode as mn


@pytest.fixture
def traced(store: mn.Store) -> Iterator[tuple[mn.SharedDict, list[str]]]:
    """A dict whose connection (this thread's) records every statement."""
    d = store.get_dict("t")
    d["n"] = 0
    d["l"] = []
    statements: list[str] = []
    store._link().connection().set_trace_callback(
        lambda sql: statements.append(" ".join(sql.split()))
    )
    yield d, statements
    store._link().connection().set_trace_callback(None)


def _control(statements: list[str]) -> list[str]:
    """The transaction-control statements among `statements`."""
    words = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
    return [s for s in statements if s.split()[0].upper() in words]


def _distinct(statements: list[str]) -> list[str]:
    """`statements` without the repeats SQLite reports for trigger steps."""
    return [s for i, s in enumerate(statements) if i == 0 or statements[i - 1] != s]


def test_a_plain_write_is_one_statement_in_autocommit(
    traced: tuple[mn.SharedDict, list[str]],
) -> None:
    """d[k] = v, del d[k] and set_if_absent run one statement, no BEGIN."""
    d, statements = traced
    d["a"] = 1
    del d["a"]
    d.set_if_absent("b", value=2)
    assert _control(statements) == []
    assert len(_distinct(statements)) == 3, statements


def _iadd(d: mn.SharedDict) -> None:
    d["n"] += 1


@pytest.mark.parametrize(
    "operation",
    [
        lambda d: _iadd(d),
        lambda d: d.update("n", new_value=5, expected_current_value=0),
        lambda d: d.pop("n"),
        lambda d: d.popitem(),
        lambda d: d.update({"x": 1, "y": 2}),
    ],
    ids=["+=", "cas", "pop", "popitem", "update"],
)
def test_read_modify_write_starts_as_a_writer(
    traced: tuple[mn.SharedDict, list[str]], operation: object
) -> None:
    """Each read-modify-write is BEGIN IMMEDIATE ... COMMIT: it never reads
    first and upgrades to a write later."""
    d, statements = traced
    operation(d)  # type: ignore[operator]
    control = _control(statements)
    assert control == ["BEGIN IMMEDIATE", "COMMIT"], statements
    assert statements[0] == "BEGIN IMMEDIATE"


def test_operations_inside_a_transaction_join_it(
    traced: tuple[mn.SharedDict, list[str]],
) -> None:
    """Inside store.transaction() no call begins or commits on its own; the
    block commits once, and a nested block is a savepoint."""
    d, statements = traced
    with d.store.transaction():
        d["a"] = 1
        d["n"] += 1
        d.update("n", new_value=10, expected_current_value=1)
        with d.transaction():
            d["b"] = 2
    assert _control(statements) == [
        "BEGIN IMMEDIATE",
        "SAVEPOINT mn_nested_1",
        "RELEASE mn_nested_1",
        "COMMIT",
    ]
    assert d["n"] == 10 and d["b"] == 2


def test_other_connections_see_a_transaction_only_when_it_commits(
    store: mn.Store, store_path: Path
) -> None:
    """A raw connection on the same file sees none of an open transaction,
    all of it after COMMIT, and none of one that raised."""
    a, b = store.get_dict("a"), store.get_dict("b")
    other = sqlite3.connect(store_path, isolation_level=None)
    count = "SELECT count(*) FROM mn_item"
    try:
        with store.transaction():
            a["x"] = 1
            b["y"] = 2
            if store.journal_mode == "wal":
                assert other.execute(count).fetchone() == (0,)
        assert other.execute(count).fetchone() == (2,)

        with pytest.raises(RuntimeError), store.transaction():
            a["z"] = 3
            del b["y"]
            raise RuntimeError("undo")
        assert other.execute(count).fetchone() == (2,)
        assert dict(a) == {"x": 1} and dict(b) == {"y": 2}
    finally:
        other.close()


def test_an_inner_block_that_raises_undoes_only_itself(store: mn.Store) -> None:
    """A nested transaction is a savepoint: its error undoes its own writes
    and the outer block still commits."""
    d = store.get_dict("d")
    with store.transaction():
        d["outer"] = 1
        with pytest.raises(KeyError), store.transaction():
            d["inner"] = 2
            raise KeyError("undo the inner block")
        d["after"] = 3
    assert dict(d) == {"outer": 1, "after": 3}


def _keep_writing(path: str, stop: object) -> None:
    d = mn.Store(path, journal_mode="rollback").get_dict("d")
    i = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        d[i % 200] = bytes(2000)
        i += 1


@pytest.mark.processes
def test_snapshot_reads_wait_for_writers_in_rollback_mode(store_path: Path) -> None:
    """copy() holds a read snapshot; in rollback-journal mode, with two
    processes writing all the time, it waits for them instead of failing."""
    store = mn.Store(store_path, journal_mode="rollback", timeout=20)
    d = store.get_dict("d")
    d.update({i: b"" for i in range(200)})
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    writers = [
        ctx.Process(target=_keep_writing, args=(str(store_path), stop))
        for _ in range(2)
    ]
    for w in writers:
        w.start()
    try:
        for _ in range(40):
            assert len(d.copy()) == 200
    finally:
        stop.set()
        for w in writers:
            w.join(30)
    assert [w.exitcode for w in writers] == [0, 0]
    store.close()
