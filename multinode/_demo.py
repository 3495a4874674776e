"""``multinode demo``: the main job, on real input.

Worker processes count the words of real text files into one shared dict.
Each worker counts a file on its own with a `collections.Counter`, then
applies every word to the shared dict with the atomic operations:
``set_if_absent(word, value=n)`` for a word no process has seen yet, and
``d[word] += n`` otherwise, all of one file inside one transaction (or each
on its own with ``--no-transaction``). When the workers are done, the parent
counts the same files again in one process and compares: every difference
is a lost (or invented) update, and any at all makes the demo fail.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import multinode as mn
from multinode._cli import CommandError, StatusLine

__all__ = ["count_file", "find_files", "run"]

# A word is a run of letters (any script), compared in lower case: "Self",
# "self" and the "self" of "self.x" are one word; digits and "_" split words.
_WORD = re.compile(r"[^\W\d_]+")

# Workers ask for files in small groups: fewer round trips than one file at
# a time, and still an even spread over the workers at the end.
_CHUNK = 4


def count_file(path: str) -> Counter[str]:
    """The words of one file; undecodable bytes count as separators."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return Counter(_WORD.findall(f.read().lower()))


def find_files(paths: list[str]) -> list[str]:
    """Every regular file under ``paths``, in a stable order; ``.py`` files
    only when no path is given (the standard library)."""
    if not paths:
        stdlib = sysconfig.get_paths()["stdlib"]
        return [f for f in _walk(stdlib) if f.endswith(".py")]
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found.extend(_walk(path))
        elif os.path.isfile(path):
            found.append(os.path.abspath(path))
        else:
            raise CommandError(f"--path {path}: no such file or folder")
    return found


def _walk(top: str) -> Iterator[str]:
    for root, dirs, files in os.walk(top):
        # Installed packages are not the standard library; hidden folders
        # (.git and the like) are not anyone's text.
        dirs[:] = sorted(
            d for d in dirs if d != "site-packages" and not d.startswith(".")
        )
        for name in sorted(files):
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                yield path


@dataclass(frozen=True)
class _Job:
    store: str
    dict_name: str
    per_file_transaction: bool


@dataclass(frozen=True)
class _Done:
    """What a worker reports for one file."""

    path: str
    ok: bool
    words: int
    distinct: int
    pid: int
    error: str = ""


_worker_dict: mn.SharedDict | None = None
_worker_job: _Job | None = None


def _start_worker(job: _Job) -> None:
    global _worker_dict, _worker_job
    _worker_job = job
    _worker_dict = mn.Store(job.store).get_dict(job.dict_name)


def _count_into_shared(path: str) -> _Done:
    """Count one file locally, then add its counts to the shared dict."""
    assert _worker_dict is not None and _worker_job is not None
    d = _worker_dict
    try:
        counts = count_file(path)
    except OSError as exc:
        return _Done(path, False, 0, 0, os.getpid(), str(exc))

    def apply() -> None:
        for word, n in counts.items():
            if not d.set_if_absent(word, value=n):
                d[word] += n

    if _worker_job.per_file_transaction:
        with d.transaction():
            apply()
    else:
        apply()
    return _Done(path, True, counts.total(), len(counts), os.getpid())


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        cpus = os.cpu_count() or 1
    return max(2, cpus)


