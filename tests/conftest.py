"""Fixtures shared by the whole suite.

Every test gets its own directory and store file; ``MULTINODE_STORE`` points
there so ``mn.get_dict`` and child processes use it too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import multinode as mn


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if os.environ.get("MULTINODE_HUGE") == "1":
        return
    skip = pytest.mark.skip(reason="gigabyte case: set MULTINODE_HUGE=1 to run it")
    for item in items:
        if "huge" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh store path, also made the default store for this test."""
    path = tmp_path / "store.db"
    monkeypatch.setenv("MULTINODE_STORE", str(path))
    return path


@pytest.fixture(params=["wal", "rollback"])
def journal_mode(request: pytest.FixtureRequest) -> str:
    """Each journal mode the product supports."""
    return str(request.param)


@pytest.fixture
def store(store_path: Path, journal_mode: str) -> Iterator[mn.Store]:
    """An open store in each journal mode, closed afterwards."""
    with mn.Store(store_path, journal_mode=journal_mode) as s:
        yield s
