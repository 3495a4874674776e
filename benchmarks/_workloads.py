"""The workloads: each builds fresh stores, measures, and returns raw figures.

Every comparison is interleaved with the floor (or, for the size and ``len``
scalings, with the same system's smallest store) as ``_timing.interleave``
describes, and every store lives in its own fresh directory under the run's
temporary directory, deleted when the workload ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import _contended
from benchmarks._systems import OPS, Handle, NamedOpener, NotSupported, System
from benchmarks._timing import (
    Series,
    geomean,
    interleave,
    median_or_nan,
    summary_us,
    timed_calls,
    timed_once,
)

WORKLOADS = ("ops", "contended", "sizes", "values", "clear", "named")
Log = Callable[[str], None]


@dataclass
class Config:
    """Every size and count of a run; each one is a command-line flag."""

    rounds: int = 5
    ops: int = 200
    keys: int = 1000
    value_bytes: int = 100
    sizes: list[int] = field(default_factory=lambda: [1000, 100_000, 1_000_000])
    len_sizes: list[int] = field(default_factory=lambda: [1000, 1_000_000])
    iter_keys: int = 100_000
    values: list[int] = field(default_factory=lambda: [100, 10_000, 1_000_000])
    procs: list[int] = field(default_factory=lambda: [1, 2, 4])
    incr_per_proc: int = 2000  # as BENCHMARKS.md measured the peers
    contended_rounds: int = 3
    contended_budget_s: float = 1.0
    batch_budget_s: float = 0.2
    clear_keys: int = 1000
    dicts: int = 1000
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    start_method: str = "fork"
    caps: bool = True
    seed: int = 20240601


class Context:
    """What every workload shares: config, systems, scratch root, a log."""

    def __init__(self, cfg: Config, systems: list[System], root: Path, log: Log):
        self.cfg = cfg
        self.systems = systems
        self.root = root
        self.log = log
        self.rng = random.Random(cfg.seed)
        self.count = 0
        self.timer_overhead = 0.0
        floor = [s for s in systems if s.key == "floor"]
        if not floor:
            raise ValueError("the floor must be part of every run")
        self.floor = floor[0]
        self.others = [s for s in systems if s.key != "floor"]

    def fresh_dir(self, label: str) -> Path:
        """A new empty directory for one store."""
        self.count += 1
        path = self.root / f"{self.count:04d}-{label}"
        path.mkdir(parents=True)
        return path

    def cap(self, system: System, n: int) -> bool:
        """True when ``system`` is measured at ``n`` keys in this run."""
        return not self.cfg.caps or system.max_keys is None or n <= system.max_keys


@contextlib.contextmanager
def store(ctx: Context, system: System, label: str) -> Iterator[Handle]:
    """A handle on a fresh directory, closed and deleted afterwards."""
    workdir = ctx.fresh_dir(f"{system.key}-{label}")
    handle = system.create(workdir)
    try:
        yield handle
    finally:
        handle.close()
        shutil.rmtree(workdir, ignore_errors=True)


def key_of(i: int) -> str:
    return f"k{i:07d}"


def fill(handle: Handle, n: int, value: Any) -> None:
    handle.load((key_of(i), value) for i in range(n))


def value_of(size: int, seed: int) -> bytes:
    """A value of ``size`` bytes that does not compress."""
    return random.Random(seed + size).randbytes(size)


_STAMP = itertools.count(1)


def distinct_values(base: bytes, count: int) -> list[bytes]:
    """``count`` values shaped like ``base``, each unlike any written before.

    A replace must really change the value: SQLite skips the page write when
    an UPDATE stores bytes identical to the old ones, which would turn
    "replace" into a read for every SQLite-based system.
    """
    tail = base[8:]
    return [next(_STAMP).to_bytes(8, "little") + tail for _ in range(count)]


# ---------------------------------------------------------------- operations
class OpBench:
    """Runs batches of one operation on one handle, keeping sizes steady."""

    def __init__(self, ctx: Context, system: System, handle: Handle) -> None:
        cfg = ctx.cfg
        self.ctx, self.system, self.h = ctx, system, handle
        self.rng = random.Random(cfg.seed)
        self.n = cfg.ops
        self.budget = cfg.batch_budget_s
        self.value = value_of(cfg.value_bytes, cfg.seed)
        self.keys = [key_of(i) for i in range(cfg.keys)]
        self.fresh_count = 0
        self.problems: list[str] = []
        fill(handle, cfg.keys, self.value)

        variant = system.variants[0].key if system.variants else "plain"
        counter = handle.counter(variant)
        self.counters = [f"c{i:04d}" for i in range(100)]
        for key in self.counters:
            counter.init(key)
        self.cas_keys = [f"x{i:04d}" for i in range(100)]
        self.cas_mirror = dict.fromkeys(self.cas_keys, 0)
        for key in self.cas_keys:
            handle.set(key, 0)

    def fresh(self) -> str:
        self.fresh_count += 1
        return f"n{self.fresh_count:08d}"

    def batch(self, op: str) -> list[int]:
        """Time one batch of ``op``; untimed setup and cleanup around it."""
        h, n, rng, budget = self.h, self.n, self.rng, self.budget
        if op == "get":
            return timed_calls(h.get, rng.choices(self.keys, k=n), budget)
        if op == "contains":
            return timed_calls(h.contains, rng.choices(self.keys, k=n), budget)
        if op == "replace":
            set_ = h.set
            values = distinct_values(self.value, n)
            pairs = list(zip(rng.choices(self.keys, k=n), values, strict=True))
            return timed_calls(lambda a: set_(a[0], a[1]), pairs, budget)
        if op in ("set_new", "sia"):
            fn = h.set if op == "set_new" else h.sia
            pairs = [(self.fresh(), self.value) for _ in range(n)]
            samples = timed_calls(lambda a: fn(a[0], a[1]), pairs, budget)
            h.discard_many([key for key, _ in pairs[: len(samples)]])
            return samples
        if op == "delete":
            doomed = [self.fresh() for _ in range(n)]
            h.load((key, self.value) for key in doomed)
            samples = timed_calls(h.delete, doomed, budget)
            h.discard_many(doomed[len(samples) :])
            return samples
        if op == "incr":
            keys = [self.counters[i % 100] for i in range(n)]
            return timed_calls(h.incr, keys, budget)
        if op == "cas":
            return self._cas_batch()
        raise ValueError(op)

    def _cas_batch(self) -> list[int]:
        h, mirror = self.h, self.cas_mirror
        triples = []
        planned = dict(mirror)
        for i in range(self.n):
            key = self.cas_keys[i % len(self.cas_keys)]
            triples.append((key, planned[key], planned[key] + 1))
            planned[key] += 1
        cas = h.cas
        samples = timed_calls(lambda a: cas(a[0], a[1], a[2]), triples, self.budget)
        for key, _, new in triples[: len(samples)]:
            mirror[key] = new

        # A CAS that failed would make every later one fail fast: check, resync.
        for key in self.cas_keys:
            actual = h.get(key)
            if actual != mirror[key]:
                self.problems.append(f"CAS left {key}={actual!r}, want {mirror[key]}")
                mirror[key] = actual
        return samples


def supports(system: System, handle: Handle, op: str) -> bool:
    """Whether the system has ``op`` (notes say n/a, or the handle lacks it)."""
    note = system.notes.get(op, "")
    if note.startswith("n/a"):
        return False
    name = {"set_new": "set", "replace": "set"}.get(op, op)
    return getattr(type(handle), name, None) is not getattr(Handle, name) or (
        name in vars(handle)
    )


def run_ops(ctx: Context) -> dict[str, Any]:
    """Per-operation latency at ``cfg.keys`` keys, every system vs the floor."""
    cfg, log = ctx.cfg, ctx.log
    overhead = ctx.timer_overhead
    out: dict[str, Any] = {"keys": cfg.keys, "value_bytes": cfg.value_bytes}
    with contextlib.ExitStack() as stack:
        benches: dict[str, OpBench] = {}
        for system in ctx.systems:
            handle = stack.enter_context(store(ctx, system, "ops"))
            benches[system.key] = OpBench(ctx, system, handle)
        floor = benches["floor"]

        for op in OPS:
            series: dict[str, Series] = {}
            subjects: dict[str, Callable[[], float]] = {}
            for system in ctx.systems:
                bench = benches[system.key]
                if not supports(system, bench.h, op):
                    continue
                series[system.key] = Series()
                bench.batch(op)  # warm-up
                if system.key != "floor":
                    subjects[system.key] = _recorder(bench, op, series, overhead)
            reference = _recorder(floor, op, series, overhead)
            _, ratios = interleave(reference, subjects, cfg.rounds)
            for key, values in ratios.items():
                series[key].ratios = values
            series["floor"].ratios = [1.0] * cfg.rounds
            out[op] = {key: s.result() for key, s in series.items()}
            log(f"  {op}: " + _brief(out[op]))

        problems = {k: b.problems for k, b in benches.items() if b.problems}
        out["problems"] = problems
    return out


def _recorder(
    bench: OpBench, op: str, series: dict[str, Series], overhead: float
) -> Callable[[], float]:
    key = bench.system.key

    def run() -> float:
        samples = [max(0.0, s - overhead) for s in bench.batch(op)]
        series[key].samples.extend(samples)
        figure = median_or_nan(samples)
        series[key].figures.append(figure)
        return figure

    return run


def _brief(results: dict[str, Any]) -> str:
    parts = []
    for key, r in results.items():
        parts.append(f"{key} {r['median']:.1f}us x{r['ratio']:.2f}")
    return ", ".join(parts)


# ----------------------------------------------------------------- contended
def run_contended(ctx: Context) -> dict[str, Any]:
    """Contended ``+= 1``: P processes on one key and on a key each."""
    cfg, log = ctx.cfg, ctx.log
    entries: list[dict[str, Any]] = []
    dirs = {s.key: ctx.fresh_dir(f"{s.key}-contended") for s in ctx.systems}
    floor = ctx.floor
    runs = 0

    def one_run(system: System, variant: str, procs: int, mode: str) -> Any:
        nonlocal runs
        runs += 1
        return _contended.run_once(
            system,
            dirs[system.key],
            variant,
            procs,
            mode,
            cfg.incr_per_proc,
            f"r{runs}",
            cfg.start_method,
            cfg.contended_budget_s,
        )

    floor_variant = floor.variants[0].key
    for mode in ("one", "distinct"):
        for procs in cfg.procs:
            records: dict[str, list[Any]] = {"floor": []}
            subjects: dict[str, Callable[[], float]] = {}
            labels: dict[str, tuple[System, Any]] = {}
            for system in ctx.others:
                for variant in system.variants:
                    name = f"{system.key}:{variant.key}"
                    records[name] = []
                    labels[name] = (system, variant)
                    subjects[name] = _contended_runner(
                        one_run, system, variant.key, procs, mode, records[name]
                    )
            reference = _contended_runner(
                one_run, floor, floor_variant, procs, mode, records["floor"]
            )
            _, ratios = interleave(reference, subjects, cfg.contended_rounds)
            ratios["floor"] = [1.0] * cfg.contended_rounds
            labels["floor"] = (floor, floor.variants[0])
            for name, recs in records.items():
                system, variant = labels[name]
                entries.append(
                    _contended_entry(system, variant, procs, mode, recs, ratios[name])
                )
            log(
                f"  {mode} key, P={procs}: "
                + ", ".join(
                    f"{e['name']} {e['ops_per_s']:.0f}/s lost {e['lost']}"
                    for e in entries[-len(records) :]
                )
            )
    for path in dirs.values():
        shutil.rmtree(path, ignore_errors=True)
    not_shared = [s.key for s in ctx.systems if not s.variants and s.key != "floor"]
    return {
        "incr_per_proc": cfg.incr_per_proc,
        "entries": entries,
        "not_shared": not_shared,
    }


def _contended_runner(
    one_run: Callable[..., Any],
    system: System,
    variant: str,
    procs: int,
    mode: str,
    sink: list[Any],
) -> Callable[[], float]:
    def run() -> float:
        result = one_run(system, variant, procs, mode)
        sink.append(result)
        return float(result.ops_per_s) if result.ops_per_s else float("nan")

    return run


def _contended_entry(
    system: System,
    variant: Any,
    procs: int,
    mode: str,
    recs: list[Any],
    ratios: list[float],
) -> dict[str, Any]:
    return {
        "name": f"{system.key}:{variant.key}",
        "system": system.key,
        "variant": variant.key,
        "label": variant.label,
        "atomic": variant.atomic,
        "procs": procs,
        "mode": mode,
        "ops_per_s": median_or_nan([r.ops_per_s for r in recs]),
        "ratio": median_or_nan(ratios),
        "ratios": [round(r, 4) for r in ratios],
        "successes": sum(r.successes for r in recs),
        "final": sum(r.final for r in recs),
        "lost": sum(r.lost for r in recs),
        "errors": sum(r.errors for r in recs),
        "timed_out": any(r.timed_out for r in recs),
        "first_error": next((r.first_error for r in recs if r.first_error), None),
        "runs": [r.as_dict() for r in recs],
    }


# --------------------------------------------------- sizes, len and iteration
def run_sizes(ctx: Context) -> dict[str, Any]:
    """get/replace at each store size, ``len`` scaling, and iteration."""
    cfg, log = ctx.cfg, ctx.log
    overhead = ctx.timer_overhead
    value = value_of(100, cfg.seed)
    want_iter = cfg.iter_keys > 0
    built = sorted(set(cfg.sizes) | set(cfg.len_sizes) | ({cfg.iter_keys} - {0}))
    smallest = built[0]
    out: dict[str, Any] = {
        "sizes": sorted(cfg.sizes),
        "len_sizes": sorted(cfg.len_sizes),
        "iter_keys": cfg.iter_keys,
        "value_bytes": 100,
        "ops": {},
        "len": {},
        "iter": {},
        "skipped": {},
        "build_s": {},
    }
    with contextlib.ExitStack() as floor_stack:
        floor_h: dict[int, Handle] = {}
        for n in built:
            t0 = time.perf_counter()
            floor_h[n] = floor_stack.enter_context(store(ctx, ctx.floor, f"{n}"))
            fill(floor_h[n], n, value)
            out["build_s"].setdefault("floor", {})[n] = time.perf_counter() - t0
        log(f"  floor stores built: {_fmt_build(out['build_s']['floor'])}")

        floor_scale: dict[str, dict[int, list[float]]] = {
            op: {n: [] for n in cfg.sizes} for op in ("get", "replace")
        }
        floor_series = {
            op: {n: Series() for n in cfg.sizes} for op in ("get", "replace")
        }
        for system in ctx.others:
            sizes = [n for n in built if ctx.cap(system, n)]
            if len(sizes) < len(built):
                out["skipped"][system.key] = (
                    f"capped at {system.max_keys:,} keys (--no-caps lifts it)"
                )
            with contextlib.ExitStack() as stack:
                handles: dict[int, Handle] = {}
                for n in sizes:
                    t0 = time.perf_counter()
                    handles[n] = stack.enter_context(store(ctx, system, f"{n}"))
                    fill(handles[n], n, value)
                    out["build_s"].setdefault(system.key, {})[n] = (
                        time.perf_counter() - t0
                    )
                log(
                    f"  {system.key} stores built: "
                    f"{_fmt_build(out['build_s'][system.key])}"
                )
                measured = [n for n in sorted(cfg.sizes) if n in handles]
                out["ops"][system.key] = _size_ops(
                    ctx, floor_h, handles, measured, value, overhead,
                    floor_scale, floor_series,
                )  # fmt: skip
                lens = [n for n in sorted(cfg.len_sizes) if n in handles]
                if len(lens) < len(cfg.len_sizes) and max(handles) not in lens:
                    lens.append(max(handles))  # capped: its largest store
                out["len"][system.key] = _len_scaling(
                    ctx, system, floor_h, handles, lens
                )
                if want_iter and cfg.iter_keys in handles:
                    out["iter"][system.key] = _iteration(
                        ctx, floor_h, handles, cfg.iter_keys, smallest
                    )
                log(f"  {system.key}: " + _size_brief(out, system.key))

        out["ops"]["floor"] = {
            op: {
                n: {
                    **floor_series[op][n].result(),
                    "ratio": 1.0,
                    "scale": median_or_nan(floor_scale[op][n]),
                }
                for n in cfg.sizes
            }
            for op in ("get", "replace")
        }
        out["len"]["floor"] = _floor_len(ctx, floor_h, sorted(cfg.len_sizes))
        if want_iter:
            out["iter"]["floor"] = _iteration_floor(
                ctx, floor_h, cfg.iter_keys, smallest
            )
    return out


def _fmt_build(times: dict[int, float]) -> str:
    return ", ".join(f"{n:,} keys {t:.1f} s" for n, t in times.items())


def _size_batch(
    handle: Handle,
    op: str,
    n: int,
    count: int,
    rng: random.Random,
    value: Any,
    budget: float | None = None,
) -> list[int]:
    keys = [key_of(rng.randrange(n)) for _ in range(count)]
    if op == "get":
        return timed_calls(handle.get, keys, budget)
    set_ = handle.set
    pairs = list(zip(keys, distinct_values(value, count), strict=True))
    return timed_calls(lambda a: set_(a[0], a[1]), pairs, budget)


def _size_ops(
    ctx: Context,
    floor_h: dict[int, Handle],
    handles: dict[int, Handle],
    sizes: list[int],
    value: Any,
    overhead: float,
    floor_scale: dict[str, dict[int, list[float]]],
    floor_series: dict[str, dict[int, Series]],
) -> dict[str, Any]:
    cfg = ctx.cfg
    rng = random.Random(cfg.seed)
    result: dict[str, Any] = {}
    base = sizes[0] if sizes else 0
    for op in ("get", "replace"):
        series = {n: Series() for n in sizes}
        scale: dict[int, list[float]] = {n: [] for n in sizes}

        def one(h: Handle, n: int, sink: Series | None = None, op: str = op) -> float:
            raw = _size_batch(h, op, n, cfg.ops, rng, value, cfg.batch_budget_s)
            samples = [max(0.0, s - overhead) for s in raw]
            if sink is not None:
                sink.samples.extend(samples)
            return median_or_nan(samples)

        for n in sizes:  # warm-up
            one(floor_h[n], n)
            one(handles[n], n)
        for _ in range(cfg.rounds):
            mine: dict[int, float] = {}
            theirs: dict[int, float] = {}
            for n in sizes:
                before = one(floor_h[n], n, floor_series[op].get(n))
                mine[n] = one(handles[n], n, series[n])
                after = one(floor_h[n], n, floor_series[op].get(n))
                theirs[n] = geomean([before, after])
                series[n].ratios.append(mine[n] / theirs[n])
            for n in sizes:
                scale[n].append(mine[n] / mine[base])
                if n in floor_scale[op]:
                    floor_scale[op][n].append(theirs[n] / theirs[base])
        result[op] = {
            n: {**series[n].result(), "scale": median_or_nan(scale[n])} for n in sizes
        }
    return result


def _len_calls(h: Handle, calls: int = 7) -> dict[str, float]:
    t_len = [timed_once(h.length) for _ in range(calls)]
    t_bool = [timed_once(h.truthy) for _ in range(calls)]
    return {"len": median_or_nan(t_len), "bool": median_or_nan(t_bool)}


def _len_scaling(
    ctx: Context,
    system: System,
    floor_h: dict[int, Handle],
    handles: dict[int, Handle],
    sizes: list[int],
) -> dict[str, Any]:
    """``len`` and ``bool`` at each size: vs the floor and vs the smallest."""
    if not sizes:
        return {}
    try:
        handles[sizes[0]].length()
    except NotSupported:
        return {"n/a": True}
    cfg = ctx.cfg
    per: dict[int, dict[str, list[float]]] = {
        n: {"len": [], "bool": [], "len_ratio": [], "bool_ratio": []} for n in sizes
    }
    scale: dict[str, dict[int, list[float]]] = {
        "len": {n: [] for n in sizes},
        "bool": {n: [] for n in sizes},
    }
    counts = {n: handles[n].length() for n in sizes}
    for _ in range(cfg.rounds):
        mine: dict[int, dict[str, float]] = {}
        for n in sizes:
            before = _len_calls(floor_h[n])
            mine[n] = _len_calls(handles[n])
            after = _len_calls(floor_h[n])
            for what in ("len", "bool"):
                base = geomean([before[what], after[what]])
                per[n][what].append(mine[n][what])
                per[n][f"{what}_ratio"].append(mine[n][what] / base)
        for n in sizes:
            for what in ("len", "bool"):
                scale[what][n].append(mine[n][what] / mine[sizes[0]][what])
    return {
        n: {
            "count": counts[n],
            "len_us": median_or_nan(per[n]["len"]) / 1000,
            "bool_us": median_or_nan(per[n]["bool"]) / 1000,
            "len_ratio": median_or_nan(per[n]["len_ratio"]),
            "bool_ratio": median_or_nan(per[n]["bool_ratio"]),
            "len_scale": median_or_nan(scale["len"][n]),
            "bool_scale": median_or_nan(scale["bool"][n]),
        }
        for n in sizes
    }


def _floor_len(ctx: Context, floor_h: dict[int, Handle], sizes: list[int]) -> Any:
    if not sizes:
        return {}
    rows: dict[int, dict[str, list[float]]] = {
        n: {"len": [], "bool": []} for n in sizes
    }
    scale: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(ctx.cfg.rounds):
        got = {n: _len_calls(floor_h[n]) for n in sizes}
        for n in sizes:
            rows[n]["len"].append(got[n]["len"])
            rows[n]["bool"].append(got[n]["bool"])
            scale[n].append(got[n]["len"] / got[sizes[0]]["len"])
    return {
        n: {
            "count": floor_h[n].length(),
            "len_us": median_or_nan(rows[n]["len"]) / 1000,
            "bool_us": median_or_nan(rows[n]["bool"]) / 1000,
            "len_ratio": 1.0,
            "bool_ratio": 1.0,
            "len_scale": median_or_nan(scale[n]),
        }
        for n in sizes
    }


def _consume(it: Iterator[Any]) -> int:
    count = 0
    for _ in it:
        count += 1
    return count


def _peak_kb(make_iter: Callable[[], Iterator[Any]]) -> float:
    """Peak Python heap growth (tracemalloc) while consuming one iterator."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        _consume(make_iter())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - base) / 1024


