"""Worker functions for the core tests that start real processes.

Everything a spawned child runs lives here, because "spawn" imports the
target by module name. `run_workers` starts the children together behind one
barrier, bounds every wait and turns a child's exception into a test failure
carrying the child's traceback.

Run as a script (``python tests/_workers_core.py inplace STORE``) it performs
the core in-place checks without pytest, so other interpreters can run them.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import multinode as mn

BARRIER_TIMEOUT = 60.0


# --- running workers ------------------------------------------------------


def _entry(out: Any, barrier: Any, fn_name: str, args: tuple[Any, ...]) -> None:
    """Run one named worker and report ("ok", result) or ("err", traceback)."""
    try:
        result = globals()[fn_name](barrier, *args)
    except BaseException:
        out.put(("err", os.getpid(), traceback.format_exc()))
    else:
        out.put(("ok", os.getpid(), result))


def run_workers(
    method: str,
    fn_name: str,
    args_list: Sequence[tuple[Any, ...]],
    timeout: float = 120.0,
) -> list[Any]:
    """Start one process per ``args_list`` entry with start ``method``, all
    sharing a barrier; return their results (in completion order).

    Fails (AssertionError) when a child raises, dies without a result, or the
    whole group is not done within ``timeout`` seconds; stragglers are killed.
    """
    ctx = mp.get_context(method)
    out = ctx.Queue()
    barrier = ctx.Barrier(len(args_list))
    procs = [
        ctx.Process(target=_entry, args=(out, barrier, fn_name, tuple(args)))
        for args in args_list
    ]
    results: list[tuple[str, int, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.start()
        while len(results) < len(procs):
            try:
                results.append(out.get(timeout=0.2))
                continue
            except queue.Empty:
                pass
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                # A child that died may still have a result in flight.
                try:
                    results.append(out.get(timeout=2.0))
                    continue
                except queue.Empty:
                    codes = [p.exitcode for p in dead]
                    raise AssertionError(
                        f"worker died without a result: exit codes {codes}"
                    ) from None
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{fn_name}: only {len(results)} of {len(procs)} workers "
                    f"finished within {timeout} s"
                )
    finally:
        for p in procs:
            p.join(timeout=max(1.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
        out.close()
        out.join_thread()
    errors = [r for r in results if r[0] == "err"]
    assert not errors, "worker raised:\n" + "\n".join(str(e[2]) for e in errors)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [r[2] for r in results]


def dispatch(barrier: Any, fn_name: str, args: tuple[Any, ...]) -> Any:
    """Run another worker by name, so one group can mix workers; return
    (name, result)."""
    return fn_name, globals()[fn_name](barrier, *args)


def _open(path: str, journal_mode: str, name: str, serializer: str | None = None):
    store = mn.Store(path, journal_mode=journal_mode)
    return store, store.get_dict(name, serializer=serializer)


def _wait(barrier: Any) -> None:
    if barrier is not None:
        barrier.wait(timeout=BARRIER_TIMEOUT)


# --- counters -------------------------------------------------------------


def counter(
    barrier: Any, path: str, journal_mode: str, name: str, op: str, v: Any, m: int
) -> int:
    """Apply ``d["n"] <op>= v`` m times; each operator is written out so the
    real in-place bytecode runs."""
    store, d = _open(path, journal_mode, name)
    with store:
        _wait(barrier)
        if op == "+=":
            for _ in range(m):
                d["n"] += v
        elif op == "-=":
            for _ in range(m):
                d["n"] -= v
        elif op == "*=":
            for _ in range(m):
                d["n"] *= v
        else:
            raise ValueError(op)
    return m


def cas_counter(barrier: Any, path: str, journal_mode: str, name: str, m: int) -> int:
    """Increment d["n"] m times with a compare-and-swap retry loop; return the
    number of failed attempts."""
    store, d = _open(path, journal_mode, name)
    retries = 0
    with store:
        _wait(barrier)
        for _ in range(m):
            while True:
                cur = d["n"]
                if d.update("n", new_value=cur + 1, expected_current_value=cur):
                    break
                retries += 1
    return retries


def txn_counter(barrier: Any, path: str, journal_mode: str, name: str, m: int) -> int:
    """Increment d["n"] m times as read, then write, inside a transaction."""
    store, d = _open(path, journal_mode, name)
    with store:
        _wait(barrier)
        for _ in range(m):
            with store.transaction():
                x = d["n"]
                d["n"] = x + 1
    return m


def pair_writer(barrier: Any, path: str, journal_mode: str, name: str, m: int) -> int:
    """Write a == b == i with one update() call per i."""
    store, d = _open(path, journal_mode, name)
    with store:
        _wait(barrier)
        for i in range(m):
            d.update({"a": i, "b": i})
            d.update([("a", -i), ("b", -i)])
    return m


def pair_reader(barrier: Any, path: str, journal_mode: str, name: str, m: int) -> int:
    """Read a and b together (copy, a transaction); return mismatches."""
    store, d = _open(path, journal_mode, name)
    bad = 0
    with store:
        _wait(barrier)
        for _ in range(m):
            c = d.copy()
            bad += c["a"] != c["b"]
            with store.transaction():
                bad += d["a"] != d["b"]
    return bad


def set_if_absent_race(
    barrier: Any, path: str, journal_mode: str, name: str
) -> tuple[int, bool]:
    """Race for key "y"; return (pid, won)."""
    store, d = _open(path, journal_mode, name)
    with store:
        _wait(barrier)
        won = d.set_if_absent("y", value=os.getpid())
    return os.getpid(), won


def setdefault_race(barrier: Any, path: str, journal_mode: str, name: str) -> Any:
    """Race setdefault on key "z"; return what it returned."""
    store, d = _open(path, journal_mode, name)
    with store:
        _wait(barrier)
        return d.setdefault("z", os.getpid())


def popitem_race(
    barrier: Any, path: str, journal_mode: str, name: str
) -> list[tuple[Any, Any]]:
    """popitem until the dict is empty; return every item this process got."""
    store, d = _open(path, journal_mode, name)
    got = []
    with store:
        _wait(barrier)
        while True:
            try:
                got.append(d.popitem())
            except KeyError:
                break
    return got


def read_items(barrier: Any, path: str, name: str) -> list[tuple[Any, Any]]:
    """A fresh process's view of a dict: its items in order."""
    with mn.Store(path) as store:
        return list(store.get_dict(name).items())


