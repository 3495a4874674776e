"""Lock waits (DESIGN section 4): retry with backoff up to the store's
timeout, then `mn.LockTimeout` (a `TimeoutError`) naming the file and how
long it waited; never a bare "database is locked".

The lock is held by another process through the raw sqlite3 module
(``_workers_faults.hold_lock``), which keeps it until told to let go.
"""

from __future__ import annotations

import pickle
import re
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _workers_faults import finish, fresh_read, run_worker, start_worker

import multinode as mn

pytestmark = [pytest.mark.fault, pytest.mark.processes, pytest.mark.timeout(120)]

TIMEOUT = 0.5
# A generous hang guard on top of the timeout, not a speed requirement.
SLACK = 10.0


class LockHolder:
    """Another process holding SQLite's write lock on ``path``."""

    def __init__(self, path: Path, begin: str = "BEGIN IMMEDIATE") -> None:
        self.proc = start_worker("hold_lock", path=str(path), begin=begin, max_hold=60)
        self.released = False
        assert self._line(30) == "locked"

    def _line(self, timeout: float) -> str:
        stdout = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            finish(self.proc, 1)
            raise AssertionError(f"lock holder said nothing within {timeout} s")
        line = stdout.readline().decode().strip()
        if not line:
            raise AssertionError(f"lock holder ended: {finish(self.proc, 10)}")
        return line

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(b"go\n")
            stdin.flush()
        except BrokenPipeError:
            pass
        assert self._line(30) == "released"
        rc, _, err = finish(self.proc, 30)
        assert rc == 0, err


@pytest.fixture
def holder_factory() -> Iterator[Callable[..., LockHolder]]:
    """Start lock holders; every one is released (or killed) afterwards."""
    holders: list[LockHolder] = []

    def make(path: Path, begin: str = "BEGIN IMMEDIATE") -> LockHolder:
        holders.append(LockHolder(path, begin))
        return holders[-1]

    yield make
    for h in holders:
        if not h.released:
            h.released = True
            try:
                finish(h.proc, 0.1)
            except AssertionError:
                pass


def seeded_store(path: Path, mode: str, timeout: float = TIMEOUT) -> mn.Store:
    store = mn.Store(path, journal_mode=mode, timeout=timeout)
    d = store.get_dict("d")
    d.update({"a": 1, "s": 5, "l": [1]})
    return store


def _iadd(store: mn.Store, d: mn.SharedDict) -> None:
    d["s"] += 1


def _txn(store: mn.Store, d: mn.SharedDict) -> None:
    with store.transaction():
        d["t"] = 1
        d["u"] = 2


WRITES: dict[str, Callable[[mn.Store, mn.SharedDict], object]] = {
    "setitem": lambda s, d: d.__setitem__("b", 2),
    "delitem": lambda s, d: d.__delitem__("a"),
    "update": lambda s, d: d.update({"x": 1, "y": 2}),
    "set_if_absent": lambda s, d: d.set_if_absent("z", value=1),
    "cas": lambda s, d: d.update("s", new_value=6, expected_current_value=5),
    "pop": lambda s, d: d.pop("a"),
    "transaction": _txn,
    "iadd": _iadd,
}


def _assert_names_file_and_wait(exc: BaseException, path: Path) -> None:
    msg = str(exc)
    assert str(path) in msg, f"message does not name the file: {msg!r}"
    rest = msg.replace(str(path), "")
    assert re.search(r"\d+(\.\d+)?\s*(s|sec|seconds)\b", rest), (
        f"message does not say how long it waited: {msg!r}"
    )
    assert msg.strip() != "database is locked"


