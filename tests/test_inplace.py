"""The in-place path: ``d[k] op= v`` is one atomic read-modify-write.

Each operator must give what a plain dict gives (value and type), run while
the store's write lock is held, write nothing when the value is only copied
out (``y = d[k]; y += 1``), and leave the value unchanged and no lock held
when it fails. The code shapes that reach it (functions, methods, closures,
generators, comprehensions, coroutines, class bodies, module level) each run
long enough for the interpreter to specialise the loop.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import types
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from _workers_core import LockProbe, Mat, write_lock_free

import multinode as mn

N = 2000  # long enough for the specialising interpreter to kick in
REPO = Path(__file__).resolve().parent.parent
PYTHONS = [
    Path.home() / ".pyenv" / "versions" / v / "bin" / "python"
    for v in ("3.11.7", "3.12.1", "3.13.0")
]


class Watch:
    """Sees whether anybody committed to the file since it was made."""

    def __init__(self, path: str | Path) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)
        self.start = self._version()

    def _version(self) -> int:
        return int(self.con.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        return self._version() != self.start

    def close(self) -> None:
        self.con.close()


@pytest.fixture
def watch(store: mn.Store) -> Iterator[Any]:
    """A factory of Watch objects on the store's file, closed afterwards."""
    made: list[Watch] = []

    def make() -> Watch:
        made.append(Watch(store.path))
        return made[-1]

    yield make
    for w in made:
        w.close()


# --- every operator --------------------------------------------------------

OPS = ["+=", "-=", "*=", "/=", "//=", "%=", "**=", "<<=", ">>=", "&=", "|=", "^=", "@="]

CASES: list[tuple[str, Any, Any]] = [
    ("+=", 7, 3), ("+=", 1.5, 2), ("+=", True, 1), ("+=", "ab", "c"),
    ("+=", b"ab", b"c"), ("+=", [1], [2, 3]), ("+=", (1,), (2,)),
    ("+=", [1], "xy"), ("+=", Fraction(1, 3), Fraction(1, 6)),
    ("+=", Decimal("1.1"), Decimal("2.2")), ("+=", 1 + 2j, 1j),
    ("+=", Counter(a=1), Counter(a=2, b=1)), ("+=", 2**100, 2**100),
    ("-=", 7, 10), ("-=", 0.5, 0.25), ("-=", {1, 2, 3}, {2}),
    ("-=", Counter(a=3), Counter(a=1)),
    ("*=", 7, 3), ("*=", 2.5, 2), ("*=", "ab", 3), ("*=", [0], 3),
    ("*=", 3, "x"), ("*=", False, 5),
    ("/=", 7, 2), ("/=", 7.0, 2), ("/=", Fraction(7), 2), ("/=", 8, 2),
    ("//=", 7, 2), ("//=", 7.5, 2), ("//=", -7, 2),
    ("%=", 7, 3), ("%=", 7.5, 2), ("%=", "%s-%s", (1, 2)), ("%=", -7, 3),
    ("**=", 7, 3), ("**=", 2, -1), ("**=", 2.0, 0.5), ("**=", 3, 200),
    ("<<=", 7, 3), ("<<=", 1, 200), (">>=", 7, 1), (">>=", 2**200, 190),
    ("&=", 6, 3), ("&=", True, False), ("&=", {1, 2}, {2, 3}),
    ("&=", frozenset({1, 2}), frozenset({2})),
    ("|=", 6, 3), ("|=", {1}, {2}), ("|=", {"a": 1}, {"b": 2}), ("|=", False, True),
    ("^=", 6, 3), ("^=", {1, 2}, {2, 3}), ("^=", True, True),
    ("@=", Mat(1, 2, 3, 4), Mat(0, 1, 1, 0)),
]  # fmt: skip


def _make_fn(op: str) -> Any:
    """A real function whose body is ``d[k] <op> v`` (fast locals)."""
    ns: dict[str, Any] = {}
    exec(f"def f(d, k, v):\n    d[k] {op} v\n", ns)
    return ns["f"]


def test_cases_cover_every_operator() -> None:
    """The operator table exercises all 13 in-place operators."""
    assert sorted({op for op, _, _ in CASES}) == sorted(OPS)