def read_default_items(barrier: Any, name: str) -> list[tuple[Any, Any]]:
    """A fresh process's view of a dict in the default store."""
    return list(mn.get_dict(name=name).items())


# --- cases ----------------------------------------------------------------


def b01_worker(barrier: Any, name: str, step: int, m: int) -> int:
    """B01: two threads each doing ``d["n"] += step`` m times."""
    errors: list[str] = []
    d0 = mn.get_dict(name=name)

    def work() -> None:
        try:
            d = mn.get_dict(name=name)
            for _ in range(m):
                d["n"] += step
        except BaseException:
            errors.append(traceback.format_exc())

    _wait(barrier)
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=BARRIER_TIMEOUT * 2)
    assert not any(t.is_alive() for t in threads), "B01 thread hung"
    assert not errors, errors
    assert type(d0["n"]) is int
    return 2 * m * step


def b02_worker(barrier: Any, name: str) -> tuple[int, bool, Any]:
    """B02: set_if_absent on "y", then setdefault on "z"."""
    d = mn.get_dict(name=name)
    _wait(barrier)
    won = d.set_if_absent("y", value=os.getpid())
    got = d.setdefault("z", os.getpid())
    return os.getpid(), won, got


def b12_worker(barrier: Any, name: str, m: int) -> int:
    """B12: m times ``d["acc"] += [pid]``."""
    d = mn.get_dict(name=name)
    _wait(barrier)
    for _ in range(m):
        d["acc"] += [os.getpid()]
    return m


