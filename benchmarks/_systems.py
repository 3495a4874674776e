"""One adapter per measured system, all behind the same small interface.

A ``System`` describes a product (which package it needs, which operations it
has and how atomic they are) and creates ``Handle`` objects, each on its own
fresh directory. A handle can describe itself with a ``spec`` that a child
process uses to attach to the same data, which is how the contended workload
reaches every system the same way.

Operations a system lacks raise ``NotSupported``; the report shows them as
n/a. Where a system has no atomic form of an operation the adapter uses the
nearest thing a user would write and the notes say so.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

PICKLE_PROTOCOL = 5
# Peers are built up to this size by default; the floor and multinode go to
# every size. Filling a 1M-key store takes 30-40 s for some peers.
PEER_MAX_KEYS = 100_000
LOAD_CHUNK = 20_000

# Every operation of the per-operation table, in table order.
OPS = ("get", "set_new", "replace", "contains", "delete", "incr", "cas", "sia")
OP_TITLES = {
    "get": "get",
    "set_new": "set (new key)",
    "replace": "replace",
    "contains": "`in`",
    "delete": "delete",
    "incr": "`+= 1`",
    "cas": "CAS",
    "sia": "set_if_absent",
}


class NotSupported(Exception):
    """The system has no form of this operation worth measuring."""


@dataclass(frozen=True)
class Variant:
    """One way a system increments a counter under contention."""

    key: str
    label: str
    atomic: bool


class Counter:
    """Initialise, increment and read one counter in one of a system's ways."""

    def __init__(
        self,
        init: Callable[[str], None],
        incr: Callable[[str], None],
        read: Callable[[str], int],
    ) -> None:
        self.init = init
        self.incr = incr
        self.read = read


class Handle:
    """One open dict of one system. Subclasses override what they have."""

    def get(self, key: str) -> Any:
        raise NotSupported

    def set(self, key: str, value: Any) -> None:
        raise NotSupported

    def contains(self, key: str) -> bool:
        raise NotSupported

    def delete(self, key: str) -> None:
        raise NotSupported

    def incr(self, key: str) -> None:
        raise NotSupported

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        raise NotSupported

    def sia(self, key: str, value: Any) -> bool:
        raise NotSupported

    def length(self) -> int:
        raise NotSupported

    def truthy(self) -> bool:
        return self.length() > 0

    def iter_keys(self) -> Iterator[Any]:
        raise NotSupported

    def clear(self) -> None:
        raise NotSupported

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        for key, value in items:
            self.set(key, value)

    def discard_many(self, keys: list[str]) -> None:
        """Delete keys that exist (untimed cleanup), in bulk where possible."""
        for key in keys:
            self.delete(key)

    def counter(self, variant: str) -> Counter:
        raise NotSupported

    def spec(self) -> Any:
        """What a child process needs to attach to the same data."""
        raise NotSupported

    def close(self) -> None:
        pass


