"""The ``multinode`` command line, driven in subprocesses as a user would."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import multinode as mn
from multinode import _cli, _jsonl

COMMANDS = [
    "info",
    "ls",
    "get",
    "set",
    "del",
    "dump",
    "load",
    "rm",
    "check",
    "backup",
    "vacuum",
    "demo",
]


def cli(
    *args: str | os.PathLike[str],
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    expect: int | None = 0,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m multinode ARGS``; check the exit status unless None."""
    result = subprocess.run(
        [sys.executable, "-m", "multinode", *map(str, args)],
        input=input,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    if expect is not None:
        assert result.returncode == expect, (result.stdout, result.stderr)
    return result


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


def assert_user_error(result: subprocess.CompletedProcess[bytes], *words: str) -> None:
    """Exit 1, one line on stderr naming ``words``, and no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    err = result.stderr.decode()
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("multinode: error: "), err
    for word in words:
        assert word in err, err


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    """A store with one small dict, made through the library."""
    path = tmp_path / "cli.db"
    with mn.Store(path) as s:
        d = s.get_dict("jobs")
        d["n"] = 5
        d["owner"] = "worker-1"
    return path


# Help and entry points -------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    """`multinode CMD --help` exits 0, documents --store and shows an example."""
    text = out(cli(command, "--help"))
    assert "--store" in text and "--json" in text
    assert "example:" in text and f"multinode {command}" in text


def test_top_level_help_lists_every_command() -> None:
    """`multinode --help` names every command and shows examples."""
    text = out(cli("--help"))
    for command in COMMANDS:
        assert command in text
    assert "examples:" in text


def test_main_returns_the_exit_status(store_file: Path) -> None:
    """multinode.__main__.main(argv) runs in-process and returns an int."""
    from multinode.__main__ import main

    assert main(["ls", "--store", str(store_file)]) == 0
    assert main(["get", "jobs", "missing", "--store", str(store_file)]) == 1


def test_console_script_is_installed() -> None:
    """The `multinode` console script next to this Python runs the same CLI."""
    script = Path(sys.executable).parent / "multinode"
    if not script.exists():
        pytest.skip("the package is not installed as a console script here")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, timeout=60, check=True
    )
    assert result.stdout.decode().strip() == mn.__version__


def test_usage_error_exits_2() -> None:
    """A missing argument is a usage error: exit status 2, no traceback."""
    result = cli("get", "only-a-dict", expect=2)
    assert b"Traceback" not in result.stderr
    assert b"usage:" in result.stderr


def test_store_option_before_or_after_the_command(store_file: Path) -> None:
    """--store and --json work on either side of the command name."""
    a = json.loads(out(cli("--store", store_file, "--json", "ls")))
    b = json.loads(out(cli("ls", "--store", store_file, "--json")))
    assert a == b == [{"name": "jobs", "length": 2, "serializer": "pickle"}]


# info and ls -----------------------------------------------------------------


def test_info_names_the_file_and_why(store_file: Path) -> None:
    """info shows the path, why it was chosen, journal mode and each dict."""
    text = out(cli("info", env={"MULTINODE_STORE": str(store_file)}))
    assert str(store_file) in text
    assert "MULTINODE_STORE" in text
    assert "journal mode:" in text and "wal" in text
    assert "jobs" in text and "pickle" in text

    info = json.loads(out(cli("info", "--store", store_file, "--json")))
    assert info["path"] == str(store_file)
    assert info["path_reason"] == "--store"
    assert info["journal_mode"] in ("wal", "rollback")
    assert info["dicts"] == [{"name": "jobs", "length": 2, "serializer": "pickle"}]


def test_info_on_a_store_not_created_yet(tmp_path: Path) -> None:
    """info on a missing store says so and creates nothing."""
    path = tmp_path / "later.db"
    info = json.loads(out(cli("info", "--json", env={"MULTINODE_STORE": str(path)})))
    assert info == {
        "path": str(path),
        "path_reason": "MULTINODE_STORE",
        "exists": False,
    }
    assert not path.exists()


def test_ls_lists_names_sizes_and_serializers(store_file: Path) -> None:
    """ls prints one name a line; --long adds items and serializer."""
    with mn.Store(store_file) as s:
        s.get_dict("cfg", serializer="json")["a"] = 1
    assert out(cli("ls", "--store", store_file)).splitlines() == ["jobs", "cfg"]
    long = out(cli("ls", "-l", "--store", store_file))
    assert "jobs" in long and "cfg" in long and "json" in long


# get, set, del ---------------------------------------------------------------


def test_set_get_del_round_trip(tmp_path: Path) -> None:
    """set parses JSON, get prints str as is and the rest as repr, del removes."""
    s = tmp_path / "s.db"
    cli("set", "cfg", "retries", "3", "--store", s)
    cli("set", "cfg", "name", '"nightly job"', "--store", s)
    cli("set", "cfg", "limits", '{"cpu": 2, "tags": ["a", "b"]}', "--store", s)
    cli(
        "set",
        "cfg",
        "7",
        '{"$tuple": [1, {"$bytes": "eA=="}]}',
        "--key-json",
        "--store",
        s,
    )

    assert out(cli("get", "cfg", "retries", "--store", s)) == "3\n"
    assert out(cli("get", "cfg", "name", "--store", s)) == "nightly job\n"
    assert out(cli("get", "cfg", "7", "--key-json", "--store", s)) == "(1, b'x')\n"
    got = json.loads(out(cli("get", "cfg", "limits", "--json", "--store", s)))
    assert got == {"cpu": 2, "tags": ["a", "b"]}

    with mn.Store(s) as store:
        d = store.get_dict("cfg")
        assert d["retries"] == 3 and type(d["retries"]) is int
        assert d[7] == (1, b"x")
        assert "7" not in d

    cli("del", "cfg", "retries", "--store", s)
    assert_user_error(
        cli("get", "cfg", "retries", "--store", s, expect=None), "retries"
    )


def test_tuple_key_as_json_array(tmp_path: Path) -> None:
    """With --key-json a JSON array is a tuple key, since lists cannot be keys."""
    s = tmp_path / "s.db"
    cli("set", "d", '["job", 7]', "true", "--key-json", "--store", s)
    with mn.Store(s) as store:
        assert store.get_dict("d")[("job", 7)] is True


def test_set_pickle_value_and_json_serializer(tmp_path: Path) -> None:
    """set --serializer json makes a JSON dict, which refuses a tuple value."""
    s = tmp_path / "s.db"
    cli("set", "j", "a", "[1, 2]", "--serializer", "json", "--store", s)
    assert_user_error(
        cli("set", "j", "b", '{"$tuple": [1]}', "--store", s, expect=None), "tuple"
    )
    with mn.Store(s) as store:
        d = store.get_dict("j")
        assert d.serializer == "json" and dict(d) == {"a": [1, 2]}


# Errors ----------------------------------------------------------------------


def test_user_errors_are_one_line_without_traceback(
    store_file: Path, tmp_path: Path
) -> None:
    """Every user error exits 1 with one clear line on stderr."""
    s = ("--store", store_file)
    assert_user_error(cli("get", "jobs", "nope", *s, expect=None), "'nope'", "'jobs'")
    assert_user_error(cli("get", "nodict", "k", *s, expect=None), "'nodict'")
    assert_user_error(cli("del", "jobs", "nope", *s, expect=None), "'nope'")
    assert_user_error(cli("rm", "nodict", *s, expect=None), "'nodict'")
    assert_user_error(cli("dump", "nodict", *s, expect=None), "'nodict'")
    assert_user_error(cli("set", "jobs", "k", "not json", *s, expect=None), "JSON")
    assert_user_error(
        cli("get", "jobs", "{bad", "--key-json", *s, expect=None), "--key-json"
    )
    assert_user_error(cli("set", "jobs", "k", '{"$nope": 1}', *s, expect=None), "$nope")
    assert_user_error(
        cli("set", "jobs", "k", "1", "--serializer", "json", *s, expect=None),
        "serializer",
    )
    missing = tmp_path / "missing.db"
    assert_user_error(cli("ls", "--store", missing, expect=None), str(missing))
    assert not missing.exists()


def test_not_a_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A file that is not a store gets one error line and is not changed."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"just some notes\n" * 100)
    for command in (["ls"], ["info"], ["check"], ["set", "d", "k", "1"]):
        assert_user_error(cli(*command, "--store", path, expect=None))
    assert path.read_bytes() == b"just some notes\n" * 100


def test_newer_format_is_refused(store_file: Path) -> None:
    """A store from a newer format version gets one error line."""
    import sqlite3

    db = sqlite3.connect(store_file)
    db.execute("PRAGMA user_version = 999")
    db.close()
    assert_user_error(cli("ls", "--store", store_file, expect=None), "999")


# dump and load ---------------------------------------------------------------

# A value of a class only the writing script defines: the CLI and the loading
# store can never import it, so it must travel as its stored pickle.
WRITE_TRICKY = textwrap.dedent(
    """
    import sys, multinode as mn

    class Point:
        def __init__(self, x):
            self.x = x
        def __eq__(self, other):
            return type(other).__name__ == "Point" and other.x == self.x

    shared = [1]
    d = mn.Store(sys.argv[1]).get_dict("tricky")
    d["plain"] = {"a": [1, 2.5, None, True], "b": "text"}
    d[b"\\x00bytes"] = b"\\xff\\x00"
    d[(1, ("a", b"b"), None)] = (1, [2, 3], {4})
    d[7] = None
    d[2**100] = -2**3000
    d[1.5] = float("inf")
    d[-0.0] = -0.0
    d[None] = frozenset({"x"})
    d["\\u540d\\u524d \\U0001F600"] = "\\u00e9t\\u00e9 \\u2028"
    d["\\ud800lone"] = "surrogate \\udce9 value"
    d["$dollar"] = {"$bytes": "not a tag", 3: "int key"}
    d["bytearray"] = bytearray(b"ab")
    d["shared"] = [shared, shared]
    d["nan"] = float("nan")
    d["point"] = Point(3)
    d[True] = "bool key"
    """
)

READ_POINT = textwrap.dedent(
    """
    import sys, multinode as mn

    class Point:
        def __init__(self, x):
            self.x = x

    p = mn.Store(sys.argv[1]).get_dict("tricky")["point"]
    print(type(p).__name__, p.x)
    """
)


def _raw(path: Path, name: str) -> list[tuple[object, bytes]]:
    with mn.Store(path) as s:
        return list(s.get_dict(name)._raw_items())


def test_dump_load_round_trips_tricky_keys_and_values(tmp_path: Path) -> None:
    """dump | load copies every key and value exactly, including an instance
    of a class that neither the CLI nor this test can import."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    subprocess.run(
        [sys.executable, "-c", WRITE_TRICKY, str(src)], check=True, timeout=60
    )

    # get must unpickle, and cannot: one clear line naming the missing class.
    result = cli("get", "tricky", "point", "--store", src, expect=None)
    assert_user_error(result, "'point'", "Point")

    dump = cli("dump", "tricky", "--store", src).stdout
    lines = dump.decode("utf-8").splitlines()
    assert json.loads(lines[0])["serializer"] == "pickle"
    assert len(lines) == 1 + 16
    assert b'"$pickle"' in dump  # the Point, and the shared list

    cli("load", "tricky", "-", "--store", dst, input=dump)
    before, after = _raw(src, "tricky"), _raw(dst, "tricky")
    assert [k for k, _ in before] == [k for k, _ in after]
    assert [type(k) for k, _ in before] == [type(k) for k, _ in after]

    with mn.Store(src) as a, mn.Store(dst) as b:
        da, db = a.get_dict("tricky"), b.get_dict("tricky")
        for key in da:
            if key == "point":
                with pytest.raises(mn.ValueLoadError):
                    db[key]
                continue
            va, vb = da[key], db[key]
            assert type(va) is type(vb)
            assert va == vb or (key == "nan" and vb != vb)
        assert repr(db[-0.0]) == "-0.0"
        shared = db["shared"]
        assert shared[0] is shared[1]  # sharing survived, via $pickle

    point = subprocess.run(
        [sys.executable, "-c", READ_POINT, str(dst)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert point.stdout == b"Point 3\n"

    # And the dump of the copy is the same dump.
    assert cli("dump", "tricky", "--store", dst).stdout == dump


def test_dump_load_json_dict(tmp_path: Path) -> None:
    """A JSON dict dumps as plain JSON and loads back as a JSON dict."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    with mn.Store(src) as s:
        d = s.get_dict("cfg", serializer="json")
        d["a"] = {"deep": [1, 2.5, None, "\u00e9"]}
        d[3] = "int key"
        d["$weird"] = {"$k": 1}
    dump = cli("dump", "cfg", "--store", src).stdout
    assert b"$pickle" not in dump
    path = tmp_path / "cfg.jsonl"
    path.write_bytes(dump)
    text = out(cli("load", "cfg", path, "--store", dst))
    assert "loaded 3 items" in text
    with mn.Store(dst) as s:
        d = s.get_dict("cfg")
        assert d.serializer == "json"
        assert d.copy() == {
            "a": {"deep": [1, 2.5, None, "\u00e9"]},
            3: "int key",
            "$weird": {"$k": 1},
        }


def test_load_is_one_transaction(store_file: Path, tmp_path: Path) -> None:
    """A bad line anywhere loads nothing, and names its line number."""
    good = '{"key": "a", "value": 1}\n'
    path = tmp_path / "bad.jsonl"
    path.write_text(good * 1200 + '{"key": "b", "value": {"$bytes": "!"}}\n' + good)
    result = cli("load", "jobs", path, "--store", store_file, expect=None)
    assert_user_error(result, "line 1201", "nothing was loaded")
    result = cli("load", "fresh", path, "--store", store_file, expect=None)
    assert_user_error(result, "line 1201")
    with mn.Store(store_file) as s:
        assert s.dicts() == ["jobs"]
        assert s.get_dict("jobs").copy() == {"n": 5, "owner": "worker-1"}


def test_load_pickle_into_json_dict_is_refused(tmp_path: Path) -> None:
    """A $pickle value cannot enter a JSON dict; nothing is loaded."""
    s = tmp_path / "s.db"
    cli("set", "j", "a", "1", "--serializer", "json", "--store", s)
    line = json.dumps({"key": "p", "value": {"$pickle": "gAVLAS4="}})
    result = cli("load", "j", "-", "--store", s, input=line.encode(), expect=None)
    assert_user_error(result, "line 1", "json")


def test_load_replace_and_merge(store_file: Path) -> None:
    """load merges into a dict; --replace empties it first."""
    line = b'{"key": "n", "value": 6}\n{"key": "new", "value": [1]}\n'
    cli("load", "jobs", "-", "--store", store_file, input=line)
    with mn.Store(store_file) as s:
        assert s.get_dict("jobs").copy() == {"n": 6, "owner": "worker-1", "new": [1]}
    cli("load", "jobs", "-", "--replace", "--json", "--store", store_file, input=line)
    with mn.Store(store_file) as s:
        assert s.get_dict("jobs").copy() == {"n": 6, "new": [1]}


def test_dump_into_a_closed_pipe_is_quiet(store_file: Path) -> None:
    """`multinode dump d | head -1` ends without a traceback."""
    with mn.Store(store_file) as s:
        s.get_dict("big").update((f"k{i}", "x" * 100) for i in range(20_000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "multinode", "dump", "big", "--store", str(store_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) != 0
    assert b"Traceback" not in err


def test_status_line_waits_then_reports() -> None:
    """Progress stays silent for quick work and reports slow work on stderr."""
    quiet = io.StringIO()
    status = _cli.StatusLine(quiet, delay=60)
    status.update("load: 1 items")
    status.done("load: 1 items")
    assert quiet.getvalue() == ""

    loud = io.StringIO()
    status = _cli.StatusLine(loud, delay=0)
    status.update("load: 5 items")
    status.done("load: 9 items")
    assert loud.getvalue() == "load: 5 items\nload: 9 items\n"


def test_read_dump_rejects_unknown_tags_and_newer_versions() -> None:
    """The reader names the line of an unknown tag or a newer format."""
    header = _jsonl.DumpHeader()
    newer = b'{"multinode": "dump", "version": 99}\n'
    with pytest.raises(_jsonl.DumpFormatError, match=r"line 1.*99"):
        list(_jsonl.read_dump(io.BytesIO(newer), header))
    tag = b'\n{"key": {"$what": 1}, "value": 1}\n'
    with pytest.raises(_jsonl.DumpFormatError, match=r"line 2.*\$what"):
        list(_jsonl.read_dump(io.BytesIO(tag), header))


# check, backup, vacuum, rm ---------------------------------------------------


def test_check_backup_vacuum_rm(store_file: Path, tmp_path: Path) -> None:
    """check passes, backup makes a readable copy, vacuum and rm work."""
    s = ("--store", store_file)
    assert "ok" in out(cli("check", *s))
    assert json.loads(out(cli("check", "--json", *s)))["ok"] is True

    copy = tmp_path / "copy.db"
    assert str(copy) in out(cli("backup", copy, *s))
    with mn.Store(copy) as c:
        assert c.get_dict("jobs").copy() == {"n": 5, "owner": "worker-1"}
    assert_user_error(cli("backup", copy, *s, expect=None), "exists")

    with mn.Store(store_file) as st:
        st.get_dict("junk").update((i, b"x" * 1000) for i in range(2000))
    cli("rm", "junk", *s)
    sizes = json.loads(out(cli("vacuum", "--json", *s)))
    assert sizes["bytes_after"] < sizes["bytes_before"]
    assert out(cli("ls", *s)).split() == ["jobs"]


def test_check_finds_a_damaged_file(store_file: Path) -> None:
    """A damaged store makes check (or the open) fail with one line, exit 1."""
    with mn.Store(store_file) as s:
        s.get_dict("filler").update((i, os.urandom(500)) for i in range(200))
    size = store_file.stat().st_size
    with open(store_file, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xde\xad\xbe\xef" * 1024)
    result = cli("check", "--store", store_file, expect=None)
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