@pytest.mark.parametrize("op", sorted(WRITES))
def test_write_past_timeout_raises_lock_timeout(
    tmp_path: Path,
    journal_mode: str,
    op: str,
    holder_factory: Callable[..., LockHolder],
) -> None:
    """With another process holding the write lock past the store's timeout,
    a write raises LockTimeout (a TimeoutError) naming the file and the wait,
    within timeout + a generous bound, and changes nothing."""
    path = tmp_path / "locks.db"
    store = seeded_store(path, journal_mode)
    d = store.get_dict("d")
    before = d.copy()
    holder = holder_factory(path)

    t0 = time.monotonic()
    with pytest.raises(mn.LockTimeout) as info:
        WRITES[op](store, d)
    waited = time.monotonic() - t0
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, mn.MultinodeError)
    _assert_names_file_and_wait(info.value, path)
    assert TIMEOUT * 0.9 <= waited <= TIMEOUT + SLACK, waited

    holder.release()
    assert d.copy() == before, "a timed-out write changed the dict"
    WRITES[op](store, d)  # and the same call works once the lock is free
    store.close()


@pytest.mark.parametrize("op", ["setitem", "iadd", "transaction"])
def test_write_waits_for_lock_released_in_time(
    tmp_path: Path,
    journal_mode: str,
    op: str,
    holder_factory: Callable[..., LockHolder],
) -> None:
    """A lock released before the timeout is waited for: the write, retried
    with backoff, succeeds and is seen by a fresh process."""
    path = tmp_path / "locks.db"
    store = seeded_store(path, journal_mode, timeout=10.0)
    d = store.get_dict("d")
    holder = holder_factory(path)
    timer = threading.Timer(0.7, holder.release)
    timer.start()
    try:
        t0 = time.monotonic()
        WRITES[op](store, d)
        waited = time.monotonic() - t0
    finally:
        timer.join(30)
    assert not timer.is_alive()
    assert waited >= 0.5, f"the write did not wait for the lock ({waited} s)"
    expected = {"a": 1, "s": 5, "l": [1]}
    expected |= {
        "setitem": {"b": 2},
        "iadd": {"s": 6},
        "transaction": {"t": 1, "u": 2},
    }[op]
    store.close()
    seen = fresh_read(path, ["d"], tmp_path / "r")
    assert dict(seen["d"]["items"]) == expected


def test_reads_work_while_write_lock_held(
    tmp_path: Path, journal_mode: str, holder_factory: Callable[..., LockHolder]
) -> None:
    """While another process holds the write lock (not yet committing), every
    read works, also through a Store opened meanwhile."""
    path = tmp_path / "locks.db"
    store = seeded_store(path, journal_mode, timeout=2.0)
    d = store.get_dict("d")
    holder = holder_factory(path)
    try:
        assert d["a"] == 1
        assert d.get("s") == 5
        assert "l" in d and "zz" not in d
        assert len(d) == 3 and bool(d)
        assert list(d) == ["a", "s", "l"]
        assert d.copy() == {"a": 1, "s": 5, "l": [1]}
        assert store.dicts() == ["d"]
        with mn.Store(path, timeout=2.0) as other:
            assert other.get_dict("d")["l"] == [1]
    finally:
        holder.release()
    store.close()


def test_reads_past_timeout_under_exclusive_lock(
    tmp_path: Path, holder_factory: Callable[..., LockHolder]
) -> None:
    """In rollback-journal mode an EXCLUSIVE lock blocks readers too: past the
    timeout a read raises LockTimeout naming the file, never a raw
    sqlite3 error; afterwards reads work again."""
    path = tmp_path / "locks.db"
    store = seeded_store(path, "rollback")
    d = store.get_dict("d")
    holder = holder_factory(path, "BEGIN EXCLUSIVE")
    t0 = time.monotonic()
    with pytest.raises(mn.LockTimeout) as info:
        d["a"]
    assert time.monotonic() - t0 <= TIMEOUT + SLACK
    _assert_names_file_and_wait(info.value, path)
    holder.release()
    assert d["a"] == 1
    store.close()