def _chunks(items: Iterable[tuple[str, Any]], size: int) -> Iterator[list[Any]]:
    chunk: list[tuple[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _plain_counter(h: Handle) -> Counter:
    """``d[k] = d[k] + 1`` through the handle: a read then a separate write."""

    def incr(key: str) -> None:
        h.set(key, h.get(key) + 1)

    return Counter(lambda k: h.set(k, 0), incr, lambda k: int(h.get(k)))


class System:
    """A product under test: what it needs, what it offers, how to open it."""

    key = ""
    label = ""
    modules: tuple[str, ...] = ()
    shared = True
    # Operation -> how this system does it (shown under the table).
    notes: ClassVar[dict[str, str]] = {}
    # Contended increment variants; the first is the one in the per-op table.
    variants: tuple[Variant, ...] = ()
    # Largest store built for the size workloads unless caps are lifted.
    max_keys: int | None = None
    named_dicts = True

    def missing(self) -> str | None:
        """Why the system cannot run here, or None when it can."""
        for name in self.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                return f"package {name!r} is not installed"
        return None

    def start(self, workdir: Path) -> None:
        """Start anything shared by all handles (a server, a manager)."""

    def stop(self) -> None:
        """Stop what ``start`` started; must be safe to call twice."""

    def create(self, workdir: Path) -> Handle:
        """A new empty dict in the fresh directory ``workdir``."""
        raise NotImplementedError

    def attach(self, spec: Any) -> Handle:
        """A handle on the data a ``Handle.spec()`` describes (in a child)."""
        raise NotImplementedError

    def open_named(self, workdir: Path) -> NamedOpener:
        """An opener of many named dicts living under ``workdir``."""
        raise NotSupported


class NamedOpener:
    """Opens many named dicts of one system, and closes them all."""

    def open(self, name: str) -> Any:
        raise NotImplementedError

    def write(self, d: Any, key: str, value: Any) -> None:
        d[key] = value

    def close(self) -> None:
        pass


# --------------------------------------------------------------------- floor
FLOOR_CREATE = "CREATE TABLE IF NOT EXISTS kv (key PRIMARY KEY, value BLOB)"
FLOOR_GET = "SELECT value FROM kv WHERE key = ?"
FLOOR_HAS = "SELECT 1 FROM kv WHERE key = ?"
FLOOR_UPSERT = (
    "INSERT INTO kv (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
FLOOR_INSERT = "INSERT INTO kv (key, value) VALUES (?, ?)"
FLOOR_UPDATE = "UPDATE kv SET value = ? WHERE key = ?"
FLOOR_DELETE = "DELETE FROM kv WHERE key = ?"
FLOOR_COUNT = "SELECT count(*) FROM kv"
FLOOR_ANY = "SELECT 1 FROM kv LIMIT 1"
FLOOR_KEYS = "SELECT key FROM kv"
FLOOR_CLEAR = "DELETE FROM kv"


def floor_connect(path: str, journal: str = "wal") -> sqlite3.Connection:
    """The floor's connection: autocommit, WAL, synchronous=NORMAL.

    ``journal="rollback"`` gives the rollback-journal reference instead:
    journal_mode=DELETE with synchronous=FULL, the settings multinode uses in
    that mode (NORMAL is not safe against power loss without WAL).
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=60.0)
    if journal == "wal":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    else:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
    return conn


class FloorHandle(Handle):
    """Raw sqlite3, one statement per operation; RMW in BEGIN IMMEDIATE."""

    def __init__(self, path: str, journal: str = "wal") -> None:
        self.path = path
        self.journal = journal
        self.conn = floor_connect(path, journal)
        self.conn.execute(FLOOR_CREATE)
        self.execute = self.conn.execute

    def get(self, key: str) -> Any:
        row = self.execute(FLOOR_GET, (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return pickle.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        self.execute(FLOOR_UPSERT, (key, pickle.dumps(value, PICKLE_PROTOCOL)))

    def contains(self, key: str) -> bool:
        return self.execute(FLOOR_HAS, (key,)).fetchone() is not None

    def delete(self, key: str) -> None:
        if self.execute(FLOOR_DELETE, (key,)).rowcount == 0:
            raise KeyError(key)

    def rmw(self, key: str, change: Callable[[Any], Any]) -> bool:
        """BEGIN IMMEDIATE / SELECT / UPDATE / COMMIT, the floor's RMW."""
        execute = self.execute
        execute("BEGIN IMMEDIATE")
        try:
            row = execute(FLOOR_GET, (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            new = change(pickle.loads(row[0]))
            if new is _KEEP:
                execute("COMMIT")
                return False
            execute(FLOOR_UPDATE, (pickle.dumps(new, PICKLE_PROTOCOL), key))
        except BaseException:
            execute("ROLLBACK")
            raise
        execute("COMMIT")
        return True

    def incr(self, key: str) -> None:
        self.rmw(key, _plus_one)

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        execute = self.execute
        execute("BEGIN IMMEDIATE")
        try:
            row = execute(FLOOR_GET, (key,)).fetchone()
            ok = row is not None and pickle.loads(row[0]) == expected
            if ok:
                execute(FLOOR_UPDATE, (pickle.dumps(new, PICKLE_PROTOCOL), key))
        except BaseException:
            execute("ROLLBACK")
            raise
        execute("COMMIT")
        return ok

    def sia(self, key: str, value: Any) -> bool:
        execute = self.execute
        execute("BEGIN IMMEDIATE")
        try:
            absent = execute(FLOOR_HAS, (key,)).fetchone() is None
            if absent:
                execute(FLOOR_INSERT, (key, pickle.dumps(value, PICKLE_PROTOCOL)))
        except BaseException:
            execute("ROLLBACK")
            raise
        execute("COMMIT")
        return absent

    def length(self) -> int:
        return int(self.execute(FLOOR_COUNT).fetchone()[0])

    def truthy(self) -> bool:
        return self.execute(FLOOR_ANY).fetchone() is not None

    def iter_keys(self) -> Iterator[Any]:
        return (row[0] for row in self.execute(FLOOR_KEYS))

    def clear(self) -> None:
        self.execute(FLOOR_CLEAR)

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        dumps = pickle.dumps
        for chunk in _chunks(items, LOAD_CHUNK):
            self.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                FLOOR_UPSERT, [(k, dumps(v, PICKLE_PROTOCOL)) for k, v in chunk]
            )
            self.execute("COMMIT")

    def discard_many(self, keys: list[str]) -> None:
        self.execute("BEGIN IMMEDIATE")
        self.conn.executemany(FLOOR_DELETE, [(k,) for k in keys])
        self.execute("COMMIT")

    def counter(self, variant: str) -> Counter:
        return Counter(lambda k: self.set(k, 0), self.incr, lambda k: self.get(k))

    def spec(self) -> Any:
        return (self.path, self.journal)

    def close(self) -> None:
        self.conn.close()


_KEEP = object()


def _plus_one(value: Any) -> Any:
    return value + 1


class Floor(System):
    key = "floor"
    label = "floor: raw sqlite3, WAL"
    notes: ClassVar[dict[str, str]] = {
        "incr": "BEGIN IMMEDIATE/SELECT/UPDATE/COMMIT",
        "cas": "same RMW transaction with a compare",
        "sia": "BEGIN IMMEDIATE/SELECT/INSERT/COMMIT",
        "len": "SELECT count(*) (scans)",
    }
    variants = (Variant("rmw", "BEGIN IMMEDIATE RMW", True),)
    journal = "wal"

    def create(self, workdir: Path) -> Handle:
        return FloorHandle(str(workdir / "floor.db"), self.journal)

    def attach(self, spec: Any) -> Handle:
        return FloorHandle(*spec)

    def open_named(self, workdir: Path) -> NamedOpener:
        return _FloorNamed(str(workdir / "floor.db"), self.journal)


class FloorRollback(Floor):
    """The same floor on a rollback journal: the reference for that mode."""

    key = "floor-rollback"
    max_keys = PEER_MAX_KEYS
    label = "raw sqlite3, rollback journal"
    journal = "rollback"


class _FloorNamed(NamedOpener):
    """The floor's named dicts: one table per name on one connection."""

    def __init__(self, path: str, journal: str) -> None:
        self.conn = floor_connect(path, journal)

    def open(self, name: str) -> Any:
        table = '"t_' + name.replace('"', '""') + '"'
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key PRIMARY KEY, value BLOB)"
        )
        return table

    def write(self, d: Any, key: str, value: Any) -> None:
        self.conn.execute(
            f"INSERT INTO {d} (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, pickle.dumps(value, PICKLE_PROTOCOL)),
        )

    def close(self) -> None:
        self.conn.close()


# ----------------------------------------------------------------- multinode
class MultinodeHandle(Handle):
    """A multinode SharedDict on its own Store."""

    def __init__(self, path: str, journal_mode: str) -> None:
        import multinode as mn

        self.path = path
        self.journal_mode = journal_mode
        self.store = mn.Store(path, journal_mode=journal_mode)
        self.d = self.store.get_dict("bench")
        d = self.d
        self.get = d.__getitem__  # type: ignore[method-assign]
        self.set = d.__setitem__  # type: ignore[method-assign]
        self.contains = d.__contains__  # type: ignore[method-assign]
        self.delete = d.__delitem__  # type: ignore[method-assign]

    def incr(self, key: str) -> None:
        self.d[key] += 1

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        return bool(self.d.update(key, new_value=new, expected_current_value=expected))

    def sia(self, key: str, value: Any) -> bool:
        return bool(self.d.set_if_absent(key, value=value))

    def length(self) -> int:
        return len(self.d)

    def truthy(self) -> bool:
        return bool(self.d)

    def iter_keys(self) -> Iterator[Any]:
        return iter(self.d)

    def clear(self) -> None:
        self.d.clear()

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        for chunk in _chunks(items, LOAD_CHUNK):
            self.d.update(dict(chunk))

    def discard_many(self, keys: list[str]) -> None:
        with self.store.transaction():
            for key in keys:
                del self.d[key]

    def counter(self, variant: str) -> Counter:
        return Counter(lambda k: self.set(k, 0), self.incr, lambda k: self.get(k))

    def spec(self) -> Any:
        return (self.path, self.journal_mode)

    def close(self) -> None:
        self.store.close()


class Multinode(System):
    modules = ("multinode",)
    journal_mode = "wal"
    notes: ClassVar[dict[str, str]] = {
        "incr": "`d[k] += 1`",
        "cas": "`d.update(k, new_value=, expected_current_value=)`",
        "sia": "`d.set_if_absent(k, value=)`",
    }
    variants = (Variant("iadd", "`d[k] += 1`", True),)

    def create(self, workdir: Path) -> Handle:
        return MultinodeHandle(str(workdir / "multinode.db"), self.journal_mode)

    def attach(self, spec: Any) -> Handle:
        return MultinodeHandle(*spec)

    def open_named(self, workdir: Path) -> NamedOpener:
        return _MultinodeNamed(str(workdir / "multinode.db"), self.journal_mode)


class MultinodeWal(Multinode):
    key = "multinode-wal"
    label = "multinode (WAL)"


class MultinodeRollback(Multinode):
    key = "multinode-rollback"
    label = "multinode (rollback journal)"
    journal_mode = "rollback"


class _MultinodeNamed(NamedOpener):
    def __init__(self, path: str, journal_mode: str) -> None:
        import multinode as mn

        self.store = mn.Store(path, journal_mode=journal_mode)

    def open(self, name: str) -> Any:
        return self.store.get_dict(name)

    def close(self) -> None:
        self.store.close()


# ----------------------------------------------------------------- diskcache
class DiskcacheHandle(Handle):
    """A diskcache ``Cache`` or ``Index`` in its own directory."""

    def __init__(self, directory: str, kind: str) -> None:
        import diskcache

        self.directory = directory
        self.kind = kind
        if kind == "cache":
            self.obj: Any = diskcache.Cache(directory)
            self.cache: Any = self.obj
        else:
            self.obj = diskcache.Index(directory)
            self.cache = self.obj.cache
        obj = self.obj
        self.get = obj.__getitem__  # type: ignore[method-assign]
        self.set = obj.__setitem__  # type: ignore[method-assign]
        self.contains = obj.__contains__  # type: ignore[method-assign]
        self.delete = obj.__delitem__  # type: ignore[method-assign]

    def incr(self, key: str) -> None:
        if self.kind == "cache":
            self.cache.incr(key)
        else:
            with self.obj.transact():
                self.obj[key] += 1

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        with self.obj.transact():
            ok = self.obj.get(key, _KEEP) == expected
            if ok:
                self.obj[key] = new
        return ok

    def sia(self, key: str, value: Any) -> bool:
        if self.kind == "cache":
            return bool(self.cache.add(key, value))
        self.obj.setdefault(key, value)
        return True

    def length(self) -> int:
        return len(self.obj)

    def iter_keys(self) -> Iterator[Any]:
        return iter(self.obj)

    def clear(self) -> None:
        self.obj.clear()

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        for chunk in _chunks(items, LOAD_CHUNK):
            with self.obj.transact():
                for key, value in chunk:
                    self.obj[key] = value

    def discard_many(self, keys: list[str]) -> None:
        with self.obj.transact():
            for key in keys:
                del self.obj[key]

    def counter(self, variant: str) -> Counter:
        if variant == "plain":
            return _plain_counter(self)
        return Counter(lambda k: self.set(k, 0), self.incr, lambda k: self.get(k))

    def spec(self) -> Any:
        return (self.directory, self.kind)

    def close(self) -> None:
        self.cache.close()


class DiskcacheCache(System):
    key = "diskcache-cache"
    max_keys = PEER_MAX_KEYS
    label = "diskcache Cache"
    modules = ("diskcache",)
    notes: ClassVar[dict[str, str]] = {
        "incr": "`Cache.incr` (atomic)",
        "cas": "`with transact():` get, compare, set",
        "sia": "`Cache.add` (atomic)",
        "len": "cached count",
    }
    variants = (
        Variant("incr", "`Cache.incr`", True),
        Variant("plain", "`c[k] = c[k] + 1`", False),
    )

    def create(self, workdir: Path) -> Handle:
        return DiskcacheHandle(str(workdir / "cache"), "cache")

    def attach(self, spec: Any) -> Handle:
        return DiskcacheHandle(*spec)

    def open_named(self, workdir: Path) -> NamedOpener:
        return _DiskcacheNamed(workdir)


class DiskcacheIndex(DiskcacheCache):
    key = "diskcache-index"
    label = "diskcache Index"
    notes: ClassVar[dict[str, str]] = {
        "incr": "`with transact(): i[k] += 1`",
        "cas": "`with transact():` get, compare, set",
        "sia": "`Index.setdefault`",
        "len": "cached count",
    }
    variants = (
        Variant("transact", "`with transact(): i[k] += 1`", True),
        Variant("plain", "`i[k] += 1`", False),
    )
    named_dicts = False

    def create(self, workdir: Path) -> Handle:
        return DiskcacheHandle(str(workdir / "index"), "index")


class _DiskcacheNamed(NamedOpener):
    """diskcache has no named dicts in one store: one Cache per directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.opened: list[Any] = []

    def open(self, name: str) -> Any:
        import diskcache

        cache = diskcache.Cache(str(self.workdir / name))
        self.opened.append(cache)
        return cache

    def close(self) -> None:
        for cache in self.opened:
            cache.close()


# ---------------------------------------------------------------- sqlitedict
class SqlitedictHandle(Handle):
    """A ``SqliteDict(autocommit=True)`` (its default rollback journal)."""

    def __init__(self, path: str) -> None:
        from sqlitedict import SqliteDict

        self.path = path
        self.d = SqliteDict(path, tablename="bench", autocommit=True)
        d = self.d
        self.get = d.__getitem__  # type: ignore[method-assign]
        self.set = d.__setitem__  # type: ignore[method-assign]
        self.contains = d.__contains__  # type: ignore[method-assign]
        self.delete = d.__delitem__  # type: ignore[method-assign]

    def incr(self, key: str) -> None:
        self.d[key] += 1

    def length(self) -> int:
        return len(self.d)

    def iter_keys(self) -> Iterator[Any]:
        return iter(self.d)

    def clear(self) -> None:
        self.d.clear()

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        for chunk in _chunks(items, LOAD_CHUNK):
            self.d.update(chunk)

    def counter(self, variant: str) -> Counter:
        return _plain_counter(self)

    def spec(self) -> Any:
        return self.path

    def close(self) -> None:
        self.d.close()


class Sqlitedict(System):
    key = "sqlitedict"
    max_keys = PEER_MAX_KEYS
    label = "sqlitedict (autocommit)"
    modules = ("sqlitedict",)
    notes: ClassVar[dict[str, str]] = {
        "incr": "`d[k] += 1` (not atomic)",
        "cas": "n/a: no atomic compare",
        "sia": "n/a: no atomic insert",
        "len": "SELECT COUNT(*) (scans)",
    }
    variants = (Variant("plain", "`d[k] += 1`", False),)

    def create(self, workdir: Path) -> Handle:
        return SqlitedictHandle(str(workdir / "sqlitedict.db"))

    def attach(self, spec: Any) -> Handle:
        return SqlitedictHandle(spec)

    def open_named(self, workdir: Path) -> NamedOpener:
        return _SqlitedictNamed(str(workdir / "sqlitedict.db"))


class _SqlitedictNamed(NamedOpener):
    """One ``SqliteDict(tablename=name)`` per name: each has its own thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.opened: list[Any] = []

    def open(self, name: str) -> Any:
        from sqlitedict import SqliteDict

        d = SqliteDict(self.path, tablename=name, autocommit=True)
        self.opened.append(d)
        return d

    def close(self) -> None:
        for d in self.opened:
            d.close()


# -------------------------------------------------------------------- shelve
class ShelveHandle(Handle):
    """``shelve.open`` on whatever ``dbm`` backend this Python has."""

    def __init__(self, path: str) -> None:
        import shelve

        self.path = path
        self.s = shelve.open(path, protocol=PICKLE_PROTOCOL)  # noqa: SIM115
        s = self.s
        self.get = s.__getitem__  # type: ignore[method-assign]
        self.set = s.__setitem__  # type: ignore[method-assign]
        self.contains = s.__contains__  # type: ignore[method-assign]
        self.delete = s.__delitem__  # type: ignore[method-assign]

    def incr(self, key: str) -> None:
        self.s[key] += 1

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        ok = self.s.get(key, _KEEP) == expected
        if ok:
            self.s[key] = new
        return ok

    def sia(self, key: str, value: Any) -> bool:
        if key in self.s:
            return False
        self.s[key] = value
        return True

    def length(self) -> int:
        return len(self.s)

    def iter_keys(self) -> Iterator[Any]:
        return iter(self.s)

    def clear(self) -> None:
        self.s.clear()

    def counter(self, variant: str) -> Counter:
        return _plain_counter(self)

    def close(self) -> None:
        self.s.close()


def dbm_backend() -> str:
    """The module ``shelve.open`` picks for a new file on this Python."""
    for name in ("dbm.gnu", "dbm.ndbm", "dbm.dumb"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    return "dbm.dumb"


class Shelve(System):
    key = "shelve"
    modules = ()
    shared = False
    notes: ClassVar[dict[str, str]] = {
        "incr": "`s[k] += 1` (one process only)",
        "cas": "get, compare, set (one process only)",
        "sia": "`in` then set (one process only)",
    }
    variants = ()
    max_keys = PEER_MAX_KEYS

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"shelve ({dbm_backend()})"

    def create(self, workdir: Path) -> Handle:
        return ShelveHandle(str(workdir / "shelf"))

    def open_named(self, workdir: Path) -> NamedOpener:
        return _ShelveNamed(workdir)


class _ShelveNamed(NamedOpener):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.opened: list[Any] = []

    def open(self, name: str) -> Any:
        import shelve

        # Closed with the others at the end of the run, not by a with block.
        s = shelve.open(  # noqa: SIM115
            str(self.workdir / name), protocol=PICKLE_PROTOCOL
        )
        self.opened.append(s)
        return s

    def close(self) -> None:
        for s in self.opened:
            s.close()


# ------------------------------------------------------------------- manager
class ManagerHandle(Handle):
    """A ``Manager().dict()`` proxy, with a ``Manager().Lock()`` beside it."""

    def __init__(self, proxy: Any, lock: Any) -> None:
        self.d = proxy
        self.lock = lock
        self.get = proxy.__getitem__  # type: ignore[method-assign]
        self.set = proxy.__setitem__  # type: ignore[method-assign]
        self.contains = proxy.__contains__  # type: ignore[method-assign]
        self.delete = proxy.__delitem__  # type: ignore[method-assign]

    def incr(self, key: str) -> None:
        with self.lock:
            self.d[key] += 1

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        with self.lock:
            ok = self.d.get(key, None) == expected
            if ok:
                self.d[key] = new
        return ok

    def sia(self, key: str, value: Any) -> bool:
        self.d.setdefault(key, value)
        return True

    def length(self) -> int:
        return len(self.d)

    def iter_keys(self) -> Iterator[Any]:
        return iter(self.d.keys())

    def clear(self) -> None:
        self.d.clear()

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        for chunk in _chunks(items, LOAD_CHUNK):
            self.d.update(chunk)

    def counter(self, variant: str) -> Counter:
        if variant == "plain":
            return _plain_counter(self)
        return Counter(lambda k: self.set(k, 0), self.incr, lambda k: self.get(k))

    def spec(self) -> Any:
        return (self.d, self.lock)


class Manager(System):
    key = "manager"
    label = "Manager().dict()"
    notes: ClassVar[dict[str, str]] = {
        "incr": "`with lock: d[k] += 1` (Manager Lock)",
        "cas": "`with lock:` get, compare, set",
        "sia": "`setdefault` (runs in the server)",
        "iter": "`d.keys()` copies the whole key list",
    }
    variants = (
        Variant("locked", "`with lock: d[k] += 1`", True),
        Variant("plain", "`d[k] += 1`", False),
    )
    max_keys = PEER_MAX_KEYS

    def __init__(self) -> None:
        self.manager: Any = None

    def start(self, workdir: Path) -> None:
        import multiprocessing

        if self.manager is None:
            self.manager = multiprocessing.Manager()

    def stop(self) -> None:
        if self.manager is not None:
            self.manager.shutdown()
            self.manager = None

    def create(self, workdir: Path) -> Handle:
        self.start(workdir)
        return ManagerHandle(self.manager.dict(), self.manager.Lock())

    def attach(self, spec: Any) -> Handle:
        return ManagerHandle(*spec)

    def open_named(self, workdir: Path) -> NamedOpener:
        self.start(workdir)
        return _ManagerNamed(self.manager)


class _ManagerNamed(NamedOpener):
    def __init__(self, manager: Any) -> None:
        self.manager = manager

    def open(self, name: str) -> Any:
        return self.manager.dict()


# --------------------------------------------------------------------- redis
class RedisHandle(Handle):
    """One Redis hash per dict, values pickled, through redis-py."""

    def __init__(self, host: str, port: int, name: str) -> None:
        import redis

        self.host, self.port, self.name = host, port, name
        self.r = redis.Redis(host=host, port=port)

    def get(self, key: str) -> Any:
        raw = self.r.hget(self.name, key)
        if raw is None:
            raise KeyError(key)
        return pickle.loads(raw)

    def set(self, key: str, value: Any) -> None:
        self.r.hset(self.name, key, pickle.dumps(value, PICKLE_PROTOCOL))

    def contains(self, key: str) -> bool:
        return bool(self.r.hexists(self.name, key))

    def delete(self, key: str) -> None:
        if not self.r.hdel(self.name, key):
            raise KeyError(key)

    def incr(self, key: str) -> None:
        self.r.hincrby(self.name, key, 1)

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        import redis

        with self.r.pipeline() as pipe:
            try:
                pipe.watch(self.name)
                raw = pipe.hget(self.name, key)
                if raw is None or pickle.loads(raw) != expected:
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.hset(self.name, key, pickle.dumps(new, PICKLE_PROTOCOL))
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def sia(self, key: str, value: Any) -> bool:
        return bool(self.r.hsetnx(self.name, key, pickle.dumps(value, PICKLE_PROTOCOL)))

    def length(self) -> int:
        return int(self.r.hlen(self.name))

    def iter_keys(self) -> Iterator[Any]:
        return (k for k, _ in self.r.hscan_iter(self.name, count=1000))

    def clear(self) -> None:
        self.r.delete(self.name)

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        dumps = pickle.dumps
        for chunk in _chunks(items, LOAD_CHUNK):
            mapping = {k: dumps(v, PICKLE_PROTOCOL) for k, v in chunk}
            self.r.hset(self.name, mapping=mapping)

    def counter(self, variant: str) -> Counter:
        if variant == "plain":
            return _plain_counter(self)
        return Counter(
            lambda k: self.r.hset(self.name, k, 0),
            self.incr,
            lambda k: int(self.r.hget(self.name, k) or 0),
        )

    def spec(self) -> Any:
        return (self.host, self.port, self.name)

    def close(self) -> None:
        self.r.close()


class Redis(System):
    key = "redis"
    max_keys = PEER_MAX_KEYS
    label = "Redis (redis-py, loopback)"
    modules = ("redis",)
    notes: ClassVar[dict[str, str]] = {
        "incr": "`HINCRBY` (atomic, integers only)",
        "cas": "WATCH / HGET / MULTI / HSET / EXEC",
        "sia": "`HSETNX`",
        "iter": "`HSCAN` (also ships the values)",
        "len": "`HLEN`",
    }
    variants = (
        Variant("hincrby", "`HINCRBY`", True),
        Variant("plain", "HGET, +1, HSET", False),
    )

    def __init__(self) -> None:
        self.server: Any = None
        self.count = 0

    def missing(self) -> str | None:
        reason = super().missing()
        if reason:
            return reason
        if shutil.which("redis-server") is None:
            return "redis-server is not on PATH"
        return None

    def start(self, workdir: Path) -> None:
        from benchmarks._redis import RedisServer

        if self.server is None:
            self.server = RedisServer(workdir)
            self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _next_name(self) -> str:
        self.count += 1
        return f"bench{self.count}"

    def create(self, workdir: Path) -> Handle:
        self.start(workdir)
        return RedisHandle("127.0.0.1", self.server.port, self._next_name())

    def attach(self, spec: Any) -> Handle:
        return RedisHandle(*spec)

    def open_named(self, workdir: Path) -> NamedOpener:
        self.start(workdir)
        return _RedisNamed(self.server.port, self._next_name())


class _RedisNamed(NamedOpener):
    """Named dicts in Redis are hashes: opening one costs nothing."""

    def __init__(self, port: int, prefix: str) -> None:
        import redis

        self.prefix = prefix
        self.r = redis.Redis(host="127.0.0.1", port=port)

    def open(self, name: str) -> Any:
        return f"{self.prefix}:{name}"

    def write(self, d: Any, key: str, value: Any) -> None:
        self.r.hset(d, key, pickle.dumps(value, PICKLE_PROTOCOL))

    def close(self) -> None:
        self.r.close()


# ---------------------------------------------------------------------- dict
class DictHandle(Handle):
    """A plain dict in this process: the ceiling, not shareable."""

    def __init__(self) -> None:
        self.d: dict[str, Any] = {}
        d = self.d
        self.get = d.__getitem__  # type: ignore[method-assign]
        self.set = d.__setitem__  # type: ignore[method-assign]
        self.contains = d.__contains__  # type: ignore[method-assign]
        self.delete = d.__delitem__  # type: ignore[method-assign]

    def incr(self, key: str) -> None:
        self.d[key] += 1

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        ok = self.d.get(key, _KEEP) == expected
        if ok:
            self.d[key] = new
        return ok

    def sia(self, key: str, value: Any) -> bool:
        return self.d.setdefault(key, value) is value

    def length(self) -> int:
        return len(self.d)

    def iter_keys(self) -> Iterator[Any]:
        return iter(self.d)

    def clear(self) -> None:
        self.d.clear()

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        self.d.update(items)

    def counter(self, variant: str) -> Counter:
        return Counter(lambda k: self.set(k, 0), self.incr, lambda k: self.get(k))


class PlainDict(System):
    key = "dict"
    max_keys = PEER_MAX_KEYS
    label = "plain dict (ceiling)"
    shared = False
    notes: ClassVar[dict[str, str]] = {"incr": "one process only"}
    variants = ()

    def create(self, workdir: Path) -> Handle:
        return DictHandle()

    def open_named(self, workdir: Path) -> NamedOpener:
        return _DictNamed()


class _DictNamed(NamedOpener):
    def open(self, name: str) -> Any:
        return {}


def all_systems() -> list[System]:
    """Every system, floor first, in the order of the tables."""
    return [
        Floor(),
        MultinodeWal(),
        FloorRollback(),
        MultinodeRollback(),
        DiskcacheIndex(),
        DiskcacheCache(),
        Sqlitedict(),
        Shelve(),
        Manager(),
        Redis(),
        PlainDict(),
    ]


def by_key(key: str) -> System:
    """A fresh adapter for the system named ``key`` (used in children)."""
    for system in all_systems():
        if system.key == key:
            return system
    raise KeyError(key)


@contextlib.contextmanager
def opened(system: System, workdir: Path) -> Iterator[Handle]:
    """A new handle in ``workdir`` that is closed afterwards."""
    os.makedirs(workdir, exist_ok=True)
    handle = system.create(workdir)
    try:
        yield handle
    finally:
        handle.close()
