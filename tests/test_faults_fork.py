"""fork() (DESIGN section 4): a child that inherited a store keeps working and
loses nothing, a fork waits for another thread's transaction, and past the
store's timeout the child refuses to touch the store.

Every scenario runs in a process of its own (``_workers_faults``) and forks
there, so pytest itself never forks and a hang is bounded by killing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _workers_faults import fresh_read, integrity, run_worker

pytestmark = [
    pytest.mark.fault,
    pytest.mark.processes,
    pytest.mark.timeout(300),
]

N = 100


@pytest.mark.parametrize("overlap", [False, True], ids=["child_first", "overlap"])
@pytest.mark.parametrize("child_exit", ["exit", "_exit"])
def test_fork_child_writes_survive_parent_close(
    tmp_path: Path, journal_mode: str, child_exit: str, overlap: bool
) -> None:
    """A parent that has used its store forks; the child writes N keys and
    exits 0; the parent writes and closes (after the child ended, or while
    the child is between writes); a fresh process sees every write of both
    (repeated, since the hazard is a race)."""
    path = tmp_path / "fork.db"
    for attempt in range(3):
        out = tmp_path / f"hazard{attempt}.pickle"
        got = run_worker(
            "fork_hazard_overlap" if overlap else "fork_hazard",
            path=str(path),
            mode=journal_mode,
            n=N,
            child_exit=child_exit,
            out=str(out),
        )
        assert got["child_rc"] == 0, f"attempt {attempt}: {got['child_error']}"
        assert integrity(path) == "ok", f"attempt {attempt}"
        seen = fresh_read(path, ["hazard"], tmp_path / f"read{attempt}.pickle")
        items = dict(seen["hazard"]["items"])
        lost_c = [i for i in range(N) if items.get(f"c{i}") != i]
        lost_p = [i for i in range(N) if items.get(f"p{i}") != i]
        assert lost_c == [] and lost_p == [], f"attempt {attempt}: lost writes"
        assert items["parent_before"] == items["parent_after"] == 1
        assert "child_n" in items
        assert seen["hazard"]["len"] == 2 * N + 3


def test_fork_start_method_with_inherited_dict(
    tmp_path: Path, journal_mode: str
) -> None:
    """Three children of the ``fork`` start method use the parent's dict
    object while the parent writes too: nothing is lost and ``+=`` stays
    atomic across all four."""
    path = tmp_path / "mp.db"
    got = run_worker(
        "fork_mp", path=str(path), mode=journal_mode, n=N, out=str(tmp_path / "o")
    )
    assert got["codes"] == [0, 0, 0]
    assert integrity(path) == "ok"
    items = dict(fresh_read(path, ["mpfork"], tmp_path / "r")["mpfork"]["items"])
    assert items["n"] == 4 * N
    for j in range(3):
        assert [items.get(f"c{j}.{i}") for i in range(N)] == list(range(N))
    assert [items.get(f"p{i}") for i in range(N)] == list(range(N))
    assert items["parent_after"] == 1


@pytest.mark.parametrize("child_exit", ["exit", "_exit"])
def test_fork_waits_for_another_threads_transaction(
    tmp_path: Path, journal_mode: str, child_exit: str
) -> None:
    """A fork while another thread is inside ``store.transaction()`` waits
    for it to end: no deadlock, the transaction commits, and the child, which
    sees it committed, works."""
    path = tmp_path / "tx.db"
    got = run_worker(
        "fork_in_transaction",
        timeout=60,
        path=str(path),
        mode=journal_mode,
        timeout_s=None,
        hold=1.0,
        child_exit=child_exit,
        out=str(tmp_path / "o"),
    )
    assert got["thread"] == {"committed": True}
    assert got["child_rc"] == 0
    child = got["child"]
    assert child["get_t2"] == ("ok", "2"), child
    for label in ("set", "len", "iter", "transaction", "get_dict"):
        assert child[label][0] == "ok", (label, child)
    assert integrity(path) == "ok"
    items = dict(fresh_read(path, ["tx"], tmp_path / "r")["tx"]["items"])
    assert items == {
        "before": 1,
        "t1": 1,
        "t2": 2,
        "child": 1,
        "child_tx": 1,
        "parent_after": 1,
    }


@pytest.mark.parametrize("read", [False, True], ids=["write", "read"])
def test_fork_does_not_wait_for_another_threads_lock_wait(
    tmp_path: Path, journal_mode: str, read: bool
) -> None:
    """A thread waiting for a lock outside a transaction holds nothing a
    fork could break, so the fork goes ahead at once rather than waiting up
    to the store's timeout (20 s here) for that wait to end; the waiter then
    reconnects and finishes."""
    if read and journal_mode == "wal":
        pytest.skip("in WAL mode no lock keeps a reader waiting")
    got = run_worker(
        "fork_during_lock_wait",
        timeout=120,
        path=str(tmp_path / "w.db"),
        mode=journal_mode,
        read=read,
        out=str(tmp_path / "o"),
    )
    assert got["child_rc"] == 0
    assert got["fork_returned_after"] < 10, got
    assert "error" not in got["waiter"], got
    assert got["after"] == (0 if read else 1)


@pytest.mark.parametrize("child_exit", ["exit", "_exit"])
def test_fork_past_timeout_child_refuses_store(
    tmp_path: Path, journal_mode: str, child_exit: str
) -> None:
    """When another thread's transaction outlasts the store's timeout, the
    fork goes ahead, the child gets ``mn.ForkError`` for every use of the
    store, and the parent's transaction still commits intact."""
    path = tmp_path / "tx.db"
    got = run_worker(
        "fork_in_transaction",
        timeout=60,
        path=str(path),
        mode=journal_mode,
        timeout_s=0.5,
        hold=1.2,
        child_exit=child_exit,
        out=str(tmp_path / "o"),
    )
    assert got["thread"] == {"committed": True}
    assert got["child_rc"] == 0
    child = got["child"]
    for label in ("get_t2", "set", "len", "iter", "transaction", "get_dict"):
        assert child[label][0] == "ForkError", (label, child)
    assert "fork" in child["set"][1].lower(), child["set"]
    assert integrity(path) == "ok"
    items = dict(fresh_read(path, ["tx"], tmp_path / "r")["tx"]["items"])
    assert items == {"before": 1, "t1": 1, "t2": 2, "parent_after": 1}


