"""A tiny run of the benchmark runner, so that it cannot rot unnoticed.

No timing is asserted: only that every workload runs, the outputs are written
and well formed, missing peers are skipped with a reason, and the atomic
increments lose nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import run  # noqa: E402

PEERS = ("diskcache", "sqlitedict", "redis", "matplotlib")

TINY = [
    "--quick",
    "--rounds", "1",
    "--ops", "5",
    "--keys", "50",
    "--sizes", "50,200",
    "--len-sizes", "50,200",
    "--iter-keys", "200",
    "--values", "100,5000",
    "--procs", "1,2",
    "--incr-per-proc", "10",
    "--clear-keys", "20",
    "--dicts", "5",
    "--quiet",
]  # fmt: skip


def _run(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "out"
    argv = [*TINY, "--out", str(out), "--name", "smoke", "--tmpdir", str(tmp_path)]
    assert run.main([*argv, *extra]) == 0
    assert (out / "smoke.md").read_text().startswith("# multinode benchmark results")
    data: dict[str, Any] = json.loads((out / "smoke.json").read_text())
    return data


def test_runner_writes_every_section_for_floor_and_multinode(tmp_path: Path) -> None:
    """A run of the floor, both multinode modes and dict fills every section."""
    data = _run(
        tmp_path,
        "--systems",
        "floor,multinode-wal,multinode-rollback,dict",
        "--no-chart",
    )
    for section in ("ops", "contended", "sizes", "values", "clear", "named"):
        assert section in data, section
    for op in ("get", "set_new", "replace", "contains", "delete", "incr", "cas", "sia"):
        assert set(data["ops"][op]) >= {"floor", "multinode-wal", "dict"}, op
    for entry in data["contended"]["entries"]:
        if entry["atomic"]:
            assert entry["lost"] == 0, entry["name"]
            assert entry["errors"] == 0, (entry["name"], entry["first_error"])
    assert data["machine"]["sqlite"]
    assert data["targets"], "the targets table is empty"
    assert not list(tmp_path.glob("mn-bench-*")), "temporary stores left behind"


def test_runner_skips_missing_peers_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no peer package importable, peers are skipped and the run completes."""
    for name in PEERS:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
    data = _run(tmp_path, "--workloads", "ops,named", "--skip", "manager")
    skipped = {k: s["skipped"] for k, s in data["systems"].items() if s["skipped"]}
    for key in ("diskcache-cache", "diskcache-index", "sqlitedict", "redis"):
        assert key in skipped and "not installed" in skipped[key], key
    assert "multinode-wal" in data["ops"]["get"]
    assert not (tmp_path / "out" / "smoke.png").exists()


def test_runner_runs_every_available_peer(tmp_path: Path) -> None:
    """Every installed peer (Redis too, when redis-server exists) survives a run."""
    data = _run(tmp_path, "--no-chart")
    measured = [k for k, s in data["systems"].items() if not s["skipped"]]
    assert {"floor", "multinode-wal", "shelve", "manager", "dict"} <= set(measured)
    for key in measured:
        assert key in data["ops"]["get"], key
