"""`SharedDict`: a `MutableMapping` whose items live in a store.

Every method is one statement in autocommit, or one explicit write
transaction (``BEGIN IMMEDIATE``) when Python must decide between reading and
writing: a compare by ``==``, an in-place operator, loading a value before
deleting it. Inside ``with store.transaction()`` they all join that
transaction instead.
"""

from __future__ import annotations

import pickle
import sqlite3
import sys
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import TYPE_CHECKING, Any, NoReturn

from multinode import _sql
from multinode._codec import DUMPS, LOADS, decode_key, encode_key
from multinode._inplace import TARGET, Pending, augmented_target
from multinode._link import RowRefused
from multinode.errors import DictDeletedError, MultinodeError, ValueLoadError

if TYPE_CHECKING:
    import contextlib

    from multinode._link import Link
    from multinode._store import Store

_MISSING: Any = object()
_KEYS_PAGE = 512
# Pages of values start small and grow while they stay under this many bytes,
# so that iterating over big values holds only a few of them at a time.
_PAGE_BYTES = 4 * 2**20


class SharedDict(MutableMapping[Any, Any]):
    """A dict shared by every process, thread and host that opens its store.

    Obtain one with `multinode.get_dict` or `Store.get_dict`. Values are
    copies: change one by assigning it again, or atomically with an in-place
    operator (``d["l"] += [1]``).
    """

    __slots__ = ("_dumps", "_id", "_loads", "_name", "_serializer", "_store", "_where")

    def __init__(self, store: Store, name: str, dict_id: int, serializer: str) -> None:
        self._store = store
        self._name = name
        self._id = dict_id
        self._serializer = serializer
        self._dumps = DUMPS[serializer]
        self._loads = LOADS[serializer]
        shown = repr(name) if len(name) <= 60 else repr(name[:57]) + "..."
        self._where = f"dict {shown} in {store.path}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def store(self) -> Store:
        return self._store

    @property
    def serializer(self) -> str:
        return self._serializer

    def __repr__(self) -> str:
        return f"<multinode.SharedDict {self._where}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses to another process as its store and the dict's identity,
        # so a dict deleted meanwhile is not created anew over there.
        return (SharedDict, (self._store, self._name, self._id, self._serializer))

    # Reading -----------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        try:
            check_first = augmented_target(sys._getframe(1))
        except ValueError:  # called with no Python frame above
            check_first = None
        if check_first is not None:
            # `d[k] op= v`: the operation runs in __setitem__, atomically.
            if check_first and key not in self:
                raise KeyError(key)
            return TARGET
        # The hot path: the common key type and the loading are inline.
        if type(key) is str and key.isascii():
            canonical: str | bytes = key
        else:
            canonical, _ = encode_key(key, self._where)
        link = self._store._link()
        row = link.one(_sql.GET_VALUE, (self._id, canonical))
        if row is None:
            self._missing(link)
            raise KeyError(key)
        data = row[0]
        if data is None:
            return self._get_big(link, key, canonical)
        try:
            return self._loads(data)
        except Exception as exc:
            raise self._unloadable(key, data, exc) from exc

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        canonical, _ = encode_key(key, self._where)
        link = self._store._link()
        if link.one(_sql.CONTAINS, (self._id, canonical)) is None:
            self._missing(link)
            return False
        return True

    def __len__(self) -> int:
        row = self._store._link().one(_sql.LENGTH, (self._id,))
        if row is None:
            raise self._deleted()
        length: int = row[0]
        return length

    def __iter__(self) -> Iterator[Any]:
        return self._keys(self._pages(_sql.KEYS_PAGE, fixed=True))

    def __reversed__(self) -> Iterator[Any]:
        return self._keys(self._pages(_sql.KEYS_PAGE_REVERSED, fixed=True))

    @staticmethod
    def _keys(rows: Iterator[Any]) -> Iterator[Any]:
        for _, stored in rows:
            # A str key is stored as itself: no call to decode it.
            yield stored if type(stored) is str else decode_key(stored)

    def keys(self) -> KeysView[Any]:
        return _Keys(self)

    def values(self) -> ValuesView[Any]:
        return _Values(self)

    def items(self) -> ItemsView[Any, Any]:
        return _Items(self)

    def _iter_values(self) -> Iterator[Any]:
        # Items, not bare values, so that an unloadable value names its key.
        return (value for _, value in self._iter_items())

    def _iter_items(self) -> Iterator[tuple[Any, Any]]:
        # Not a generator itself: the bound is read now, when iteration begins.
        return self._items(self._pages(_sql.ITEMS_PAGE))

    def _items(self, rows: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
        for pos, canonical, form, data in rows:
            key = decode_key(form if form is not None else canonical)
            value = self._value_at(pos, data, key=key)
            if value is not _MISSING:
                yield key, value

    def copy(self) -> dict[Any, Any]:
        """A plain dict with every item, read from one consistent snapshot."""
        with self._store._link().reading():
            return dict(self._iter_items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.copy() == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Any) -> dict[Any, Any]:
        """``d | other``: a plain dict, as `copy` with `other` merged in."""
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: Any) -> dict[Any, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = dict(other)
        merged.update(self.copy())
        return merged

    def __ior__(self, other: Any) -> SharedDict:
        """``d |= other``: `update`, in one transaction."""
        self.update(other)
        return self

    def _pages(self, sql: str, *, fixed: bool = False) -> Iterator[Any]:
        """Rows of `sql`, page by page, in insertion order (or its reverse).

        Each page is its own short read, so a paused iterator holds no lock
        and no snapshot. The last position is read now, when iteration
        begins, and bounds it: every key present throughout is met once,
        and no key inserted later.
        """
        row = self._store._link().one(_sql.LAST_POS, (self._id,))
        if row is None:
            raise self._deleted()
        return self._pages_within(sql, self._id << _sql.POS_BITS, row[0], fixed)

    def _pages_within(
        self, sql: str, low: int, high: int, fixed: bool
    ) -> Iterator[Any]:
        reverse = sql is _sql.KEYS_PAGE_REVERSED
        limit = _KEYS_PAGE if fixed else 16
        while True:
            rows = self._store._link().all(sql, (low, high, limit))
            yield from rows
            if len(rows) < limit:
                # A dict deleted meanwhile would just look shorter.
                self._missing(self._store._link())
                return
            if reverse:
                high = rows[-1][0] - 1
            else:
                low = rows[-1][0]
            if not fixed:
                size = sum(len(r[-1]) for r in rows if r[-1] is not None)
                if size < _PAGE_BYTES // 2:
                    limit = min(limit * 2, _KEYS_PAGE)
                elif size > _PAGE_BYTES:
                    limit = max(limit // 2, 1)

    def _value_at(self, pos: int, data: bytes | None, *, key: Any) -> Any:
        """The value of a row met while iterating; `_MISSING` if a big value
        was deleted before its chunks could be read."""
        if data is None:
            data = self._stored_at(self._store._link(), pos)
            if data is None:
                return _MISSING
        return self._load(key, data)

    # Writing -----------------------------------------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        if type(value) is Pending:
            self._apply(key, value)
            return
        canonical, form = encode_key(key, self._where)
        data = self._dumps(value, self._where)
        link = self._store._link()
        if len(data) > _store.CHUNK_SIZE:
            with link.writing(savepoint=True) as db:
                self._put_big(db, link, canonical, form, data)
            return
        try:
            link.change(_sql.PUT, (canonical, form, data, self._id, self._id))
        except RowRefused as exc:
            self._refused(link, exc)

    def __delitem__(self, key: Any) -> None:
        canonical, _ = encode_key(key, self._where)
        link = self._store._link()
        if not link.change(_sql.DELETE, (self._id, canonical)):
            self._missing(link)
            raise KeyError(key)

    def set_if_absent(self, key: Any, *, value: Any) -> bool:
        """Store `value` only if `key` is missing; whether it did."""
        canonical, form = encode_key(key, self._where)
        data = self._dumps(value, self._where)
        link = self._store._link()
        if len(data) > _store.CHUNK_SIZE:
            with link.writing(savepoint=True) as db:
                if db.execute(_sql.CONTAINS, (self._id, canonical)).fetchone():
                    return False
                self._put_big(db, link, canonical, form, data)
                return True
        try:
            return (
                link.change(
                    _sql.PUT_IF_ABSENT, (canonical, form, data, self._id, self._id)
                )
                == 1
            )
        except RowRefused as exc:
            self._refused(link, exc)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        # Read first: the common case, a present key, writes nothing. If the
        # key appears between the read and the insert, read it again.
        while True:
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                return value
            if self.set_if_absent(key, value=default):
                return default

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        canonical, _ = encode_key(key, self._where)
        link = self._store._link()
        with link.writing() as db:
            row = db.execute(_sql.GET, (self._id, canonical)).fetchone()
            if row is None:
                self._missing(link)
                if default is _MISSING:
                    raise KeyError(key)
                return default
            value = self._read(db, key, row)
            db.execute(_sql.DELETE_AT, (row[1],))
        return value

    def popitem(self) -> tuple[Any, Any]:
        """Remove and return the most recently inserted item."""
        link = self._store._link()
        with link.writing() as db:
            base = self._id << _sql.POS_BITS
            end = base + (1 << _sql.POS_BITS)
            row = db.execute(_sql.LAST_ITEM, (base, end)).fetchone()
            if row is None:
                self._missing(link)
                raise KeyError("popitem(): dictionary is empty")
            pos, canonical, form, data = row
            key = decode_key(form if form is not None else canonical)
            value = self._read(db, key, (data, pos))
            db.execute(_sql.DELETE_AT, (pos,))
        return key, value

    def clear(self) -> None:
        link = self._store._link()
        with link.writing() as db:
            db.execute(_sql.DELETE_DICT_ITEMS, (self._id,))
            self._missing(link)

    def update(self, *args: Any, **kwargs: Any) -> Any:
        """``dict.update``, in one transaction; or, called as
        ``update(key, new_value=v, expected_current_value=e)``, a
        compare-and-swap that sets `v` only if the current value ``== e``
        and says whether it did."""
        if len(args) == 1 and len(kwargs) == 2 and kwargs.keys() == _CAS_KEYWORDS:
            return self._compare_and_swap(
                args[0], kwargs["new_value"], kwargs["expected_current_value"]
            )
        if len(args) > 1:
            raise TypeError(
                f"update expected at most 1 positional argument, got {len(args)}"
            )
        rows = [
            (*encode_key(key, self._where), self._dumps(value, self._where))
            for key, value in _pairs(args[0] if args else (), kwargs)
        ]
        if not rows:
            self._missing(self._store._link())
            return None
        link = self._store._link()
        with link.writing(savepoint=True) as db:
            if any(len(data) > _store.CHUNK_SIZE for _, _, data in rows):
                # One at a time, in order, so big values keep their place.
                for canonical, form, data in rows:
                    self._put(db, link, canonical, form, data)
            else:
                try:
                    db.executemany(
                        _sql.PUT, [(*row, self._id, self._id) for row in rows]
                    )
                except sqlite3.IntegrityError as exc:
                    self._refused(link, exc)
        return None

    def _compare_and_swap(self, key: Any, new: Any, expected: Any) -> bool:
        canonical, _ = encode_key(key, self._where)
        data = self._dumps(new, self._where)
        link = self._store._link()
        with link.writing() as db:
            # The link's own cursor: one statement at a time, read at once.
            row = link.cursor.execute(_sql.GET, (self._id, canonical)).fetchone()
            if row is None:
                self._missing(link)
                return False
            matches = self._read(db, key, row) == expected
            if not matches:
                return False
            self._write_at(link, db, row[1], data)
        return True

    def _apply(self, key: Any, pending: Pending) -> None:
        """Run `d[key] op= operand` as one read-modify-write."""
        # The hottest write (every counter), so its common cases are inline,
        # as in __getitem__: an ASCII str key, a value that fits its row.
        if type(key) is str and key.isascii():
            canonical: str | bytes = key
        else:
            canonical, _ = encode_key(key, self._where)
        link = self._store._link()
        with link.writing() as db:
            cursor = link.cursor
            row = cursor.execute(_sql.GET, (self._id, canonical)).fetchone()
            if row is None:
                self._missing(link)
                raise KeyError(key)
            data, pos = row
            if data is None:
                data = self._chunks(db, pos)
            try:
                current = self._loads(data)
            except Exception as exc:
                raise self._unloadable(key, data, exc) from exc
            result = self._dumps(pending.op(current, pending.operand), self._where)
            if len(result) <= _store.CHUNK_SIZE:
                cursor.execute(_sql.SET_VALUE, (result, pos))
            else:
                self._write_at(link, db, pos, result)

    # The command line's dump and load move stored bytes without loading them,
    # so values whose classes cannot be imported here still round-trip.

    def _raw_items(self) -> Iterator[tuple[Any, bytes]]:
        """Every (key, serialized value) as stored, in insertion order."""
        for pos, canonical, form, data in self._pages(_sql.ITEMS_PAGE):
            if data is None:
                data = self._stored_at(self._store._link(), pos)
                if data is None:  # removed since its page was read
                    continue
            yield decode_key(form if form is not None else canonical), bytes(data)

    def _put_raw(self, pairs: Iterable[tuple[Any, bytes]]) -> int:
        """Store already-serialized values, all in one transaction."""
        count = 0
        link = self._store._link()
        with link.writing(savepoint=True) as db:
            for key, data in pairs:
                self._put(db, link, *encode_key(key, self._where), data)
                count += 1
        return count

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """The store's transaction: see `Store.transaction`."""
        return self._store.transaction()

    # Big values and loading --------------------------------------------------

    def _put(
        self,
        db: sqlite3.Connection,
        link: Link,
        canonical: str | bytes,
        form: bytes | None,
        data: bytes,
    ) -> None:
        """Insert or replace one item, inside the transaction open on `db`."""
        if len(data) > _store.CHUNK_SIZE:
            self._put_big(db, link, canonical, form, data)
            return
        try:
            db.execute(_sql.PUT, (canonical, form, data, self._id, self._id))
        except sqlite3.IntegrityError as exc:
            self._refused(link, exc)

    def _put_big(
        self,
        db: sqlite3.Connection,
        link: Link,
        canonical: str | bytes,
        form: bytes | None,
        data: bytes,
    ) -> None:
        try:
            (pos,) = db.execute(
                _sql.PUT_RETURNING_POS, (canonical, form, None, self._id, self._id)
            ).fetchone()
        except sqlite3.IntegrityError as exc:
            self._refused(link, exc)
        self._put_chunks(db, pos, data)

    def _write_at(
        self, link: Link, db: sqlite3.Connection, pos: int, data: bytes
    ) -> None:
        """Replace the value at `pos`, inside the transaction open on `db`."""
        if len(data) <= _store.CHUNK_SIZE:
            link.cursor.execute(_sql.SET_VALUE, (data, pos))
            return
        # Several statements: inside a caller's transaction, a failure among
        # them must undo all of them, and only them.
        with link.writing(savepoint=True):
            db.execute(_sql.SET_VALUE, (None, pos))
            self._put_chunks(db, pos, data)

    @staticmethod
    def _put_chunks(db: sqlite3.Connection, pos: int, data: bytes) -> None:
        size = _store.CHUNK_SIZE
        view = memoryview(data)
        for n, start in enumerate(range(0, len(data), size)):
            db.execute(_sql.PUT_CHUNK, (pos, n, view[start : start + size]))

    @staticmethod
    def _chunks(db: sqlite3.Connection, pos: int) -> bytes:
        return b"".join(row[0] for row in db.execute(_sql.CHUNKS, (pos,)))

    def _read(self, db: sqlite3.Connection, key: Any, row: tuple[Any, int]) -> Any:
        """The value of `row` (value, pos), read inside the open transaction."""
        value, pos = row
        return self._load(key, self._chunks(db, pos) if value is None else value)

    def _get_big(self, link: Link, key: Any, canonical: str | bytes) -> Any:
        row = link.one(_sql.GET, (self._id, canonical))
        if row is None:  # deleted since the first read
            raise KeyError(key)
        return self._load_big(link, key, row[1])

    def _load_big(self, link: Link, key: Any, pos: int) -> Any:
        data = self._stored_at(link, pos)
        if data is None:  # deleted since the first read
            raise KeyError(key)
        return self._load(key, data)

    def _stored_at(self, link: Link, pos: int) -> bytes | None:
        """The stored bytes of the item at `pos`, in one snapshot, or None if
        it is gone. A row read earlier showed a big value there; it may have
        been replaced since, by a big value or one held in its row."""
        with link.reading() as db:
            row = db.execute(_sql.VALUE_AT, (pos,)).fetchone()
            if row is None:
                return None
            data: bytes = row[0] if row[0] is not None else self._chunks(db, pos)
            return data

    def _load(self, key: Any, data: bytes) -> Any:
        try:
            return self._loads(data)
        except Exception as exc:
            raise self._unloadable(key, data, exc) from exc

    def _unloadable(self, key: Any, data: bytes, exc: Exception) -> ValueLoadError:
        what = f"of key {key!r:.200}" if key is not _MISSING else "here"
        missing = _missing_class(data) if self._serializer == "pickle" else None
        if missing:
            reason = (
                f"it was pickled from {missing}, which cannot be imported in "
                "this process; import or define it before reading"
            )
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return ValueLoadError(
            f"{self._where}: the value {what} cannot be loaded: {reason}"
        )

    # Missing keys and deleted dicts ----------------------------------------

    def _missing(self, link: Link) -> None:
        """Raise DictDeletedError if a miss was caused by the dict's deletion."""
        if link.one(_sql.DICT_EXISTS, (self._id,)) is None:
            raise self._deleted()

    def _refused(self, link: Link, exc: Exception) -> NoReturn:
        """Raise why the store refused a new item: the dict was deleted, or
        it has used up its insertion positions."""
        row = link.one(_sql.LAST_POS, (self._id,))
        if row is None:
            raise self._deleted() from None
        if row[0] + 1 >= (self._id + 1) << _sql.POS_BITS:
            raise MultinodeError(
                f"{self._where} has used all 2**{_sql.POS_BITS} insertion "
                "positions; copy its items into a new dict"
            ) from None
        if isinstance(exc, sqlite3.Error):
            raise link.file.translate(exc) from exc
        raise exc

    def _deleted(self) -> DictDeletedError:
        return DictDeletedError(
            f"{self._where} was deleted; call get_dict({self._name!r:.80}) to "
            "create it anew"
        )


_CAS_KEYWORDS = frozenset({"new_value", "expected_current_value"})


def _pairs(source: Any, kwargs: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """The (key, value) pairs of `dict.update(source, **kwargs)`."""
    if hasattr(source, "keys"):
        for key in source.keys():  # noqa: SIM118 - dict.update calls keys()
            yield key, source[key]
    else:
        for i, pair in enumerate(source):
            items = tuple(pair)
            if len(items) != 2:
                raise ValueError(
                    f"dictionary update sequence element #{i} has length "
                    f"{len(items)}; 2 is required"
                )
            yield items
    yield from kwargs.items()


class _MissingClass(Exception):
    pass


class _Diagnosing(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError) as exc:
            raise _MissingClass(f"{module}.{name}") from exc


def _missing_class(data: bytes) -> str | None:
    """The dotted name of the class a pickle needs and cannot find, if any."""
    import io

    try:
        _Diagnosing(io.BytesIO(data)).load()
    except _MissingClass as exc:
        return str(exc)
    except Exception:
        return None
    return None


# The views' iterators begin when iter() is called, like the dict's own;
# collections.abc's are generators, which would begin at the first next().


class _Keys(KeysView[Any]):
    _mapping: SharedDict

    def __iter__(self) -> Iterator[Any]:
        return iter(self._mapping)


class _Values(ValuesView[Any]):
    _mapping: SharedDict

    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iter_values()


class _Items(ItemsView[Any, Any]):
    _mapping: SharedDict

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping._iter_items()


from multinode import _store  # noqa: E402  (circular: _store imports this module)
