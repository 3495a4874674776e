"""SQLite connections: one per thread per store file, and safe across fork.

Every `Store` object on one file shares a `StoreFile`, which holds one `Link`
(one SQLite connection) for each thread that has used it. A link is guarded
by a re-entrant lock that its thread holds for every statement and for the
whole of a transaction. The lock is only ever contended by the fork hooks,
which must know that no thread is inside SQLite while they close its
connection.

Why close at all: SQLite keeps its POSIX-lock bookkeeping in process memory.
A forked child inherits that memory but not the locks themselves, so a child
that connects while its parent holds a connection believes it owns locks it
does not, and can lose acknowledged writes. Before a fork we therefore close
every connection (waiting up to the store's timeout for open transactions);
parent and child reopen lazily. A child forked while a transaction could not
be closed refuses to touch that store.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from multinode import _sql
from multinode._fs import Mount
from multinode.errors import (
    DiskFullError,
    ForkError,
    LockTimeout,
    MultinodeError,
    NotAStoreError,
    ReadOnlyStoreError,
    StoreCorruptError,
    StoreIOError,
)

log = logging.getLogger("multinode")

T = TypeVar("T")

# How long SQLite's own busy handler waits before handing a lock wait back
# to us; we then retry until the store's timeout, and log long waits.
BUSY_SLICE = 0.1
SLOW_LOCK_WAIT = 1.0

_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class RowRefused(MultinodeError):
    """A constraint refused a row; the caller finds out why."""


class Link:
    """One thread's connection to one store file."""

    __slots__ = (
        "__weakref__",
        "cursor",
        "db",
        "depth",
        "file",
        "generation",
        "lock",
        "timeout",
    )

    # The open connection's own cursor, set with it, for the statements
    # that run alone: reusing it saves creating one per call, which is about
    # a twentieth of a read.
    cursor: sqlite3.Cursor

    def __init__(self, file: StoreFile) -> None:
        self.file = file
        self.db: sqlite3.Connection | None = None
        self.generation = file.generation
        self.lock = threading.RLock()
        # Transaction nesting: 0 outside, 1 in a transaction, >1 in savepoints.
        self.depth = 0
        # The lock-wait limit of the Store object now using this link; each
        # Store sets it before an operation.
        self.timeout = file.timeout

    def connection(self) -> sqlite3.Connection:
        """The open connection; call with `lock` held."""
        db = self.db
        file = self.file
        if db is not None and self.generation == file.generation and not file.immutable:
            return db
        if file.immutable and file.writer_appeared():
            file.generation += 1
        if db is None or self.generation != file.generation:
            self.close()
            db = self.db = file.connect(self)
            self.cursor = db.cursor()
            self.generation = file.generation
        return db

    def __del__(self) -> None:
        # The thread that owned this link has ended, or its store file was
        # let go: close quietly (Python 3.13 warns about unclosed ones).
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        """Close the connection; call with `lock` held."""
        db, self.db = self.db, None
        self.depth = 0
        if db is not None:
            try:
                self.cursor.close()
                db.close()
            except sqlite3.Error:
                log.debug("closing a connection to %s failed", self.file.path)

    # Statements outside an explicit transaction ---------------------------

    # These run for every single read and write, so they take the lock with
    # acquire and release, which costs half of what a with statement does.
    # They run on the link's cursor, and consume the result before they
    # return, so that the statement ends and lets its read lock go.

    def one(self, sql: str, params: tuple[Any, ...]) -> Any:
        """The row of a statement that returns at most one row (a longer
        result would hold its read lock until the next statement), retried
        while the store is busy."""
        lock = self.lock
        lock.acquire()
        try:
            return self._execute(sql, params).fetchone()
        finally:
            lock.release()

    def all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        lock = self.lock
        lock.acquire()
        try:
            return self._execute(sql, params).fetchall()
        finally:
            lock.release()

    def change(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one writing statement; its rowcount."""
        lock = self.lock
        lock.acquire()
        try:
            return self._execute(sql, params).rowcount
        finally:
            lock.release()

    def _execute(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            self.connection()
            return self.cursor.execute(sql, params)
        except sqlite3.Error as exc:
            return self.retry(exc, lambda db: db.execute(sql, params))

    def retry(
        self, exc: sqlite3.Error, attempt: Callable[[sqlite3.Connection], T]
    ) -> T:
        """Repeat `attempt` while the store is busy, up to the timeout.

        Only a statement outside an explicit transaction is retried: it
        failed as a whole, so running it again cannot apply it twice.
        """
        if self.depth or not _is_busy(exc):
            raise self.file.translate(exc) from exc
        waits = LockWaits(self, release_link=True)
        while True:
            waits.pause()
            try:
                return attempt(self.connection())
            except sqlite3.Error as again:
                if not _is_busy(again):
                    raise self.file.translate(again) from again

    # Transactions ---------------------------------------------------------

    def writing(self, *, savepoint: bool = False) -> Writing:
        """A write transaction (BEGIN IMMEDIATE), or a part of the one open.

        Inside an open transaction the work simply joins it, or, with
        `savepoint`, becomes a savepoint that an error undoes on its own.
        """
        return Writing(self, not savepoint)

    def reading(self) -> Reading:
        """One consistent snapshot for several statements."""
        return Reading(self, True)

    def commit(self, db: sqlite3.Connection) -> None:
        # In rollback-journal mode COMMIT waits for readers to leave; it can
        # then be repeated, since a busy COMMIT leaves the transaction open.
        waits: LockWaits | None = None
        while True:
            try:
                self.cursor.execute(_sql.COMMIT)
                return
            except sqlite3.Error as exc:
                if not (_is_busy(exc) and db.in_transaction):
                    _rollback(db)
                    raise self.file.translate(exc) from exc
                waits = waits or LockWaits(self)
                try:
                    waits.pause()
                except LockTimeout:
                    _rollback(db)
                    raise


# Context managers as classes, not generators: they wrap every write, and a
# generator-based one costs several times as much.


class _Block:
    """A block of statements on one link: it holds the link's lock for the
    whole block and translates the SQLite errors raised inside. Inside an
    open transaction it joins it if it `nests`; otherwise, and outside one,
    the subclass says how it starts and ends."""

    __slots__ = ("db", "joined", "link", "nests")

    def __init__(self, link: Link, nests: bool) -> None:
        self.link = link
        self.nests = nests

    def __enter__(self) -> sqlite3.Connection:
        link = self.link
        link.lock.acquire()
        try:
            db = link.connection()
            self.joined = self.nests and link.depth > 0
            if not self.joined:
                self.start(link, db)
                # A lock wait in start may have let a fork close the
                # connection; its retry then opened the one now in use.
                db = link.db if link.db is not None else db
            self.db = db
        except BaseException:
            link.lock.release()
            raise
        return db

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        link = self.link
        try:
            if not self.joined:
                self.finish(link, self.db, ok=kind is None)
        finally:
            link.lock.release()
        if isinstance(exc, sqlite3.Error):
            raise link.file.translate(exc) from exc

    def start(self, link: Link, db: sqlite3.Connection) -> None:
        raise NotImplementedError

    def finish(self, link: Link, db: sqlite3.Connection, *, ok: bool) -> None:
        raise NotImplementedError


class Writing(_Block):
    """See `Link.writing`."""

    __slots__ = ()

    def start(self, link: Link, db: sqlite3.Connection) -> None:
        if link.depth:
            _run(db, _sql.SAVEPOINT.format(depth=link.depth), link.file)
            link.depth += 1
            return
        try:
            link.cursor.execute(_sql.BEGIN_WRITE)
        except sqlite3.Error as exc:
            link.retry(exc, lambda db: db.execute(_sql.BEGIN_WRITE))
        link.depth = 1

    def finish(self, link: Link, db: sqlite3.Connection, *, ok: bool) -> None:
        link.depth -= 1
        if link.db is not db:
            # A fork in this very thread gave the transaction up; the
            # connection is no longer ours to finish it on.
            link.depth = 0
            if ok:
                raise ForkError(link.file.fork_problem or "connection was closed")
            return
        if link.depth:
            name = link.depth
            if not ok:
                _run(db, _sql.ROLLBACK_TO.format(depth=name), link.file)
            _run(db, _sql.RELEASE.format(depth=name), link.file)
            return
        if ok:
            link.commit(db)
        else:
            _rollback(db)


class Reading(_Block):
    """See `Link.reading`."""

    __slots__ = ()

    def start(self, link: Link, db: sqlite3.Connection) -> None:
        # BEGIN alone takes no lock; the first read does. Take it here, where
        # a busy store can be waited for, rather than in the block, where a
        # statement cannot be retried.
        waits: LockWaits | None = None
        while True:
            _run(db, _sql.BEGIN_READ, link.file)
            try:
                db.execute(_sql.TAKE_READ_LOCK).fetchall()
                break
            except sqlite3.Error as exc:
                _rollback(db)
                if not _is_busy(exc):
                    raise link.file.translate(exc) from exc
                waits = waits or LockWaits(link, release_link=True)
                waits.pause()
                # The pause may have let a fork close the connection.
                db = link.connection()
        link.depth = 1

    def finish(self, link: Link, db: sqlite3.Connection, *, ok: bool) -> None:
        link.depth = 0
        _rollback(db)


class LockWaits:
    """Paces the retries of one operation that found the store locked.

    With `release_link`, it lets the link's lock go while it sleeps, so that
    a fork in another thread need not wait for the whole lock wait; only
    for a wait with no transaction open, whose retry reconnects if the fork
    closed the connection meanwhile.
    """

    def __init__(self, link: Link, *, release_link: bool = False) -> None:
        self.link = link if release_link else None
        self.file = link.file
        self.timeout = link.timeout
        self.start = time.monotonic()
        self.delay = 0.001
        self.logged = False

    def pause(self) -> None:
        """Sleep a little before the next try, or raise LockTimeout."""
        waited = time.monotonic() - self.start
        timeout = self.timeout
        if waited >= timeout:
            raise LockTimeout(
                f"gave up after waiting {waited:.2f} s for the lock on "
                f"{self.file.path} (timeout={timeout:g} s): another process "
                "or thread holds a lock on it"
            )
        if waited >= SLOW_LOCK_WAIT and not self.logged:
            self.logged = True
            log.warning(
                "waited %.1f s so far for the lock on %s", waited, self.file.path
            )
        # SQLite has already waited BUSY_SLICE; this pause matters only when
        # it returned at once, which it does to avoid a deadlock.
        pause = min(self.delay * random.uniform(0.5, 1.5), timeout - waited)
        self.delay = min(self.delay * 2, 0.05)
        link = self.link
        if link is None:
            time.sleep(pause)
            return
        link.lock.release()
        try:
            time.sleep(pause)
        finally:
            link.lock.acquire()


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _BUSY_CODES


def _run(db: sqlite3.Connection, sql: str, file: StoreFile) -> None:
    try:
        db.execute(sql)
    except sqlite3.Error as exc:
        raise file.translate(exc) from exc


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite may already have rolled back on its own (a full disk, an I/O
    # error); a second ROLLBACK then fails harmlessly.
    if db.in_transaction:
        try:
            db.execute(_sql.ROLLBACK)
        except sqlite3.Error:
            pass


class StoreFile:
    """What every `Store` object on one file in this process shares."""

    def __init__(
        self,
        path: str,
        uri: str,
        *,
        read_only: bool,
        immutable: bool,
        timeout: float,
        pragmas: tuple[str, ...],
    ) -> None:
        self.path = path
        self.uri = uri
        self.read_only = read_only
        # A reader that may create no -shm file opens the database file as
        # immutable; once a writer appears (its -shm exists), it must read
        # through the WAL like everyone else.
        self.immutable = immutable
        # Bumped when every link must reconnect with the new `uri`.
        self.generation = 0
        self.timeout = timeout
        self.pragmas = pragmas
        self.stores = 0
        self.fork_problem: str | None = None
        # Filled in by the opener once the file has been checked.
        self.identity: tuple[int, int] = (0, 0)
        self.mount: Mount | None = None
        self.journal_mode = "wal"
        self.journal_reason = ""
        self.durability = "normal"
        self._local = threading.local()
        self._links: weakref.WeakSet[Link] = weakref.WeakSet()

    def link(self) -> Link:
        """This thread's link to the file."""
        try:
            link: Link = self._local.link
            return link
        except AttributeError:
            pass
        link = Link(self)
        with registry_lock:
            self._links.add(link)
        self._local.link = link
        return link

    def connect(self, link: Link) -> sqlite3.Connection:
        """A new connection for `link`, with the store's settings applied."""
        waits: LockWaits | None = None
        while True:
            if self.fork_problem is not None:
                raise ForkError(self.fork_problem)
            try:
                db = sqlite3.connect(
                    self.uri,
                    uri=True,
                    timeout=BUSY_SLICE,
                    isolation_level=None,
                    check_same_thread=False,
                    cached_statements=64,
                )
            except sqlite3.Error as exc:
                raise self.translate(exc) from exc
            try:
                for pragma in self.pragmas:
                    db.execute(pragma)
                return db
            except sqlite3.Error as exc:
                db.close()
                # Some settings read the schema, which a writer in
                # rollback-journal mode can hold locked for a while. Wait
                # with the connection closed, so that a fork meanwhile
                # finds nothing open, and start again.
                if not _is_busy(exc):
                    raise self.translate(exc) from exc
                waits = waits or LockWaits(link, release_link=True)
                waits.pause()
            except BaseException:
                db.close()
                raise

    def writer_appeared(self) -> bool:
        if not os.path.exists(self.path + "-shm"):
            return False
        self.immutable = False
        self.uri = self.uri.replace("&immutable=1", "")
        log.info("%s: a writer appeared; reading through its WAL now", self.path)
        return True

    def close_links(self) -> None:
        """Close every thread's connection, waiting for open transactions."""
        with registry_lock:
            links = list(self._links)
        for link in links:
            if link.lock.acquire(timeout=self.timeout):
                try:
                    if not link.depth:
                        link.close()
                finally:
                    link.lock.release()

    def translate(self, exc: sqlite3.Error) -> MultinodeError:
        """The multinode error for a sqlite3 error, sorted by result code."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = -1 if code is None else code & 0xFF
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        where = f"{self.path}: {exc} ({name})"
        if primary in _BUSY_CODES:
            return LockTimeout(f"the store {where} is locked")
        if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
            return ReadOnlyStoreError(
                f"cannot write to the store {self.path}: it is read-only "
                f"for this process ({exc})"
            )
        if primary == sqlite3.SQLITE_FULL or (
            primary == sqlite3.SQLITE_IOERR and _disk_full(self.path)
        ):
            return DiskFullError(
                f"the disk holding the store {self.path} is full; the write was "
                "rolled back and the store is intact",
                self.path,
            )
        if primary == sqlite3.SQLITE_CANTOPEN:
            if not os.access(os.path.dirname(self.path), os.W_OK):
                return ReadOnlyStoreError(
                    f"cannot write to the store {self.path}: its directory is "
                    f"read-only for this process ({exc})"
                )
            return StoreIOError(errno.EIO, f"cannot open the store {where}")
        if primary == sqlite3.SQLITE_NOTADB:
            return NotAStoreError(f"{self.path} is not a multinode store ({exc})")
        if primary == sqlite3.SQLITE_CORRUPT:
            return StoreCorruptError(
                errno.EIO,
                f"the store {where} is damaged; run `multinode check` and "
                "restore it from a backup",
            )
        if primary == sqlite3.SQLITE_IOERR:
            return StoreIOError(errno.EIO, f"I/O error on the store {where}")
        if primary == sqlite3.SQLITE_CONSTRAINT:
            return RowRefused(f"{where}: a constraint refused the row")
        if primary == sqlite3.SQLITE_NOMEM:
            return MultinodeError(f"SQLite ran out of memory on {where}")
        return MultinodeError(f"SQLite failed on the store {where}")


def _disk_full(path: str) -> bool:
    # SQLite reports some failed writes as a plain I/O error; the free space
    # tells whether a full disk was the cause.
    try:
        stat = os.statvfs(os.path.dirname(path))
    except OSError:
        return False
    return stat.f_bavail == 0 or stat.f_favail == 0


# The process-wide registry and the fork hooks -----------------------------

registry_lock = threading.RLock()
files: dict[str, StoreFile] = {}

# Connections a fork could not close, with their cursors. The child must
# never close them: that would roll back, or even checkpoint, the parent's
# open transaction through lock bookkeeping the child only has a copy of (a
# cursor, when freed, resets its statement). A Python reference is not
# enough, since interpreter shutdown clears module globals and would then
# finalize (close) them; one extra reference taken through the C API is never
# given back, so they outlive the child.
_abandoned: list[object] = []


def _abandon(*objects: object) -> None:
    for thing in objects:
        _abandoned.append(thing)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(thing))


_held: list[Link] = []
_blocked: dict[StoreFile, str] = {}


def _before_fork() -> None:
    registry_lock.acquire()
    me = threading.current_thread().name
    for file in list(files.values()):
        deadline = time.monotonic() + file.timeout
        for link in list(file._links):
            if not link.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                _blocked[file] = (
                    f"this process was forked while another thread of its parent "
                    f"held a transaction on {file.path} for more than "
                    f"{file.timeout:g} s, so it cannot use that store safely; "
                    "fork outside transactions, or open the store after the fork"
                )
                continue
            _held.append(link)
            if link.depth:
                _blocked[file] = (
                    f"this process was forked by thread {me!r} inside a "
                    f"transaction on {file.path}, so it cannot use that store"
                )
            else:
                link.close()


def _after_fork_parent() -> None:
    _release_held()
    _blocked.clear()
    registry_lock.release()


def _after_fork_child() -> None:
    for file, problem in _blocked.items():
        file.fork_problem = problem
        for link in list(file._links):
            if link.db is not None:
                _abandon(link.db, link.cursor)
                link.db = None
    _blocked.clear()
    _release_held()
    registry_lock.release()
    if files:
        log.debug("forked: connections to %d store(s) reopen on use", len(files))


def _release_held() -> None:
    for link in _held:
        link.lock.release()
    _held.clear()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_parent,
    after_in_child=_after_fork_child,
)
