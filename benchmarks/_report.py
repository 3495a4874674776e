"""Turn the raw figures of a run into a markdown report, targets and a chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks._systems import OP_TITLES, OPS

MN = ("multinode-wal", "multinode-rollback")
SHARED_PEERS = ("diskcache-index", "diskcache-cache", "sqlitedict", "manager", "redis")


def us(x: float | None) -> str:
    """A time in microseconds, in the unit that reads best."""
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 10_000:
        return f"{x / 1000:.1f} ms"
    if x >= 100:
        return f"{x:.0f} µs"
    if x >= 10:
        return f"{x:.1f} µs"
    if x >= 0.1:
        return f"{x:.2f} µs"
    return f"{x * 1000:.0f} ns"


def ratio(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 100:
        return f"x{x:.0f}"
    if x >= 10:
        return f"x{x:.1f}"
    if x >= 0.1:
        return f"x{x:.2f}"
    return f"x{x:.2g}"


def kb(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 10_240:
        return f"{x / 1024:.1f} MB"
    return f"{x:.0f} KB"


def size(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def nbytes(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000} MB"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000} KB"
    return f"{n} B"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _label(res: dict[str, Any], key: str) -> str:
    return str(res["systems"][key]["label"])


def _measured(res: dict[str, Any]) -> list[str]:
    return [k for k, s in res["systems"].items() if s.get("skipped") is None]


# ------------------------------------------------------------------ sections
def section_ops(res: dict[str, Any]) -> list[str]:
    ops = res.get("ops")
    if not ops:
        return []
    lines = [
        f"## Per operation, {ops['keys']:,} keys, {ops['value_bytes']} B values",
        "",
        "Median per operation and, in brackets, the median of the per-round "
        "ratios to the floor measured next to it. `+= 1`, CAS and set_if_absent "
        "are compared with the floor's `BEGIN IMMEDIATE` read-modify-write.",
        "",
    ]
    header = ["system"] + [OP_TITLES[op] for op in OPS]
    rows, tails = [], []
    for key in _measured(res):
        row, tail = [_label(res, key)], [_label(res, key)]
        for op in OPS:
            r = ops.get(op, {}).get(key)
            if r is None:
                row.append("n/a")
                tail.append("n/a")
            else:
                row.append(f"{us(r['median'])} ({ratio(r['ratio'])})")
                tail.append(f"{us(r['p90'])} / {us(r['p99'])}")
        rows.append(row)
        tails.append(tail)
    lines += _table(header, rows)
    lines += ["", "p90 / p99 of the same samples:", ""]
    lines += _table(header, tails)
    notes = []
    for key in _measured(res):
        sys_notes = res["systems"][key].get("notes", {})
        parts = [f"{OP_TITLES.get(op, op)}: {sys_notes[op]}" for op in sys_notes]
        if parts:
            notes.append(f"- {_label(res, key)}: " + "; ".join(parts))
    if notes:
        lines += ["", "How each system does it:", "", *notes]
    problems = ops.get("problems") or {}
    for key, items in problems.items():
        lines.append(f"- **{key}: {len(items)} problem(s)**, first: {items[0]}")
    return [*lines, ""]


def section_contended(res: dict[str, Any]) -> list[str]:
    con = res.get("contended")
    if not con:
        return []
    entries = con["entries"]
    procs = sorted({e["procs"] for e in entries})
    lines = [
        f"## Contended `+= 1`, {con['incr_per_proc']:,} per process",
        "",
        "Operations per second over all processes (ratio to the floor's "
        "throughput in the same round), and over all rounds the lost updates "
        "(successful increments minus the final count) and errors.",
        "",
    ]
    for mode, title in (("one", "one shared key"), ("distinct", "a key per process")):
        names: list[str] = []
        for e in entries:
            if e["mode"] == mode and e["name"] not in names:
                names.append(e["name"])
        if not names:
            continue
        rows = []
        for name in names:
            first = next(e for e in entries if e["name"] == name)
            row = [
                f"{_label(res, first['system'])}: {first['label']}",
                "yes" if first["atomic"] else "**no**",
            ]
            for p in procs:
                e = next(
                    (x for x in entries
                     if x["name"] == name and x["mode"] == mode and x["procs"] == p),
                    None,
                )  # fmt: skip
                if e is None:
                    row.append("-")
                    continue
                cell = f"{e['ops_per_s']:,.0f}/s ({ratio(e['ratio'])})"
                flags = []
                if e["lost"]:
                    pct = 100 * e["lost"] / max(1, e["successes"])
                    flags.append(f"**lost {e['lost']:,} ({pct:.0f} %)**")
                if e["errors"]:
                    flags.append(f"**{e['errors']:,} errors**")
                if e["timed_out"]:
                    flags.append("**timed out**")
                row.append(cell + (", " + ", ".join(flags) if flags else ", lost 0"))
            rows.append(row)
        lines += [f"### {title}", ""]
        lines += _table(["system", "atomic", *[f"P = {p}" for p in procs]], rows)
        lines.append("")
    errors = [(e["name"], e["first_error"]) for e in entries if e["first_error"]]
    seen = set()
    for name, err in errors:
        if name not in seen:
            seen.add(name)
            lines.append(f"- first error of {name}: `{err[:160]}`")
    if con.get("not_shared"):
        lines.append(
            "- not run (one process only): "
            + ", ".join(_label(res, k) for k in con["not_shared"])
        )
    return [*lines, ""]


def section_sizes(res: dict[str, Any]) -> list[str]:
    sz = res.get("sizes")
    if not sz or not sz.get("ops"):
        return []
    sizes = sz["sizes"]
    lines = [
        f"## Store size ({sz['value_bytes']} B values)",
        "",
        "Median per operation; in brackets the ratio to the same system's "
        f"{size(sizes[0])}-key store, then to the floor at the same size, both "
        "from neighbouring batches.",
        "",
    ]
    header = ["system"] + [
        f"{op} {size(n)}" for op in ("get", "replace") for n in sizes
    ]
    rows = []
    for key in _measured(res):
        per = sz["ops"].get(key)
        if per is None:
            continue
        row = [_label(res, key)]
        for op in ("get", "replace"):
            for n in sizes:
                r = per.get(op, {}).get(n) or per.get(op, {}).get(str(n))
                if r is None:
                    row.append("-")
                else:
                    row.append(
                        f"{us(r['median'])} ({ratio(r.get('scale'))} / "
                        f"{ratio(r.get('ratio'))})"
                    )
        rows.append(row)
    lines += _table(header, rows)
    for key, why in sz.get("skipped", {}).items():
        lines.append(f"- {_label(res, key)}: {why}")
    builds = sz.get("build_s", {})
    if builds:
        lines += ["", "Time to fill the stores (bulk load, not timed above): "]
        parts = []
        for key, per in builds.items():
            items = ", ".join(f"{size(int(n))} {t:.1f} s" for n, t in per.items())
            parts.append(f"{key} {items}")
        lines.append("; ".join(parts) + ".")
    lines.append("")
    lines += section_len(res) + section_iter(res)
    return lines


def section_len(res: dict[str, Any]) -> list[str]:
    sz = res["sizes"]
    lens = sz.get("len_sizes") or []
    if len(lens) < 1 or not sz.get("len"):
        return []
    small, big = lens[0], lens[-1]
    lines = [
        f"### `len` and `bool` (case B28): {size(small)} vs {size(big)} keys",
        "",
        "A capped peer is shown at its largest store instead.",
        "",
    ]
    header = [
        "system",
        f"len {size(small)}",
        "len, big store",
        f"big / {size(small)}",
        "big vs floor",
        "bool, big store",
    ]
    rows = []
    for key in _measured(res):
        per = sz["len"].get(key)
        if not per or per.get("n/a"):
            continue
        sizes = sorted(int(n) for n in per)
        a = per.get(small) or per.get(str(small))
        top = sizes[-1]
        b = per.get(top) or per.get(str(top))
        if a is None or b is None or top == small:
            continue
        at = "" if top == big else f" @ {size(top)}"
        rows.append(
            [
                _label(res, key),
                us(a["len_us"]),
                us(b["len_us"]) + at,
                ratio(b.get("len_scale")),
                ratio(b.get("len_ratio")),
                us(b["bool_us"]),
            ]
        )
    return [*lines, *_table(header, rows), ""]


def section_iter(res: dict[str, Any]) -> list[str]:
    sz = res["sizes"]
    its = sz.get("iter") or {}
    if not its:
        return []
    n = sz["iter_keys"]
    lines = [
        f"### Iterating {n:,} keys",
        "",
        "Time for one full pass over the keys, ratio to one floor `SELECT key` "
        "over all rows, and the peak Python heap (tracemalloc) during a pass "
        "over a small and the large store: flat means bounded by a page.",
        "",
    ]
    rows = []
    for key in _measured(res):
        it = its.get(key)
        if not it or it.get("n/a"):
            continue
        peaks = it.get("peak_kb", {})
        small_key = min(peaks, key=int) if peaks else None
        rows.append(
            [
                _label(res, key),
                f"{it['ms']:.1f} ms",
                ratio(it["ratio"]),
                f"{kb(peaks.get(small_key))} @ {size(int(small_key))}"
                if small_key
                else "-",
                kb(peaks.get(str(n))),
            ]
        )
    header = ["system", "time", "vs floor SELECT", "peak heap, small", "peak heap"]
    return [*lines, *_table(header, rows), ""]


def section_values(res: dict[str, Any]) -> list[str]:
    vals = res.get("values")
    if not vals:
        return []
    sizes = [int(k) for k in vals]
    lines = [
        "## Value size",
        "",
        "Median get and replace of one value; ratio to the default floor "
        "(values inline in its table) in brackets. diskcache keeps values "
        "over 32 KB in side files.",
        "",
    ]
    header = ["system"] + [
        f"{op} {nbytes(n)}" for op in ("get", "replace") for n in sizes
    ]
    rows = []
    for key in _measured(res):
        row = [_label(res, key)]
        any_value = False
        for op in ("get", "replace"):
            for n in sizes:
                r = vals[str(n)].get(op, {}).get(key)
                if r is None:
                    row.append("-")
                else:
                    any_value = True
                    row.append(f"{us(r['median'])} ({ratio(r['ratio'])})")
        if any_value:
            rows.append(row)
    return [*lines, *_table(header, rows), ""]


def section_clear(res: dict[str, Any]) -> list[str]:
    cl = res.get("clear")
    if not cl:
        return []
    rows = [
        [_label(res, key), us(r["median"]), ratio(r["ratio"])]
        for key, r in cl["results"].items()
        if key in res["systems"]
    ]
    return [
        f"## `clear()` of {cl['keys']:,} keys",
        "",
        *_table(["system", "median", "vs floor `DELETE FROM`"], rows),
        "",
    ]


def section_named(res: dict[str, Any]) -> list[str]:
    nm = res.get("named")
    if not nm:
        return []
    n = nm["dicts"]
    lines = [
        f"## Opening {n:,} named dicts (open + one write each)",
        "",
        "First and last ten opens of the sequence (medians) and their ratio, "
        f"which drifts with the machine; then the interleaved ratio that counts: "
        f"new dicts opened in a store already holding {n:,} against new dicts "
        "in a nearly empty store, in alternating rounds. Last, the file "
        "descriptors and threads the process gained between the first dict "
        "and the last.",
        "",
    ]
    rows = []
    for key in _measured(res):
        e = nm.get(key)
        if not isinstance(e, dict):
            continue
        rows.append(
            [
                _label(res, key),
                us(e["first_us"]),
                us(e["first10_us"]),
                us(e["last10_us"]),
                ratio(e["ratio_last_first"]),
                ratio(e.get("ratio_many_few")),
                "-" if e["extra_fds"] is None else str(e["extra_fds"]),
                str(e["threads_added"]),
                e["error"] or "",
            ]
        )
    header = [
        "system", "very first", "first 10", "last 10", "last / first",
        f"{n:,} vs few, interleaved", "extra fds", "threads", "error",
    ]  # fmt: skip
    return [*lines, *_table(header, rows), ""]


# ------------------------------------------------------------------- targets
def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if d is None:
            return None
        if isinstance(d, dict):
            d = d.get(p, d.get(str(p)) if not isinstance(p, str) else None)
        else:
            return None
    return d


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**missed**")


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of BENCHMARKS.md, checked for both multinode modes."""
    out: list[dict[str, Any]] = []
    systems = [k for k in MN if k in _measured(res)]

    def add(what: str, target: str, system: str, measured: str, ok: bool | None):
        out.append(
            {"what": what, "target": target, "system": system,
             "measured": measured, "ok": ok}
        )  # fmt: skip

    ops = res.get("ops") or {}
    con = res.get("contended") or {}
    wal = [k for k in systems if k == "multinode-wal"]
    rollback = [k for k in systems if k == "multinode-rollback"]
    for key in wal:
        r = _get(ops, "get", key, "ratio")
        peer = _get(ops, "get", "diskcache-index", "ratio")
        if r is not None:
            ok = r <= 1.15 and (peer is None or r < peer)
            extra = f"; diskcache Index {ratio(peer)}" if peer is not None else ""
            add("get", "<= x1.15 floor, < diskcache Index", key, ratio(r) + extra, ok)
        for op in ("set_new", "replace"):
            r = _get(ops, op, key, "ratio")
            if r is None:
                continue
            peers = {
                p: _get(ops, op, p, "ratio")
                for p in SHARED_PEERS
                if _get(ops, op, p, "ratio") is not None
            }
            best = min(peers.items(), key=lambda kv: kv[1]) if peers else None
            ok = r <= 1.3 and all(r < v for v in peers.values())
            extra = f"; best shared peer {best[0]} {ratio(best[1])}" if best else ""
            add(OP_TITLES[op], "<= x1.3 floor, < every shared peer", key,
                ratio(r) + extra, ok)  # fmt: skip
        for op in ("incr", "cas", "sia"):
            r = _get(ops, op, key, "ratio")
            if r is not None:
                add(OP_TITLES[op], "<= x1.2 floor RMW", key, ratio(r), r <= 1.2)
        for e in con.get("entries", []):
            if e["system"] != key:
                continue
            ok = e["ratio"] >= 0.9 and e["lost"] == 0 and e["errors"] == 0
            add(
                f"contended, {e['mode']} key(s), P={e['procs']}",
                ">= x0.9 floor, 0 lost, 0 errors",
                key,
                f"{ratio(e['ratio'])}, lost {e['lost']}, errors {e['errors']}",
                ok,
            )

    # Rollback-journal mode: correctness is a target, speed is reported beside
    # the rollback-journal floor (DELETE journal, synchronous=FULL).
    for key in rollback:
        parts = []
        for op in OPS:
            mine = _get(ops, op, key, "ratio")
            ref = _get(ops, op, "floor-rollback", "ratio")
            if mine is not None and ref:
                parts.append(f"{OP_TITLES[op]} {ratio(mine / ref)}")
        if parts:
            add("rollback journal, per op", "reported: vs rollback-journal floor",
                key, ", ".join(parts), None)  # fmt: skip
        for e in con.get("entries", []):
            if e["system"] != key:
                continue
            ref = next(
                (x for x in con["entries"] if x["system"] == "floor-rollback"
                 and x["mode"] == e["mode"] and x["procs"] == e["procs"]),
                None,
            )  # fmt: skip
            beside = (
                f", {ratio(e['ratio'] / ref['ratio'])} of rollback floor"
                if ref and ref["ratio"]
                else ""
            )
            add(
                f"contended, {e['mode']} key(s), P={e['procs']}",
                "0 lost, 0 errors (speed reported)",
                key,
                f"lost {e['lost']}, errors {e['errors']}{beside}",
                e["lost"] == 0 and e["errors"] == 0 and not e["timed_out"],
            )

    sz = res.get("sizes") or {}
    for key in systems:
        for op in ("get", "replace"):
            for n, limit in ((100_000, 1.5), (1_000_000, 2.0)):
                s = _get(sz, "ops", key, op, n, "scale")
                if s is not None:
                    add(f"{op} at {size(n)} keys", f"<= x{limit} of its cost at 1k",
                        key, ratio(s), s <= limit)  # fmt: skip
        lens = sz.get("len_sizes") or []
        if len(lens) >= 2:
            s = _get(sz, "len", key, lens[-1], "len_scale")
            if s is not None:
                add(f"len at {size(lens[-1])}", f"<= x2 of len at {size(lens[0])}",
                    key, ratio(s), s <= 2.0)  # fmt: skip
        it = _get(sz, "iter", key)
        if it and "ratio" in it:
            peaks = it.get("peak_kb", {})
            small = min(peaks, key=int) if peaks else None
            flat = None
            if small and peaks.get(small) is not None and str(sz["iter_keys"]) in peaks:
                big_peak = peaks[str(sz["iter_keys"])]
                small_peak = max(peaks[small], 64.0)
                flat = big_peak <= 2 * small_peak
            add(f"iterate {size(sz['iter_keys'])} keys",
                "<= x2 one floor SELECT; memory flat", key,
                f"{ratio(it['ratio'])}; peak {kb(peaks.get(small))} -> "
                f"{kb(peaks.get(str(sz['iter_keys'])))}",
                it["ratio"] <= 2.0 and bool(flat))  # fmt: skip

    vals = res.get("values") or {}
    for key in wal:
        for op in ("get", "replace"):
            r = _get(vals, "1000000", op, key, "ratio")
            dc = _get(vals, "1000000", op, "diskcache-cache", "ratio")
            if r is not None:
                beside = f"; diskcache Cache {ratio(dc)}" if dc is not None else ""
                add(f"1 MB value {op}", "<= x0.5 default floor", key,
                    ratio(r) + beside, r <= 0.5)  # fmt: skip

    nm = res.get("named") or {}
    for key in systems:
        e = nm.get(key)
        if isinstance(e, dict) and e.get("ratio_many_few") is not None:
            r = e["ratio_many_few"]
            fds = e["extra_fds"]
            ok = r <= 1.2 and (fds is None or fds == 0) and not e["error"]
            add(f"open {nm['dicts']:,} named dicts",
                "next dict in a full store no dearer than in an empty one "
                "(within 20 % noise); no extra fds",
                key, f"x{r:.2f} (interleaved), extra fds {fds}", ok)  # fmt: skip
    return out