def run(args: argparse.Namespace) -> int:
    """The ``demo`` command; returns the exit status."""
    files = find_files(args.path or [])
    if args.limit is not None:
        files = files[: args.limit]
    if not files:
        raise CommandError("no files to count")
    workers = args.workers or _default_workers()
    where = "the standard library's .py files" if not args.path else "the given files"

    scratch = None
    if args.store is None:
        scratch = tempfile.mkdtemp(prefix="multinode-demo-")
        store_path = os.path.join(scratch, "demo.db")
    else:
        store_path = os.path.abspath(os.path.expanduser(args.store))
    try:
        return _run(args, files, workers, where, store_path, scratch is not None)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(
    args: argparse.Namespace,
    files: list[str],
    workers: int,
    where: str,
    store_path: str,
    temporary: bool,
) -> int:
    # With --json the narrative goes nowhere and one summary object is printed.
    out: TextIO = io.StringIO() if args.json else sys.stdout
    with mn.Store(store_path, timeout=args.timeout) as store:
        if args.dict in store.dicts():
            raise CommandError(
                f"the dict {args.dict!r} already exists in {store_path}; "
                f"pick another with --dict, or remove it with "
                f"'multinode --store {store_path} rm {args.dict}'"
            )
        d = store.get_dict(args.dict)
        grouping = (
            "each word committed on its own"
            if args.no_transaction
            else "one transaction per file"
        )
        print(
            f"multinode demo: {workers} worker processes ({args.start_method}) "
            f"count the words of {len(files):,} files ({where})",
            file=out,
        )
        print(f"store: {store_path}{' (temporary)' if temporary else ''}", file=out)
        print(
            "each worker counts a file locally, then adds every word to the "
            "shared dict: set_if_absent(word, value=n) for a new word, "
            f"d[word] += n otherwise; {grouping}",
            file=out,
        )
        out.flush()

        done, pids, seconds = _count_in_workers(args, files, workers, store_path)
        counted = [r for r in done if r.ok]
        skipped = [r for r in done if not r.ok]
        total_words = sum(r.words for r in counted)
        updates = sum(r.distinct for r in counted)

        # The reference: the same files, counted again in this process alone.
        expected: Counter[str] = Counter()
        for r in counted:
            expected.update(count_file(r.path))
        got = d.copy()

        lost = sum(max(0, n - got.get(w, 0)) for w, n in expected.items())
        extra = sum(max(0, n - expected.get(w, 0)) for w, n in got.items())
        wrong = sorted(
            w for w in expected.keys() | got.keys() if expected[w] != got.get(w)
        )

        _report(out, args.top, got, total_words, updates, seconds, pids, skipped)
        print(
            f"check against one process's Counter: {len(expected):,} words, "
            f"lost updates: {lost}, extra counts: {extra}, "
            f"words with a wrong count: {len(wrong)}",
            file=out,
        )
        if not temporary and got:
            top_word = max(got, key=got.__getitem__)
            print(
                f"the counts stay in {store_path} as the dict {args.dict!r}; "
                f"try: multinode --store {store_path} get {args.dict} {top_word}",
                file=out,
            )
        ok = not (wrong or lost or extra)
        if args.json:
            summary = {
                "store": store_path,
                "temporary_store": temporary,
                "files": len(counted),
                "skipped_files": len(skipped),
                "workers": workers,
                "processes": len(pids),
                "transaction_per_file": not args.no_transaction,
                "words": total_words,
                "distinct_words": len(got),
                "seconds": round(seconds, 3),
                "words_per_second": round(total_words / max(seconds, 1e-9)),
                "lost_updates": lost,
                "extra_counts": extra,
                "wrong_words": len(wrong),
                "top": sorted(got.items(), key=lambda i: (-i[1], i[0]))[: args.top],
                "ok": ok,
            }
            print(json.dumps(summary, ensure_ascii=True))
        if not ok:
            shown = ", ".join(
                f"{w!r}: expected {expected[w]}, got {got.get(w)}" for w in wrong[:5]
            )
            print(f"multinode demo: FAILED: {shown}", file=sys.stderr)
            return 1
        print("result: OK, no update was lost", file=out)
    return 0


def _count_in_workers(
    args: argparse.Namespace, files: list[str], workers: int, store_path: str
) -> tuple[list[_Done], set[int], float]:
    job = _Job(store_path, args.dict, not args.no_transaction)
    ctx = multiprocessing.get_context(args.start_method)
    status = StatusLine(delay=0.5)
    done: list[_Done] = []
    pids: set[int] = set()
    words = 0
    start = time.perf_counter()
    with ctx.Pool(workers, initializer=_start_worker, initargs=(job,)) as pool:
        for result in pool.imap_unordered(_count_into_shared, files, _CHUNK):
            done.append(result)
            pids.add(result.pid)
            words += result.words
            elapsed = time.perf_counter() - start
            status.update(
                f"demo: {len(done):,}/{len(files):,} files, {words:,} words, "
                f"{words / max(elapsed, 1e-9):,.0f} words/s"
            )
        seconds = time.perf_counter() - start
    status.done(f"demo: {len(done):,}/{len(files):,} files, {words:,} words")
    return done, pids, seconds


def _report(
    out: TextIO,
    top: int,
    got: dict[str, int],
    total_words: int,
    updates: int,
    seconds: float,
    pids: set[int],
    skipped: list[_Done],
) -> None:
    print(f"\ntop {top} words:", file=out)
    ranked = sorted(got.items(), key=lambda item: (-item[1], item[0]))[:top]
    width = max((len(w) for w, _ in ranked), default=4)
    for word, n in ranked:
        print(f"  {word:<{width}}  {n:>10,}", file=out)
    print(
        f"\n{total_words:,} words ({len(got):,} distinct) in {seconds:.1f} s: "
        f"{total_words / max(seconds, 1e-9):,.0f} words/s, "
        f"{updates / max(seconds, 1e-9):,.0f} shared-dict updates/s, "
        f"by {len(pids)} processes",
        file=out,
    )
    if skipped:
        print(
            f"skipped {len(skipped)} unreadable files, e.g. {skipped[0].error}",
            file=out,
        )
