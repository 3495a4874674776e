"""A store written by an older format version is upgraded in place when it
is opened, inside one transaction, and keeps every item, its order and its
length."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import pytest

import multinode as mn
from multinode import _sql

# How format 2 inserted an item: the catalog's last_pos was the highest
# position, kept by the trigger that version 3 drops.
_V2_PUT = """
INSERT INTO mn_item (key, key_form, value, pos, dict) VALUES (
    ?, NULL, ?,
    (SELECT last_pos + 1 FROM mn_dict WHERE id = ?),
    (SELECT id FROM mn_dict WHERE id = ?)
)
"""


def _format_2_store(path: Path, journal: str) -> None:
    """A store as multinode wrote it at format 2: two dicts, with removals
    in the middle and at the end, so that the highest position is gone."""
    db = sqlite3.connect(path, isolation_level=None)
    if journal == "wal":
        db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    for statements in _sql.MIGRATIONS[:2]:
        for statement in statements:
            db.execute(statement)
    db.execute(_sql.SET_APPLICATION_ID)
    db.execute(_sql.SET_FORMAT_VERSION.format(version=2))
    for name in (b"jobs", b"empty"):
        db.execute(_sql.CREATE_DICT, (name, "pickle"))
        (dict_id,) = db.execute(_sql.FIND_DICT, (name,)).fetchone()[:1]
        db.execute(_sql.START_POSITIONS, (dict_id,))
    for n in range(10):
        db.execute(_V2_PUT, (f"k{n}", pickle.dumps(n), 1, 1))
    db.execute("DELETE FROM mn_item WHERE dict = 1 AND key IN ('k3', 'k9')")
    db.execute("COMMIT")
    db.close()


@pytest.mark.parametrize("journal", ["wal", "rollback"])
def test_format_2_store_is_upgraded_with_its_items_order_and_length(
    tmp_path: Path, journal: str
) -> None:
    path = tmp_path / "old.db"
    _format_2_store(path, journal)
    with mn.Store(path, journal_mode="auto") as store:
        d = store.get_dict("jobs")
        expected = {f"k{n}": n for n in range(10) if n not in (3, 9)}
        assert len(d) == len(expected)
        assert list(d.items()) == list(expected.items())
        assert len(store.get_dict("empty")) == 0
        # The removed last key's position is not reused: a new key goes
        # after every earlier one, and an old iterator does not meet it.
        it = iter(d)
        d["new"] = "n"
        assert list(it) == list(expected)
        assert list(d)[-1] == "new"
        assert len(d) == len(expected) + 1
        assert store.check() == []
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (_sql.FORMAT_VERSION,)
        columns = {row[1] for row in db.execute("PRAGMA table_info(mn_dict)")}
        assert "length" not in columns and "removed" in columns
    finally:
        db.close()


def test_removing_the_newest_item_never_frees_its_position(tmp_path: Path) -> None:
    """Without a trigger on insert, the highest position comes from the
    newest item or, once that is removed, from the catalog: either way a
    position is used once."""
    with mn.Store(tmp_path / "s.db") as store:
        d = store.get_dict("d")
        d["a"] = 1
        d["b"] = 2
        it = iter(d)  # bound to the positions used so far
        del d["b"]
        d["c"] = 3  # must not take b's position, below the iterator's bound
        assert list(it) == ["a"]
        assert list(d) == ["a", "c"]
        assert d.popitem() == ("c", 3)
        d["e"] = 5
        assert list(d.items()) == [("a", 1), ("e", 5)]
        assert len(d) == 2
        d.clear()
        assert len(d) == 0
        d["f"] = 6
        assert list(d) == ["f"] and len(d) == 1
        assert store.check() == []


def test_check_reports_a_length_that_disagrees_with_the_items(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with mn.Store(path) as store:
        store.get_dict("d").update({"a": 1, "b": 2})
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE mn_dict SET removed = removed + 1")
    db.close()
    with mn.Store(path) as store:
        assert store.check() == ["dict 'd': length 1 but 2 items"]