@pytest.mark.parametrize(("op", "start", "operand"), CASES, ids=repr)
def test_operator_matches_plain_dict(
    store: mn.Store, op: str, start: Any, operand: Any
) -> None:
    """``d[k] op= v`` leaves the value and type a plain dict would, in place."""
    d = store.get_dict("ops")
    d["before"] = 0
    d["k"] = start
    d["after"] = 0
    ref = {"before": 0, "k": start, "after": 0}
    f = _make_fn(op)
    f(ref, "k", operand)
    f(d, "k", operand)
    assert d["k"] == ref["k"]
    assert type(d["k"]) is type(ref["k"])
    assert list(d) == ["before", "k", "after"]  # the key kept its place
    assert write_lock_free(store.path)


@pytest.mark.parametrize(
    ("op", "start", "operand"),
    [
        ("+=", 1, 2), ("+=", "a", "b"), ("+=", [1], [None]), ("-=", 1.5, 1),
        ("*=", [0], 2), ("//=", 7, 2), ("/=", 7, 2), ("**=", 2, 10),
        ("|=", {"a": 1}, {"b": [2]}), ("^=", 5, 1), ("&=", True, True),
    ],
    ids=repr,
)  # fmt: skip
def test_operator_in_json_dict(
    store: mn.Store, op: str, start: Any, operand: Any
) -> None:
    """In-place operators on a JSON dict keep JSON values and their types."""
    d = store.get_dict("j", serializer="json")
    d["k"] = start
    ref = {"k": start}
    f = _make_fn(op)
    f(ref, "k", operand)
    f(d, "k", operand)
    assert d["k"] == ref["k"]
    assert type(d["k"]) is type(ref["k"])


def test_json_result_that_cannot_be_stored_changes_nothing(store: mn.Store) -> None:
    """An in-place result JSON cannot hold is refused; value and lock intact."""
    d = store.get_dict("j", serializer="json")
    d["l"] = [1]
    with pytest.raises((TypeError, ValueError)):
        d["l"] += [float("nan")]
    with pytest.raises((TypeError, ValueError)):
        d["l"] += [(1, 2)]
    assert d["l"] == [1]
    assert write_lock_free(store.path)


# --- copies, missing keys, failures ---------------------------------------


def test_copy_then_iadd_writes_nothing(store: mn.Store, watch: Any) -> None:
    """``y = d[k]; y += 1`` changes y only: nothing is committed, no lock held."""
    d = store.get_dict("c")
    d["n"] = 5
    d["l"] = [1]
    w = watch()
    y = d["n"]
    y += 1
    z = d["l"]
    z += [2]
    for _ in range(N):
        y = d["n"]
        y += 1
    assert (y, z) == (6, [1, 2])
    assert d["n"] == 5
    assert d["l"] == [1]
    assert not w.changed()
    assert write_lock_free(store.path)


def test_reads_in_expressions_write_nothing(store: mn.Store, watch: Any) -> None:
    """Reads that are not augmented assignments commit nothing and hold no
    lock, however the expression is shaped."""
    d = store.get_dict("c")
    d["n"] = 5
    other: dict[str, int] = {"n": 0}
    w = watch()
    total = sum(d["n"] for _ in range(N))
    values = [d["n"] + 1 for _ in range(N)]
    other["n"] += d["n"]
    x = d["n"] if d else 0
    x += d["n"]
    assert total == 5 * N and values == [6] * N and other["n"] == 5 and x == 10
    assert not w.changed()
    assert write_lock_free(store.path)


def test_iadd_on_missing_key_raises_keyerror(store: mn.Store, watch: Any) -> None:
    """``d[k] += 1`` on a missing key raises KeyError, creates nothing, and
    leaves the lock free."""
    d = store.get_dict("m")
    d["other"] = 1
    w = watch()
    with pytest.raises(KeyError):
        d["missing"] += 1
    assert "missing" not in d
    assert len(d) == 1
    assert not w.changed()
    assert write_lock_free(store.path)


