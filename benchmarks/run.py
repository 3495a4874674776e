"""The benchmark runner: ``python -m benchmarks`` or ``python benchmarks/run.py``.

Measures multinode, the raw sqlite3 floor and the peers in one run, each
system in a fresh temporary directory, and writes a markdown report, the raw
figures as JSON and (with matplotlib) a chart. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _report, _workloads
from benchmarks._systems import System, all_systems
from benchmarks._timing import timer_overhead_ns
from benchmarks._workloads import WORKLOADS, Config, Context

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"

QUICK = {
    "rounds": 2,
    "ops": 20,
    "keys": 200,
    "sizes": [200, 2000],
    "len_sizes": [200, 2000],
    "iter_keys": 2000,
    "values": [100, 10_000],
    "procs": [1, 2],
    "incr_per_proc": 30,
    "contended_rounds": 1,
    "clear_keys": 200,
    "dicts": 20,
}

RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "ops": _workloads.run_ops,
    "contended": _workloads.run_contended,
    "sizes": _workloads.run_sizes,
    "values": _workloads.run_values,
    "clear": _workloads.run_clear,
    "named": _workloads.run_named,
}


def _ints(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        if not part:
            continue
        mult = 1
        for suffix, m in (("k", 1000), ("m", 1_000_000)):
            if part.endswith(suffix):
                part, mult = part[:-1], m
        out.append(int(float(part) * mult))
    return out


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="multinode vs the raw sqlite3 floor and its peers, in one run.",
    )
    d = Config()
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds)")
    p.add_argument("--rounds", type=int, help=f"interleaved rounds ({d.rounds})")
    p.add_argument("--ops", type=int, help=f"operations per batch ({d.ops})")
    p.add_argument("--keys", type=int, help=f"keys for per-op latency ({d.keys})")
    p.add_argument("--sizes", type=_ints, help="store sizes, e.g. 1k,100k,1m")
    p.add_argument("--len-sizes", type=_ints, help="sizes for len (1k,1m)")
    p.add_argument("--iter-keys", type=_ints, help="keys to iterate (100k; 0: none)")
    p.add_argument("--values", type=_ints, help="value sizes in bytes (100,10k,1m)")
    p.add_argument("--procs", type=_ints, help="process counts (1,2,4)")
    p.add_argument("--incr-per-proc", type=int, help=f"({d.incr_per_proc})")
    p.add_argument("--contended-rounds", type=int, help=f"({d.contended_rounds})")
    p.add_argument(
        "--contended-budget",
        type=float,
        dest="contended_budget_s",
        help=f"seconds after which a worker stops early ({d.contended_budget_s})",
    )
    p.add_argument("--clear-keys", type=int, help=f"keys for clear() ({d.clear_keys})")
    p.add_argument("--dicts", type=int, help=f"named dicts to open ({d.dicts})")
    p.add_argument("--workloads", type=_names, help="subset of: " + ",".join(WORKLOADS))
    keys = [s.key for s in all_systems()]
    p.add_argument("--systems", type=_names, help="subset of: " + ",".join(keys))
    p.add_argument("--skip", type=_names, default=[], help="systems to leave out")
    p.add_argument(
        "--no-caps",
        action="store_true",
        help="build even shelve and Manager stores at every size",
    )
    p.add_argument("--start-method", choices=("fork", "spawn", "forkserver"))
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--name", help="output file stem (default scratch-<time>)")
    p.add_argument(
        "--publish",
        action="store_true",
        help="also write benchmarks/RESULTS.md, results/results.json, chart.png",
    )
    p.add_argument("--tmpdir", type=Path, help="where the temporary stores go")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


def config_from(args: argparse.Namespace) -> Config:
    cfg = Config()
    if args.quick:
        for key, value in QUICK.items():
            setattr(cfg, key, value)
    for key in (
        "rounds", "ops", "keys", "sizes", "len_sizes", "values", "procs",
        "incr_per_proc", "contended_rounds", "clear_keys", "dicts",
        "workloads", "start_method", "seed", "contended_budget_s",
    ):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    if args.iter_keys is not None:
        cfg.iter_keys = args.iter_keys[0] if args.iter_keys else 0
    if args.start_method is None:
        cfg.start_method = "fork" if sys.platform.startswith("linux") else "spawn"
    cfg.caps = not args.no_caps
    unknown = set(cfg.workloads) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if not cfg.sizes or not cfg.len_sizes:
        raise SystemExit("--sizes and --len-sizes need at least one size")
    return cfg


def choose_systems(
    args: argparse.Namespace, log: Callable[[str], None]
) -> tuple[list[System], dict[str, Any]]:
    """The systems to run, and a description of every system (with skips)."""
    every = all_systems()
    wanted = set(args.systems) if args.systems else {s.key for s in every}
    unknown = (wanted | set(args.skip)) - {s.key for s in every}
    if unknown:
        raise SystemExit(f"unknown system(s): {', '.join(sorted(unknown))}")
    wanted.add("floor")
    chosen, described = [], {}
    for system in every:
        if system.key not in wanted or (
            system.key in args.skip and system.key != "floor"
        ):
            continue
        reason = system.missing()
        described[system.key] = {
            "label": system.label,
            "shared": system.shared,
            "notes": dict(system.notes),
            "skipped": reason,
        }
        if reason:
            log(f"skipped {system.label}: {reason}")
        else:
            chosen.append(system)
    return chosen, described


def _tmp_filesystem(path: Path) -> str:
    """The filesystem type holding ``path``, from /proc/mounts (Linux)."""
    try:
        with open("/proc/mounts") as fh:
            mounts = [line.split()[:3] for line in fh]
    except OSError:
        return "?"
    real = os.path.realpath(path)
    best, kind = "", "?"
    for _dev, point, fstype in mounts:
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fstype
    return kind


def _clean(obj: Any) -> Any:
    """JSON-ready: NaN becomes null, int keys become strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cfg = config_from(args)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr)
            sys.stderr.flush()

    systems, described = choose_systems(args, log)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or time.strftime("scratch-%Y%m%d-%H%M%S")
    args.name = stem
    log_path = args.out / f"{stem}.log"
    mn_log = _capture_multinode_log(log_path)
    root = Path(tempfile.mkdtemp(prefix="mn-bench-", dir=args.tmpdir))
    results: dict[str, Any] = {
        "command": "python -m benchmarks"
        + "".join(
            " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        ),
        "config": vars(cfg).copy(),
        "machine": _workloads.machine_facts(),
        "systems": described,
    }
    results["machine"]["tmp_filesystem"] = _tmp_filesystem(root)

    # SIGTERM runs the finally below, so the Redis server and temp files go.
    old = None
    if hasattr(signal, "SIGTERM"):
        try:
            old = signal.signal(signal.SIGTERM, _raise_exit)
        except ValueError:  # not the main thread (e.g. inside a test runner)
            old = None
    try:
        ctx = Context(cfg, systems, root, log)
        ctx.timer_overhead = timer_overhead_ns()
        results["timer_overhead_ns"] = ctx.timer_overhead
        for system in list(systems):
            try:
                system.start(root)
            except Exception as exc:
                log(f"skipped {system.label}: could not start: {exc}")
                described[system.key]["skipped"] = f"could not start: {exc}"
                systems.remove(system)
                ctx = Context(cfg, systems, root, log)
                ctx.timer_overhead = results["timer_overhead_ns"]
        for name in cfg.workloads:
            log(f"{name} ...")
            t0 = time.perf_counter()
            results[name] = RUNNERS[name](ctx)
            results.setdefault("workload_s", {})[name] = time.perf_counter() - t0
    finally:
        for system in systems:
            try:
                system.stop()
            except Exception as exc:  # keep stopping the others
                log(f"stopping {system.key} failed: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        logging.getLogger("multinode").removeHandler(mn_log)
        mn_log.close()

    lines = log_path.read_text().splitlines() if log_path.exists() else []
    results["multinode_log"] = {
        "file": str(log_path),
        "records": len(lines),
        "first": lines[:5],
    }
    if lines:
        log(f"multinode logged {len(lines)} warning(s), see {log_path}")

    results["elapsed_s"] = time.perf_counter() - t_start
    results["machine"]["loadavg_end"] = (
        os.getloadavg() if hasattr(os, "getloadavg") else None
    )
    results["targets"] = _report.targets(results)
    write_outputs(results, args, log)
    return 0


def _capture_multinode_log(path: Path) -> logging.Handler:
    """Send multinode's warnings (lock waits and the like) to a file.

    Forked workers inherit the handler, so their records land there too.
    """
    handler = logging.FileHandler(path, mode="w", delay=False)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(
        logging.Formatter("%(asctime)s pid %(process)d %(levelname)s %(message)s")
    )
    logging.getLogger("multinode").addHandler(handler)
    return handler


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def write_outputs(
    results: dict[str, Any], args: argparse.Namespace, log: Callable[[str], None]
) -> None:
    out: Path = args.out
    stem = args.name
    md = _report.markdown(results)
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps(_clean(results), indent=1) + "\n")
    log(f"wrote {out / stem}.md and .json")
    if not args.no_chart:
        why = _report.chart(results, out / f"{stem}.png")
        log(f"no chart: {why}" if why else f"wrote {out / stem}.png")
    if args.publish:
        (HERE / "RESULTS.md").write_text(md)
        DEFAULT_OUT.mkdir(exist_ok=True)
        shutil.copyfile(out / f"{stem}.json", DEFAULT_OUT / "results.json")
        if (out / f"{stem}.png").exists():
            shutil.copyfile(out / f"{stem}.png", DEFAULT_OUT / "chart.png")
        log("published benchmarks/RESULTS.md, results/results.json, results/chart.png")
    if not args.quiet:
        met = [t for t in results["targets"] if t["ok"]]
        missed = [t for t in results["targets"] if t["ok"] is False]
        print(f"targets: {len(met)} met, {len(missed)} missed", file=sys.stderr)
        for t in missed:
            print(
                f"  missed: {t['what']} [{t['system']}]: {t['measured']} "
                f"(target {t['target']})",
                file=sys.stderr,
            )


if __name__ == "__main__":
    raise SystemExit(main())
