"""Workers and helpers for the fault-tier tests (crash, fork, locks, cases).

Two ways in:

- as a script, ``python _workers_faults.py COMMAND 'JSON-KWARGS'``: runs one
  scenario in a process of its own, so a test can SIGKILL it, bound it with a
  timeout, or let it fork without forking pytest itself. A scenario that has
  something to report pickles it to the ``out`` path it was given.
- as a module: `multiprocessing` targets (spawn needs them importable) and the
  small helpers the tests share (`run_worker`, `fresh_read`, `integrity`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import multinode as mn

HERE = Path(__file__).resolve()

# --------------------------------------------------------------------------
# Helpers used by the tests (in the pytest process)


class WorkerFailed(AssertionError):
    """A worker script exited badly; the message carries its stderr."""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def child_env() -> dict[str, str]:
    """The environment for a child Python: it imports the very multinode
    this process imported, installed or not."""
    root = str(Path(mn.__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def start_worker(command: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``COMMAND`` of this file in a new session (so it can be killed
    with everything it forked)."""
    return subprocess.Popen(
        [sys.executable, str(HERE), command, json.dumps(kwargs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=child_env(),
    )


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str, str]:
    """Wait at most ``timeout`` s for ``proc``; kill its group past that."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate(timeout=30)
        raise WorkerFailed(
            f"worker hung for more than {timeout} s and was killed\n"
            f"stdout: {out.decode(errors='replace')}\n"
            f"stderr: {err.decode(errors='replace')}"
        ) from None
    finally:
        _kill_group(proc)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def run_worker(command: str, *, timeout: float = 60.0, **kwargs: Any) -> Any:
    """Run ``COMMAND`` to the end (bounded) and return what it pickled to
    ``out`` (None if it was given no ``out``). Any non-zero exit fails."""
    out_path = kwargs.get("out")
    proc = start_worker(command, **kwargs)
    rc, out, err = finish(proc, timeout)
    if rc != 0:
        raise WorkerFailed(f"{command} exited with {rc}\nstdout: {out}\nstderr: {err}")
    if out_path is None:
        return None
    with open(out_path, "rb") as f:
        return pickle.load(f)


def fresh_read(
    path: str | os.PathLike[str],
    names: Iterable[str],
    out: str | os.PathLike[str],
    *,
    chunk_size: int | None = None,
    timeout: float = 60.0,
) -> dict[str, dict[str, Any]]:
    """Read whole dicts from a fresh process: for each name, its ``len`` and
    its items in iteration order."""
    return run_worker(  # type: ignore[no-any-return]
        "dump",
        timeout=timeout,
        path=str(path),
        names=list(names),
        out=str(out),
        chunk_size=chunk_size,
    )


def integrity(path: str | os.PathLike[str]) -> str:
    """``PRAGMA integrity_check`` through the raw sqlite3 module."""
    db = sqlite3.connect(str(path), timeout=30)
    try:
        rows = db.execute("PRAGMA integrity_check").fetchall()
    finally:
        db.close()
    return "\n".join(str(r[0]) for r in rows)


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def waitpid_bounded(pid: int, timeout: float) -> int:
    """``os.waitpid`` with a bound: the child's exit code, or -signal.
    Past the bound the child is killed and the wait fails."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} still running after {timeout} s")
        time.sleep(0.01)


def _dump(obj: Any, out: str) -> None:
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(obj, f)
    os.replace(tmp, out)


def _set_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None:
        import multinode._store as store_module

        store_module.CHUNK_SIZE = chunk_size  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Self-checking values for the crash test


def make_value(key: Any, op: int, size: int, rng: random.Random) -> dict[str, Any]:
    """A value that tells whether it arrived whole: payload plus its hash."""
    payload = rng.randbytes(size)
    return {
        "key": key,
        "op": op,
        "payload": payload,
        "sha": hashlib.sha256(payload).hexdigest(),
    }