def _free_for_other_writers(store: mn.Store, d: mn.SharedDict) -> None:
    """Another thread, with a short timeout, can write at once."""
    assert write_lock_free(store.path)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with mn.Store(store.path, timeout=2.0) as s:
                s.get_dict(d.name)["from_thread"] = 1
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert not errors
    assert d["from_thread"] == 1


def test_failing_operator_leaves_value_and_no_lock(store: mn.Store) -> None:
    """``d["s"] += 1`` on a str raises TypeError, leaves "s" as it was, and
    another writer can write immediately."""
    d = store.get_dict("f")
    d["s"] = "abc"
    with pytest.raises(TypeError):
        d["s"] += 1  # type: ignore[operator]
    assert d["s"] == "abc"
    _free_for_other_writers(store, d)


def test_failing_right_hand_side_leaves_no_lock(store: mn.Store) -> None:
    """An exception while evaluating the right-hand side of ``+=`` leaves the
    value unchanged and no lock held."""
    d = store.get_dict("f")
    d["n"] = 1
    with pytest.raises(ZeroDivisionError):
        d["n"] += 1 // 0
    with pytest.raises(KeyError):
        d["n"] += d["nope"]
    assert d["n"] == 1
    _free_for_other_writers(store, d)


def test_failing_operator_in_loop_keeps_working(store: mn.Store) -> None:
    """Many failing in-place operations in a loop leak no lock or state."""
    d = store.get_dict("f")
    d["s"] = "abc"
    d["n"] = 0
    for i in range(200):
        with pytest.raises(TypeError):
            d["s"] += i  # type: ignore[operator]
        d["n"] += 1
    assert d["s"] == "abc"
    assert d["n"] == 200
    _free_for_other_writers(store, d)


def test_rhs_reads_other_keys_and_dicts(store: mn.Store) -> None:
    """The right-hand side may read the same dict and another dict."""
    d = store.get_dict("a")
    e = store.get_dict("b")
    d["n"], d["m"], e["x"] = 1, 10, 100
    d["n"] += d["m"]
    d["n"] += d["n"]
    d["n"] += e["x"]
    e["x"] += d["n"]
    assert (d["n"], e["x"]) == (122, 222)
    assert write_lock_free(store.path)


def test_iadd_inside_transaction_joins_it(store: mn.Store) -> None:
    """``+=`` inside ``store.transaction()`` is rolled back with it."""
    d = store.get_dict("t")
    d["n"] = 0
    with pytest.raises(RuntimeError), store.transaction():
        d["n"] += 5
        assert d["n"] == 5
        raise RuntimeError
    assert d["n"] == 0
    with store.transaction():
        for _ in range(10):
            d["n"] += 1
    assert d["n"] == 10
    assert write_lock_free(store.path)


def test_missing_key_with_side_effect_operand(store: mn.Store) -> None:
    """``d["missing"] += f()`` raises KeyError and never calls f: a dict looks
    the key up before it evaluates the right-hand side."""
    d = store.get_dict("m")
    called: list[int] = []
    with pytest.raises(KeyError):
        d["missing"] += called.append(1) or 1  # type: ignore[func-returns-value]
    assert called == []
    assert "missing" not in d


def test_subscript_reads_inside_target_are_plain_reads(
    store: mn.Store, watch: Any
) -> None:
    """In ``d[d["i"]] += 1`` and ``lst[d["i"]] += 1`` the inner read is an
    ordinary read; ``d["a"][0] += 1`` changes a copy only and writes nothing."""
    d = store.get_dict("s")
    d["i"] = "n"
    d["n"] = 0
    d["a"] = [0, 0]
    for _ in range(50):
        d[d["i"]] += 1
    assert d["n"] == 50
    assert d["i"] == "n"
    lst = {"n": 0}
    w = watch()
    for _ in range(50):
        lst[d["i"]] += 1
    for _ in range(50):
        d["a"][0] += 1
    assert lst == {"n": 50}
    assert d["a"] == [0, 0]
    assert not w.changed()
    assert write_lock_free(store.path)


