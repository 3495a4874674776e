"""Field cases B04, B05, B11, B14, B15, B19, B25, B28 and B30 of CASES.md,
each expecting the right outcome named there.

Sizes that need gigabytes or minutes run scaled down here; the full size
runs under ``@pytest.mark.huge`` (MULTINODE_HUGE=1).
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _workers_faults as w
import pytest
from _workers_faults import (
    child_env,
    finish,
    fresh_read,
    integrity,
    run_worker,
    start_worker,
)

import multinode as mn
from multinode._sql import LENGTH

FORK_WITH_THREADS = "ignore:This process .* is multi-threaded:DeprecationWarning"


def _join_all(procs: list[Any], timeout: float) -> list[int | None]:
    """Join every process within one overall bound; kill stragglers."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
    return [p.exitcode for p in procs]


# --------------------------------------------------------------------------
# B04: many processes opening the same store at once


@pytest.mark.fault
@pytest.mark.processes
@pytest.mark.timeout(400)
@pytest.mark.filterwarnings(FORK_WITH_THREADS)
@pytest.mark.parametrize("big_writer", [False, True], ids=["plain", "big_writer"])
@pytest.mark.parametrize(
    ("start", "journal"),
    [("spawn", "auto"), ("fork", "auto"), ("fork", "rollback")],
)
def test_b04_many_processes_open_a_new_store_at_once(
    store_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start: str,
    journal: str,
    big_writer: bool,
) -> None:
    """B04: 32 processes open a brand-new store at the same moment (one more
    writing multi-megabyte values meanwhile, in the variant); none raises,
    and a fresh process sees all 32 keys and 32 dicts. Also with the store
    forced to a rollback journal, as on NFS."""
    # The storm is a race: the quick fork variants run it a few times.
    for attempt in range(3 if (start, journal) == ("fork", "auto") else 1):
        path = tmp_path / f"storm{attempt}" / "store.db"
        path.parent.mkdir()
        monkeypatch.setenv("MULTINODE_STORE", str(path))
        _b04_storm(path, ctx=mp.get_context(start), journal=journal, big=big_writer)


def _b04_storm(path: Path, ctx: Any, journal: str, big: bool) -> None:
    n = 32
    results = path.parent / "results"
    results.mkdir()
    barrier = ctx.Barrier(n + big)
    stop = ctx.Event()
    procs = [
        ctx.Process(target=w.b04_worker, args=(barrier, i, str(results), journal))
        for i in range(n)
    ]
    writer = None
    if big:
        # A rollback journal fsyncs each commit, and a transaction bigger
        # than the page cache locks readers out until it ends: smaller there.
        size = 2**20 if journal == "rollback" else 4 * 2**20
        writer = ctx.Process(
            target=w.b04_big_writer,
            args=(barrier, stop, str(results), size, journal),
        )
        writer.start()
    for p in procs:
        p.start()
    codes = _join_all(procs, 240)
    stop.set()
    if writer is not None:
        codes += _join_all([writer], 120)

    failures = {
        f.name: f.read_text() for f in results.iterdir() if f.read_text()[:2] != "ok"
    }
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert codes == [0] * len(codes)
    if big:
        assert (results / "big").read_text().startswith("ok")

    names = ["b04", *(f"b04_{i}" for i in range(n))]
    seen = fresh_read(path, names, path.parent / "read")
    assert seen["b04"]["len"] == n
    assert dict(seen["b04"]["items"]) == {f"k{i}": i for i in range(n)}
    for i in range(n):
        assert seen[f"b04_{i}"]["items"] == [("x", i)]
    assert set(names) <= set(seen["__dicts__"]["names"])
    assert integrity(path) == "ok"


# --------------------------------------------------------------------------
# B05: one dict object shared by many threads

# Full size with WAL; a rollback journal fsyncs every commit, so it runs
# fewer tasks here and the full size under huge.
B05_TASKS = {"wal": 10_000, "rollback": 800}