def section_targets(res: dict[str, Any]) -> list[str]:
    rows = [
        [t["what"], t["target"], t["system"], t["measured"], _verdict(t["ok"])]
        for t in res.get("targets", [])
    ]
    if not rows:
        return []
    met = sum(1 for t in res["targets"] if t["ok"])
    lines = [
        "## Targets (BENCHMARKS.md)",
        "",
        f"{met} of {len(rows)} checks met in this run.",
        "",
    ]
    lines += _table(["what", "target", "system", "measured", "verdict"], rows)
    return [*lines, ""]


def section_machine(res: dict[str, Any]) -> list[str]:
    m = res["machine"]
    pk = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items() if v)
    lines = [
        "## Machine and run",
        "",
        f"- CPUs: {m['cpu_count']} ({m.get('cpus_usable')} usable)"
        + (f", {m['cpu_model']}" if m.get("cpu_model") else ""),
        f"- {m['platform']}; {m['implementation']} {m['python']}; SQLite {m['sqlite']}",
        f"- packages: {pk}",
        f"- load average at start {_load(m.get('loadavg_start'))}, "
        f"at end {_load(m.get('loadavg_end'))}",
        f"- command: `{res['command']}`; {res['elapsed_s']:.0f} s in all; "
        f"temporary directory on {m.get('tmp_filesystem', '?')}",
        f"- timer overhead subtracted from each sample: "
        f"{res['timer_overhead_ns']:.0f} ns",
    ]
    mnlog = res.get("multinode_log") or {}
    if mnlog.get("records"):
        first = mnlog["first"][0].split(" WARNING ", 1)[-1]
        lines.append(
            f"- multinode logged {mnlog['records']} warning(s) during the run "
            f"(lock waits under contention), first: `{first[:120]}`"
        )
    skipped = [
        f"{s['label']} ({s['skipped']})"
        for s in res["systems"].values()
        if s.get("skipped")
    ]
    if skipped:
        lines.append("- skipped: " + "; ".join(skipped))
    return [*lines, ""]