def test_suspended_generator_holds_no_lock(store: mn.Store) -> None:
    """A generator paused inside ``d[k] += (yield)`` holds no lock; resuming
    it applies the operation; abandoning it changes nothing."""
    d = store.get_dict("g")
    d["n"] = 10

    def gen() -> Iterator[None]:
        d["n"] += yield

    g = gen()
    next(g)
    assert write_lock_free(store.path)
    d["other"] = 1  # the store is writable meanwhile
    with pytest.raises(StopIteration):
        g.send(5)
    assert d["n"] == 15
    g = gen()
    next(g)
    g.close()
    del g
    assert d["n"] == 15
    assert write_lock_free(store.path)


def test_rhs_that_changes_the_key(store: mn.Store) -> None:
    """When the right-hand side itself rewrites or deletes the key, the result
    is a KeyError or an ordinary value, never an internal placeholder."""
    d = store.get_dict("r")
    d["n"] = 1

    def rewrite() -> int:
        d["n"] = 100
        return 1

    d["n"] += rewrite()
    assert d["n"] in (2, 101)

    def delete() -> int:
        del d["n"]
        return 1

    try:
        d["n"] += delete()
    except KeyError:
        assert "n" not in d
    else:
        assert d["n"] in (102, 103)
    for value in d.values():
        assert type(value) is int
    assert write_lock_free(store.path)


def test_unpicklable_result_changes_nothing(store: mn.Store) -> None:
    """An in-place result that cannot be pickled is refused; the value stays
    and the lock is free."""
    d = store.get_dict("p")
    d["l"] = [1]
    with pytest.raises((TypeError, ValueError)):
        d["l"] += [lambda: 1]
    assert d["l"] == [1]
    _free_for_other_writers(store, d)


def test_through_mappingproxy(store: mn.Store) -> None:
    """``MappingProxyType(d)[k] += 1`` fails as it would on a dict's proxy,
    changing nothing and holding no lock."""
    d = store.get_dict("w")
    d["n"] = 0
    ref = types.MappingProxyType({"n": 0})
    mp = types.MappingProxyType(d)
    with pytest.raises(TypeError):
        ref["n"] += 1  # type: ignore[index]
    with pytest.raises(TypeError):
        mp["n"] += 1  # type: ignore[index]
    assert mp["n"] == 0
    assert d["n"] == 0
    assert write_lock_free(store.path)


def test_under_a_tracer(store: mn.Store) -> None:
    """In-place operators stay atomic while sys.settrace (debuggers, older
    coverage) is active."""
    d = store.get_dict("tr")
    d["n"] = 0
    d["p"] = LockProbe(store.path)

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        in_function(d, "n", 300)
        in_function(d, "p", 50)
    finally:
        sys.settrace(old)
    assert d["n"] == 300
    assert d["p"].n == 50
    assert d["p"].unlocked == 0


# --- code shapes -------------------------------------------------------------


def in_function(d: mn.SharedDict, k: str, n: int) -> None:
    for _ in range(n):
        d[k] += 1


class Holder:
    def __init__(self, d: mn.SharedDict) -> None:
        self.d = d

    def method(self, k: str, n: int) -> None:
        for _ in range(n):
            self.d[k] += 1

    @classmethod
    def clsmethod(cls, d: mn.SharedDict, k: str, n: int) -> None:
        for _ in range(n):
            d[k] += 1


def in_closure(d: mn.SharedDict, k: str, n: int) -> None:
    def inner() -> None:
        for _ in range(n):
            d[k] += 1  # d and k are free variables here

    inner()


def in_generator(d: mn.SharedDict, k: str, n: int) -> None:
    def gen() -> Iterator[int]:
        for i in range(n):
            d[k] += 1
            yield i

    for _ in gen():
        pass


def in_comprehension(d: mn.SharedDict, k: str, n: int) -> None:
    def once() -> int:
        d[k] += 1
        return 0

    assert [once() for _ in range(n)] == [0] * n


def in_coroutine(d: mn.SharedDict, k: str, n: int) -> None:
    async def co() -> None:
        for _ in range(n):
            d[k] += 1

    asyncio.run(co())


def in_try_and_with(d: mn.SharedDict, k: str, n: int) -> None:
    lock = threading.Lock()
    for _ in range(n):
        try:
            with lock:
                d[k] += 1
        finally:
            pass


