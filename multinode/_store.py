"""Stores: opening a store file safely, its dicts, and its transactions."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

from multinode import _fs, _link, _sql
from multinode._codec import SERIALIZERS
from multinode._dict import SharedDict
from multinode._link import Link, StoreFile
from multinode.errors import (
    MultinodeError,
    NewerFormatError,
    NotAStoreError,
    ReadOnlyStoreError,
    SerializerMismatchError,
    StoreClosedError,
    StoreIOError,
    UnsafeFilesystemError,
)

log = logging.getLogger("multinode")

# Values longer than this are split over rows of mn_chunk: one SQLite value
# is capped at about 1e9 bytes, and one bound parameter at 2**31 - 1.
CHUNK_SIZE = 256 * 2**20

JournalMode = Literal["auto", "wal", "rollback"]
Durability = Literal["normal", "full"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
# How long a file that looks half-made may take to become a store.
_CREATION_GRACE = 2.0
_HEADER_SIZE = 100
_MIN_SQLITE = (3, 35, 0)

# Page size of new stores. Bigger pages cut the per-page cost of big values
# and hardly change small ones.
_PAGE_SIZE = 4096
_WAL_SIZE_LIMIT = 64 * 2**20
# Reads through a memory map skip a read() call and a copy per page, which
# more than halves the cost of big values. The price: a process's first read
# of each page is a page fault, so random reads of a large store stay about
# a third dearer until its pages have been read once. Only in WAL mode: that
# is a local disk by construction, and a network file must never be mapped.
_MMAP_SIZE = 2**30


def default_store_path() -> tuple[str, str]:
    """The default store's file, and why it is that one."""
    env = os.environ.get("MULTINODE_STORE")
    if env:
        return os.path.abspath(os.path.expanduser(env)), "MULTINODE_STORE"
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share")
    return str(base / "multinode" / "store.db"), "per-user data directory"