def value_problem(key: Any, value: Any) -> str | None:
    """Why ``value`` is not a whole value written for ``key`` (None if it is)."""
    if not isinstance(value, dict) or set(value) != {"key", "op", "payload", "sha"}:
        return f"{key!r}: not a crash-test value: {value!r:.200}"
    if value["key"] != key:
        return f"{key!r}: holds the value written for {value['key']!r}"
    if hashlib.sha256(value["payload"]).hexdigest() != value["sha"]:
        return f"{key!r}: payload does not match its hash (partial value)"
    return None


_OPS = ("set", "del", "inc", "pair", "batch")
_OP_WEIGHTS = (40, 12, 16, 16, 16)
_SIZES = (0, 50, 900, 1000, 1100, 2500, 12_000, 40_000)
SLOTS = 6
BATCH = 4


def crash_writer(
    path: str,
    mode: str,
    tag: str,
    log: str,
    ready: str,
    seed: int,
    chunk_size: int,
) -> None:
    """Write forever until killed, logging each call before it starts
    (``B``) and, fsync'd, after it returned (``A``)."""
    _set_chunk_size(chunk_size)
    rng = random.Random(seed)
    store = mn.Store(path, journal_mode=mode)
    main, a, b = (store.get_dict(n) for n in ("main", "a", "b"))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def note(kind: str, entry: dict[str, Any], sync: bool) -> None:
        os.write(fd, f"{kind} {json.dumps(entry)}\n".encode())
        if sync:
            os.fsync(fd)

    present: set[str] = set()
    len(main)  # the connection is open before we say we are ready
    Path(ready).touch()
    i = 0
    while True:
        i += 1
        op = rng.choices(_OPS, _OP_WEIGHTS)[0]
        if op == "del" and not present:
            op = "set"
        entry: dict[str, Any] = {"i": i, "op": op}
        if op == "set":
            key = f"{tag}.s{rng.randrange(SLOTS)}"
            entry["key"] = key
            note("B", entry, False)
            main[key] = make_value(key, i, rng.choice(_SIZES), rng)
            present.add(key)
        elif op == "del":
            key = rng.choice(sorted(present))
            entry["key"] = key
            note("B", entry, False)
            if i % 2:
                del main[key]
            else:
                main.pop(key)
            present.discard(key)
        elif op == "inc":
            note("B", entry, False)
            main["counter"] += 1
        elif op == "pair":
            note("B", entry, False)
            pkey = (tag, i)
            value = make_value(pkey, i, rng.choice(_SIZES), rng)
            with store.transaction():
                a[pkey] = value
                b[pkey] = value
        else:
            note("B", entry, False)
            main.update(
                {
                    (k := f"{tag}.b{i}.{j}"): make_value(k, i, rng.choice(_SIZES), rng)
                    for j in range(BATCH)
                }
            )
        note("A", {"i": i}, True)


def die_in_transaction(path: str, mode: str, ready: str, size: int) -> None:
    """Stop inside a transaction over two dicts (to be SIGKILLed there)."""
    store = mn.Store(path, journal_mode=mode)
    main, a, b = (store.get_dict(n) for n in ("main", "a", "b"))
    with store.transaction():
        a["x"] = b"\x07" * size
        b["x"] = b"\x07" * size
        main["keep"] = 2
        del main["gone"]
        Path(ready).touch()
        time.sleep(120)


def backup_to(path: str, dest: str) -> None:
    """Back the store up into ``dest``, saying when it starts and ends."""
    store = mn.Store(path)
    len(store.get_dict("d"))
    print("start", flush=True)
    store.backup(dest)
    print("done", flush=True)


# --------------------------------------------------------------------------
# Fork scenarios (each runs in a process of its own and forks there)


def _child_exit(code: int, style: str) -> None:
    """Leave a forked child: ``exit`` runs the interpreter's shutdown (atexit,
    finalizers) as a real program would; ``_exit`` skips it."""
    sys.stdout.flush()
    sys.stderr.flush()
    if style == "exit":
        raise SystemExit(code)
    os._exit(code)