def in_nested_subscript(d: mn.SharedDict, k: str, n: int) -> None:
    boxes = [{"d": d}]
    keys = [k]
    for i in range(n):
        boxes[0]["d"][keys[i % 1]] += 1


_GLOBAL_D: mn.SharedDict | None = None


def with_global(d: mn.SharedDict, k: str, n: int) -> None:
    global _GLOBAL_D
    _GLOBAL_D = d
    try:
        for _ in range(n):
            _GLOBAL_D[k] += 1
    finally:
        _GLOBAL_D = None


def at_module_level(d: mn.SharedDict, k: str, n: int) -> None:
    src = "for _ in range(n):\n    d[k] += 1\n"
    exec(compile(src, "<module-level>", "exec"), {"d": d, "k": k, "n": n})


def in_class_body(d: mn.SharedDict, k: str, n: int) -> None:
    src = "class C:\n    for _ in range(n):\n        d[k] += 1\n"
    exec(compile(src, "<class-body>", "exec"), {"d": d, "k": k, "n": n})


SHAPES = [
    in_function,
    lambda d, k, n: Holder(d).method(k, n),
    Holder.clsmethod,
    in_closure,
    in_generator,
    in_comprehension,
    in_coroutine,
    in_try_and_with,
    in_nested_subscript,
    with_global,
    at_module_level,
    in_class_body,
]
SHAPE_IDS = [
    "function",
    "method",
    "classmethod",
    "closure",
    "generator",
    "comprehension",
    "coroutine",
    "try-with",
    "nested-subscript",
    "global",
    "module-level",
    "class-body",
]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_shape_counts_and_holds_the_lock(
    store_path: Path, journal_mode: str, shape: Any
) -> None:
    """In every code shape, n ``+= 1`` on an int give exactly n (an int), then
    the same code on a probe shows each operator ran under the write lock.

    A rollback journal fsyncs every commit, so that mode runs a shorter loop
    (still far past the point where the interpreter specialises it)."""
    n = N if journal_mode == "wal" else N // 10
    with mn.Store(store_path, journal_mode=journal_mode) as store:
        d = store.get_dict("shape")
        d["n"] = 0
        shape(d, "n", n)
        assert d["n"] == n
        assert type(d["n"]) is int

        # Same code object, now deoptimised by another type.
        d["p"] = LockProbe(store.path)
        shape(d, "p", 100)
        probe = d["p"]
        assert probe.n == 100
        assert probe.unlocked == 0, "the operator ran without the write lock"
        assert write_lock_free(store.path)

        # And back to ints, re-specialised.
        shape(d, "n", n)
        assert d["n"] == 2 * n


@pytest.mark.parametrize("shape", SHAPES[:6], ids=SHAPE_IDS[:6])
def test_shape_is_atomic_between_threads(store: mn.Store, shape: Any) -> None:
    """Two threads running the same shape on one dict lose no update."""
    d = store.get_dict("shape")
    d["n"] = 0
    errors: list[BaseException] = []

    def run() -> None:
        try:
            shape(d, "n", 500)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not errors
    assert d["n"] == 1000


# --- update(): CAS and dict.update -------------------------------------------


def test_cas_with_none_values(store: mn.Store) -> None:
    """CAS treats None as an ordinary new or expected value; a missing key is
    not None."""
    d = store.get_dict("u")
    assert d.update("k", new_value=1, expected_current_value=None) is False
    assert "k" not in d
    d["k"] = None
    assert d.update("k", new_value=1, expected_current_value=None) is True
    assert d["k"] == 1
    assert d.update("k", new_value=None, expected_current_value=1) is True
    assert d["k"] is None
    assert d.update("k", new_value=2, expected_current_value=0) is False
    assert d["k"] is None


