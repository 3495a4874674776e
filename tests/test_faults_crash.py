"""kill -9 at random moments: the file stays intact, every returned write is
there, no value is partial, and a transaction over two dicts is all-or-nothing.

Each round starts three writer processes (``_workers_faults.crash_writer``)
that mix plain writes, deletes, ``+=``, ``update`` batches and two-dict
transactions, logging each call before it starts and, fsync'd, after it
returned. They are SIGKILLed 50-300 ms later. After every round the store is
checked against the logs of every round so far: of each killed writer only
its last, unreturned call may or may not have happened.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _workers_faults import (
    BATCH,
    finish,
    integrity,
    start_worker,
    value_problem,
    wait_until,
)

import multinode as mn

pytestmark = [pytest.mark.fault, pytest.mark.processes]

ROUNDS = 5
WRITERS = 3
CHUNK_SIZE = 1000  # small, so that many values span several chunks


@dataclass
class WriterLog:
    """What one killed writer was acknowledged, and its call in doubt."""

    tag: str
    acked: list[dict[str, Any]] = field(default_factory=list)
    in_doubt: dict[str, Any] | None = None


def read_log(tag: str, path: Path) -> WriterLog:
    """Parse a writer's log; a torn last line counts as never written."""
    log = WriterLog(tag)
    if not path.exists():
        return log
    started: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    returned: set[int] = set()
    for line in path.read_text().split("\n")[:-1]:
        kind, _, body = line.partition(" ")
        entry = json.loads(body)
        if kind == "B":
            started[entry["i"]] = entry
            order.append(entry["i"])
        else:
            returned.add(entry["i"])
    for i in order:
        if i in returned:
            log.acked.append(started[i])
        else:
            assert log.in_doubt is None, f"{tag}: two calls without a return"
            assert i == order[-1], f"{tag}: call {i} never returned, yet later ones ran"
            log.in_doubt = started[i]
    return log


def check_store(path: Path, mode: str, logs: list[WriterLog], seed: int) -> None:
    """Every promise of a crash, checked against the writers' logs."""
    where = f"(seed {seed}, {mode})"
    assert integrity(path) == "ok", where

    import multinode._store as store_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_module, "CHUNK_SIZE", CHUNK_SIZE)
        with mn.Store(path, journal_mode=mode) as store:
            assert store.check() == [], where
            dicts = {n: store.get_dict(n) for n in ("main", "a", "b")}
            items = {n: dict(d.items()) for n, d in dicts.items()}
            lengths = {n: len(d) for n, d in dicts.items()}
    for n in dicts:
        assert lengths[n] == len(items[n]), f"len({n}) disagrees with its items {where}"
    main, a, b = items["main"], items["a"], items["b"]

    # No partial value anywhere.
    counter = main.pop("counter")
    problems = [value_problem(k, v) for k, v in [*main.items(), *a.items()]]
    problems += [value_problem(k, v) for k, v in b.items()]
    assert [p for p in problems if p] == [], where

    # The two-dict transaction: both or neither, the same value in both.
    assert set(a) == set(b), f"pairs in one dict only {where}"
    assert all(a[k] == b[k] for k in a), where

    acked_incs = doubt_incs = 0
    expected_main: set[Any] = set()
    maybe_main: set[Any] = set()
    for log in logs:
        slots: dict[str, int | None] = {}
        for e in log.acked:
            if e["op"] == "set":
                slots[e["key"]] = e["i"]
            elif e["op"] == "del":
                slots[e["key"]] = None
            elif e["op"] == "inc":
                acked_incs += 1
            elif e["op"] == "pair":
                key = (log.tag, e["i"])
                assert key in a, f"acknowledged pair {key} lost {where}"
            elif e["op"] == "batch":
                keys = {f"{log.tag}.b{e['i']}.{j}" for j in range(BATCH)}
                assert keys <= set(main), f"acknowledged batch {keys} lost {where}"
                expected_main |= keys

        doubt = log.in_doubt or {"op": None, "i": None}
        for key, i in slots.items():
            got = main.get(key)
            allowed = {i}
            if doubt["op"] == "set" and doubt["key"] == key:
                allowed.add(doubt["i"])
            if doubt["op"] == "del" and doubt["key"] == key:
                allowed.add(None)
            assert (got["op"] if got else None) in allowed, (
                f"{key}: acknowledged state {i}, found {got and got['op']} {where}"
            )
            if got:
                expected_main.add(key)
        if doubt["op"] == "set" and doubt["key"] not in slots:
            maybe_main.add(doubt["key"])
        if doubt["op"] == "inc":
            doubt_incs += 1
        if doubt["op"] == "batch":
            keys = {f"{log.tag}.b{doubt['i']}.{j}" for j in range(BATCH)}
            assert len(keys & set(main)) in (0, BATCH), f"torn batch {where}"
            maybe_main |= keys
        pairs = {k for k in a if k[0] == log.tag}
        acked_pairs = {(log.tag, e["i"]) for e in log.acked if e["op"] == "pair"}
        doubt_pair = {(log.tag, doubt["i"])} if doubt["op"] == "pair" else set()
        assert acked_pairs <= pairs <= acked_pairs | doubt_pair, where

    # Nothing that was never written, and the counter neither lost nor doubled.
    assert expected_main <= set(main) <= expected_main | maybe_main, where
    assert acked_incs <= counter <= acked_incs + doubt_incs, (
        f"counter {counter}, acknowledged {acked_incs} (+{doubt_incs} in doubt) {where}"
    )


