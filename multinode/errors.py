"""The exceptions multinode raises.

Every error the library raises on purpose derives from `MultinodeError`, and
each specific one also derives from the builtin exception a caller would
naturally catch: a lock timeout is a `TimeoutError`, a read-only store a
`PermissionError`, a full disk an `OSError` with ``errno.ENOSPC``, a bad key a
`TypeError`. Errors carry their message as their only argument, so they pickle
and cross process boundaries unchanged.
"""

from __future__ import annotations

import errno

__all__ = [
    "DictDeletedError",
    "DiskFullError",
    "ForkError",
    "LockTimeout",
    "MultinodeError",
    "NewerFormatError",
    "NotAStoreError",
    "ReadOnlyStoreError",
    "SerializerMismatchError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreIOError",
    "UnsafeFilesystemError",
    "UnsupportedKeyError",
    "UnsupportedValueError",
    "ValueLoadError",
]


class MultinodeError(Exception):
    """The root of every error multinode raises on purpose."""


class LockTimeout(MultinodeError, TimeoutError):
    """Another process or thread held the store's lock for longer than
    the store's ``timeout``."""


class ReadOnlyStoreError(MultinodeError, PermissionError):
    """A write was attempted on a store this process may only read."""


class NotAStoreError(MultinodeError):
    """The file exists but is not a multinode store; it was left untouched."""


class NewerFormatError(NotAStoreError):
    """The store was written by a newer multinode whose format this one
    cannot read; it was left untouched."""


class UnsafeFilesystemError(MultinodeError):
    """The store's filesystem cannot give the journal mode it needs safely
    (a WAL store on a network filesystem, or an NFS mount without locks)."""


class DictDeletedError(MultinodeError):
    """The dict was deleted (by this or another process) after this handle
    was opened. Open it again with ``get_dict`` to start a new one."""


class SerializerMismatchError(MultinodeError, ValueError):
    """The dict was opened with a serializer other than the one recorded
    for it."""


class ValueLoadError(MultinodeError):
    """A stored value exists but cannot be loaded in this process, most
    often because the class it was pickled from cannot be imported here.
    The key stays in the dict."""


class StoreClosedError(MultinodeError, ValueError):
    """The store (or the dict's store) was closed."""


class DiskFullError(MultinodeError, OSError):
    """The filesystem holding the store is full; the write was rolled
    back and the store is intact."""

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(errno.ENOSPC, message, filename)

    def __reduce__(self) -> tuple[type[DiskFullError], tuple[str, str | None]]:
        return (type(self), (self.strerror or "", self.filename))

    def __str__(self) -> str:
        return self.strerror or ""


class ForkError(MultinodeError, RuntimeError):
    """This process was forked while another thread held a transaction on
    the store, so it cannot use that store safely."""


class StoreCorruptError(MultinodeError, OSError):
    """SQLite reports that the store file is damaged."""


class StoreIOError(MultinodeError, OSError):
    """The operating system failed a read or write of the store file."""


class UnsupportedKeyError(MultinodeError, TypeError, ValueError):
    """The key cannot be stored: its type is not supported, or (NaN) it
    is not equal to itself."""


class UnsupportedValueError(MultinodeError, TypeError, ValueError):
    """The value cannot be stored with the dict's serializer."""