def test_cas_compares_with_eq(store: mn.Store) -> None:
    """CAS compares with ``==``: 1, 1.0 and True match; "1" does not; the new
    value is stored with its own type and the key keeps its place."""
    d = store.get_dict("u")
    d["a"] = 0
    d["k"] = 1
    d["z"] = 0
    assert d.update("k", new_value=2.0, expected_current_value=1.0) is True
    assert type(d["k"]) is float
    assert d.update("k", new_value=True, expected_current_value=2) is True
    assert d["k"] is True
    assert d.update("k", new_value=5, expected_current_value=1) is True
    assert d.update("k", new_value=6, expected_current_value="5") is False
    assert d["k"] == 5
    assert list(d) == ["a", "k", "z"]
    assert d.update(("a", "b"), new_value=1, expected_current_value=2) is False
    assert ("a", "b") not in d


class _BadEq:
    def __eq__(self, other: object) -> bool:
        raise ArithmeticError("no comparing")

    __hash__ = None  # type: ignore[assignment]


def test_cas_whose_comparison_raises(store: mn.Store) -> None:
    """When ``==`` raises inside a CAS, the error propagates, the value is
    unchanged and no lock is held."""
    d = store.get_dict("u")
    d["k"] = 1
    with pytest.raises(ArithmeticError):
        d.update("k", new_value=2, expected_current_value=_BadEq())
    assert d["k"] == 1
    _free_for_other_writers(store, d)


def test_update_is_dict_update_otherwise(store: mn.Store) -> None:
    """Every update() call that is not a CAS behaves as dict.update, including
    ``update(new_value=3)`` setting the key "new_value"."""
    d = store.get_dict("u")
    ref: dict[Any, Any] = {}
    calls = [
        lambda u: u.update({"a": 1, 2: "b"}),
        lambda u: u.update([("c", 3), (4.5, None)]),
        lambda u: u.update(kw=5),
        lambda u: u.update(new_value=3),
        lambda u: u.update(expected_current_value=4),
        lambda u: u.update(new_value=6, expected_current_value=7),
        lambda u: u.update({"x": 1}, new_value=8),
        lambda u: u.update([("y", 2)], expected_current_value=9),
        lambda u: u.update(["ab"], new_value=10),
        lambda u: u.update(iter([("g", 1), ("a", None)])),
        lambda u: u.update((i, i) for i in range(3)),
        lambda u: u.update({"a": 2}.items()),
        lambda u: u.update(),
    ]
    for call in calls:
        assert call(d) is None
        call(ref)
        assert d.copy() == ref
        assert list(d) == list(ref)
    assert d["new_value"] == 10 and d["expected_current_value"] == 9


@pytest.mark.parametrize(
    ("args", "kw"),
    [
        (("k",), {"new_value": 1}),
        (("ab",), {"expected_current_value": 1}),
        (([1, 2],), {}),
        ((5,), {}),
    ],
    ids=repr,
)
def test_update_bad_input_raises_like_dict(
    store: mn.Store, args: tuple[Any, ...], kw: dict[str, Any]
) -> None:
    """An update() that dict.update rejects raises the same kind of error and
    changes nothing."""
    d = store.get_dict("u")
    d["keep"] = 1
    ref = {"keep": 1}
    with pytest.raises((TypeError, ValueError)) as expected:
        ref.update(*args, **kw)
    with pytest.raises(type(expected.value)):
        d.update(*args, **kw)
    assert d.copy() == {"keep": 1}


# --- other interpreters --------------------------------------------------------


RUNNER = """
import runpy, sys
sys.modules["pytest"] = None  # the checks must not need pytest or hypothesis
sys.modules["hypothesis"] = None
script, store = sys.argv[1], sys.argv[2]
sys.path.insert(0, script.rsplit("/", 1)[0])
sys.argv = [script, "inplace", store]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.processes
@pytest.mark.parametrize("python", PYTHONS, ids=lambda p: p.parent.parent.name)
def test_inplace_checks_under_each_python(tmp_path: Path, python: Path) -> None:
    """The core in-place checks pass in a subprocess under each interpreter,
    with pytest and hypothesis unimportable there."""
    if not python.exists():
        pytest.skip(f"{python} is not installed")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    script = REPO / "tests" / "_workers_core.py"
    proc = subprocess.run(
        [str(python), "-c", RUNNER, str(script), str(tmp_path / "s.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok"), proc.stdout
    assert "@=" in proc.stdout and "locked" in proc.stdout
