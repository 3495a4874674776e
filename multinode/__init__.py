"""multinode: a dict shared live by every process, thread and host that opens
the same SQLite store.

    import multinode as mn

    d = mn.get_dict(name="jobs")
    d["n"] = 0
    d["n"] += 1                      # atomic across processes
    d.set_if_absent("owner", value="worker-1")
    d.update("state", new_value="done", expected_current_value="running")
"""

from __future__ import annotations

import logging

from multinode._dict import SharedDict
from multinode._store import Store, default_store_path, get_dict
from multinode.errors import (
    DictDeletedError,
    DiskFullError,
    ForkError,
    LockTimeout,
    MultinodeError,
    NewerFormatError,
    NotAStoreError,
    ReadOnlyStoreError,
    SerializerMismatchError,
    StoreClosedError,
    StoreCorruptError,
    StoreIOError,
    UnsafeFilesystemError,
    UnsupportedKeyError,
    UnsupportedValueError,
    ValueLoadError,
)

__version__ = "0.1.0"

# The library logs to "multinode" and configures nothing; this handler only
# keeps Python from printing its warnings when the application set up no
# logging at all.
logging.getLogger("multinode").addHandler(logging.NullHandler())

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
    "SharedDict",
    "Store",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreIOError",
    "UnsafeFilesystemError",
    "UnsupportedKeyError",
    "UnsupportedValueError",
    "ValueLoadError",
    "__version__",
    "default_store_path",
    "get_dict",
]
