"""Big values: the hand-built pickles of big bytes and str, and the chunks of
values too big for one SQLite BLOB, which every kind of replacement and
removal must take away with the old value."""

from __future__ import annotations

import io
import pickle
import pickletools
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import multinode as mn
from multinode import _store
from multinode._codec import pickle_dumps

EDGE = 64 * 1024


class Blob(bytes):
    pass


class Text(str):
    pass


@pytest.mark.parametrize("size", [0, 1, EDGE - 1, EDGE, EDGE + 1, 3 * EDGE + 7])
@pytest.mark.parametrize(
    "make",
    [
        lambda n: bytes(range(256)) * (n // 256) + b"\x00" * (n % 256),
        lambda n: "a" * n,
        lambda n: ("\u00e9\U0001f600\udc80" * n)[:n],  # lone surrogates too
        lambda n: Blob(b"x" * n),
        lambda n: Text("y" * n),
    ],
    ids=["bytes", "ascii", "surrogates", "bytes-subclass", "str-subclass"],
)
def test_pickles_load_back_equal_and_of_the_same_type(size: int, make: Any) -> None:
    value = make(size)
    data = pickle_dumps(value, "here")
    pickletools.dis(data, out=io.StringIO())  # well-formed opcodes
    back = pickle.loads(data)
    assert back == value and type(back) is type(value)


def _chunks(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        (count,) = db.execute("SELECT count(*) FROM mn_chunk").fetchone()
        return int(count)
    finally:
        db.close()


@pytest.mark.parametrize("journal_mode", ["wal", "rollback"])
def test_every_replacement_and_removal_takes_the_old_chunks_away(
    tmp_path: Path, journal_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "CHUNK_SIZE", 1000)
    path = tmp_path / "s.db"
    big = b"\x07" * 4500  # five chunks
    with mn.Store(path, journal_mode=journal_mode) as store:
        d = store.get_dict("d")
        steps: list[tuple[str, Any, int]] = [
            ("set big", lambda: d.__setitem__("k", big), 5),
            ("set small", lambda: d.__setitem__("k", b"s"), 0),
            ("+= to big", lambda: _iadd(d, "k", big), 5),
            ("+= stays big", lambda: _iadd(d, "k", b"!" * 1000), 6),
            (
                "CAS to small",
                lambda: d.update("k", new_value=b"t", expected_current_value=d["k"]),
                0,
            ),
            (
                "CAS to big",
                lambda: d.update("k", new_value=big, expected_current_value=b"t"),
                5,
            ),
            ("update() to small", lambda: d.update({"k": b"u"}), 0),
            ("set big again", lambda: d.__setitem__("k", big), 5),
            ("del", lambda: d.__delitem__("k"), 0),
            ("set_if_absent big", lambda: d.set_if_absent("k", value=big), 5),
            ("pop", lambda: d.pop("k"), 0),
            ("setdefault big", lambda: d.setdefault("k", big), 5),
            ("popitem", lambda: d.popitem(), 0),
            ("set two big", lambda: d.update({"a": big, "b": big}), 10),
            ("clear", lambda: d.clear(), 0),
            (
                "set big in a new dict",
                lambda: store.get_dict("e").__setitem__("x", big),
                5,
            ),
            ("delete_dict", lambda: store.delete_dict("e"), 0),
        ]
        for what, step, chunks in steps:
            step()
            assert _chunks(path) == chunks, what
            assert store.check() == [], what
        d["k"] = big + b"!"
        assert d["k"] == big + b"!"


def _iadd(d: Any, key: str, operand: bytes) -> None:
    d[key] += operand


def test_check_finds_chunks_that_belong_to_no_value(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with mn.Store(path) as store:
        store.get_dict("d")["k"] = b"inline"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("INSERT INTO mn_chunk (pos, n, data) SELECT pos, 0, x'00' FROM mn_item")
    db.execute("INSERT INTO mn_chunk (pos, n, data) VALUES (12345, 0, x'00')")
    db.close()
    with mn.Store(path) as store:
        assert store.check() == ["2 chunks belong to no big value"]


def test_dump_skips_a_big_value_removed_and_reads_one_shrunk_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the breaker: `multinode dump` read a big value's chunks in a
    later snapshot than its row, and wrote an empty value for an item that
    another process had deleted, or shrunk into its row, in between."""
    monkeypatch.setattr(_store, "CHUNK_SIZE", 1000)
    with mn.Store(tmp_path / "s.db") as store:
        d = store.get_dict("d")
        d.update({"a": b"A" * 5000, "b": b"B" * 5000, "c": b"C" * 5000})
        raw = d._raw_items()  # what the command line's dump iterates
        assert next(raw)[0] == "a"
        del d["b"]
        d["c"] = "small"
        assert [(key, pickle.loads(data)) for key, data in raw] == [("c", "small")]


def test_check_finds_big_values_missing_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "CHUNK_SIZE", 1000)
    path = tmp_path / "s.db"
    with mn.Store(path) as store:
        d = store.get_dict("d")
        d.update({"gap": b"g" * 3500, "none": b"n" * 2500, "whole": b"w" * 2500})
        assert store.check() == []
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "DELETE FROM mn_chunk WHERE n = 1 AND pos = "
        "(SELECT pos FROM mn_item WHERE key = 'gap')"
    )
    db.execute(
        "DELETE FROM mn_chunk WHERE pos = (SELECT pos FROM mn_item WHERE key = 'none')"
    )
    db.close()
    with mn.Store(path) as store:
        assert store.check() == ["2 big values are missing chunks"]