@pytest.mark.timeout(300)
def test_sigkill_writers_at_random_moments(tmp_path: Path, journal_mode: str) -> None:
    """Writers SIGKILLed at random moments over several rounds leave an
    intact file holding every acknowledged write, no partial value, no torn
    batch and no half of a two-dict transaction."""
    seed = random.randrange(2**32)
    print(f"crash test seed {seed}")
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    with mn.Store(path, journal_mode=journal_mode) as store:
        store.get_dict("main")["counter"] = 0
        store.get_dict("a")
        store.get_dict("b")

    logs: list[WriterLog] = []
    killed_while_working = 0
    for r in range(ROUNDS):
        procs = []
        # One writer per round is killed counting from its start, so it may
        # die while still opening the store; the others once they are writing.
        early = rng.randrange(WRITERS)
        for w in range(WRITERS):
            tag = f"r{r}w{w}"
            proc = start_worker(
                "crash_writer",
                path=str(path),
                mode=journal_mode,
                tag=tag,
                log=str(tmp_path / f"{tag}.log"),
                ready=str(tmp_path / f"{tag}.ready"),
                seed=rng.randrange(2**32),
                chunk_size=CHUNK_SIZE,
            )
            procs.append((tag, proc, w == early))
        started = time.monotonic()
        _, early_proc, _ = procs[early]
        time.sleep(max(0.0, started + rng.uniform(0.05, 0.3) - time.monotonic()))
        early_proc.kill()
        for tag, proc, is_early in procs:
            if is_early:
                continue
            ready = tmp_path / f"{tag}.ready"
            wait_until(
                lambda ready=ready, proc=proc: (
                    ready.exists() or proc.poll() is not None
                ),
                60,
                f"writer {tag} to open the store",
            )
        for tag, proc, is_early in sorted(procs, key=lambda _: rng.random()):
            if is_early:
                continue
            time.sleep(rng.uniform(0.05, 0.3) / 2)
            assert proc.poll() is None, (tag, finish(proc, 10))
            proc.kill()
        for tag, proc, _ in procs:
            rc, _, err = finish(proc, 30)
            assert rc == -9, f"writer {tag} ended with {rc}, not by SIGKILL: {err}"
            log = read_log(tag, tmp_path / f"{tag}.log")
            killed_while_working += bool(log.acked)
            logs.append(log)
        check_store(path, journal_mode, logs, seed)
        print(f"round {r}: acknowledged", [len(log.acked) for log in logs[-WRITERS:]])

    # The test only means something if writers did get work acknowledged.
    assert killed_while_working >= ROUNDS, f"writers barely ran (seed {seed})"
    assert sum(len(log.acked) for log in logs) > 50, f"seed {seed}"


@pytest.mark.parametrize("size", [1000, 20 * 2**20], ids=["small", "20MB"])
def test_killed_inside_transaction_leaves_nothing_and_no_lock(
    tmp_path: Path, journal_mode: str, size: int
) -> None:
    """A process SIGKILLed inside a transaction over two dicts leaves none of
    it behind, holds no lock afterwards (the next write needs no wait), and
    the file is intact."""
    path = tmp_path / "tx.db"
    with mn.Store(path, journal_mode=journal_mode) as store:
        store.get_dict("main").update({"keep": 1, "gone": 1})
        store.get_dict("a")
        store.get_dict("b")
    ready = tmp_path / "ready"
    proc = start_worker(
        "die_in_transaction",
        path=str(path),
        mode=journal_mode,
        ready=str(ready),
        size=size,
    )
    wait_until(lambda: ready.exists() or proc.poll() is not None, 60, "the transaction")
    assert proc.poll() is None, finish(proc, 10)
    proc.kill()
    rc, _, err = finish(proc, 30)
    assert rc == -9, err

    assert integrity(path) == "ok"
    with mn.Store(path, journal_mode=journal_mode, timeout=5.0) as store:
        main, a, b = (store.get_dict(n) for n in ("main", "a", "b"))
        assert main.copy() == {"keep": 1, "gone": 1}
        assert len(main) == 2
        assert "x" not in a and "x" not in b and len(a) == len(b) == 0
        main["after"] = 1
        a["y"] = b"y"
        assert store.check() == []
    assert integrity(path) == "ok"


def test_backup_killed_midway_leaves_no_partial_file(tmp_path: Path) -> None:
    """A backup SIGKILLed at a random moment leaves the store intact and, at
    the destination, either nothing or a complete store, never a partial
    file that looks like a backup (and that a retry would refuse to
    overwrite)."""
    path = tmp_path / "src.db"
    with mn.Store(path) as store:
        d = store.get_dict("d")
        d.update({i: bytes([i % 251]) * 2000 for i in range(20_000)})
        want = d.copy()
    rng = random.Random()
    killed_midway = 0
    problems = []
    for trial in range(8):
        dest = tmp_path / f"backup{trial}.db"
        proc = start_worker("backup_to", path=str(path), dest=str(dest))
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"start\n", finish(proc, 10)
        time.sleep(rng.uniform(0, 0.08))
        proc.kill()
        _, out, _ = finish(proc, 30)
        if "done" in out:
            continue
        killed_midway += 1
        if not dest.exists():
            continue
        try:
            with mn.Store(dest) as backup:
                if backup.get_dict("d").copy() != want:
                    problems.append(f"{dest.name}: an incomplete store")
        except mn.MultinodeError as exc:
            problems.append(f"{dest.name}: {type(exc).__name__}: {exc}")
    assert integrity(path) == "ok"
    assert not problems, f"of {killed_midway} backups killed midway:\n" + "\n".join(
        problems
    )
