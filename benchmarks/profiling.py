"""Where multinode's time goes: ``python -m benchmarks.profiling``.

For each hot operation this times multinode and the raw sqlite3 floor doing
the same work (interleaved, as the runner does), then profiles multinode's
loop with cProfile (or pyinstrument with ``--pyinstrument``) and prints the
functions that take the time, and a summary by kind: SQLite statements,
pickle, locks, multinode's own Python, the rest.

cProfile charges a fixed cost to every Python call, so it exaggerates code
made of many small calls; the summary is for finding the spots, the timing
above it for judging them.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._systems import FloorHandle, Handle, MultinodeHandle
from benchmarks._workloads import distinct_values, key_of, value_of

OPS = ("get", "set_new", "replace", "contains", "delete", "incr", "cas", "sia", "iter")


class Loop:
    """One operation, ready to run ``n`` times on a handle."""

    def __init__(self, h: Handle, op: str, n: int, keys: int) -> None:
        self.h, self.op, self.n, self.keys = h, op, n, keys
        self.value = value_of(100, 1)
        self.fresh = 0
        self.cas_value = 0
        h.set("counter", 0)
        h.set("cas", 0)

    def prepare(self) -> Callable[[], None]:
        """Untimed setup; returns the loop to time."""
        h, n, op = self.h, self.n, self.op
        keys = [key_of(i % self.keys) for i in range(n)]
        if op == "get":
            get = h.get
            return lambda: _each(get, keys)
        if op == "contains":
            contains = h.contains
            return lambda: _each(contains, keys)
        if op == "replace":
            pairs = list(zip(keys, distinct_values(self.value, n), strict=True))
            set_ = h.set
            return lambda: _each2(set_, pairs)
        if op in ("set_new", "sia", "delete"):
            base = self.fresh
            self.fresh += n
            new = [f"n{base + i:09d}" for i in range(n)]
            if op == "delete":
                h.load((k, self.value) for k in new)
                delete = h.delete
                return lambda: _each(delete, new)
            fn = h.set if op == "set_new" else h.sia
            return lambda: _each2(fn, [(k, self.value) for k in new])
        if op == "incr":
            incr = h.incr
            return lambda: _each(incr, ["counter"] * n)
        if op == "cas":
            start = self.cas_value
            self.cas_value += n
            cas = h.cas
            triples = [("cas", start + i, start + i + 1) for i in range(n)]
            return lambda: _each3(cas, triples)
        if op == "iter":
            rounds = max(1, n // self.keys)
            it = h.iter_keys
            return lambda: _drain(it, rounds)
        raise ValueError(op)


def _drain(make: Callable[[], Any], rounds: int) -> None:
    for _ in range(rounds):
        for _ in make():
            pass


def _each(fn: Callable[[Any], Any], args: list[Any]) -> None:
    for a in args:
        fn(a)


def _each2(fn: Callable[[Any, Any], Any], args: list[tuple[Any, Any]]) -> None:
    for a, b in args:
        fn(a, b)


def _each3(fn: Callable[..., Any], args: list[tuple[Any, Any, Any]]) -> None:
    for a, b, c in args:
        fn(a, b, c)


def timed(run: Callable[[], None]) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter()
        run()
        return time.perf_counter() - t0
    finally:
        gc.enable()


KINDS = (
    ("sqlite: execute", ("method 'execute' of 'sqlite3.Connection'",
                         "method 'execute' of 'sqlite3.Cursor'",
                         "method 'executemany'")),
    ("sqlite: fetch", ("fetchone", "fetchall", "sqlite3.Cursor' objects")),
    ("pickle", ("pickle", "_pickle")),
    ("locks / threading", ("RLock", "_thread", "threading.py", "lock' objects")),
    ("frame inspection", ("_getframe", "_inplace.py")),
    ("key codec", ("_codec.py",)),
    ("multinode: _link", ("_link.py",)),
    ("multinode: _dict", ("_dict.py",)),
    ("multinode: _store", ("_store.py",)),
    ("contextlib", ("contextlib.py",)),
    ("benchmark loop", ("profiling.py", "_systems.py")),
)  # fmt: skip


def summarize(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own time (tottime) grouped by kind of work, as shares."""
    totals: dict[str, float] = {}
    grand = 0.0
    rows = stats.stats.items()  # type: ignore[attr-defined]
    for (filename, _line, name), row in rows:
        tottime = row[2]
        grand += tottime
        where = f"{filename}:{name}"
        kind = "other"
        for label, needles in KINDS:
            if any(n in where for n in needles):
                kind = label
                break
        totals[kind] = totals.get(kind, 0.0) + tottime
    return sorted(((k, v / grand) for k, v in totals.items()), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profiling")
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("-n", type=int, default=20_000, help="operations per loop")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--journal", default="wal", choices=("wal", "rollback"))
    p.add_argument("--pyinstrument", action="store_true")
    p.add_argument("--no-profile", action="store_true", help="timing only")
    args = p.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="mn-profile-"))
    try:
        for op in args.ops.split(","):
            run_op(op.strip(), args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def run_op(op: str, args: argparse.Namespace, root: Path) -> None:
    n = args.n if op != "iter" else max(args.n, args.keys * 10)
    if args.journal == "rollback" and op not in ("get", "contains", "iter"):
        n = min(n, 500)
    floor = FloorHandle(str(root / f"floor-{op}.db"), args.journal)
    mn = MultinodeHandle(str(root / f"mn-{op}.db"), args.journal)
    try:
        value = value_of(100, 1)
        for h in (floor, mn):
            h.load((key_of(i), value) for i in range(args.keys))
        lf, lm = Loop(floor, op, n, args.keys), Loop(mn, op, n, args.keys)
        timed(lf.prepare())
        timed(lm.prepare())  # warm-up
        ratios, tf, tm = [], [], []
        for _ in range(args.rounds):
            a = timed(lf.prepare())
            b = timed(lm.prepare())
            c = timed(lf.prepare())
            tf += [a, c]
            tm.append(b)
            ratios.append(b / statistics.geometric_mean([a, c]))
        per = n if op != "iter" else max(1, n // args.keys) * args.keys
        print(
            f"\n=== {op}: floor {statistics.median(tf) / per * 1e6:.2f} us/op, "
            f"multinode ({args.journal}) "
            f"{statistics.median(tm) / per * 1e6:.2f} us/op, "
            f"ratio x{statistics.median(ratios):.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
        if args.no_profile:
            return
        loop = lm.prepare()
        if args.pyinstrument:
            try:
                from pyinstrument import Profiler
            except ImportError:
                print("pyinstrument is not installed")
                return
            profiler = Profiler(interval=0.0001)
            profiler.start()
            loop()
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
            return
        prof = cProfile.Profile()
        prof.enable()
        loop()
        prof.disable()
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("tottime").print_stats(args.top)
        text = out.getvalue()
        body = text[text.find("   ncalls") :] if "   ncalls" in text else text
        print(body.rstrip())
        print("  own time by kind: " + ", ".join(
            f"{k} {share * 100:.0f}%" for k, share in summarize(stats)
        ))  # fmt: skip
    finally:
        floor.close()
        mn.close()


if __name__ == "__main__":
    raise SystemExit(main())
