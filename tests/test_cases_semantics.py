"""Field cases B01, B02, B09, B12, B16, B17 and B26 from CASES.md.

Each test checks the right outcome exactly as the case states it; "a fresh
process" is a real spawned interpreter reading the default store, which
``MULTINODE_STORE`` (inherited) points at.
"""

from __future__ import annotations

import enum
import os
import sqlite3
from collections import OrderedDict
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from _workers_core import run_workers, strict_equal

import multinode as mn


def fresh(fn_name: str, *args: Any) -> Any:
    """Run one worker in a freshly spawned process and return its result."""
    return run_workers("spawn", fn_name, [args])[0]


def assert_items(got: list[tuple[Any, Any]], want: list[tuple[Any, Any]]) -> None:
    assert strict_equal(got, want), f"{got!r} != {want!r}"


# --- B01 ----------------------------------------------------------------------


@pytest.mark.processes
@pytest.mark.parametrize("mixed", [False, True], ids=["all+=1", "half+=2"])
def test_b01_iadd_loses_no_update(store_path: Path, mixed: bool) -> None:
    """B01: 4 processes x 2 threads x 1000 ``d["n"] += 1`` (or half of them
    500 x ``+= 2``) leave d["n"] == 8000, an int, seen by a fresh process."""
    d = mn.get_dict(name="b01")
    d["n"] = 0
    args = [("b01", 1, 1000)] * 4
    if mixed:
        args = [("b01", 1, 1000)] * 2 + [("b01", 2, 500)] * 2
    done = run_workers("spawn", "b01_worker", args, timeout=300)
    assert sum(done) == 8000
    items = dict(fresh("read_default_items", "b01"))
    assert items["n"] == 8000
    assert type(items["n"]) is int


# --- B02 ----------------------------------------------------------------------


@pytest.mark.processes
def test_b02_set_if_absent_and_setdefault_race(store_path: Path) -> None:
    """B02: of 16 racing processes exactly one set_if_absent wins and its pid
    is stored; all setdefault results agree with d["z"]; a second round gives
    16 x False; a key holding None is present."""
    d = mn.get_dict(name="b02")
    results = run_workers("spawn", "b02_worker", [("b02",)] * 16, timeout=300)
    winners = [pid for pid, won, _ in results if won is True]
    assert len(winners) == 1
    assert sum(1 for _, won, _ in results if won is False) == 15
    assert d["y"] == winners[0]
    got = {g for _, _, g in results}
    assert len(got) == 1
    assert d["z"] == got.pop()

    # Again, with "y" already present ("fork" keeps this round quick).
    before = d["y"]
    again = run_workers("fork", "b02_worker", [("b02",)] * 16, timeout=300)
    assert [won for _, won, _ in again] == [False] * 16
    assert d["y"] == before

    d["none"] = None
    r = d.set_if_absent("none", value=1)
    assert r is False
    assert d["none"] is None


# --- B09 ----------------------------------------------------------------------


class Colour(enum.IntEnum):
    RED = 1


def _b09_statements(t: Any) -> None:
    t["1"] = "str"
    t[1] = "int"
    t[1.0] = "float"
    t[(1, 2)] = "tuple"
    t[0.0] = "zero"
    t[2**64] = "big"
    t[-(2**63) - 1] = "small"


@pytest.mark.processes
def test_b09_key_identity_follows_eq_and_hash(store_path: Path) -> None:
    """B09: equal keys are one entry with the first-stored form, like a dict;
    a fresh process sees the same keys, types and order; CAS uses ==;
    unsupported key types raise TypeError and are never stored."""
    d = mn.get_dict(name="b09")
    ref: dict[Any, Any] = {}
    _b09_statements(d)
    _b09_statements(ref)

    assert len(d) == 6
    assert d["1"] == "str"
    assert d[1] == d[True] == d[1.0] == "float"
    assert type(list(d)[1]) is int
    assert d[(1.0, 2)] == "tuple"
    assert d[-0.0] == d[False] == "zero"
    assert d[2**64] == "big"
    assert d[-(2**63) - 1] == "small"
    assert_items(list(d.items()), list(ref.items()))
    assert_items(fresh("read_default_items", "b09"), list(ref.items()))

    assert d.update(1, new_value="x", expected_current_value="float") is True
    assert d[1] == "x"
    assert type(list(d)[1]) is int

    bad: list[Any] = [
        frozenset({1}),
        1j,
        Decimal(1),
        Fraction(1),
        Colour.RED,
        object(),
        (1, frozenset()),
        [1],
    ]
    for k in bad:
        with pytest.raises(TypeError):
            d[k] = "bad"
    with pytest.raises((TypeError, ValueError)):
        d[float("nan")] = "bad"
    with pytest.raises((TypeError, ValueError)):
        d[(1, float("nan"))] = "bad"
    assert len(d) == 6
    assert d[1] == "x"
    assert "bad" not in d.values()


# --- B12 ----------------------------------------------------------------------


@pytest.mark.processes
def test_b12_mutating_a_copy_saves_nothing(store_path: Path) -> None:
    """B12: ``d["l"].append(1)`` changes a copy only; reassignment and ``+=``
    do save; 4 processes x 100 ``d["acc"] += [pid]`` leave 400 items."""
    d = mn.get_dict(name="b12")
    d["l0"] = []
    d["l0"].append(1)
    a = d["l0"]
    assert a == []
    assert mn.get_dict(name="b12")["l0"] == []

    d["l"] = []
    d["l"].append(1)
    assert d["l"] == []
    v = d["l"]
    v.append(1)
    d["l"] = v
    assert d["l"] == [1]
    d["l"] += [2]
    assert d["l"] == [1, 2]

    d["acc"] = []
    pids = run_workers("spawn", "b12_worker", [("b12", 100)] * 4, timeout=300)
    assert pids == [100] * 4
    acc = d["acc"]
    assert len(acc) == 400
    assert sorted(acc.count(p) for p in set(acc)) == [100] * 4

    seen = dict(fresh("read_default_items", "b12"))
    assert seen["l0"] == []
    assert seen["l"] == [1, 2]
    assert len(seen["acc"]) == 400