class Store:
    """One store file, holding any number of named dicts.

    Every `Store` object on one file in a process shares that process's
    connections (one per thread), so a transaction opened through one is
    the same transaction for all of them in that thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 30.0,
        journal_mode: JournalMode = "auto",
        durability: Durability = "normal",
    ) -> None:
        self._closed = True  # until fully open; close() and __del__ rely on it
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if journal_mode not in ("auto", "wal", "rollback"):
            raise ValueError(
                f"journal_mode must be 'auto', 'wal' or 'rollback', "
                f"not {journal_mode!r}"
            )
        if durability not in ("normal", "full"):
            raise ValueError(
                f"durability must be 'normal' or 'full', not {durability!r}"
            )
        if path is None:
            path, self.path_reason = default_store_path()
            os.makedirs(os.path.dirname(path), exist_ok=True)
        else:
            if not isinstance(path, str | os.PathLike):
                raise TypeError(f"path must be a str or os.PathLike, not {path!r}")
            path = os.path.abspath(os.fspath(path))
            self.path_reason = "given"
        self.timeout = float(timeout)
        self._file = _open_file(path, float(timeout), journal_mode, durability)
        self._closed = False

    @property
    def path(self) -> str:
        """The store file's absolute path."""
        return self._file.path

    @property
    def journal_mode(self) -> str:
        """The journal mode in use: "wal" or "rollback"."""
        return self._file.journal_mode

    def __repr__(self) -> str:
        state = " (closed)" if self._closed else ""
        return f"<multinode.Store {self._file_path()!r}{state}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # A store crosses to another process as its path and settings; the
        # other process opens its own connections.
        file = self._file
        return (_reopen_store, (file.path, self.timeout, file.durability))

    def _file_path(self) -> str:
        file = getattr(self, "_file", None)
        return file.path if file is not None else "?"

    def _link(self) -> Link:
        """This thread's link, ready for one operation of this store."""
        if self._closed:
            raise StoreClosedError(f"the store {self._file_path()} is closed")
        link = self._file.link()
        link.timeout = self.timeout
        return link

    # Dicts ---------------------------------------------------------------

    def get_dict(self, name: str, *, serializer: str | None = None) -> SharedDict:
        """The dict called `name`, created on first use.

        `serializer` is "pickle" or "json"; None means the one recorded for
        the dict, or "pickle" for a new one. Naming another than the recorded
        one raises `SerializerMismatchError`.
        """
        raw = _name_bytes(name)
        if serializer is not None and serializer not in SERIALIZERS:
            raise ValueError(
                f"serializer must be 'pickle', 'json' or None, not {serializer!r}"
            )
        link = self._link()
        row = link.one(_sql.FIND_DICT, (raw,))
        if row is None:
            with link.writing() as db:
                cursor = db.execute(_sql.CREATE_DICT, (raw, serializer or "pickle"))
                if cursor.rowcount:
                    if cursor.lastrowid and cursor.lastrowid > _sql.MAX_DICT_ID:
                        # Positions hold the dict's id in their top bits.
                        raise MultinodeError(
                            f"{self.path} has created {_sql.MAX_DICT_ID:,} dicts, "
                            "the most one store can; use a new store file"
                        )
                    db.execute(_sql.START_POSITIONS, (cursor.lastrowid,))
                row = db.execute(_sql.FIND_DICT, (raw,)).fetchone()
        dict_id, recorded = row
        if serializer is not None and serializer != recorded:
            raise SerializerMismatchError(
                f"the dict {name!r} in {self.path} was created with "
                f"serializer={recorded!r}; it cannot be opened with "
                f"serializer={serializer!r}"
            )
        return SharedDict(self, name, dict_id, recorded)

    def dicts(self) -> list[str]:
        """The names of the store's dicts, oldest first."""
        rows = self._link().all(_sql.DICT_NAMES, ())
        return [bytes(name).decode("utf-8", "surrogatepass") for (name,) in rows]

    def delete_dict(self, name: str) -> None:
        """Delete the dict and all its items; `KeyError` if there is none.

        Other handles to it raise `DictDeletedError` from their next call.
        """
        raw = _name_bytes(name)
        with self._link().writing() as db:
            row = db.execute(_sql.FIND_DICT, (raw,)).fetchone()
            if row is None:
                raise KeyError(name)
            db.execute(_sql.DELETE_DICT_ITEMS, (row[0],))
            db.execute(_sql.DELETE_DICT, (row[0],))

    # Transactions ----------------------------------------------------------

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Make every operation in the block, on every dict of this store,
        one serializable unit that commits at the end or not at all.

        It starts as a writer (``BEGIN IMMEDIATE``), so it waits for other
        writers at the start rather than failing in the middle. Nested
        blocks are savepoints: an exception undoes the inner block only.
        The transaction belongs to this thread; other threads wait for it.
        """
        return _transaction(self._link())

    # Maintenance -------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What `multinode info` shows: the file, why, and its dicts."""
        link = self._link()
        rows = link.all(_sql.DICT_SUMMARY, ())
        version = link.one("PRAGMA user_version", ())[0]
        file = self._file
        return {
            "path": file.path,
            "path_reason": self.path_reason,
            "filesystem": str(file.mount) if file.mount else "unknown",
            "journal_mode": file.journal_mode,
            "journal_reason": file.journal_reason,
            "read_only": file.read_only,
            "format_version": version,
            "sqlite_version": sqlite3.sqlite_version,
            "dicts": [
                {
                    "name": bytes(name).decode("utf-8", "surrogatepass"),
                    "length": length,
                    "serializer": serializer,
                }
                for name, length, serializer in rows
            ],
        }

    def check(self) -> list[str]:
        """Problems found in the file; an empty list means it is sound."""
        link = self._link()
        problems = [
            row[0] for row in link.all("PRAGMA integrity_check", ()) if row[0] != "ok"
        ]
        app_id, version, _ = link.one(_sql.READ_HEADER, ())
        if app_id != _sql.APPLICATION_ID:
            problems.append(f"application_id is {app_id:#x}, not a multinode store")
        if version != _sql.FORMAT_VERSION:
            problems.append(f"format version {version}, expected {_sql.FORMAT_VERSION}")
        for name, problem in link.all(_sql.CHECK_DICTS, ()):
            shown = bytes(name).decode("utf-8", "surrogatepass")
            problems.append(f"dict {shown!r}: {problem}")
        (stray,) = link.one(_sql.STRAY_CHUNKS, ())
        if stray:
            problems.append(f"{stray} chunks belong to no big value")
        (incomplete,) = link.one(_sql.INCOMPLETE_BIG_VALUES, ())
        if incomplete:
            problems.append(f"{incomplete} big values are missing chunks")
        return problems

    def backup(self, dest: str | os.PathLike[str]) -> None:
        """Copy the store into the new file `dest`, consistently, while
        other processes go on reading and writing.

        The copy is written under a temporary name and linked into place
        only when complete, so `dest` is either absent or a whole store,
        even if this process is killed midway. An existing `dest` is never
        overwritten.
        """
        target = os.path.abspath(os.fspath(dest))
        if os.path.lexists(target):
            raise FileExistsError(
                errno.EEXIST, "refusing to overwrite an existing file", target
            )
        partial = os.path.join(
            os.path.dirname(target),
            f".{os.path.basename(target)}.{os.getpid()}.partial",
        )
        _create_file(partial, exclusive=False)
        link = self._link()
        try:
            with link.lock, contextlib.closing(sqlite3.connect(partial)) as out:
                link.connection().backup(out, pages=256)
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.link(partial, target)  # fails, rather than replaces, if taken
        except sqlite3.Error as exc:
            raise self._file.translate(exc) from exc
        finally:
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial + suffix)

    def vacuum(self) -> None:
        """Rebuild the file to return the space of deleted items to the OS."""
        link = self._link()
        link.change("VACUUM", ())
        if self.journal_mode == "wal":
            # The rebuilt pages sit in the -wal file until a checkpoint.
            link.one("PRAGMA wal_checkpoint(TRUNCATE)", ())

    # Closing ---------------------------------------------------------------

    def close(self) -> None:
        """Close the store; closing twice is harmless.

        Every later call on it, or on its dicts, raises `StoreClosedError`.
        The connections close once no open `Store` object uses the file.
        """
        if self._closed:
            return
        self._closed = True
        _release_file(self._file)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _reopen_store(path: str, timeout: float, durability: Durability) -> Store:
    return Store(path, timeout=timeout, durability=durability)