def _b05(store_path: Path, journal_mode: str, tasks: int) -> None:
    store = mn.Store(store_path, journal_mode=journal_mode)
    d = store.get_dict("b05")
    d["c"] = 0

    def task(i: int) -> Any:
        if "v" in d:
            _ = d["v"]
        d["v"] = i
        d["c"] += 1
        return d["v"]

    ex = ThreadPoolExecutor(16)
    try:
        out = list(ex.map(task, range(tasks), timeout=300))
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    assert len(out) == tasks
    assert all(type(v) is int and 0 <= v < tasks for v in out)
    assert d["c"] == tasks

    # Closing the store, or dropping the last reference to a dict, from a
    # thread other than the creator does not raise.
    other = mn.Store(store_path, journal_mode=journal_mode)
    e = other.get_dict("b05")
    assert e["c"] == tasks
    holder = [e]
    del e
    errors: list[BaseException] = []

    def finish_elsewhere() -> None:
        try:
            store.close()
            holder.clear()
            gc.collect()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=finish_elsewhere)
    t.start()
    t.join(30)
    assert not t.is_alive() and errors == []
    other.close()
    gc.collect()


@pytest.mark.timeout(300)
def test_b05_one_dict_shared_by_many_threads(
    store_path: Path, journal_mode: str
) -> None:
    """B05 (full size with WAL, scaled with a rollback journal): 16 threads
    run the task on one dict object; no exception, every result an int in
    range, ``d["c"]`` equals the number of tasks, and closing from another
    thread does not raise."""
    _b05(store_path, journal_mode, B05_TASKS[journal_mode])


@pytest.mark.huge
@pytest.mark.timeout(1800)
def test_b05_full_size_rollback(store_path: Path) -> None:
    """B05 at full size with a rollback journal: 10,000 tasks on 16 threads."""
    _b05(store_path, "rollback", 10_000)


# --------------------------------------------------------------------------
# B11: unusual strings as keys and names

B11_KEYS = [
    "",
    "\u00e9",
    "e\u0301",
    os.fsdecode(b"caf\xe9"),
    "\ud800",
    "a\x00b",
    "\U0001f600",
    "x" * 1_000_000,
]
B11_NAMES = [
    "n" * 300 + "A",
    "n" * 300 + "B",
    "\u00e9",
    "e\u0301",
    "\ud800",
    os.fsdecode(b"caf\xe9"),
    "a\x00b",
    "a\x00c",
    "\U0001f600",
    'x"; DROP TABLE y; --',
    "x" * 100_000,
]


@pytest.mark.processes
def test_b11_unusual_strings_as_keys_and_names(
    store_path: Path, tmp_path: Path
) -> None:
    """B11: lone surrogates, NUL, NFC/NFD, emoji, empty and 1 MB strings are
    exact, distinct keys (and dict names), seen so by a fresh process."""
    with mn.Store(store_path) as store:
        d = store.get_dict("b11")
        for i, k in enumerate(B11_KEYS):
            d[k] = i
        d["val"] = "bad\udce9"
        for name in B11_NAMES:
            store.get_dict(name)["who"] = name
        assert len(d) == 9

    seen = fresh_read(store_path, ["b11", *B11_NAMES], tmp_path / "read")
    items = seen["b11"]["items"]
    assert seen["b11"]["len"] == 9
    got = dict(items)
    assert [got[k] for k in B11_KEYS] == list(range(8))
    assert [k for k, _ in items][:8] == B11_KEYS
    assert got["val"] == "bad\udce9"
    for name in B11_NAMES:
        assert seen[name]["items"] == [("who", name)], repr(name[:40])
    assert set(B11_NAMES) | {"b11"} == set(seen["__dicts__"]["names"])


# --------------------------------------------------------------------------
# B14: values whose class the reader cannot import

