"""The benches' sqlite3_rsync anchor (bench/sqlite3_rsync_anchor.py): which binary it takes, what it
says without one, and that a replica is only accepted when it holds the origin's rows. No
sqlite3_rsync is needed (CI has none): stand-in programs and real SQLite files."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import sqlite3_rsync_anchor as anchor  # noqa: E402


def program(path: Path, exit_code: int) -> Path:
    path.write_text("#!/bin/sh\necho 2026-01-01 stand-in\nexit %d\n" % exit_code)
    path.chmod(0o755)
    return path


def database(path: Path, rows: int) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE members (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO members (name) VALUES (?)", [("m%d" % i,) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


def test_the_binary_named_by_the_environment_comes_first_when_it_runs(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    good = program(tmp_path / "good", 0)
    monkeypatch.setenv("SQLITE3_RSYNC", str(good))
    assert anchor.find() == str(good)
    broken = program(tmp_path / "broken", 1)
    monkeypatch.setenv("SQLITE3_RSYNC", str(broken))
    assert anchor.find() != str(broken)


def test_without_a_binary_the_benches_say_not_measured_and_how_to_get_it() -> None:
    text = anchor.describe(None)
    assert text.startswith("not measured") and "bench/build_sqlite3_rsync.sh" in text and sqlite3.sqlite_version in text


def test_a_replica_is_accepted_only_with_the_origins_rows(tmp_path: Path) -> None:
    origin = database(tmp_path / "origin.db", 50)
    replica = tmp_path / "replica.db"
    shutil.copy(origin, replica)
    assert anchor.check_replica(replica, origin) == {"integrity_check": "ok", "tables": 1, "rows": 50}
    short = database(tmp_path / "short.db", 49)
    with pytest.raises(RuntimeError, match="not the origin's copy"):
        anchor.check_replica(short, origin)


def test_the_build_script_refuses_an_unknown_argument_in_one_line() -> None:
    proc = subprocess.run(["bash", str(REPO / "bench" / "build_sqlite3_rsync.sh"), "--bogus"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "build_sqlite3_rsync: unknown argument: --bogus"