@contextlib.contextmanager
def _transaction(link: Link) -> Iterator[None]:
    # A generator, so the caller gets None, not the SQLite connection.
    with link.writing(savepoint=True):
        yield


def _name_bytes(name: object) -> bytes:
    if type(name) is not str:
        raise TypeError(f"a dict's name must be a str, not {name!r}")
    if not name:
        raise ValueError("a dict's name must not be empty")
    return name.encode("utf-8", "surrogatepass")


# The default store ----------------------------------------------------------

_default_stores: dict[str, Store] = {}
_default_lock = threading.Lock()


def get_dict(name: str, *, serializer: str | None = None) -> SharedDict:
    """The dict called `name` in the default store, created on first use.

    The default store is the file named by the ``MULTINODE_STORE``
    environment variable, else ``store.db`` in a per-user data directory
    (`default_store_path` says which). See `Store.get_dict`.
    """
    path, _ = default_store_path()
    store = _default_stores.get(path)
    if store is None or store._closed:
        with _default_lock:
            store = _default_stores.get(path)
            if store is None or store._closed:
                store = _default_stores[path] = Store()
    return store.get_dict(name, serializer=serializer)


# Opening a store file --------------------------------------------------------


def _open_file(
    path: str, timeout: float, journal_mode: str, durability: str
) -> StoreFile:
    """The shared `StoreFile` for `path`, opened and checked on first use."""
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise RuntimeError(
            f"multinode needs SQLite 3.35 or newer; this Python has "
            f"{sqlite3.sqlite_version}"
        )
    real = os.path.realpath(path)
    with _link.registry_lock:
        file = _link.files.get(real)
        if file is not None and not _same_file(file, real):
            del _link.files[real]
            file = None
        if file is None:
            file = _prepare(real, timeout, journal_mode, durability)
            _link.files[real] = file
        else:
            _check_settings(file, journal_mode, durability)
        file.stores += 1
        file.timeout = max(file.timeout, timeout)
        return file