def _iteration(
    ctx: Context,
    floor_h: dict[int, Handle],
    handles: dict[int, Handle],
    n: int,
    small: int,
) -> dict[str, Any]:
    """Time to iterate ``n`` keys vs one floor SELECT; peak memory at 2 sizes."""
    h, f = handles[n], floor_h[n]
    try:
        seen = _consume(h.iter_keys())
    except NotSupported:
        return {"n/a": True}
    times, ratios = [], []
    for _ in range(ctx.cfg.rounds):
        before = timed_once(lambda: _consume(f.iter_keys()))
        mine = timed_once(lambda: _consume(h.iter_keys()))
        after = timed_once(lambda: _consume(f.iter_keys()))
        times.append(mine)
        ratios.append(mine / geomean([before, after]))
    peak_small = _peak_kb(handles[small].iter_keys) if small in handles else None
    return {
        "keys": n,
        "seen": seen,
        "ms": median_or_nan(times) / 1e6,
        "ratio": median_or_nan(ratios),
        "ratios": [round(r, 4) for r in ratios],
        "peak_kb": {str(small): peak_small, str(n): _peak_kb(h.iter_keys)},
    }


def _iteration_floor(
    ctx: Context, floor_h: dict[int, Handle], n: int, small: int
) -> dict[str, Any]:
    f = floor_h[n]
    times = [timed_once(lambda: _consume(f.iter_keys())) for _ in range(ctx.cfg.rounds)]
    return {
        "keys": n,
        "seen": _consume(f.iter_keys()),
        "ms": median_or_nan(times) / 1e6,
        "ratio": 1.0,
        "peak_kb": {
            str(small): _peak_kb(floor_h[small].iter_keys),
            str(n): _peak_kb(f.iter_keys),
        },
    }


