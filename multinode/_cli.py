"""The ``multinode`` command line: look into a store and change it by hand.

Every command takes ``--store PATH`` (default: ``MULTINODE_STORE``, else the
per-user store) and ``--json`` for output meant for scripts. A user error
prints one line to stderr and exits with status 1; a usage error exits 2.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn, TextIO

import multinode as mn
from multinode import _jsonl

__all__ = ["StatusLine", "build_parser", "run"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# load writes in batches: big enough to amortise each call, small enough to
# keep memory flat on a file of any size (the transaction spans them all).
_LOAD_BATCH = 500


class CommandError(Exception):
    """A user error, reported as one line on stderr."""


# Output ---------------------------------------------------------------------


class StatusLine:
    """Progress on stderr: redrawn in place on a terminal, otherwise a line at
    most every few seconds; silent for work that ends within ``delay``."""

    def __init__(self, stream: TextIO | None = None, delay: float = 1.0) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._start = time.monotonic()
        self._next = self._start + delay
        self._every = 0.2 if self._tty else 5.0
        self._shown = False

    def update(self, text: str, force: bool = False) -> None:
        """Show ``text`` if enough time has passed since the last one."""
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self._every
        self._shown = True
        if self._tty:
            self._stream.write("\r\x1b[K" + text)
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def done(self, text: str | None = None) -> None:
        """End the status line, with a final ``text`` if one was shown."""
        if self._shown and text is not None:
            self.update(text, force=True)
        if self._shown and self._tty:
            self._stream.write("\n")
            self._stream.flush()


def _emit(text: str = "") -> None:
    print(text)


def _emit_json(obj: Any) -> None:
    # ASCII-only JSON is valid whatever the terminal's encoding, and carries
    # lone surrogates (possible in names and keys) as escapes.
    print(json.dumps(obj, ensure_ascii=True))


def _shown(name: str) -> str:
    """A dict name in a listing: as is when printable, else its repr."""
    return name if name.isprintable() and name.strip() == name else repr(name)


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


# Opening the store -----------------------------------------------------------


def _store_location(args: argparse.Namespace) -> tuple[str, str]:
    if args.store is not None:
        return os.path.abspath(os.path.expanduser(args.store)), "--store"
    return mn.default_store_path()


def _open_store(args: argparse.Namespace, *, create: bool = False) -> mn.Store:
    """The store the command works on; only commands that write may create
    it, so a mistyped path gets an error instead of a new empty store."""
    path, reason = _store_location(args)
    if not create and not os.path.exists(path):
        raise CommandError(f"no store at {path} (chosen by {reason})")
    if args.store is None:
        return mn.Store(timeout=args.timeout)
    return mn.Store(path, timeout=args.timeout)


def _existing_dict(store: mn.Store, name: str) -> mn.SharedDict:
    if name not in store.dicts():
        raise CommandError(
            f"no dict {name!r} in {store.path} ('multinode ls' lists them)"
        )
    return store.get_dict(name)


def _parse_key(args: argparse.Namespace) -> Any:
    if not args.key_json:
        return args.key
    try:
        return _jsonl.decode_key(json.loads(args.key))
    except ValueError as exc:
        raise CommandError(f"--key-json: KEY is not valid JSON: {exc}") from None


# Commands ----------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    path, reason = _store_location(args)
    if not os.path.exists(path):
        if args.json:
            _emit_json({"path": path, "path_reason": reason, "exists": False})
        else:
            _emit(f"store:        {path}")
            _emit(f"chosen by:    {reason}")
            _emit("state:        does not exist yet (created on first write)")
        return EXIT_OK

    with _open_store(args) as store:
        info = store.describe()
    info["path_reason"] = reason
    info["exists"] = True
    if args.json:
        _emit_json(info)
        return EXIT_OK

    _emit(f"store:        {info['path']}")
    _emit(f"chosen by:    {reason}")
    _emit(f"size:         {_size(_file_size(info['path']))}")
    _emit(f"filesystem:   {info['filesystem']}")
    _emit(f"journal mode: {info['journal_mode']} ({info['journal_reason']})")
    if info.get("read_only"):
        _emit("access:       read-only for this user")
    _emit(f"format:       version {info['format_version']}")
    _emit(f"SQLite:       {info['sqlite_version']}")
    dicts = info["dicts"]
    _emit(f"dicts:        {len(dicts)}")
    if dicts:
        _emit_table(dicts)
    return EXIT_OK


def _emit_table(dicts: list[dict[str, Any]]) -> None:
    names = [_shown(d["name"]) for d in dicts]
    width = max(len("NAME"), *(len(n) for n in names))
    _emit(f"  {'NAME':<{width}}  {'ITEMS':>10}  SERIALIZER")
    for name, d in zip(names, dicts, strict=True):
        _emit(f"  {name:<{width}}  {d['length']:>10,}  {d['serializer']}")


def _file_size(path: str) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(path + suffix)
    return total


def cmd_ls(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        dicts = store.describe()["dicts"]
    if args.json:
        _emit_json(dicts)
    elif args.long:
        if dicts:
            _emit_table(dicts)
    else:
        for d in dicts:
            _emit(_shown(d["name"]))
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    key = _parse_key(args)
    with _open_store(args) as store:
        d = _existing_dict(store, args.dict)
        try:
            value = d[key]
        except KeyError:
            raise CommandError(f"no key {key!r} in dict {args.dict!r}") from None
    if args.json:
        try:
            encoded = _jsonl.encode_value(value)
        except TypeError:
            raw = pickle.dumps(value, protocol=5)
            encoded = {"$pickle": base64.b64encode(raw).decode("ascii")}
        _emit_json(encoded)
    elif type(value) is str:
        _emit(value)
    else:
        _emit(repr(value))
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    key = _parse_key(args)
    try:
        value = _jsonl.decode_value(json.loads(args.value))
    except ValueError as exc:
        raise CommandError(
            f"VALUE is not valid JSON ({exc}); a string needs JSON quotes, "
            """for example '"text"'"""
        ) from None
    with _open_store(args, create=True) as store:
        d = store.get_dict(args.dict, serializer=args.serializer)
        if isinstance(value, _jsonl.PickledValue):
            _require_pickle(d)
            d._put_raw([(key, value.data)])
        else:
            d[key] = value
    if args.json:
        _emit_json({"dict": args.dict, "key": _jsonl.encode_key(key), "set": True})
    return EXIT_OK


def _require_pickle(d: mn.SharedDict, where: str = "") -> None:
    if d.serializer != "pickle":
        raise CommandError(
            f"{where}a $pickle value cannot go into the dict {d.name!r}, "
            f"which uses serializer={d.serializer!r}"
        )


def cmd_del(args: argparse.Namespace) -> int:
    key = _parse_key(args)
    with _open_store(args) as store:
        d = _existing_dict(store, args.dict)
        try:
            del d[key]
        except KeyError:
            raise CommandError(f"no key {key!r} in dict {args.dict!r}") from None
    if args.json:
        _emit_json({"dict": args.dict, "key": _jsonl.encode_key(key), "deleted": True})
    return EXIT_OK


def cmd_dump(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        d = _existing_dict(store, args.dict)
        out = sys.stdout.buffer
        count = 0
        status = StatusLine()
        for line in _jsonl.dump_lines(d.name, d.serializer, d._raw_items()):
            out.write(line.encode("utf-8") + b"\n")
            count += 1
            status.update(f"dump: {count - 1:,} items")
        out.flush()
        status.done(f"dump: {count - 1:,} items")
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    if args.file == "-":
        source, total = "stdin", None
        stream: IO[bytes] = sys.stdin.buffer
        opened: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    else:
        source = args.file
        stream = open(args.file, "rb")  # noqa: SIM115 (closed by `opened`)
        opened = stream
        total = os.fstat(stream.fileno()).st_size

    status = StatusLine()
    done_bytes = [0]

    def progress(count: int) -> str:
        if total:
            share = f" ({done_bytes[0] / total:.0%} of {_size(total)})"
        else:
            share = f" ({_size(done_bytes[0])} read)"
        return f"load: {count:,} items{share}"

    with opened, _open_store(args, create=True) as store:
        header = _jsonl.DumpHeader()

        def on_line(n: int) -> None:
            done_bytes[0] = n

        items = _jsonl.read_dump(stream, header, on_line)
        try:
            with store.transaction():
                first = next(items, None)  # reads the header, if any
                serializer = args.serializer or header.serializer
                if args.dict not in store.dicts():
                    d = store.get_dict(args.dict, serializer=serializer or "pickle")
                else:
                    d = store.get_dict(args.dict)
                if args.replace:
                    d.clear()
                count = _load_items(d, first, items, source, status, progress)
        except _jsonl.DumpFormatError as exc:
            raise CommandError(f"{source}: {exc}; nothing was loaded") from None
        except (mn.MultinodeError, ValueError) as exc:
            raise CommandError(f"{source}: {exc}; nothing was loaded") from None
    status.done(progress(count))

    if args.json:
        _emit_json({"dict": args.dict, "loaded": count, "store": store.path})
    else:
        _emit(f"loaded {count:,} items into {args.dict!r} in {store.path}")
    return EXIT_OK


def _load_items(
    d: mn.SharedDict,
    first: _jsonl.Item | None,
    rest: Iterator[_jsonl.Item],
    source: str,
    status: StatusLine,
    progress: Callable[[int], str],
) -> int:
    """Write the items in file order, raw pickles and plain values each in
    batches; the caller's transaction makes it all or nothing."""
    count = 0
    batch: list[_jsonl.Item] = []
    raw = False

    def flush() -> None:
        if not batch:
            return
        try:
            if raw:
                d._put_raw([(i.key, i.value.data) for i in batch])
            else:
                d.update([(i.key, i.value) for i in batch])
        except (mn.MultinodeError, ValueError) as exc:
            lines = f"line {batch[0].line}"
            if len(batch) > 1:
                lines = f"lines {batch[0].line}-{batch[-1].line}"
            raise CommandError(
                f"{source}: {lines}: {exc}; nothing was loaded"
            ) from None
        batch.clear()

    items = rest if first is None else _chain(first, rest)
    for item in items:
        is_raw = isinstance(item.value, _jsonl.PickledValue)
        if is_raw:
            _require_pickle(d, f"{source}: line {item.line}: ")
        if batch and (is_raw != raw or len(batch) >= _LOAD_BATCH):
            flush()
        raw = is_raw
        batch.append(item)
        count += 1
        status.update(progress(count))
    flush()
    return count