B14_WRITER = """
import multinode as mn
from multinode._sql import LENGTH

class Point:
    def __init__(self, x):
        self.x = x

d = mn.get_dict(name="b14")
d["p"] = Point(1)
d["ok"] = 1
assert d["p"].x == 1
"""

B14_READER = """
import json
import multinode as mn
from multinode._sql import LENGTH

d = mn.get_dict(name="b14")
obs = {"len": len(d), "list": list(d), "p_in": "p" in d, "ok": d["ok"]}

def attempt(label, fn):
    try:
        obs[label] = {"returned": repr(fn())}
    except Exception as e:
        obs[label] = {
            "type": type(e).__name__,
            "msg": str(e),
            "value_load_error": isinstance(e, mn.ValueLoadError),
            "multinode_error": isinstance(e, mn.MultinodeError),
            "key_error": isinstance(e, KeyError),
            "attribute_error": isinstance(e, AttributeError),
        }

attempt("getitem", lambda: d["p"])
attempt("get", lambda: d.get("p"))
attempt("pop", lambda: d.pop("p"))
obs["p_in_after_pop"] = "p" in d
attempt("items", lambda: list(d.items()))
attempt("values", lambda: list(d.values()))
attempt("copy", lambda: d.copy())
del d["p"]
obs["after_del"] = {"p_in": "p" in d, "len": len(d), "list": list(d)}
print(json.dumps(obs))
"""