def fork_hazard(path: str, mode: str, n: int, child_exit: str, out: str) -> None:
    """A parent that has used its store forks; the child writes ``n`` keys
    and exits; the parent then writes and closes."""
    store = mn.Store(path, journal_mode=mode)
    d = store.get_dict("hazard")
    d["parent_before"] = 1
    _ = d["parent_before"], len(d), list(d)

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for i in range(n):
                d[f"c{i}"] = i
            d["child_n"] = len(d)
            code = 0
        except BaseException:
            Path(out + ".child").write_text(traceback.format_exc())
        _child_exit(code, child_exit)

    # The parent keeps writing while the child runs.
    for i in range(n):
        d[f"p{i}"] = i
    child_rc = waitpid_bounded(pid, 60)
    d["parent_after"] = 1
    store.close()
    child_error = Path(out + ".child")
    _dump(
        {
            "child_rc": child_rc,
            "child_error": child_error.read_text() if child_error.exists() else None,
        },
        out,
    )


def _wait_line(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        raise AssertionError(f"no word from the other process within {timeout} s")
    return os.read(fd, 64)


def fork_hazard_overlap(
    path: str, mode: str, n: int, child_exit: str, out: str
) -> None:
    """The parent closes its store while the child, forked from it after it
    had used the store, is between writes; the child then writes on. A child
    running on the parent's connection, or on SQLite lock bookkeeping copied
    from it, holds no real lock, so the parent's close may checkpoint and
    remove the WAL under it and its later writes vanish."""
    store = mn.Store(path, journal_mode=mode)
    d = store.get_dict("hazard")
    d["parent_before"] = 1
    _ = d["parent_before"], len(d), list(d)
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for i in range(n):
                d[f"c{i}"] = i
                if i == n // 2:
                    os.write(to_parent_w, b"half")
                    _wait_line(to_child_r, 60)
            d["child_n"] = len(d)
            code = 0
        except BaseException:
            Path(out + ".child").write_text(traceback.format_exc())
        _child_exit(code, child_exit)

    _wait_line(to_parent_r, 60)
    for i in range(n):
        d[f"p{i}"] = i
    store.close()
    os.write(to_child_w, b"closed")
    child_rc = waitpid_bounded(pid, 60)
    with mn.Store(path, journal_mode=mode) as again:
        again.get_dict("hazard")["parent_after"] = 1
    child_error = Path(out + ".child")
    _dump(
        {
            "child_rc": child_rc,
            "child_error": child_error.read_text() if child_error.exists() else None,
        },
        out,
    )


def fork_inside_own_transaction(path: str, mode: str, out: str) -> None:
    """Fork from inside this thread's own transaction: the child must not
    use the store; the parent's transaction commits."""
    store = mn.Store(path, journal_mode=mode)
    d = store.get_dict("own")
    d["before"] = 1
    r, w = os.pipe()
    with store.transaction():
        d["in_tx"] = 1
        pid = os.fork()
        if pid == 0:
            obs: dict[str, str] = {}
            for label, fn in (("get", lambda: d["before"]), ("len", lambda: len(d))):
                try:
                    obs[label] = f"ok {fn()!r}"
                except mn.ForkError:
                    obs[label] = "ForkError"
                except BaseException as exc:
                    obs[label] = f"{type(exc).__name__}: {exc}"
            os.write(w, pickle.dumps(obs))
            os._exit(0)
        d["after_fork"] = 1
    os.close(w)
    child_rc = waitpid_bounded(pid, 60)
    obs = pickle.loads(os.read(r, 65536))
    store.close()
    _dump({"child": obs, "child_rc": child_rc}, out)


def fork_with_busy_thread(path: str, mode: str, forks: int, n: int, out: str) -> None:
    """Fork repeatedly while another thread writes without pause; each child
    writes ``n`` keys of its own."""
    store = mn.Store(path, journal_mode=mode)
    d = store.get_dict("busy")
    stop = threading.Event()
    acked = [0]
    errors: list[str] = []

    def write() -> None:
        try:
            i = 0
            while not stop.is_set():
                d[f"t{i}"] = i
                i += 1
                acked[0] = i
        except BaseException:
            errors.append(traceback.format_exc())

    t = threading.Thread(target=write, daemon=True)
    t.start()
    codes = []
    for f in range(forks):
        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for i in range(n):
                    d[f"c{f}.{i}"] = i
                code = 0
            except BaseException:
                traceback.print_exc()
            _child_exit(code, "exit" if f % 2 else "_exit")
        codes.append(waitpid_bounded(pid, 60))
    stop.set()
    t.join(60)
    if t.is_alive():
        raise AssertionError("the writing thread is still running after 60 s")
    store.close()
    _dump({"codes": codes, "acked": acked[0], "errors": errors}, out)


def fork_mp_child(d: mn.SharedDict, j: int, n: int) -> None:
    """Target for the ``fork`` start method: uses the inherited dict."""
    for i in range(n):
        d[f"c{j}.{i}"] = i
        d["n"] += 1


def fork_mp(path: str, mode: str, n: int, out: str) -> None:
    """The ``fork`` start method, children using the parent's dict object."""
    import multiprocessing as mp

    store = mn.Store(path, journal_mode=mode)
    d = store.get_dict("mpfork")
    d["n"] = 0
    _ = d["n"]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=fork_mp_child, args=(d, j, n)) for j in range(3)]
    for p in procs:
        p.start()
    for i in range(n):
        d[f"p{i}"] = i
        d["n"] += 1
    codes = []
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.kill()
            p.join(10)
        codes.append(p.exitcode)
    d["parent_after"] = 1
    store.close()
    _dump({"codes": codes}, out)