def test_b12_copy_semantics_are_documented_next_to_iadd() -> None:
    """B12: the README says values are copies, next to the atomic ``+=``."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    lines = readme.read_text(encoding="utf-8").lower().splitlines()
    copies = [i for i, line in enumerate(lines) if "copy" in line or "copies" in line]
    iadds = [i for i, line in enumerate(lines) if "+= [" in line]
    appends = [i for i, line in enumerate(lines) if '"].append(' in line]
    assert any(abs(c - a) <= 20 for c in copies for a in iadds)
    assert any(abs(c - a) <= 20 for c in copies for a in appends)


# --- B16 ----------------------------------------------------------------------


@pytest.mark.processes
def test_b16_json_never_alters_values(store_path: Path) -> None:
    """B16: in JSON mode int and str keys stay distinct, and every value JSON
    cannot round-trip exactly is refused at write time, leaving no key."""
    d = mn.get_dict(name="b16", serializer="json")
    d[1] = "int-key"
    d["1"] = "str-key"
    rejected = [
        ("nan", float("nan")),
        ("m", {1: "a"}),
        ("t", (1, 2)),
        ("s", {1, 2}),
        ("b", b"x"),
        ("inf", float("inf")),
        ("nested", {"a": [1, (2,)]}),
        ("od", OrderedDict(a=1)),
        ("deep", [{"k": {"x": {3, 4}}}]),
        ("enum", Colour.RED),
    ]
    for k, v in rejected:
        with pytest.raises((TypeError, ValueError)):
            d[k] = v
    assert len(d) == 2
    assert d[1] == "int-key"
    assert d["1"] == "str-key"
    for k, _ in rejected:
        assert k not in d

    kept = {"a": [1, 2.0, None, True, "x"], "b": {"c": -0.0}, "e": {}}
    d["ok"] = kept
    assert strict_equal(d["ok"], kept)
    want = [(1, "int-key"), ("1", "str-key"), ("ok", kept)]
    assert_items(fresh("read_default_items", "b16"), want)


# --- B17 ----------------------------------------------------------------------

B17_VALUES = {"none": None, "zero": 0, "empty": "", "false": False, "el": [], "ed": {}}


@pytest.mark.processes
def test_b17_falsy_values_are_present(store_path: Path) -> None:
    """B17: None, 0, "", False, [] and {} are values, in the writer and in a
    fresh process; missing keys raise KeyError or give the default."""
    d = mn.get_dict(name="b17")
    for k, v in B17_VALUES.items():
        d[k] = v

    assert len(d) == 6
    for k, v in B17_VALUES.items():
        assert k in d
        assert strict_equal(d[k], v)
        assert strict_equal(d.get(k, "D"), v)
    assert d["none"] is None
    assert d["false"] is False
    assert fresh("b17_reads", "b17") is True

    assert d.setdefault("zero", 99) == 0
    assert d.pop("none", "D") is None
    assert "none" not in d
    assert d.set_if_absent("false", value=1) is False
    assert d["false"] is False

    assert d.get("missing") is None
    assert d.get("missing", "D") == "D"
    with pytest.raises(KeyError):
        d["missing"]
    with pytest.raises(KeyError):
        del d["missing"]
    with pytest.raises(KeyError):
        d.pop("missing")


# --- B26 ----------------------------------------------------------------------

B26_NAMES = [
    'x"; DROP TABLE t; --',
    "a'b",
    "a]b",
    "sqlite_master",
    "sqlite_x",
    "../escape",
    "a/b",
    "\u540d\u524d",
    " ",
    "X",
    "x",
    "n" * 300,
]


@pytest.mark.processes
def test_b26_names_are_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B26: 12 hostile or look-alike names are 12 separate dicts, read back by
    a fresh process; nothing appears outside ROOT; integrity_check is ok."""
    root = tmp_path / "root"
    root.mkdir()
    path = root / "store.db"
    monkeypatch.setenv("MULTINODE_STORE", str(path))

    for n in B26_NAMES:
        mn.get_dict(name=n)["k"] = n
    assert [mn.get_dict(name=n)["k"] for n in B26_NAMES] == B26_NAMES
    assert fresh("read_named", B26_NAMES) == B26_NAMES
    assert mn.get_dict(name="X")["k"] == "X"
    assert mn.get_dict(name="x")["k"] == "x"

    try:
        empty = mn.get_dict(name="")
    except ValueError:
        pass
    else:
        empty["k"] = ""
        assert empty["k"] == ""
    assert [mn.get_dict(name=n)["k"] for n in B26_NAMES] == B26_NAMES

    with mn.Store(path) as s:
        assert set(B26_NAMES) <= set(s.dicts())
        assert s.check() == []
    assert sorted(os.listdir(tmp_path)) == ["root"]
    allowed = {"store.db", "store.db-wal", "store.db-shm", "store.db-journal"}
    assert set(os.listdir(root)) <= allowed
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    finally:
        con.close()
    assert not tables & {"t", "x", "X", "a'b", "escape"}