@pytest.mark.processes
def test_b14_value_whose_class_the_reader_cannot_import(
    store_path: Path, tmp_path: Path
) -> None:
    """B14: a reader without ``__main__.Point`` can list, count and test the
    key; loading it raises ValueLoadError naming 'p' and __main__.Point (not
    KeyError, not AttributeError, never None); "p" stays after a failed pop;
    ``del`` works."""
    (tmp_path / "writer.py").write_text(B14_WRITER)
    (tmp_path / "reader.py").write_text(B14_READER)
    env = {**child_env(), "MULTINODE_STORE": str(store_path)}
    for script in ("writer.py", "reader.py"):
        proc = subprocess.run(
            [sys.executable, str(tmp_path / script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
    obs = json.loads(proc.stdout)

    assert obs["len"] == 2
    assert obs["list"] == ["p", "ok"]
    assert obs["p_in"] is True
    assert obs["ok"] == 1
    for label in ("getitem", "get", "pop", "items", "values", "copy"):
        e = obs[label]
        assert "returned" not in e, f"{label} returned {e}"
        assert e["value_load_error"] and e["multinode_error"], (label, e)
        assert not e["key_error"] and not e["attribute_error"], (label, e)
        assert "'p'" in e["msg"], (label, e["msg"])
        assert "__main__.Point" in e["msg"] or (
            "__main__" in e["msg"] and "Point" in e["msg"]
        ), (label, e["msg"])
    assert obs["p_in_after_pop"] is True
    assert obs["after_del"] == {"p_in": False, "len": 1, "list": ["ok"]}


# --------------------------------------------------------------------------
# B15: very large values

B15_CHUNK = 1000


def _pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


@pytest.mark.processes
def test_b15_values_spanning_many_chunks(
    store_path: Path,
    tmp_path: Path,
    journal_mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """B15 (scaled: CHUNK_SIZE 1000 bytes): values of many chunks round-trip
    through overwrite big->small->big, delete, popitem and iteration, also in
    a fresh process; no chunk is left behind; integrity_check stays ok."""
    import multinode._store as store_module

    monkeypatch.setattr(store_module, "CHUNK_SIZE", B15_CHUNK)
    sizes = [0, 1, 998, 999, 1000, 1001, 1999, 2000, 2001, 25_000]
    expected: dict[str, Any] = {}
    with mn.Store(store_path, journal_mode=journal_mode) as store:
        d = store.get_dict("b15")
        d["big"] = b"old"
        d["big"] = b"\x01" * 25_000
        v = d["big"]
        assert len(v) == 25_000 and v[:1] == v[-1:] == b"\x01"
        expected["big"] = v
        for n in sizes:
            d[f"s{n}"] = expected[f"s{n}"] = _pattern(n, n)
        d["str"] = expected["str"] = "\u00e9\U0001f600" * 3000
        d["obj"] = expected["obj"] = [list(range(500)), {"x": "y" * 3000}]

        # big -> small -> big, keeping its place
        d["big"] = b"s"
        assert d["big"] == b"s"
        d["big"] = expected["big"] = b"\x03" * 30_000
        assert next(iter(d)) == "big"

        d["gone"] = b"\x05" * 12_000
        del d["gone"]
        assert "gone" not in d
        d["popped"] = b"\x04" * 5_000
        assert d.popitem() == ("popped", b"\x04" * 5_000)
        assert d.pop("s25000") == expected.pop("s25000")

        j = store.get_dict("b15j", serializer="json")
        j["s"] = "\u00e9" * 20_000  # two-byte characters across chunk edges
        j["l"] = [{"k": "v" * 1500}] * 10

        assert list(d.items()) == list(expected.items())
        assert len(d) == len(expected)
        assert d == expected

    assert integrity(store_path) == "ok"
    seen = fresh_read(store_path, ["b15", "b15j"], tmp_path / "r", chunk_size=B15_CHUNK)
    assert seen["b15"]["items"] == list(expected.items())
    assert dict(seen["b15j"]["items"]) == {
        "s": "\u00e9" * 20_000,
        "l": [{"k": "v" * 1500}] * 10,
    }

    # Deleting and clearing leaves no orphan chunks behind.
    with mn.Store(store_path, journal_mode=journal_mode) as store:
        store.get_dict("b15").clear()
        store.delete_dict("b15j")
        assert store.check() == []
    db = sqlite3.connect(str(store_path))
    try:
        (chunks,) = db.execute("SELECT count(*) FROM mn_chunk").fetchone()
        (items,) = db.execute("SELECT count(*) FROM mn_item").fetchone()
    finally:
        db.close()
    assert (chunks, items) == (0, 0)
    assert integrity(store_path) == "ok"


B15_HUGE_READER = """
import sys, multinode as mn
d = mn.get_dict(name="b15")
v = d["big"]
assert len(v) == 1_500_000_000, len(v)
assert v[:1] == v[-1:] == b"\\x01"
del v
outcome = "stored"
try:
    d["huge"] = b"\\x02" * (2**31 + 16)
except ValueError as e:
    assert not isinstance(e, __import__("sqlite3").Error), e
    outcome = "refused"
    assert "huge" not in d
else:
    h = d["huge"]
    assert len(h) == 2**31 + 16 and h[:1] == h[-1:] == b"\\x02"
    del h
b = d["big"]
assert len(b) == 1_500_000_000 and b[:1] == b[-1:] == b"\\x01"
d["after"] = 1
assert d["after"] == 1
print(outcome)
"""


@pytest.mark.huge
@pytest.mark.processes
@pytest.mark.timeout(3600)
def test_b15_full_size(store_path: Path, tmp_path: Path) -> None:
    """B15 at full size: 1.5 GB round-trips in a fresh process; 2 GiB + 16
    either round-trips or is refused with ValueError before writing."""
    with mn.Store(store_path) as store:
        d = store.get_dict("b15")
        d["big"] = b"old"
        d["big"] = b"\x01" * 1_500_000_000
    (tmp_path / "reader.py").write_text(B15_HUGE_READER)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "reader.py")],
        capture_output=True,
        text=True,
        timeout=3000,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("stored", "refused")
    assert integrity(store_path) == "ok"


# --------------------------------------------------------------------------
# B19: acknowledged writes survive an immediate exit

B19_COMMANDS = [
    'import multinode as mn; d=mn.get_dict(name="b19"); '
    "[d.__setitem__(i, i) for i in range(100)]",
    'import os, multinode as mn; d=mn.get_dict(name="b19"); d["x"]=1; os._exit(0)',
    'import os, signal, multinode as mn; d=mn.get_dict(name="b19"); d["y"]=1; '
    "os.kill(os.getpid(), signal.SIGKILL)",
    'import multinode as mn; d=mn.get_dict(name="b19"); print(len(d), d["x"], d["y"])',
]


@pytest.mark.fault
@pytest.mark.processes
def test_b19_acknowledged_writes_survive_immediate_exit(store_path: Path) -> None:
    """B19: the four commands; the last prints ``102 1 1``."""
    codes = []
    for command in B19_COMMANDS:
        proc = subprocess.run(
            [sys.executable, "-c", command],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
        )
        codes.append(proc.returncode)
    assert codes == [0, 0, -9, 0], proc.stderr
    assert proc.stdout == "102 1 1\n"


# --------------------------------------------------------------------------
# B25: the -wal file must not grow without bound

B25_KEYS = 1000


def _footprint(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except FileNotFoundError:
            pass
    return total


def _b25(store_path: Path, tmp_path: Path, seconds: float) -> None:
    with mn.Store(store_path, journal_mode="wal") as store:
        store.get_dict("b25").update(
            {f"k{i}": os.urandom(1024) for i in range(B25_KEYS)}
        )
    live = B25_KEYS * 1024
    bound = 2 * live + 64 * 2**20

    reader = start_worker(
        "b25_reader", path=str(store_path), seconds=seconds, out=str(tmp_path / "r")
    )
    writer = start_worker(
        "b25_writer",
        path=str(store_path),
        seconds=seconds,
        keys=B25_KEYS,
        out=str(tmp_path / "w"),
    )
    peak = 0
    deadline = time.monotonic() + seconds + 60
    while (reader.poll() is None or writer.poll() is None) and (
        time.monotonic() < deadline
    ):
        peak = max(peak, _footprint(store_path))
        time.sleep(0.25)
    rc_r, _, err_r = finish(reader, 30)
    rc_w, _, err_w = finish(writer, 30)
    assert (rc_r, rc_w) == (0, 0), err_r + err_w
    with open(tmp_path / "w", "rb") as f:
        writes = pickle.load(f)["writes"]
    print(f"B25: {writes} writes, peak footprint {peak} bytes (bound {bound})")
    assert peak < bound, f"footprint reached {peak} bytes, bound {bound}"

    wal = Path(f"{store_path}-wal")
    limit = 64 * 2**20
    end = time.monotonic() + 10
    while wal.exists() and wal.stat().st_size > limit and time.monotonic() < end:
        time.sleep(0.1)
    assert not wal.exists() or wal.stat().st_size <= limit
    assert integrity(store_path) == "ok"


@pytest.mark.fault
@pytest.mark.processes
@pytest.mark.timeout(300)
def test_b25_wal_stays_bounded_with_a_reader_always_active(
    store_path: Path, tmp_path: Path
) -> None:
    """B25 (scaled to 20 s): with a reader always iterating and a writer
    overwriting 1 KB values, the footprint stays below 2 x live + 64 MB, and
    afterwards -wal is at most 64 MB; neither process raises."""
    _b25(store_path, tmp_path, 20)


@pytest.mark.huge
@pytest.mark.processes
@pytest.mark.timeout(900)
def test_b25_full_size(store_path: Path, tmp_path: Path) -> None:
    """B25 at full length: 5 minutes."""
    _b25(store_path, tmp_path, 300)


# --------------------------------------------------------------------------
# B28: len() on a large dict


def _b28(
    store_path: Path, tmp_path: Path, mode: str, batches: int, batch: int, new: int
) -> None:
    gone = new // 2
    with mn.Store(store_path, journal_mode=mode) as store:
        d = store.get_dict("b28")
        for b in range(batches):
            d.update({f"k{b}_{i}": i for i in range(batch)})
        n = batches * batch
        assert len(d) == n
        assert bool(d) is True
        assert bool(store.get_dict("empty")) is False
        once = store.get_dict("once")
        once["k"] = 1
        del once["k"]
        assert bool(once) is False and len(once) == 0

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(
            target=w.b28_worker,
            args=(barrier, str(store_path), "b28", j, new, gone),
        )
        for j in range(4)
    ]
    for p in procs:
        p.start()
    assert _join_all(procs, 600) == [0, 0, 0, 0]

    want = n + 4 * (new - gone)
    with mn.Store(store_path, journal_mode=mode) as store:
        d = store.get_dict("b28")
        assert len(d) == want
        assert sum(1 for _ in d) == want
    seen = fresh_read(store_path, ["b28", "empty"], tmp_path / "r", timeout=600)
    assert seen["b28"]["len"] == len(seen["b28"]["items"]) == want
    assert seen["empty"]["len"] == 0
    db = sqlite3.connect(str(store_path))
    try:
        (dict_id,) = db.execute(
            "SELECT id FROM mn_dict WHERE name = ?", (b"b28",)
        ).fetchone()
        (length,) = db.execute(LENGTH, (dict_id,)).fetchone()
        (count,) = db.execute(
            "SELECT count(*) FROM mn_item WHERE dict = ?", (dict_id,)
        ).fetchone()
    finally:
        db.close()
    assert length == count == want


@pytest.mark.processes
@pytest.mark.timeout(300)
def test_b28_len_exact_after_concurrent_inserts_and_deletes(
    store_path: Path, tmp_path: Path, journal_mode: str
) -> None:
    """B28 (scaled to 50,000 keys): len is exact after 4 processes insert
    and delete distinct keys concurrently, seen from any process; an empty
    dict is falsy."""
    # A rollback journal fsyncs each of these single-key commits.
    new = {"wal": 1_000, "rollback": 200}[journal_mode]
    _b28(store_path, tmp_path, journal_mode, 10, 5_000, new)


@pytest.mark.huge
@pytest.mark.processes
@pytest.mark.timeout(3600)
def test_b28_full_size(store_path: Path, tmp_path: Path) -> None:
    """B28 at full size: 5,000,000 keys, then 4 x (10,000 new, 5,000 gone)."""
    _b28(store_path, tmp_path, "wal", 100, 50_000, 10_000)


# --------------------------------------------------------------------------
# B30: very many named dicts in one process


def _b30(store_path: Path, tmp_path: Path, n: int, nofile: int) -> None:
    got = run_worker(
        "b30_many", timeout=600, n=n, nofile=nofile, stores=20, out=str(tmp_path / "o")
    )
    assert got["alive"] == n
    assert got["fds"] < 100, got
    names = [f"d{i}" for i in range(n)]
    seen = fresh_read(store_path, [*names, "one_more"], tmp_path / "r", timeout=600)
    assert [seen[f"d{i}"]["items"] for i in range(n)] == [[("i", i)] for i in range(n)]
    assert seen["one_more"]["items"] == [("x", 1)]


@pytest.mark.fault
@pytest.mark.processes
@pytest.mark.timeout(300)
def test_b30_many_dicts_under_low_fd_limit(store_path: Path, tmp_path: Path) -> None:
    """B30 (scaled): 2,000 dicts and 20 Store objects on one file, all alive,
    under ``ulimit -n 256``: no "too many open files", fewer than 100 fds,
    and a fresh process reads them all."""
    _b30(store_path, tmp_path, 2_000, 256)


@pytest.mark.huge
@pytest.mark.processes
@pytest.mark.timeout(1800)
def test_b30_full_size(store_path: Path, tmp_path: Path) -> None:
    """B30 at full size: 10,000 dicts under ``ulimit -n 1024``."""
    _b30(store_path, tmp_path, 10_000, 1024)