def fork_during_lock_wait(path: str, mode: str, read: bool, out: str) -> None:
    """Fork while another thread waits, outside any transaction, for a lock
    that this thread holds through a raw connection and releases only after
    the fork returns; then let the waiter finish."""
    store = mn.Store(path, journal_mode=mode, timeout=20)
    d = store.get_dict("w")
    d["k"] = 0
    raw = sqlite3.connect(path, isolation_level=None)
    # A writer's lock blocks writers in both modes; EXCLUSIVE also blocks
    # readers in rollback-journal mode.
    raw.execute("BEGIN EXCLUSIVE" if read else "BEGIN IMMEDIATE")
    result: dict[str, Any] = {}

    def wait_for_the_lock() -> None:
        try:
            result["value"] = d["k"] if read else d.__setitem__("k", 1)
        except BaseException as exc:
            result["error"] = repr(exc)

    t = threading.Thread(target=wait_for_the_lock, daemon=True)
    t.start()
    time.sleep(0.5)  # the thread is now in its lock wait
    t_fork = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    fork_returned_after = time.monotonic() - t_fork
    child_rc = waitpid_bounded(pid, 60)
    raw.execute("ROLLBACK")
    raw.close()
    t.join(60)
    _dump(
        {
            "fork_returned_after": fork_returned_after,
            "child_rc": child_rc,
            "waiter": result,
            "after": d["k"],
        },
        out,
    )
    store.close()


