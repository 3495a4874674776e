"""Contended increments: P processes, one key or one key each, lost updates.

Each run starts P worker processes that attach to the same data, wait on one
barrier, then increment M times. Every worker counts the increments that
returned normally and the ones that raised; the parent reads the final
counts. Lost updates are the successful increments minus the final count, so
a system that silently drops writes shows it here whatever its speed.
Throughput is all successes over the span from the first worker's start to
the last worker's end (``perf_counter`` is system-wide on Linux and macOS).
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._systems import System, by_key

JOIN_TIMEOUT = 300.0
BARRIER_TIMEOUT = 120.0


@dataclass
class RunResult:
    """One contended run of one system variant."""

    procs: int
    mode: str
    successes: int = 0
    errors: int = 0
    final: int = 0
    lost: int = 0
    seconds: float = 0.0
    ops_per_s: float = 0.0
    first_error: str | None = None
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def worker(
    system_key: str,
    spec: Any,
    variant: str,
    key: str,
    count: int,
    barrier: Any,
    results: Any,
    budget_s: float,
) -> None:
    """Increment ``key`` ``count`` times once every worker is ready."""
    successes = errors = 0
    first_error: str | None = None
    t0 = t1 = 0.0
    try:
        system = by_key(system_key)
        handle = system.attach(spec)
        incr = handle.counter(variant).incr
        barrier.wait(BARRIER_TIMEOUT)
        t0 = time.perf_counter()
        stop_at = t0 + budget_s
        for _ in range(count):
            try:
                incr(key)
                successes += 1
            except Exception as exc:
                errors += 1
                if first_error is None:
                    first_error = f"{type(exc).__name__}: {exc}"
            if time.perf_counter() > stop_at:
                break
        t1 = time.perf_counter()
        handle.close()
    except Exception as exc:
        if first_error is None:
            first_error = f"{type(exc).__name__}: {exc}"
        errors += 1
    results.put((successes, errors, t0, t1, first_error))


def run_once(
    system: System,
    workdir: Path,
    variant: str,
    procs: int,
    mode: str,
    count: int,
    tag: str,
    start_method: str,
    budget_s: float,
) -> RunResult:
    """One contended run; ``mode`` is "one" (a shared key) or "distinct"."""
    result = RunResult(procs=procs, mode=mode)
    keys = (
        [f"{tag}-c"] * procs if mode == "one" else [f"{tag}-c{i}" for i in range(procs)]
    )

    # The parent closes its handle before forking: an open sqlitedict keeps a
    # thread, and a forked child must not inherit a live connection anyway.
    handle = system.create(workdir)
    try:
        counter = handle.counter(variant)
        for key in set(keys):
            counter.init(key)
        spec = handle.spec()
    finally:
        handle.close()

    ctx = multiprocessing.get_context(start_method)
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=worker,
            args=(system.key, spec, variant, key, count, barrier, results, budget_s),
            daemon=True,
        )
        for key in keys
    ]
    for proc in workers:
        proc.start()

    got = []
    deadline = time.monotonic() + JOIN_TIMEOUT
    for _ in workers:
        try:
            got.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            result.timed_out = True
            break
    for proc in workers:
        proc.join(timeout=max(0.1, deadline - time.monotonic()))
        if proc.is_alive():
            result.timed_out = True
            proc.kill()
            proc.join(timeout=10)
    results.close()

    starts = [r[2] for r in got if r[2]]
    ends = [r[3] for r in got if r[3]]
    result.successes = sum(r[0] for r in got)
    result.errors = sum(r[1] for r in got) + (procs - len(got))
    result.first_error = next((r[4] for r in got if r[4]), None)
    if starts and ends:
        result.seconds = max(ends) - min(starts)
    if result.seconds > 0:
        result.ops_per_s = result.successes / result.seconds
    if len(got) < procs:
        result.notes.append(f"{procs - len(got)} worker(s) never reported")

    reader = system.attach(spec)
    try:
        counter = reader.counter(variant)
        result.final = sum(counter.read(key) for key in set(keys))
    except Exception as exc:
        result.notes.append(f"final read failed: {type(exc).__name__}: {exc}")
    finally:
        reader.close()
    result.lost = result.successes - result.final
    return result
