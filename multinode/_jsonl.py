"""Tagged JSON lines: the file format of ``multinode dump`` and ``multinode load``.

A dump is UTF-8 text, one JSON object per line. The first line is a header::

    {"multinode": "dump", "version": 1, "dict": "jobs", "serializer": "pickle"}

and every further line is one item, in the dict's insertion order::

    {"key": "n", "value": 42}
    {"key": {"$tuple": ["job", 7]}, "value": {"$bytes": "AAEC"}}

``load`` accepts the header as an optional first line (it names the serializer
a new dict gets) and ignores blank lines, so a hand-written file of item lines
is a valid input too.

Plain JSON stands for itself: ``null``, ``true``/``false``, numbers, strings,
arrays (Python lists) and objects (dicts whose keys are all strings, none of
which starts with ``$``). Everything else is a *tag*: an object with exactly one
member, whose name starts with ``$``:

==================  ==========================================================
tag                 meaning
==================  ==========================================================
``$bytes``          ``bytes``; the member is standard base64
``$bytearray``      ``bytearray``; base64
``$tuple``          ``tuple``; an array of encoded items
``$set``            ``set``; an array of encoded items
``$frozenset``      ``frozenset``; an array of encoded items
``$dict``           a ``dict`` with a key JSON cannot name (not a ``str``, or a
                    ``str`` starting with ``$`` or holding a surrogate); an
                    array of ``[key, value]`` pairs, both encoded, in order
``$float``          ``"nan"``, ``"inf"`` or ``"-inf"`` (finite floats, ``-0.0``
                    included, are plain JSON numbers)
``$int``            an ``int`` too long for a decimal literal (over 2000 bits):
                    a hexadecimal string such as ``"-0x1f"``
``$str``            a ``str`` holding surrogate code points, which JSON text
                    cannot carry faithfully; base64 of its UTF-8 bytes encoded
                    with ``surrogatepass``
``$pickle``         (values only) the value's pickle exactly as stored; base64
==================  ==========================================================

Keys use the same encoding (``$pickle`` aside). On input, a JSON array given
as a key is taken as a tuple, since a list cannot be a key.

Values of a ``serializer="pickle"`` dict are written as plain JSON or the tags
above whenever that is exact: the stored pickle is read by an unpickler that
refuses to import anything, so dumping never runs code from the store, and the
value must consist only of the types in the table with no object appearing
twice (sharing and cycles would be lost). Every other value (instances of
classes, ``datetime``, ``Decimal``, shared or recursive structures) is written
as ``$pickle`` with the stored bytes, so it round-trips even where its class
cannot be imported, and is loaded back byte for byte without being unpickled.
A ``$pickle`` value can only be loaded into a pickle dict.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

__all__ = [
    "FORMAT_VERSION",
    "DumpFormatError",
    "DumpHeader",
    "Item",
    "PickledValue",
    "decode_key",
    "decode_value",
    "dump_lines",
    "encode_key",
    "encode_stored",
    "encode_value",
    "header_line",
    "item_line",
    "read_dump",
]

FORMAT_VERSION = 1

# Past this many bits an int becomes a $int tag: Python refuses to read or
# write decimal literals over 4300 digits by default (sys.int_max_str_digits,
# which can be lowered to 640, about 2100 bits), and hex is exempt from that.
_MAX_PLAIN_INT_BITS = 2000

_CONTAINER_TAGS: dict[type, str] = {
    tuple: "$tuple",
    frozenset: "$frozenset",
    set: "$set",
}

_FLOAT_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class DumpFormatError(ValueError):
    """A line of a dump file is not valid tagged JSON lines."""


@dataclass(frozen=True)
class PickledValue:
    """A value carried as the pickle bytes it was stored as (``$pickle``)."""

    data: bytes


@dataclass(frozen=True)
class Item:
    """One item line of a dump: where it was, its key and its value."""

    line: int
    key: Any
    value: Any  # a Python value, or a PickledValue


class _NotPlain(Exception):
    """The value has no exact encoding without pickle."""


class _NoImportUnpickler(pickle.Unpickler):
    """Reads a pickle that only builds builtin containers and scalars.

    Importing is how a pickle runs code (every class, function and reducer is
    found through ``find_class``), so refusing it makes loading safe.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to import {module}.{name}")


# Encoding


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_plain_name(key: object) -> bool:
    """True for a dict key that can be a member name of a plain JSON object."""
    return type(key) is str and not key.startswith("$") and not _has_surrogate(key)