def fork_in_transaction(
    path: str,
    mode: str,
    timeout_s: float | None,
    hold: float,
    child_exit: str,
    out: str,
) -> None:
    """Fork while another thread is inside ``store.transaction()`` for
    ``hold`` seconds; the store's lock timeout is ``timeout_s`` (None: the
    default)."""
    if timeout_s is None:
        store = mn.Store(path, journal_mode=mode)
    else:
        store = mn.Store(path, journal_mode=mode, timeout=timeout_s)
    d = store.get_dict("tx")
    d["before"] = 1
    entered = threading.Event()
    thread_result: dict[str, Any] = {}

    def hold_transaction() -> None:
        try:
            with store.transaction():
                d["t1"] = 1
                entered.set()
                time.sleep(hold)
                d["t2"] = 2
            thread_result["committed"] = True
        except BaseException as exc:
            thread_result["error"] = repr(exc)
            entered.set()

    t = threading.Thread(target=hold_transaction, daemon=True)
    t.start()
    if not entered.wait(30):
        raise AssertionError("the transaction thread never started")
    r, w = os.pipe()
    t_fork = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        obs: dict[str, Any] = {}

        def attempt(label: str, fn: Callable[[], Any]) -> None:
            try:
                obs[label] = ("ok", repr(fn()))
            except mn.ForkError as exc:
                obs[label] = ("ForkError", str(exc))
            except BaseException as exc:
                obs[label] = ("other", f"{type(exc).__name__}: {exc}")

        def in_transaction() -> None:
            with store.transaction():
                d["child_tx"] = 1

        def set_child() -> None:
            d["child"] = 1

        attempt("get_t2", lambda: d.get("t2"))
        attempt("set", set_child)
        attempt("len", lambda: len(d))
        attempt("iter", lambda: list(d))
        attempt("transaction", in_transaction)
        attempt("get_dict", lambda: store.get_dict("tx"))
        os.write(w, pickle.dumps(obs))
        os.close(w)
        _child_exit(0, child_exit)

    fork_returned_after = time.monotonic() - t_fork
    os.close(w)
    chunks = []
    while True:
        ready, _, _ = select.select([r], [], [], 60)
        if not ready:
            raise AssertionError("child sent nothing within 60 s")
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    child_rc = waitpid_bounded(pid, 60)
    t.join(60)
    if t.is_alive():
        raise AssertionError("the transaction thread is still running after 60 s")
    d["parent_after"] = 1
    store.close()
    _dump(
        {
            "child": pickle.loads(b"".join(chunks)) if chunks else None,
            "child_rc": child_rc,
            "thread": thread_result,
            "fork_returned_after": fork_returned_after,
        },
        out,
    )


# --------------------------------------------------------------------------
# Lock holder and readers