def _release_file(file: StoreFile) -> None:
    with _link.registry_lock:
        file.stores -= 1
        if file.stores > 0:
            return
        if _link.files.get(file.path) is file:
            del _link.files[file.path]
    file.close_links()


def _same_file(file: StoreFile, real: str) -> bool:
    try:
        st = os.stat(real)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == file.identity


def _check_settings(file: StoreFile, journal_mode: str, durability: str) -> None:
    if journal_mode != "auto" and journal_mode != file.journal_mode:
        raise ValueError(
            f"{file.path} is already open in this process with "
            f"journal_mode={file.journal_mode!r}; close it before asking for "
            f"{journal_mode!r}"
        )
    if durability != file.durability:
        raise ValueError(
            f"{file.path} is already open in this process with "
            f"durability={file.durability!r}; every Store on one file in a "
            "process shares its connections, so they must agree"
        )


def _prepare(real: str, timeout: float, requested: str, durability: str) -> StoreFile:
    """Check the file at `real` (creating it if missing) and make it ready.

    A file that is not a multinode store is refused before SQLite opens it
    for writing, so it is left byte for byte as it was.
    """
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise StoreIOError(
            errno.ENOENT, f"cannot open the store {real}: no directory {directory}"
        )
    mount = _fs.find_mount(directory)
    header = _read_header(real, timeout)
    if header is None:
        # Decide before creating anything, so a refusal leaves no file.
        _fs.choose_journal_mode(requested, mount, None, path=real)
        _create_file(real, exclusive=False)
        header = _read_header(real, timeout) or b""
    kind = _classify(real, header)
    st = os.stat(real)
    links = st.st_nlink
    if links > 1:
        # SQLite names the -wal, -shm and -journal files after the path, so
        # processes opening the store through different links would keep
        # separate journals and lose each other's writes.
        raise UnsafeFilesystemError(
            f"refusing to open {real}: the file has {links} hard links, and "
            "processes using different links would not see each other's "
            "writes; remove the other links (a symbolic link is fine)"
        )

    existing = None
    if kind != "empty":
        existing = "wal" if 2 in (header[18], header[19]) else "rollback"
    mode, reason = _fs.choose_journal_mode(requested, mount, existing, path=real)

    read_only = not _writable(real, directory, existing)
    if kind == "blank":
        kind = _look_inside(real, header, timeout)
    if read_only and kind == "empty":
        raise ReadOnlyStoreError(
            f"cannot create the store {real}: the file or its directory is "
            "read-only for this process"
        )
    if read_only and mode != existing:
        mode, reason = existing or mode, f"{reason} (read-only, so left as it is)"
    immutable = read_only and existing == "wal" and _idle(real)

    file = StoreFile(
        real,
        _uri(real, read_only=read_only, immutable=immutable),
        read_only=read_only,
        immutable=immutable,
        timeout=timeout,
        pragmas=_pragmas(mode, durability),
    )
    file.identity = (st.st_dev, st.st_ino)
    file.mount = mount
    file.journal_mode = mode
    file.journal_reason = reason
    file.durability = durability
    file.timeout = timeout

    link = Link(file)
    link.timeout = timeout
    try:
        with link.lock:
            if kind == "empty":
                _initialise(link, mode)
            elif mode != existing:
                _switch_journal(link, mode)
            _check_format(link, real)
    finally:
        with link.lock:
            link.close()
    log.info("opened %s: %s", real, reason)
    return file


