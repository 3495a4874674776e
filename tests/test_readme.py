"""The README cannot drift from the code: its examples run, its commands exist.

Conventions the README follows:

- Every ```python block runs as a script (``python NAME.py``) in a subprocess
  whose ``MULTINODE_STORE`` names a fresh store. The blocks under one heading
  share that store and a working directory and run in order; a block whose
  first line is a comment naming a file (``# web.py: ...``) is saved under
  that name, so a later block of the same heading can import it.
- Every ```sh block is parsed as shell; each command's program must exist:
  ``multinode`` / ``python -m multinode`` subcommands parse with the real
  argument parser and answer ``--help``, ``python -m MOD`` finds ``MOD``,
  ``python -c CODE`` compiles, and any other program is on ``PATH`` or a
  shell builtin.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import multinode as mn
from multinode import _cli

README = Path(__file__).resolve().parent.parent / "README.md"

_FENCE = re.compile(r"^```(\w*)\s*$")
_HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$")
_FILE_NAME = re.compile(r"^# ([\w-]+\.py)\b")
_BUILTINS = {"export", "cd", "echo", "source", "set", "unset", "true", "test"}


@dataclass(frozen=True)
class Block:
    heading: str
    lang: str
    code: str
    line: int


def _blocks() -> list[Block]:
    blocks: list[Block] = []
    heading = ""
    lang: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        fence = _FENCE.match(line.strip())
        if lang is None:
            if fence:
                lang, start, body = fence.group(1), number, []
                continue
            found = _HEADING.match(line)
            if found:
                heading = found.group(2)
        elif fence and not fence.group(1):
            # Blocks inside list items are indented: take the indent off.
            indent = min(
                (len(b) - len(b.lstrip()) for b in body if b.strip()), default=0
            )
            code = "\n".join(b[indent:] for b in body) + "\n"
            blocks.append(Block(heading, lang, code, start))
            lang = None
        else:
            body.append(line)
    assert lang is None, "README ends inside a code block"
    return blocks


BLOCKS = _blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang in ("sh", "bash", "shell")]


def _sections() -> dict[str, list[Block]]:
    sections: dict[str, list[Block]] = {}
    for block in PYTHON:
        sections.setdefault(block.heading, []).append(block)
    return sections


SECTIONS = _sections()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


# Python examples ---------------------------------------------------------------


@pytest.mark.parametrize("heading", list(SECTIONS), ids=[_slug(h) for h in SECTIONS])
def test_python_examples_run(heading: str, tmp_path: Path) -> None:
    """Each README section's Python blocks run in order, without an error."""
    env = {**os.environ, "MULTINODE_STORE": str(tmp_path / "store.db")}
    for block in SECTIONS[heading]:
        named = _FILE_NAME.match(block.code)
        name = named.group(1) if named else f"block_{block.line}.py"
        (tmp_path / name).write_text(block.code)
        result = subprocess.run(
            [sys.executable, name],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (
            f"README.md line {block.line} ({heading}) failed:\n"
            f"{result.stdout}\n{result.stderr}"
        )


def test_there_are_python_examples() -> None:
    """The parser found the README's examples (guards against a silent pass)."""
    assert len(PYTHON) >= 25 and len(SHELL) >= 5


def test_every_public_name_has_a_runnable_example() -> None:
    """Each name in multinode.__all__ has an API-reference heading with a
    Python block under it."""
    headings = {b.heading for b in PYTHON}
    for name in mn.__all__:
        assert any(f"mn.{name}" in h for h in headings), name


def test_setup_commands_are_the_documented_ones() -> None:
    """The two set-up commands are exactly the ones CI and users rely on."""
    setup = [b.code.strip() for b in SHELL if b.heading == "Set up"]
    assert setup == [
        "python -m pip install -e . && python -m multinode demo",
        "python -m pip install -e '.[test]' && python -m pytest",
    ]


# Shell commands ----------------------------------------------------------------

_SEPARATORS = {"|", "||", "&", "&&", ";", "\n", "(", ")"}
_REDIRECTS = {">", ">>", "<", "<<", "2>", "&>"}


def _commands(code: str) -> list[list[str]]:
    """The simple commands of a shell snippet, as word lists."""
    lex = shlex.shlex(code, posix=True, punctuation_chars="();<>|&\n")
    lex.whitespace = " \t\r"
    lex.whitespace_split = True
    commands: list[list[str]] = [[]]
    skip = False
    for token in lex:
        if skip:
            skip = False
        elif token in _REDIRECTS:
            skip = True
        elif token in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    words = [c for c in commands if c]
    # Drop leading assignments (VAR=value command ...).
    return [
        c[next((i for i, w in enumerate(c) if "=" not in w), len(c)) :] for c in words
    ]


def _check_multinode(args: list[str], where: str) -> None:
    parser = _cli.build_parser()
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        raise AssertionError(
            f"{where}: `multinode {shlex.join(args)}` does not parse"
        ) from exc
    command = next(a for a in args if a in _cli._COMMANDS)
    result = subprocess.run(
        [sys.executable, "-m", "multinode", command, "--help"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{where}: multinode {command} --help failed"


def _check_command(words: list[str], where: str) -> None:
    program = os.path.basename(words[0])
    if program == "multinode":
        _check_multinode(words[1:], where)
    elif program in ("python", "python3"):
        if words[1:2] == ["-m"]:
            module = words[2]
            if module == "multinode":
                _check_multinode(words[3:], where)
            else:
                # A module of the repository (python -m benchmarks) counts too.
                local = README.parent / module.replace(".", "/")
                found = importlib.util.find_spec(module) or local.is_dir()
                assert found, f"{where}: no module {module}"
        elif words[1:2] == ["-c"]:
            compile(words[2], where, "exec")
    elif program not in _BUILTINS:
        assert shutil.which(program), f"{where}: {program} is not on PATH"


@pytest.mark.parametrize("block", SHELL, ids=[f"line{b.line}" for b in SHELL])
def test_shell_commands_exist(block: Block) -> None:
    """Every command in a sh block names a program or subcommand that exists."""
    commands = _commands(block.code)
    assert commands
    for words in commands:
        _check_command(words, f"README.md line {block.line}")