def _encode(obj: object, seen: set[int]) -> Any:
    if obj is None or type(obj) is bool:
        return obj
    if type(obj) is str:
        if _has_surrogate(obj):
            return {"$str": _b64(obj.encode("utf-8", "surrogatepass"))}
        return obj
    if type(obj) is int:
        if obj.bit_length() > _MAX_PLAIN_INT_BITS:
            return {"$int": hex(obj)}
        return obj
    if type(obj) is float:
        if math.isfinite(obj):
            return obj
        name = "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return {"$float": name}
    if type(obj) is bytes:
        return {"$bytes": _b64(obj)}
    # Loops rather than comprehensions or helpers: one stack frame per level
    # of nesting, so values as deep as the JSON serializer allows still fit
    # within Python 3.11's recursion limit.
    if type(obj) in (tuple, frozenset, list, set):
        if type(obj) in (list, set):
            # A second sighting of a mutable container means sharing or a
            # cycle, which plain JSON would turn into independent copies.
            if id(obj) in seen:
                raise _NotPlain
            seen.add(id(obj))
        out = []
        for x in obj:  # type: ignore[attr-defined]
            out.append(_encode(x, seen))
        if type(obj) is list:
            return out
        return {_CONTAINER_TAGS[type(obj)]: out}
    if type(obj) not in (dict, bytearray) or id(obj) in seen:
        raise _NotPlain
    seen.add(id(obj))
    if type(obj) is bytearray:
        return {"$bytearray": _b64(bytes(obj))}
    assert type(obj) is dict
    if all(_is_plain_name(k) for k in obj):
        members = {}
        for k, v in obj.items():
            members[k] = _encode(v, seen)
        return members
    pairs = []
    for k, v in obj.items():
        pairs.append([_encode(k, seen), _encode(v, seen)])
    return {"$dict": pairs}


def encode_key(key: object) -> Any:
    """The JSON-ready form of a dict key (str, int, float, bool, bytes, None
    or a tuple of these)."""
    try:
        return _encode(key, set())
    except _NotPlain:
        raise TypeError(
            f"cannot encode key {key!r} of type {type(key).__name__}"
        ) from None


def encode_value(value: object) -> Any:
    """The JSON-ready form of a value, or raise TypeError if the value needs
    ``$pickle`` (see the module docstring)."""
    try:
        return _encode(value, set())
    except _NotPlain:
        raise TypeError(
            f"a value of type {type(value).__name__} has no exact JSON form"
        ) from None


def encode_stored(raw: bytes, serializer: str) -> Any:
    """The JSON-ready form of a value stored as ``raw`` by ``serializer``,
    without running code from the store."""
    if serializer == "json":
        return _encode(json.loads(raw.decode("utf-8", "surrogatepass")), set())
    try:
        value = _NoImportUnpickler(io.BytesIO(raw)).load()
        return _encode(value, set())
    except (_NotPlain, pickle.UnpicklingError, RecursionError, ValueError, EOFError):
        # Anything the no-import reader cannot rebuild exactly travels as the
        # stored bytes, which load writes back without unpickling.
        return {"$pickle": _b64(raw)}


# Decoding