def _read_header(path: str, timeout: float) -> bytes | None:
    """The file's first 100 bytes; None if there is no file.

    Read without SQLite's locks, so it can catch another process creating
    the store: the file then holds zeros, or only part of a header, for a
    moment. That is waited out (briefly) rather than taken for a file of
    another kind.
    """
    deadline = time.monotonic() + min(timeout, _CREATION_GRACE)
    delay = 0.001
    while True:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                # Opening a FIFO would block; a directory cannot be one.
                raise NotAStoreError(
                    f"{path} is not a regular file, so not a multinode store"
                )
            with open(path, "rb") as f:
                header = f.read(_HEADER_SIZE)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise ReadOnlyStoreError(f"cannot read the store {path}: {exc}") from exc
        being_written = header and (
            not header.strip(b"\0")
            or (len(header) < _HEADER_SIZE and _SQLITE_MAGIC.startswith(header[:16]))
        )
        if not being_written or time.monotonic() > deadline:
            return header
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _create_file(path: str, *, exclusive: bool) -> None:
    # SQLite would create the file 0644; a store shared by several users of
    # one group needs 0666 less the umask, and SQLite gives its -wal, -shm and
    # -journal files the store's own mode.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        os.close(os.open(path, flags, 0o666))
    except FileExistsError:
        if exclusive:
            raise FileExistsError(
                errno.EEXIST, "refusing to overwrite an existing file", path
            ) from None
    except PermissionError as exc:
        raise ReadOnlyStoreError(
            f"cannot create the store {path}: its directory is not writable "
            f"by this process ({exc.strerror})"
        ) from exc


def _classify(path: str, header: bytes) -> str:
    """What the header says: "empty", "ours", or "blank" (a SQLite file
    with no application id yet)."""
    if not header:
        return "empty"
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        log.info("refused %s: not a SQLite database", path)
        raise NotAStoreError(
            f"{path} is not a multinode store (not a SQLite database); "
            "it was left untouched"
        )
    app_id = int.from_bytes(header[68:72], "big")
    version = int.from_bytes(header[60:64], "big")
    if app_id == 0:
        return "blank"
    if app_id != _sql.APPLICATION_ID:
        log.info("refused %s: application_id %#x", path, app_id)
        raise NotAStoreError(
            f"{path} is a SQLite database of another application "
            f"(application_id {app_id:#x}), not a multinode store; "
            "it was left untouched"
        )
    if version > _sql.FORMAT_VERSION:
        raise _newer(path, version)
    return "ours"


def _newer(path: str, version: int) -> NewerFormatError:
    log.info("refused %s: format version %d", path, version)
    return NewerFormatError(
        f"{path} was written by a newer multinode (format version {version}; "
        f"this one reads up to {_sql.FORMAT_VERSION}); upgrade multinode to "
        "open it. The file was left untouched"
    )


def _look_inside(path: str, header: bytes, timeout: float) -> str:
    """Classify a SQLite file without an application id in its header.

    It is either a store being created right now by another process (in WAL
    mode its header still sits in the -wal file) or another application's
    database. A read-only connection tells which, and cannot change it.
    """
    # Read-only, so looking changes nothing. A WAL-format file that nobody
    # has open would get new -wal and -shm files from even a read-only
    # connection, so it is read as immutable instead: with no -wal, -shm or
    # -journal beside it, the file alone holds everything.
    wal_format = 2 in (header[18], header[19])
    # A store that another process is creating right now can look damaged
    # for a moment to a reader that takes no lock; look again for a little
    # while (creating one takes milliseconds) before calling it foreign.
    deadline = time.monotonic() + min(timeout, _CREATION_GRACE)
    delay = 0.005
    while True:
        uri = _uri(path, read_only=True, immutable=wal_format and _idle(path))
        try:
            with contextlib.closing(
                sqlite3.connect(uri, uri=True, timeout=timeout)
            ) as db:
                app_id, version, tables = db.execute(_sql.READ_HEADER).fetchone()
            break
        except sqlite3.DatabaseError as exc:
            if time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            log.info("refused %s: %s", path, exc)
            raise NotAStoreError(
                f"{path} is not a multinode store ({exc}); it was left untouched"
            ) from exc
    if app_id == _sql.APPLICATION_ID:
        if version > _sql.FORMAT_VERSION:
            raise _newer(path, version)
        return "ours"
    if app_id == 0 and tables == 0 and version == 0:
        return "empty"
    log.info("refused %s: SQLite database with %d schema entries", path, tables)
    raise NotAStoreError(
        f"{path} is a SQLite database of another application, not a "
        "multinode store; it was left untouched"
    )


def _writable(path: str, directory: str, existing: str | None) -> bool:
    if not os.access(path, os.W_OK):
        return False
    if os.access(directory, os.W_OK):
        return True
    # A WAL store can be written without creating files, if its -wal and
    # -shm exist and are writable; a rollback journal needs a new file.
    return existing == "wal" and all(
        os.access(path + suffix, os.W_OK) for suffix in ("-wal", "-shm")
    )


