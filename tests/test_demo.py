"""`python -m multinode demo`: the main job, on small real input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import multinode as mn
from multinode import _demo

pytestmark = pytest.mark.processes


def demo(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """Run the demo in a subprocess, with a generous hang guard."""
    return subprocess.run(
        [sys.executable, "-m", "multinode", "demo", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_on_the_standard_library_loses_no_update() -> None:
    """demo --limit 30 --workers 2 exits 0 and reports zero lost updates."""
    result = demo("--limit", "30", "--workers", "2")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "2 worker processes" in text and "30 files" in text
    assert "standard library" in text
    assert "one transaction per file" in text
    assert "set_if_absent(word, value=n)" in text and "d[word] += n" in text
    assert re.search(r"top 10 words:\n  self +[\d,]+\n", text)
    assert re.search(r"[\d,]+ words/s", text)
    assert re.search(r"by [12] processes", text)
    assert "lost updates: 0, extra counts: 0, words with a wrong count: 0" in text
    assert "result: OK" in text
    assert "Traceback" not in result.stderr


def _corpus(root: Path) -> Counter[str]:
    """A few files of known words; returns the expected counts."""
    texts = {
        "a.txt": "the cat and the hat\n" * 50,
        "b.txt": "The Cat sat_on the mat 42 times\n" * 30,
        "sub/c.md": "h\u00e9llo w\u00f6rld, the end\n" * 20,
        "sub/d.txt": "",
        "sub/e.bin": "bytes \udcff are separators",
    }
    expected: Counter[str] = Counter()
    for name, text in texts.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        expected.update(_demo.count_file(str(path)))
    return expected


def test_demo_counts_given_files_exactly_into_a_named_store(tmp_path: Path) -> None:
    """With --path and --store, the shared dict holds exactly the true counts,
    and a second run refuses to mix into the existing dict."""
    expected = _corpus(tmp_path / "text")
    store = tmp_path / "words.db"
    result = demo("--path", tmp_path / "text", "--workers", "3", "--store", store)
    assert result.returncode == 0, result.stderr
    assert "3 worker processes" in result.stdout
    assert "5 files (the given files)" in result.stdout
    assert re.search(r"top 10 words:\n  the +180\n", result.stdout)
    assert "lost updates: 0" in result.stdout
    assert f"stay in {store}" in result.stdout

    with mn.Store(store) as s:
        assert s.get_dict("demo_words").copy() == dict(expected)
    assert expected["the"] == 180 and expected["sat"] == 30 and expected["on"] == 30
    assert "42" not in expected and expected["h\u00e9llo"] == 20

    again = demo("--path", tmp_path / "text", "--store", store)
    assert again.returncode == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr


def test_demo_fork_without_transactions(tmp_path: Path) -> None:
    """Forked workers committing every word on its own still lose nothing;
    --json prints one summary object."""
    expected = _corpus(tmp_path / "text")
    result = demo(
        "--path",
        tmp_path / "text",
        "--workers",
        "2",
        "--start-method",
        "fork",
        "--no-transaction",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is True and summary["transaction_per_file"] is False
    assert summary["lost_updates"] == summary["extra_counts"] == 0
    assert summary["words"] == expected.total()
    assert summary["top"][0] == ["the", 180]
    assert summary["temporary_store"] is True
    assert not os.path.exists(summary["store"])  # the temporary store is gone


def test_demo_with_a_missing_path_is_a_user_error(tmp_path: Path) -> None:
    """A --path that does not exist is one error line, exit 1."""
    result = demo("--path", tmp_path / "nowhere")
    assert result.returncode == 1
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr


def test_words_are_lowercased_letter_runs(tmp_path: Path) -> None:
    """count_file splits on anything but letters and ignores case."""
    path = tmp_path / "t.py"
    path.write_text("Self.x_1 = self.X2 + \u00c9t\u00e9\n")
    assert _demo.count_file(str(path)) == Counter(
        {"self": 2, "x": 2, "\u00e9t\u00e9": 1}
    )


def test_default_files_are_the_stdlib_python_files() -> None:
    """With no --path the demo reads the standard library's .py files only."""
    files = _demo.find_files([])
    assert len(files) > 100
    assert all(f.endswith(".py") and "site-packages" not in f for f in files)
    assert any(
        f.endswith(os.sep + "collections" + os.sep + "__init__.py") for f in files
    )