def hold_lock(path: str, begin: str, max_hold: float) -> None:
    """Take SQLite's write lock with raw sqlite3 and hold it until a line
    arrives on stdin (or ``max_hold`` seconds pass); then roll back."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute(begin)
    if begin == "BEGIN":
        # A read transaction: holds SQLite's SHARED lock.
        db.execute("SELECT count(*) FROM mn_item").fetchall()
    else:
        # A dirty page as well, so the lock is a real pending write.
        db.execute("UPDATE mn_dict SET removed = removed")
    print("locked", flush=True)
    select.select([sys.stdin], [], [], max_hold)
    db.execute("ROLLBACK")
    db.close()
    print("released", flush=True)


def open_and_read(path: str, name: str, key: str, timeout_s: float, out: str) -> None:
    """Open the store in this fresh process and read one value; report the
    value or the error, and how long it took."""
    t0 = time.monotonic()
    try:
        with mn.Store(path, timeout=timeout_s) as store:
            result: dict[str, Any] = {"value": store.get_dict(name)[key]}
    except Exception as exc:
        result = {"error": type(exc).__name__, "message": str(exc)}
    result["elapsed"] = time.monotonic() - t0
    _dump(result, out)


def dump(path: str, names: list[str], out: str, chunk_size: int | None) -> None:
    """Read whole dicts through the default store machinery of a fresh
    process (the path is passed explicitly)."""
    _set_chunk_size(chunk_size)
    result: dict[str, dict[str, Any]] = {}
    with mn.Store(path) as store:
        for name in names:
            d = store.get_dict(name)
            result[name] = {"len": len(d), "items": list(d.items())}
        result["__dicts__"] = {"names": store.dicts()}
    _dump(result, out)


# --------------------------------------------------------------------------
# Case workers


def _b04_get_dict(name: str, journal: str) -> mn.SharedDict:
    # The case itself uses the default store ("auto" journal mode); the
    # rollback variant names the store explicitly to force its journal.
    if journal == "auto":
        return mn.get_dict(name=name)
    path = os.environ["MULTINODE_STORE"]
    return mn.Store(path, journal_mode=journal).get_dict(name)


def b04_worker(barrier: Any, i: int, result_dir: str, journal: str = "auto") -> None:
    """B04: open a brand-new default store at the same moment as 31 others."""
    result = Path(result_dir) / f"w{i}"
    try:
        barrier.wait(120)
        d = _b04_get_dict("b04", journal)
        d[f"k{i}"] = i
        e = _b04_get_dict(f"b04_{i}", journal)
        e["x"] = i
        result.write_text("ok")
    except BaseException:
        result.write_text(traceback.format_exc())
        raise SystemExit(1) from None


def b04_big_writer(
    barrier: Any, stop: Any, result_dir: str, size: int, journal: str = "auto"
) -> None:
    """B04 variant: keep writing multi-megabyte values to ``b04`` during the
    start-up storm, two per transaction, then remove them."""
    result = Path(result_dir) / "big"
    try:
        barrier.wait(120)
        d = _b04_get_dict("b04", journal)
        n = 0
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            with d.transaction():
                d["big0"] = bytes([n % 256]) * size
                d["big1"] = bytes([(n + 1) % 256]) * size
            n += 1
        with d.transaction():
            del d["big0"]
            del d["big1"]
        result.write_text(f"ok {n}")
    except BaseException:
        result.write_text(traceback.format_exc())
        raise SystemExit(1) from None


def b28_worker(barrier: Any, path: str, name: str, j: int, new: int, gone: int) -> None:
    """B28: insert ``new`` fresh keys and delete ``gone`` existing ones,
    interleaved, one call each."""
    barrier.wait(120)
    with mn.Store(path) as store:
        d = store.get_dict(name)
        for i in range(max(new, gone)):
            if i < new:
                d[f"new{j}_{i}"] = i
            if i < gone:
                del d[f"k{j}_{i}"]


def b25_reader(path: str, seconds: float, out: str) -> None:
    """B25: always iterating, one key per millisecond."""
    d = mn.Store(path).get_dict("b25")
    deadline = time.monotonic() + seconds
    laps = 0
    while time.monotonic() < deadline:
        for _ in d:
            time.sleep(0.001)
            if time.monotonic() > deadline:
                break
        laps += 1
    _dump({"laps": laps}, out)


def b25_writer(path: str, seconds: float, keys: int, out: str) -> None:
    """B25: overwrite random 1 KB values as fast as it can."""
    d = mn.Store(path).get_dict("b25")
    deadline = time.monotonic() + seconds
    writes = 0
    while time.monotonic() < deadline:
        d[f"k{random.randrange(keys)}"] = os.urandom(1024)
        writes += 1
    _dump({"writes": writes}, out)


def b30_many(n: int, nofile: int, stores: int, out: str) -> None:
    """B30: ``n`` dicts (and ``stores`` Store objects on the same file), all
    alive, under a low open-files limit."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    path = os.environ["MULTINODE_STORE"]
    ds = [mn.get_dict(name=f"d{i}") for i in range(n)]
    for i, d in enumerate(ds):
        d["i"] = i
    extra = [mn.Store(path) for _ in range(stores)]
    for s in extra:
        s.get_dict("d0")["i"] = 0
    fds = len(os.listdir("/proc/self/fd"))
    mn.get_dict(name="one_more")["x"] = 1
    _dump({"fds": fds, "alive": sum(d["i"] == i for i, d in enumerate(ds))}, out)


# --------------------------------------------------------------------------

COMMANDS: dict[str, Callable[..., None]] = {
    "crash_writer": crash_writer,
    "die_in_transaction": die_in_transaction,
    "backup_to": backup_to,
    "fork_hazard": fork_hazard,
    "fork_hazard_overlap": fork_hazard_overlap,
    "fork_mp": fork_mp,
    "fork_inside_own_transaction": fork_inside_own_transaction,
    "fork_with_busy_thread": fork_with_busy_thread,
    "fork_in_transaction": fork_in_transaction,
    "fork_during_lock_wait": fork_during_lock_wait,
    "hold_lock": hold_lock,
    "dump": dump,
    "open_and_read": open_and_read,
    "b25_reader": b25_reader,
    "b25_writer": b25_writer,
    "b30_many": b30_many,
}


def main(argv: list[str]) -> None:
    command, kwargs = argv[0], json.loads(argv[1])
    COMMANDS[command](**kwargs)


if __name__ == "__main__":
    main(sys.argv[1:])