def _idle(path: str) -> bool:
    """Whether no process is using the database: no -shm, -wal or -journal
    file. Only then does the database file alone hold every commit."""
    return not any(os.path.exists(path + s) for s in ("-shm", "-wal", "-journal"))


def _uri(path: str, *, read_only: bool, immutable: bool) -> str:
    """The URI to open `path` with.

    A process that may not write the store must not create its -shm or -wal
    files either: in a shared directory they would belong to it, and lock
    the owner out. While no -shm exists no process is writing, so the
    database file alone holds every committed write and can be read as
    immutable; the link switches to a plain read-only connection once a
    writer's -shm appears.
    """
    uri = f"file:{quote(path)}?mode={'ro' if read_only else 'rw'}"
    if immutable:
        uri += "&immutable=1"
    return uri


def _pragmas(mode: str, durability: str) -> tuple[str, ...]:
    # In WAL mode, synchronous=NORMAL survives any process crash and can
    # lose only the last commits to a power cut; with a rollback journal it
    # could corrupt the file on a power cut, so "normal" means FULL there.
    synchronous = "FULL" if durability == "full" or mode == "rollback" else "NORMAL"
    pragmas = [f"PRAGMA synchronous = {synchronous}"]
    if mode == "wal":
        pragmas.append(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        pragmas.append(f"PRAGMA mmap_size = {_MMAP_SIZE}")
    return tuple(pragmas)


def _initialise(link: Link, mode: str) -> None:
    """Give an empty file the store's schema, once, whoever races to do it."""
    link.one(f"PRAGMA page_size = {_PAGE_SIZE}", ())
    if mode == "wal":
        link.one("PRAGMA journal_mode = WAL", ())
    with link.writing() as db:
        app_id, version, tables = db.execute(_sql.READ_HEADER).fetchone()
        if app_id == 0 and tables == 0 and version == 0:
            _migrate(db, 0)
        elif app_id != _sql.APPLICATION_ID:
            raise NotAStoreError(
                f"{link.file.path} became another application's database while "
                "multinode was creating a store there"
            )
    if mode == "wal":
        # Put the application id into the main file now, so that other
        # processes can recognise the store from its header alone.
        link.one("PRAGMA wal_checkpoint(PASSIVE)", ())


def _switch_journal(link: Link, mode: str) -> None:
    target = "WAL" if mode == "wal" else "DELETE"
    log.warning("switching %s to journal_mode=%s", link.file.path, target)
    (result,) = link.one(f"PRAGMA journal_mode = {target}", ())
    if result.upper() != target:
        raise ReadOnlyStoreError(
            f"could not switch {link.file.path} to journal_mode={target} "
            f"(it stayed {result}); other processes may have it open"
        )


def _check_format(link: Link, path: str) -> None:
    app_id, version, _ = link.one(_sql.READ_HEADER, ())
    if app_id != _sql.APPLICATION_ID:
        raise NotAStoreError(f"{path} is not a multinode store")
    if version > _sql.FORMAT_VERSION:
        raise _newer(path, version)
    if version < _sql.FORMAT_VERSION:
        if link.file.read_only:
            raise ReadOnlyStoreError(
                f"{path} has format version {version} and needs an upgrade to "
                f"{_sql.FORMAT_VERSION}, but it is read-only for this process"
            )
        with link.writing() as db:
            (current,) = db.execute("PRAGMA user_version").fetchone()
            if current < _sql.FORMAT_VERSION:
                _migrate(db, current)
                log.info(
                    "upgraded %s from format %d to %d",
                    path,
                    current,
                    _sql.FORMAT_VERSION,
                )


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring the schema from `version` to the current one (in a transaction)."""
    for statements in _sql.MIGRATIONS[version:]:
        for statement in statements:
            db.execute(statement)
    db.execute(_sql.SET_APPLICATION_ID)
    db.execute(_sql.SET_FORMAT_VERSION.format(version=_sql.FORMAT_VERSION))