@pytest.mark.parametrize("where", ["new_thread", "new_process"])
def test_new_connection_waits_for_lock_released_in_time(
    tmp_path: Path, where: str, holder_factory: Callable[..., LockHolder]
) -> None:
    """A connection opened while an EXCLUSIVE lock is held (rollback journal:
    a new thread's first call, or a fresh process opening the store) waits
    for it like any other call, instead of failing after SQLite's own busy
    slice."""
    path = tmp_path / "locks.db"
    store = seeded_store(path, "rollback", timeout=10.0)
    d = store.get_dict("d")
    holder = holder_factory(path, "BEGIN EXCLUSIVE")
    timer = threading.Timer(1.0, holder.release)
    timer.start()
    try:
        if where == "new_process":
            got = run_worker(
                "open_and_read",
                path=str(path),
                name="d",
                key="a",
                timeout_s=10.0,
                out=str(tmp_path / "o"),
            )
        else:
            got = {}

            def read() -> None:
                t0 = time.monotonic()
                try:
                    got["value"] = d["a"]
                except Exception as exc:
                    got["error"] = f"{type(exc).__name__}: {exc}"
                got["elapsed"] = time.monotonic() - t0

            t = threading.Thread(target=read)
            t.start()
            t.join(30)
            assert not t.is_alive()
    finally:
        timer.join(30)
    assert got.get("value") == 1, got
    store.close()


def test_commit_blocked_by_reader_times_out_cleanly(
    tmp_path: Path, holder_factory: Callable[..., LockHolder]
) -> None:
    """Rollback journal: a reader holding its SHARED lock past the timeout
    keeps a writer from committing; the write raises LockTimeout, is not
    applied, and leaves no lock behind (another process can write at once)."""
    path = tmp_path / "locks.db"
    store = seeded_store(path, "rollback")
    d = store.get_dict("d")
    holder = holder_factory(path, "BEGIN")
    with pytest.raises(mn.LockTimeout) as info:
        d["b"] = 2
    _assert_names_file_and_wait(info.value, path)
    holder.release()
    assert "b" not in d
    db = sqlite3.connect(str(path), timeout=0.1, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    finally:
        db.close()
    d["b"] = 2
    assert d.copy() == {"a": 1, "s": 5, "l": [1], "b": 2}
    store.close()


def test_lock_timeout_pickles(
    tmp_path: Path, holder_factory: Callable[..., LockHolder]
) -> None:
    """A LockTimeout crosses process boundaries: it pickles with its type and
    message."""
    path = tmp_path / "locks.db"
    store = seeded_store(path, "wal")
    holder_factory(path)
    with pytest.raises(mn.LockTimeout) as info:
        store.get_dict("d")["b"] = 2
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is mn.LockTimeout and str(again) == str(info.value)
    store.close()


def test_transaction_in_another_thread_times_out_writer(
    tmp_path: Path, journal_mode: str
) -> None:
    """A transaction belongs to its thread: another thread's write waits for
    it, and past the timeout gets LockTimeout; once it commits, writes work."""
    path = tmp_path / "locks.db"
    store = seeded_store(path, journal_mode)
    d = store.get_dict("d")
    entered, leave = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with store.transaction():
                d["held"] = 1
                entered.set()
                leave.wait(30)
        except BaseException as exc:
            errors.append(exc)
            entered.set()

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert entered.wait(30)
        with pytest.raises(mn.LockTimeout) as info:
            d["b"] = 2
        _assert_names_file_and_wait(info.value, path)
    finally:
        leave.set()
        t.join(30)
    assert not t.is_alive() and errors == []
    d["b"] = 2
    assert d.copy() == {"a": 1, "s": 5, "l": [1], "held": 1, "b": 2}
    store.close()


def test_holder_helper_really_holds_the_lock(
    tmp_path: Path, holder_factory: Callable[..., LockHolder]
) -> None:
    """Guard for the tests above: raw sqlite3 itself is locked out by the
    holder (so a passing write really waited)."""
    path = tmp_path / "locks.db"
    seeded_store(path, "wal").close()
    holder = holder_factory(path)
    db = sqlite3.connect(str(path), timeout=0.1, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        db.execute("BEGIN IMMEDIATE")
    db.close()
    holder.release()
