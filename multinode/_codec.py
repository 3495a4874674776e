"""Turning keys and values into bytes and back.

A key is stored twice over. Its *canonical* form is what SQLite's unique
index sees, built so that keys equal in Python give equal bytes: ``1``,
``1.0`` and ``True`` all become the integer 1, and ``-0.0`` the integer 0.
A str key is the exception: it is stored as TEXT, which no BLOB equals.
Its *exact* form remembers the type the caller first stored, so iteration
gives back ``True`` rather than ``1``; it is kept only where it differs from
the canonical form, which for str and int keys it never does.

Both forms are a tag byte followed by a payload. Tuples hold their items
length-prefixed, so any nesting decodes without ambiguity.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
from collections.abc import Callable
from typing import Any

from multinode.errors import UnsupportedKeyError, UnsupportedValueError

Key = str | int | float | bytes | None | tuple["Key", ...]

_NONE = b"N"
_INT = b"I"
_FLOAT = b"F"
_STR = b"S"
_BYTES = b"B"
_TUPLE = b"T"
# Exact forms only: the types that share a canonical form with int.
_TRUE = b"t"
_FALSE = b"f"
_INTEGRAL_FLOAT = b"G"

_DOUBLE = struct.Struct(">d")


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _unsupported(key: object, where: str) -> UnsupportedKeyError:
    return UnsupportedKeyError(
        f"{where}: key {key!r} of type {type(key).__name__} cannot be stored; "
        "keys must be str, int, float (not NaN), bool, bytes, None "
        "or tuples of these"
    )


def encode_key(key: object, where: str) -> tuple[str | bytes, bytes | None]:
    """The canonical form of `key` and, when it differs, its exact form.

    `where` names the dict in error messages.
    """
    # The common cases first, each a single type test.
    if type(key) is str:
        # A str key is stored as SQLite TEXT, untagged: it binds, compares
        # and comes back cheaper than a BLOB, and TEXT never equals a BLOB,
        # so it cannot collide with a tagged key. A str with lone surrogates
        # is not valid UTF-8 and keeps the tagged BLOB form.
        if key.isascii():
            return key, None
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return _STR + key.encode("utf-8", "surrogatepass"), None
        return key, None
    if type(key) is int:
        return _INT + _int_bytes(key), None
    canonical = _canonical(key, where)
    exact = _exact(key)
    return canonical, (exact if exact != canonical else None)


def _canonical(key: object, where: str) -> bytes:
    if type(key) is str:
        return _STR + key.encode("utf-8", "surrogatepass")
    if type(key) is int or type(key) is bool:
        return _INT + _int_bytes(int(key))
    if type(key) is float:
        if key != key:
            raise UnsupportedKeyError(
                f"{where}: NaN cannot be a key, because it is not equal to itself"
            )
        if key.is_integer():
            return _INT + _int_bytes(int(key))
        return _FLOAT + _DOUBLE.pack(key)
    if type(key) is bytes:
        return _BYTES + key
    if key is None:
        return _NONE
    if type(key) is tuple:
        parts = [_TUPLE]
        for item in key:
            encoded = _canonical(item, where)
            parts.append(_varint(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    raise _unsupported(key, where)


def _exact(key: object) -> bytes:
    # Called only after _canonical accepted the key, so every type is known.
    if type(key) is bool:
        return _TRUE if key else _FALSE
    if type(key) is float:
        tag = _INTEGRAL_FLOAT if key.is_integer() else _FLOAT
        return tag + _DOUBLE.pack(key)
    if type(key) is tuple:
        parts = [_TUPLE]
        for item in key:
            encoded = _exact(item)
            parts.append(_varint(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    return _canonical(key, "")


def decode_key(data: str | bytes) -> Key:
    """The key whose canonical or exact form is `data`."""
    if isinstance(data, str):
        return data
    tag = data[:1]
    if tag == _STR:
        return data[1:].decode("utf-8", "surrogatepass")
    if tag == _INT:
        return int.from_bytes(data[1:], "big", signed=True)
    if tag in (_FLOAT, _INTEGRAL_FLOAT):
        value: float = _DOUBLE.unpack(data[1:])[0]
        return value
    if tag == _BYTES:
        return bytes(data[1:])
    if tag == _NONE:
        return None
    if tag == _TRUE:
        return True
    if tag == _FALSE:
        return False
    if tag == _TUPLE:
        return tuple(_tuple_items(data))
    raise ValueError(f"unknown key tag {tag!r}")


def _tuple_items(data: bytes) -> list[Key]:
    items = []
    i = 1
    while i < len(data):
        length = shift = 0
        while True:
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        items.append(decode_key(data[i : i + length]))
        i += length
    return items


# Values ------------------------------------------------------------------

SERIALIZERS = ("pickle", "json")


# pickle.dumps copies a bytes or str of 64 KiB or more so slowly (about 0.46
# us a KB on CPython 3.11 to 3.13, thirty times one copy) that such values are
# pickled here instead, into the protocol-5 opcodes pickle.loads reads for
# them anyway: PROTO 5, BINBYTES8 or BINUNICODE8 with the payload, STOP.
_BIG_PAYLOAD = 64 * 1024
_PICKLED_BYTES = b"\x80\x05\x8e"
_PICKLED_STR = b"\x80\x05\x8d"


def pickle_dumps(value: object, where: str) -> bytes:
    if type(value) is bytes and len(value) >= _BIG_PAYLOAD:
        return _pickled(_PICKLED_BYTES, value)
    if type(value) is str and len(value) >= _BIG_PAYLOAD:
        return _pickled(_PICKLED_STR, value.encode("utf-8", "surrogatepass"))
    try:
        return pickle.dumps(value, protocol=5)
    except Exception as exc:
        raise UnsupportedValueError(
            f"{where}: value of type {type(value).__name__} cannot be pickled: {exc}"
        ) from exc


def _pickled(opcodes: bytes, payload: bytes) -> bytes:
    return b"".join((opcodes, len(payload).to_bytes(8, "little"), payload, b"."))


def json_dumps(value: object, where: str) -> bytes:
    _check_json(value, where, 0)
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
    except (ValueError, TypeError, RecursionError) as exc:
        raise UnsupportedValueError(
            f"{where}: value cannot be stored as JSON: {exc}"
        ) from exc
    return text.encode("utf-8", "surrogatepass")


def _check_json(value: object, where: str, depth: int) -> None:
    """Refuse anything that would not come back from JSON equal and of the
    same type: tuples, sets, bytes, non-str dict keys, NaN, infinities and
    every subclass."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise UnsupportedValueError(
                f"{where}: {value!r} has no JSON form; use serializer='pickle'"
            )
        return
    if depth > 500:
        raise UnsupportedValueError(f"{where}: value is nested too deeply for JSON")
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            _check_json(item, where, depth + 1)
        return
    if kind is dict:
        for k, item in value.items():  # type: ignore[attr-defined]
            if type(k) is not str:
                raise UnsupportedValueError(
                    f"{where}: JSON objects need str keys, not {k!r} "
                    f"({type(k).__name__}); it would come back as a string"
                )
            _check_json(item, where, depth + 1)
        return
    raise UnsupportedValueError(
        f"{where}: a {kind.__name__} ({value!r:.80}) would not come back from JSON "
        "as the same type; JSON values are dict (str keys), list, str, int, "
        "finite float, bool and None, or use serializer='pickle'"
    )


def json_loads(data: bytes) -> Any:
    return json.loads(bytes(data).decode("utf-8", "surrogatepass"))


Dumps = Callable[[object, str], bytes]
Loads = Callable[[bytes], Any]

DUMPS: dict[str, Dumps] = {"pickle": pickle_dumps, "json": json_dumps}
LOADS: dict[str, Loads] = {"pickle": pickle.loads, "json": json_loads}