def _load(x: Any) -> str:
    if not x:
        return "?"
    return " / ".join(f"{v:.2f}" for v in x)


def markdown(res: dict[str, Any]) -> str:
    """The whole report."""
    lines = [
        "# multinode benchmark results",
        "",
        "Produced by `python -m benchmarks` (see benchmarks/README.md for the "
        "method). Ratios are to the raw sqlite3 floor measured in the same run, "
        "in neighbouring batches; absolute times move with the machine's load.",
        "",
    ]
    for part in (
        section_targets,
        section_ops,
        section_contended,
        section_sizes,
        section_values,
        section_clear,
        section_named,
        section_machine,
    ):
        lines += part(res)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------- chart
def chart(res: dict[str, Any], path: Path) -> str | None:
    """A PNG of the per-operation and contended ratios; None if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    ops = res.get("ops") or {}
    con = res.get("contended") or {}
    fig, axes = plt.subplots(2, 1, figsize=(12, 9))
    keys = [k for k in _measured(res) if k != "floor"]

    ax = axes[0]
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        xs, ys = [], []
        for j, op in enumerate(OPS):
            r = _get(ops, op, key, "ratio")
            if r is not None and math.isfinite(r) and r > 0:
                xs.append(j + i * width)
                ys.append(r)
        ax.bar(xs, ys, width, label=_label(res, key))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(OPS))])
    ax.set_xticklabels([OP_TITLES[op].strip("`") for op in OPS])
    ax.set_ylabel("time / floor (log)")
    ax.set_title("Per operation, ratio to the raw sqlite3 floor (lower is better)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=3)

    ax = axes[1]
    entries = [e for e in con.get("entries", []) if e["mode"] == "one"]
    names: list[str] = []
    for e in entries:
        if e["name"] not in names:
            names.append(e["name"])
    procs = sorted({e["procs"] for e in entries})
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, ys = [], []
        for j, p in enumerate(procs):
            e = next(
                (x for x in entries if x["name"] == name and x["procs"] == p), None
            )
            if e and math.isfinite(e["ratio"]) and e["ratio"] > 0:
                xs.append(j + i * width)
                ys.append(e["ratio"])
        label = name + ("" if any(x["atomic"] for x in entries if x["name"] == name)
                        else " (loses updates)")  # fmt: skip
        ax.bar(xs, ys, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(procs))])
    ax.set_xticklabels([f"P = {p}" for p in procs])
    ax.set_ylabel("throughput / floor (log)")
    ax.set_title("Contended += 1 on one key (higher is better)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=3)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