def test_fork_inside_own_transaction(tmp_path: Path, journal_mode: str) -> None:
    """A fork from inside the forking thread's own transaction: the child
    gets ForkError for every use of the store; the parent's transaction,
    including what it wrote after the fork, commits."""
    path = tmp_path / "own.db"
    got = run_worker(
        "fork_inside_own_transaction",
        path=str(path),
        mode=journal_mode,
        out=str(tmp_path / "o"),
    )
    assert got["child_rc"] == 0
    assert got["child"] == {"get": "ForkError", "len": "ForkError"}
    items = dict(fresh_read(path, ["own"], tmp_path / "r")["own"]["items"])
    assert items == {"before": 1, "in_tx": 1, "after_fork": 1}


def test_fork_while_another_thread_writes(tmp_path: Path, journal_mode: str) -> None:
    """Forks while another thread writes without pause neither deadlock nor
    lose anything: every child's writes and every write the thread was
    acknowledged are there."""
    path = tmp_path / "busy.db"
    forks, n = 6, 20
    got = run_worker(
        "fork_with_busy_thread",
        path=str(path),
        mode=journal_mode,
        forks=forks,
        n=n,
        out=str(tmp_path / "o"),
    )
    assert got["errors"] == []
    assert got["codes"] == [0] * forks
    assert got["acked"] > 0
    assert integrity(path) == "ok"
    items = dict(fresh_read(path, ["busy"], tmp_path / "r")["busy"]["items"])
    assert [i for i in range(got["acked"]) if items.get(f"t{i}") != i] == []
    for f in range(forks):
        assert [items.get(f"c{f}.{i}") for i in range(n)] == list(range(n))