def _size_brief(out: dict[str, Any], key: str) -> str:
    parts = []
    for op, rows in out["ops"].get(key, {}).items():
        for n, r in rows.items():
            parts.append(f"{op}@{n:,} {r['median']:.1f}us x{r['ratio']:.2f}")
    lens = out["len"].get(key, {})
    for n, r in lens.items():
        if isinstance(r, dict):
            parts.append(f"len@{n:,} {r['len_us']:.1f}us")
    it = out["iter"].get(key)
    if it and "ms" in it:
        parts.append(f"iter {it['ms']:.0f} ms x{it['ratio']:.2f}")
    return ", ".join(parts)


# -------------------------------------------------------------------- values
def run_values(ctx: Context) -> dict[str, Any]:
    """get and replace of 100 B .. 1 MB values, every system vs the floor."""
    cfg, log = ctx.cfg, ctx.log
    overhead = ctx.timer_overhead
    out: dict[str, Any] = {}
    for size in cfg.values:
        count = max(5, min(cfg.keys, 50_000_000 // size))
        n = max(10, min(cfg.ops, 20_000_000 // size))
        value = value_of(size, cfg.seed)
        rng = random.Random(cfg.seed)
        per: dict[str, Any] = {"keys": count, "ops_per_batch": n}
        with contextlib.ExitStack() as stack:
            handles: dict[str, Handle] = {}
            for system in ctx.systems:
                handles[system.key] = stack.enter_context(
                    store(ctx, system, f"v{size}")
                )
                fill(handles[system.key], count, value)
            for op in ("get", "replace"):
                series = {key: Series() for key in handles}
                runners = {
                    key: _batch_runner(
                        h,
                        op,
                        count,
                        n,
                        rng,
                        value,
                        overhead,
                        series[key],
                        cfg.batch_budget_s,
                    )
                    for key, h in handles.items()
                }
                for key, run in runners.items():  # warm-up, not recorded
                    run()
                    series[key].samples.clear()
                subjects = {key: run for key, run in runners.items() if key != "floor"}
                _, ratios = interleave(runners["floor"], subjects, cfg.rounds)
                for key, values in ratios.items():
                    series[key].ratios = values
                series["floor"].ratios = [1.0] * cfg.rounds
                per[op] = {key: s.result() for key, s in series.items()}
                log(f"  {size:,} B {op}: " + _brief(per[op]))
        out[str(size)] = per
    return out


def _batch_runner(
    h: Handle,
    op: str,
    keys: int,
    n: int,
    rng: random.Random,
    value: Any,
    overhead: float,
    sink: Series,
    budget: float | None,
) -> Callable[[], float]:
    """A batch of get or replace on random keys of ``h``, into ``sink``."""

    def run() -> float:
        raw = _size_batch(h, op, keys, n, rng, value, budget)
        samples = [max(0.0, s - overhead) for s in raw]
        sink.samples.extend(samples)
        return median_or_nan(samples)

    return run


# --------------------------------------------------------------------- clear
def run_clear(ctx: Context) -> dict[str, Any]:
    """``clear()`` of a dict holding ``cfg.clear_keys`` keys, vs the floor."""
    cfg, log = ctx.cfg, ctx.log
    value = value_of(100, cfg.seed)
    out: dict[str, Any] = {"keys": cfg.clear_keys}
    with contextlib.ExitStack() as stack:
        handles = {
            s.key: stack.enter_context(store(ctx, s, "clear")) for s in ctx.systems
        }
        series = {key: Series() for key in handles}

        def runner(key: str) -> Callable[[], float]:
            h = handles[key]

            def run() -> float:
                fill(h, cfg.clear_keys, value)
                t = float(timed_once(h.clear))
                series[key].samples.append(t)
                return t

            return run

        for key in handles:
            runner(key)()
            series[key].samples.clear()
        subjects = {key: runner(key) for key in handles if key != "floor"}
        _, ratios = interleave(runner("floor"), subjects, cfg.rounds)
        for key, values in ratios.items():
            series[key].ratios = values
        series["floor"].ratios = [1.0] * cfg.rounds
        out["results"] = {key: s.result() for key, s in series.items()}
    log("  clear: " + _brief(out["results"]))
    return out


# --------------------------------------------------------------------- named
def fd_count() -> int | None:
    """Open file descriptors of this process (Linux), else None."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


NAMED_BATCH = 10


def _open_batch(opener: NamedOpener, prefix: str, start: int, count: int) -> list[int]:
    """Open (and write one key to) ``count`` new named dicts; each one's time."""
    times = []
    for i in range(start, start + count):

        def open_one(
            name: str = f"{prefix}{i:05d}", i: int = i, opener: NamedOpener = opener
        ) -> None:
            opener.write(opener.open(name), "k", i)

        times.append(timed_once(open_one))
    return times


def run_named(ctx: Context) -> dict[str, Any]:
    """Open ``cfg.dicts`` named dicts (and write one key to each).

    The times of the first and last opens of that sequence drift with the
    machine and with the store's journal, so the comparison that counts is
    interleaved: rounds of ten new dicts in a store that already holds
    ``cfg.dicts`` of them against ten new dicts in a store that holds only
    the few opened in earlier rounds.
    """
    cfg, log = ctx.cfg, ctx.log
    out: dict[str, Any] = {"dicts": cfg.dicts}
    for system in ctx.systems:
        if not system.named_dicts:
            continue
        workdir = ctx.fresh_dir(f"{system.key}-named")
        small_dir = ctx.fresh_dir(f"{system.key}-named-small")
        try:
            opener = system.open_named(workdir)
        except NotSupported:
            continue
        small = system.open_named(small_dir)
        times: list[int] = []
        error = None
        fds0 = fd_count()
        threads0 = threading.active_count()
        fds_first = None
        ratios: list[float] = []
        try:
            times += _open_batch(opener, "dict", 0, 1)
            fds_first = fd_count()
            times += _open_batch(opener, "dict", 1, cfg.dicts - 1)
            fds_last = fd_count()
            threads = threading.active_count() - threads0
            _open_batch(small, "warm", 0, NAMED_BATCH)
            for r in range(cfg.rounds):
                base = (r + 1) * NAMED_BATCH
                few = median_or_nan(_open_batch(small, "more", base, NAMED_BATCH))
                many = median_or_nan(_open_batch(opener, "more", base, NAMED_BATCH))
                again = median_or_nan(_open_batch(small, "next", base, NAMED_BATCH))
                ratios.append(many / geomean([few, again]))
        except Exception as exc:
            error = f"failed at dict {len(times)}: {type(exc).__name__}: {exc}"
            fds_last = fd_count()
            threads = threading.active_count() - threads0
        try:
            opener.close()
            small.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(small_dir, ignore_errors=True)
        k = max(1, min(10, len(times) // 4))
        first = median_or_nan(times[:k])
        last = median_or_nan(times[-k:])
        entry = {
            "opened": len(times),
            "first_us": times[0] / 1000 if times else None,
            "first10_us": first / 1000,
            "last10_us": last / 1000,
            "ratio_last_first": last / first if first else None,
            "ratio_many_few": median_or_nan(ratios),
            "ratios": [round(x, 4) for x in ratios],
            "all": summary_us(times),
            "fds_before": fds0,
            "fds_after_first": fds_first,
            "fds_after_last": fds_last,
            "extra_fds": (
                fds_last - fds_first
                if fds_last is not None and fds_first is not None
                else None
            ),
            "threads_added": threads,
            "error": error,
        }
        out[system.key] = entry
        log(
            f"  {system.key}: first {entry['first10_us']:.0f}us, "
            f"last {entry['last10_us']:.0f}us, interleaved "
            f"x{entry['ratio_many_few']:.2f}, extra fds {entry['extra_fds']}"
            + (f", {error}" if error else "")
        )
    return out


def machine_facts() -> dict[str, Any]:
    """CPU, OS, Python, SQLite and package versions of this run."""
    import importlib.metadata
    import platform
    import sqlite3

    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    facts["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for dist in ("multinode", "diskcache", "sqlitedict", "redis", "matplotlib"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    facts["packages"] = versions
    return facts