def _chain(first: _jsonl.Item, rest: Iterator[_jsonl.Item]) -> Iterator[_jsonl.Item]:
    yield first
    yield from rest


def cmd_rm(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        try:
            store.delete_dict(args.dict)
        except KeyError:
            raise CommandError(
                f"no dict {args.dict!r} in {store.path} ('multinode ls' lists them)"
            ) from None
    if args.json:
        _emit_json({"dict": args.dict, "deleted": True})
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        problems = store.check()
        path = store.path
    if args.json:
        _emit_json({"path": path, "ok": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            _emit(f"problem: {problem}")
    else:
        _emit(f"ok: {path} passed the integrity and format checks")
    return EXIT_ERROR if problems else EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    dest = os.path.abspath(os.path.expanduser(args.dest))
    if os.path.exists(dest):
        raise CommandError(f"{dest} already exists; a backup never overwrites")
    with _open_store(args) as store:
        store.backup(dest)
        path = store.path
    size = os.path.getsize(dest)
    if args.json:
        _emit_json({"path": path, "backup": dest, "bytes": size})
    else:
        _emit(f"backed up {path} to {dest} ({_size(size)})")
    return EXIT_OK


def cmd_vacuum(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        before = _file_size(store.path)
        store.vacuum()
        path = store.path
    # Measured after closing: in WAL mode the rebuilt pages sit in the -wal
    # file until the last connection checkpoints them into the store.
    after = _file_size(path)
    if args.json:
        _emit_json({"path": path, "bytes_before": before, "bytes_after": after})
    else:
        _emit(f"vacuumed {path}: {_size(before)} -> {_size(after)}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from multinode import _demo

    return _demo.run(args)


# The parser --------------------------------------------------------------------

_DESCRIPTION = """\
Look into a multinode store and change it by hand.

The store is the file given by --store, else $MULTINODE_STORE, else the
per-user store ('multinode info' says which and why). Exit status: 0 on
success, 1 on an error (one line on stderr), 2 on a usage error."""

_EPILOG = """\
examples:
  multinode info
  multinode --store /srv/app/state.db ls --long
  multinode set jobs retries 3 && multinode get jobs retries
  multinode dump jobs > jobs.jsonl && multinode load jobs-copy jobs.jsonl
  multinode demo --limit 200

'multinode COMMAND --help' shows each command's options and an example."""

# name: (help, example epilog)
_COMMANDS: dict[str, tuple[str, str]] = {
    "info": (
        "show which store file is used and why, its filesystem, journal mode, "
        "format and dicts",
        "multinode info\n  multinode --store /srv/app/state.db info --json",
    ),
    "ls": (
        "list the store's dicts",
        "multinode ls\n  multinode ls --long",
    ),
    "get": (
        "print one value (a str as is, anything else as its repr)",
        "multinode get jobs retries\n"
        "  multinode get jobs '[\"job\", 7]' --key-json --json",
    ),
    "set": (
        "set one value, given as JSON (creates the dict if needed)",
        "multinode set jobs retries 3\n"
        "  multinode set jobs owner '\"worker-1\"'\n"
        "  multinode set jobs 7 '{\"$tuple\": [1, 2]}' --key-json",
    ),
    "del": (
        "delete one key",
        "multinode del jobs retries",
    ),
    "dump": (
        "write a dict as tagged JSON lines to stdout (header line first)",
        "multinode dump jobs > jobs.jsonl\n"
        "  multinode dump jobs | multinode --store copy.db load jobs -",
    ),
    "load": (
        "add the items of a dump (JSON lines) to a dict, all in one transaction",
        "multinode load jobs jobs.jsonl\n"
        "  multinode load jobs - --replace < jobs.jsonl",
    ),
    "rm": (
        "delete a dict and all its items",
        "multinode rm old_jobs",
    ),
    "check": (
        "check the file's integrity and format (exit 1 if a problem is found)",
        "multinode check && echo healthy",
    ),
    "backup": (
        "copy the store into a new file, safely while others write",
        "multinode backup /backups/state-$(date +%F).db",
    ),
    "vacuum": (
        "rebuild the file to give the space of deleted items back",
        "multinode vacuum",
    ),
    "demo": (
        "count words of real files in parallel processes through one shared dict",
        "multinode demo\n  multinode demo --limit 100 --workers 4\n"
        "  multinode demo --path ~/notes --store /tmp/words.db",
    ),
}


def _common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """Options every command takes, before or after its name."""
    parser.add_argument(
        "--store",
        metavar="PATH",
        default=default if default is argparse.SUPPRESS else None,
        help="store file (default: $MULTINODE_STORE, else the per-user store)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="print machine-readable JSON",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        default=default if default is argparse.SUPPRESS else 30.0,
        help="how long to wait for another process's lock (default: 30)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default if default is argparse.SUPPRESS else 0,
        help="log what the library decides (-v), and debug details (-vv)",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dict", metavar="DICT", help="the dict's name")
    parser.add_argument("key", metavar="KEY", help="the key (a string by default)")
    parser.add_argument(
        "--key-json",
        action="store_true",
        help="read KEY as JSON in the dump encoding: 7, 1.5, null, "
        '["a", 1] (a tuple), {"$bytes": "eA=="}',
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``multinode`` command."""
    parser = argparse.ArgumentParser(
        prog="multinode",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=mn.__version__)
    _common_options(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub: dict[str, argparse.ArgumentParser] = {}
    for name, (help_text, example) in _COMMANDS.items():
        sub[name] = commands.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            epilog="example:\n  " + example,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub[name].set_defaults(handler=globals()[f"cmd_{name}"])

    sub["ls"].add_argument(
        "-l", "--long", action="store_true", help="show items and serializer too"
    )
    _key_options(sub["get"])
    _key_options(sub["set"])
    sub["set"].add_argument(
        "value", metavar="VALUE", help="the value as JSON (dump encoding understood)"
    )
    sub["set"].add_argument(
        "--serializer",
        choices=("pickle", "json"),
        help="serializer of a new dict (default: pickle); must match an existing one",
    )
    _key_options(sub["del"])
    sub["dump"].add_argument("dict", metavar="DICT", help="the dict's name")
    sub["load"].add_argument("dict", metavar="DICT", help="the dict to load into")
    sub["load"].add_argument("file", metavar="FILE", help="a dump file, or - for stdin")
    sub["load"].add_argument(
        "--replace",
        action="store_true",
        help="empty the dict first (in the same transaction)",
    )
    sub["load"].add_argument(
        "--serializer",
        choices=("pickle", "json"),
        help="serializer of a new dict (default: the dump's, else pickle)",
    )
    sub["rm"].add_argument("dict", metavar="DICT", help="the dict's name")
    sub["backup"].add_argument("dest", metavar="DEST", help="the new file to create")

    demo = sub["demo"]
    for action in demo._actions:
        if action.dest == "store":
            # The demo never touches a real store unless asked to.
            action.help = "store file (default: a fresh temporary store)"
    demo.add_argument(
        "--path",
        action="append",
        metavar="PATH",
        help="a file or folder to count (repeatable; default: the .py files "
        "of this Python's standard library)",
    )
    demo.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="worker processes (default: one per CPU, at least 2)",
    )
    demo.add_argument(
        "--limit", type=_positive_int, metavar="N", help="count only the first N files"
    )
    demo.add_argument(
        "--dict",
        default="demo_words",
        metavar="NAME",
        help="the shared dict's name (default: demo_words); it must not exist yet",
    )
    demo.add_argument(
        "--no-transaction",
        action="store_true",
        help="commit every word on its own instead of one transaction per file",
    )
    demo.add_argument(
        "--start-method",
        choices=("spawn", "fork", "forkserver"),
        default="spawn",
        help="how workers start (default: spawn)",
    )
    demo.add_argument(
        "--top", type=_positive_int, default=10, metavar="N", help="words to show"
    )
    return parser


# Running -----------------------------------------------------------------------


def _configure_logging(verbosity: int) -> None:
    if verbosity <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    logger = logging.getLogger("multinode")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and not isinstance(exc, mn.MultinodeError):
        return f"not found: {exc.args[0]!r}" if exc.args else "not found"
    if isinstance(exc, OSError) and exc.strerror:
        # "[Errno 2] ..." helps nobody; the words and the file do.
        text = exc.strerror
        if exc.filename and str(exc.filename) not in text:
            text = f"{text}: {exc.filename}"
        return " ".join(text.split())
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the message held


def _fail(text: str) -> None:
    sys.stderr.write(f"multinode: error: {text}\n")
    sys.stderr.flush()


def _quiet_broken_pipe() -> NoReturn:
    # The reader went away (``multinode dump x | head``): stop quietly, and
    # keep the interpreter from complaining when it flushes stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(EXIT_ERROR)


def run(argv: list[str]) -> int:
    """Parse ``argv``, run the command, and return the exit status."""
    # Names and keys may hold anything, lone surrogates included: show what
    # cannot be encoded as escapes rather than dying on it.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")

    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        status: int = args.handler(args)
        return status
    except CommandError as exc:
        _fail(str(exc))
    except (mn.MultinodeError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, BrokenPipeError):
            _quiet_broken_pipe()
        if args.verbose >= 2:
            raise
        _fail(_message(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    return EXIT_ERROR
