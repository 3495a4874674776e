"""Faults found by trying to break the product, each pinned by a test.

Every test here failed before its fix.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import multinode as mn
from multinode import _sql, _store

_REPO = Path(__file__).resolve().parent.parent


def _run(script: str, tmp_path: Path) -> str:
    """Run `script` in a fresh interpreter; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.fault
@pytest.mark.processes
@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "raise SystemExit(3)"])
def test_child_forked_in_a_transaction_leaves_it_whole(
    tmp_path: Path, journal_mode: str, exit_call: str
) -> None:
    """A child forked inside the parent's transaction that then exits
    normally must not close (and so roll back part of) the parent's
    transaction through the connection it inherited."""
    out = _run(
        f"""
        import os, sys, multinode as mn
        s = mn.Store("{tmp_path}/s.db", journal_mode="{journal_mode}")
        d = s.get_dict("c")
        d.update({{f"k{{i}}": "o" * 500 for i in range(5000)}})
        with s.transaction():
            for i in range(5000):
                d[f"k{{i}}"] = "n" * 500  # more than the page cache holds
            if os.fork() == 0:
                {exit_call}
            os.wait()
        print(sum(d[f"k{{i}}"] == "n" * 500 for i in range(5000)))
        """,
        tmp_path,
    )
    assert out == "5000"


def test_a_store_with_several_hard_links_is_refused(tmp_path: Path) -> None:
    """SQLite names journals after the path, so two links to one store would
    keep two journals and lose writes: such a store is refused."""
    path = tmp_path / "s.db"
    with mn.Store(path) as store:
        store.get_dict("d")["n"] = 0
    os.link(path, tmp_path / "other.db")
    for name in ("s.db", "other.db"):
        with pytest.raises(mn.UnsafeFilesystemError, match="hard links"):
            mn.Store(tmp_path / name)


def test_iterating_a_dict_deleted_meanwhile_raises(store: mn.Store) -> None:
    """An iterator whose dict is deleted mid-way raises DictDeletedError
    instead of quietly ending early."""
    d = store.get_dict("d")
    d.update({i: i for i in range(3000)})
    it = iter(d)
    assert [next(it) for _ in range(10)] == list(range(10))
    mn.Store(store.path).delete_dict("d")
    with pytest.raises(mn.DictDeletedError):
        list(it)


def test_a_pickled_handle_does_not_bring_a_deleted_dict_back(
    store: mn.Store,
) -> None:
    """A handle that crosses to another process stays the same dict: once
    deleted, it raises there too instead of creating a new one."""
    d = store.get_dict("x")
    d["k"] = 1
    copy = pickle.loads(pickle.dumps(d))
    assert copy["k"] == 1
    store.delete_dict("x")
    with pytest.raises(mn.DictDeletedError):
        copy["k"] = 2
    assert store.dicts() == []


@pytest.mark.parametrize("view", ["keys", "values", "items"])
def test_view_iterators_begin_at_iter(store: mn.Store, view: str) -> None:
    """A key inserted after iter(d.items()) (or keys, values) is not yielded,
    just as with iter(d)."""
    d = store.get_dict("d")
    d["a"] = 1
    it = iter(getattr(d, view)())
    d["late"] = 2
    assert len(list(it)) == 1


def test_update_with_big_values_keeps_order_and_last_wins(
    store: mn.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """update() with values split into chunks keeps dict.update's order and
    its rule that the last pair for a key wins."""
    monkeypatch.setattr(_store, "CHUNK_SIZE", 1000)
    d = store.get_dict("d")
    big = b"\x01" * 5000
    d.update({"a": big, "b": b"s"})
    assert list(d) == ["a", "b"]
    d.update([("k", big), ("k", b"small")])
    assert d["k"] == b"small"


def test_an_empty_database_of_another_application_is_left_alone(
    tmp_path: Path,
) -> None:
    """A SQLite file with no tables but a user_version of its own is another
    application's: refused and left byte for byte as it was."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    before = path.read_bytes()
    with pytest.raises(mn.NotAStoreError):
        mn.Store(path)
    assert path.read_bytes() == before


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A path that is a FIFO is not a store; opening it must not block."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    with pytest.raises(mn.NotAStoreError, match="regular file"):
        mn.Store(path, timeout=1)


def test_get_dict_works_after_its_store_was_closed(store_path: Path) -> None:
    """Closing the default store through a dict's .store does not break
    get_dict for the rest of the process."""
    mn.get_dict("a")["x"] = 1
    mn.get_dict("a").store.close()
    assert mn.get_dict("a")["x"] == 1


def test_the_last_dict_id_works_and_the_next_is_refused(tmp_path: Path) -> None:
    """Found by the breaker: the highest id get_dict accepted overflowed the
    position arithmetic, so that dict could never hold an item."""
    path = tmp_path / "s.db"
    mn.Store(path).get_dict("first")["k"] = 1
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "UPDATE sqlite_sequence SET seq = ? WHERE name = 'mn_dict'",
        (_sql.MAX_DICT_ID - 1,),
    )
    db.close()
    with mn.Store(path) as store:
        last = store.get_dict("last")
        last["a"] = 1
        last["b"] = 2
        del last["a"]
        last["c"] = 3
        assert list(last.items()) == [("b", 2), ("c", 3)] and len(last) == 2
        with pytest.raises(mn.MultinodeError, match="the most one store can"):
            store.get_dict("one too many")
        assert store.dicts() == ["first", "last"]
        assert store.check() == []