def _unb64(text: object, tag: str) -> bytes:
    if type(text) is not str:
        raise DumpFormatError(f"{tag} needs a base64 string, got {text!r}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DumpFormatError(f"{tag} holds invalid base64: {text[:40]!r}") from None


def _array(arg: object, tag: str) -> list[Any]:
    if type(arg) is not list:
        raise DumpFormatError(f"{tag} needs an array, got {arg!r}")
    return arg


def _decode_tag(tag: str, arg: Any, key: bool) -> Any:
    if tag == "$bytes":
        return _unb64(arg, tag)
    if tag == "$bytearray":
        return bytearray(_unb64(arg, tag))
    if tag == "$tuple":
        return tuple(_decode_all(_array(arg, tag), key))
    if tag == "$set":
        return set(_decode_all(_array(arg, tag), True))
    if tag == "$frozenset":
        return frozenset(_decode_all(_array(arg, tag), True))
    if tag == "$dict":
        out = {}
        for pair in _array(arg, tag):
            if type(pair) is not list or len(pair) != 2:
                raise DumpFormatError(f"$dict needs [key, value] pairs, got {pair!r}")
            out[_decode(pair[0], True)] = _decode(pair[1], False)
        return out
    if tag == "$float":
        if arg not in _FLOAT_NAMES:
            raise DumpFormatError(f"$float must be 'nan', 'inf' or '-inf', not {arg!r}")
        return _FLOAT_NAMES[arg]
    if tag == "$int":
        try:
            return int(arg, 16)
        except (TypeError, ValueError):
            raise DumpFormatError(f"$int needs a hex string, got {arg!r}") from None
    if tag == "$str":
        try:
            return _unb64(arg, tag).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise DumpFormatError("$str does not hold UTF-8") from None
    if tag == "$pickle":
        where = "in a key" if key else "inside a value"
        raise DumpFormatError(f"$pickle cannot stand {where}, only for a whole value")
    raise DumpFormatError(f"unknown tag {tag!r}")


def _decode(obj: Any, key: bool) -> Any:
    t = type(obj)
    if t is list:
        # Inline loops keep plain JSON at one stack frame per nesting level.
        items = []
        for x in obj:
            items.append(_decode(x, key))
        # A list cannot be a key, so in a key an array means a tuple.
        return tuple(items) if key else items
    if t is not dict:
        return obj
    tags = [name for name in obj if name.startswith("$")]
    if tags:
        if len(obj) != 1:
            raise DumpFormatError(
                f"a tag object has exactly one member, got {sorted(obj)!r}"
            )
        return _decode_tag(tags[0], obj[tags[0]], key)
    members = {}
    for name, v in obj.items():
        members[name] = _decode(v, False)
    return members


def _decode_all(items: list[Any], key: bool) -> list[Any]:
    out = []
    for x in items:
        out.append(_decode(x, key))
    return out


def decode_key(obj: Any) -> Any:
    """The key a parsed JSON value stands for."""
    return _decode(obj, True)


def decode_value(obj: Any) -> Any:
    """The value a parsed JSON value stands for; a `PickledValue` for a
    top-level ``$pickle``."""
    if type(obj) is dict and set(obj) == {"$pickle"}:
        return PickledValue(_unb64(obj["$pickle"], "$pickle"))
    return _decode(obj, False)


# Lines


# Characters that str.splitlines() and some editors treat as line breaks, but
# json.dumps leaves as they are when ensure_ascii is off. Escaped, every dump
# line stays one line for any reader.
_LINE_BREAKS = str.maketrans(
    {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _dumps(obj: Any) -> str:
    # Surrogates never reach here (they are $str), so non-ASCII text can stay
    # readable; allow_nan=False proves non-finite floats went through $float.
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    return text.translate(_LINE_BREAKS)


def header_line(name: str, serializer: str) -> str:
    """The first line of a dump of the dict ``name``."""
    return _dumps(
        {
            "multinode": "dump",
            "version": FORMAT_VERSION,
            "dict": _encode(name, set()),
            "serializer": serializer,
        }
    )


def item_line(key: object, encoded_value: Any) -> str:
    """One item line; ``encoded_value`` is already JSON-ready."""
    return _dumps({"key": encode_key(key), "value": encoded_value})


def dump_lines(
    name: str, serializer: str, raw_items: Iterable[tuple[Any, bytes]]
) -> Iterator[str]:
    """Every line of a dump, without line ends, from ``(key, stored bytes)``."""
    yield header_line(name, serializer)
    for key, raw in raw_items:
        yield item_line(key, encode_stored(raw, serializer))


@dataclass
class DumpHeader:
    """What the optional header line of a dump says."""

    dict_name: str | None = None
    serializer: str | None = None


def read_dump(
    stream: IO[bytes],
    header: DumpHeader,
    on_line: Callable[[int], None] | None = None,
) -> Iterator[Item]:
    """Parse a dump lazily, filling ``header`` from its first line (if any).

    ``on_line`` is called with the number of bytes read after each line, for
    progress reports. Errors name the line number.
    """
    done = 0
    first = True
    for number, raw in enumerate(stream, start=1):
        done += len(raw)
        if on_line is not None:
            on_line(done)
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise DumpFormatError(f"line {number}: not UTF-8 text") from None
        except ValueError as exc:
            raise DumpFormatError(f"line {number}: not JSON ({exc})") from None
        if type(obj) is not dict:
            raise DumpFormatError(f"line {number}: expected a JSON object")

        if first and "multinode" in obj:
            first = False
            _read_header(obj, number, header)
            continue
        first = False

        if set(obj) != {"key", "value"}:
            raise DumpFormatError(
                f'line {number}: expected {{"key": ..., "value": ...}}, '
                f"got the members {sorted(obj)!r}"
            )
        try:
            yield Item(number, decode_key(obj["key"]), decode_value(obj["value"]))
        except DumpFormatError as exc:
            raise DumpFormatError(f"line {number}: {exc}") from None
        except RecursionError:
            raise DumpFormatError(f"line {number}: nested too deeply") from None


def _read_header(obj: dict[str, Any], number: int, header: DumpHeader) -> None:
    if obj.get("multinode") != "dump":
        raise DumpFormatError(f"line {number}: not a multinode dump header")
    version = obj.get("version")
    if type(version) is not int or version > FORMAT_VERSION:
        raise DumpFormatError(
            f"line {number}: dump format version {version!r}; this multinode "
            f"reads up to version {FORMAT_VERSION}"
        )
    name = _decode(obj.get("dict"), False)
    header.dict_name = name if type(name) is str else None
    serializer = obj.get("serializer")
    if serializer not in (None, "pickle", "json"):
        raise DumpFormatError(f"line {number}: unknown serializer {serializer!r}")
    header.serializer = serializer