def b17_reads(barrier: Any, name: str) -> bool:
    """B17: every read a fresh process makes of the falsy values."""
    vals = {"none": None, "zero": 0, "empty": "", "false": False, "el": [], "ed": {}}
    d = mn.get_dict(name=name)
    assert len(d) == 6, len(d)
    for k, v in vals.items():
        assert k in d, k
        assert strict_equal(d[k], v), (k, d[k])
        assert strict_equal(d.get(k, "D"), v), (k, d.get(k, "D"))
    assert d["none"] is None and d["false"] is False
    assert d.get("missing") is None
    assert d.get("missing", "D") == "D"
    for action in (
        lambda: d["missing"],
        lambda: d.__delitem__("missing"),
        lambda: d.pop("missing"),
    ):
        try:
            action()
        except KeyError:
            pass
        else:
            raise AssertionError("missing key did not raise KeyError")
    return True


def read_named(barrier: Any, names: list[str]) -> list[Any]:
    """B26: d["k"] of each named dict in the default store."""
    return [mn.get_dict(name=n)["k"] for n in names]


def strict_equal(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (and -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if a != a:
            return b != b
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(map(strict_equal, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(
            strict_equal(ka, kb) and strict_equal(a[ka], b[kb])
            for ka, kb in zip(a, b, strict=True)
        )
    return bool(a == b)


# --- values with in-place operators ---------------------------------------


class Mat:
    """A 2x2 integer matrix supporting ``@`` and ``@=``; it pickles."""

    def __init__(self, a: int, b: int, c: int, d: int) -> None:
        self.m = (a, b, c, d)

    def __matmul__(self, o: Mat) -> Mat:
        a, b, c, d = self.m
        e, f, g, h = o.m
        return Mat(a * e + b * g, a * f + b * h, c * e + d * g, c * f + d * h)

    def __imatmul__(self, o: Mat) -> Mat:
        self.m = (self @ o).m
        return self

    def __eq__(self, o: object) -> bool:
        return isinstance(o, Mat) and self.m == o.m

    def __hash__(self) -> int:
        return hash(self.m)

    def __repr__(self) -> str:
        return f"Mat{self.m}"


def write_lock_free(path: str) -> bool:
    """True when another connection can take the write lock right now."""
    con = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return False
    else:
        con.execute("ROLLBACK")
        return True
    finally:
        con.close()


class LockProbe:
    """A counter whose ``+=`` records whether the store's write lock was held
    by someone (the in-place operation) while the operator ran."""

    def __init__(self, path: str, n: int = 0) -> None:
        self.path = path
        self.n = n
        self.unlocked = 0

    def __iadd__(self, k: int) -> LockProbe:
        if write_lock_free(self.path):
            self.unlocked += 1
        self.n += k
        return self


# --- in-place checks without pytest (run under each interpreter) ---------


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def inplace_checks(path: str) -> list[str]:
    """The core in-place contract; returns the names of the checks run."""
    done = []
    loops = 2000
    with mn.Store(path) as store:
        d = store.get_dict("inplace")

        # Every operator, against what a plain dict does.
        cases: list[tuple[str, Any, Any]] = [
            ("+=", 7, 3), ("-=", 7, 3), ("*=", 7, 3), ("/=", 7, 2), ("//=", 7, 2),
            ("%=", 7, 3), ("**=", 7, 3), ("<<=", 7, 3), (">>=", 7, 1),
            ("&=", 6, 3), ("|=", 6, 3), ("^=", 6, 3),
            ("@=", Mat(1, 2, 3, 4), Mat(0, 1, 1, 0)),
        ]  # fmt: skip
        for op, start, operand in cases:
            ref = {"k": start}
            d["k"] = start
            code = f"t['k'] {op} operand"
            exec(code, {"t": ref, "operand": operand})
            exec(code, {"t": d, "operand": operand})
            _check(d["k"] == ref["k"], f"{op}: {d['k']!r} != {ref['k']!r}")
            _check(type(d["k"]) is type(ref["k"]), f"{op}: type {type(d['k'])}")
            done.append(op)

        # A long loop inside a function, so the interpreter specialises it.
        def bump(n: int, key: str = "n") -> None:
            for _ in range(n):
                d[key] += 1

        d["n"] = 0
        bump(loops)
        _check(d["n"] == loops and type(d["n"]) is int, f"loop: {d['n']!r}")
        done.append("loop")

        # Under a tracer (debuggers, coverage) and, from 3.12, under
        # sys.monitoring, which rewrites the running bytecode.
        def tracer(frame: Any, event: str, arg: Any) -> Any:
            return tracer

        def bump_probe() -> None:
            d["q"] = LockProbe(path)
            bump(30, "q")
            probe = d["q"]
            _check(probe.n == 30 and probe.unlocked == 0, "probe under a tracer")

        sys.settrace(tracer)
        try:
            bump(300)
            bump_probe()
        finally:
            sys.settrace(None)
        _check(d["n"] == loops + 300, f"under settrace: {d['n']!r}")
        done.append("settrace")
        mon = getattr(sys, "monitoring", None)
        if mon is not None:
            tool = mon.COVERAGE_ID
            events = mon.events
            mon.use_tool_id(tool, "multinode-test")
            try:
                for event in (events.LINE, events.INSTRUCTION):
                    mon.register_callback(tool, event, lambda *args: None)
                mon.set_events(tool, events.LINE | events.INSTRUCTION)
                bump(300)
                bump_probe()
            finally:
                mon.set_events(tool, 0)
                mon.free_tool_id(tool)
            _check(d["n"] == loops + 600, f"under monitoring: {d['n']!r}")
            done.append("monitoring")

        # The in-place operator runs while the write lock is held.
        d["p"] = LockProbe(path)
        for _ in range(50):
            d["p"] += 1
        probe = d["p"]
        _check(probe.n == 50, f"probe count {probe.n}")
        _check(probe.unlocked == 0, f"operator ran unlocked {probe.unlocked} times")
        _check(write_lock_free(path), "lock held after in-place loop")
        done.append("locked")

        # A copy is not the stored value.
        d["n"] = 5
        y = d["n"]
        y += 1
        _check(d["n"] == 5 and y == 6, "y = d[k]; y += 1 wrote")
        _check(write_lock_free(path), "lock held after y += 1")
        done.append("copy")

        # Missing keys and failing operators.
        try:
            d["missing"] += 1
        except KeyError:
            pass
        else:
            raise AssertionError("+= on a missing key did not raise KeyError")
        _check("missing" not in d and write_lock_free(path), "missing key")
        d["s"] = "abc"
        try:
            d["s"] += 1  # type: ignore[operator]
        except TypeError:
            pass
        else:
            raise AssertionError("str += int did not raise")
        _check(d["s"] == "abc" and write_lock_free(path), "failed operator")
        d["s"] = "x"
        _check(d["s"] == "x", "write after failed operator")
        done.append("errors")

        # CAS with None, and dict.update spellings.
        d["c"] = None
        _check(d.update("c", new_value=1, expected_current_value=None), "cas None")
        _check(d.update("c", new_value=None, expected_current_value=1), "cas ->None")
        _check(d["c"] is None, "cas wrote None")
        d.update(new_value=3)
        _check(d["new_value"] == 3, "update(new_value=3)")
        done.append("update")
    return done


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "inplace":
        print("usage: _workers_core.py inplace STORE", file=sys.stderr)
        return 2
    done = inplace_checks(argv[2])
    print("ok", sys.version_info[:2], " ".join(done))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
