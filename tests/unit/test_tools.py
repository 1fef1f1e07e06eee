"""Tests of tools/demo_db.py and tools/app_writer.py on real SQLite files (nothing mocked)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS_DIR) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR))

import app_writer  # noqa: E402
import demo_db  # noqa: E402

PYTHON39 = Path("/root/.pyenv/versions/3.9.18/bin/python3")
GYM_TABLES = {"members", "lockers", "rentals", "access_log", "counters", "photos"}


# ---------------------------------------------------------------- helpers


def open_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)


def scalar(conn: sqlite3.Connection, sql: str) -> object:
    return conn.execute(sql).fetchone()[0]


def events_in_copy(path: Path) -> int:
    """Rows of app_events in a standalone copy (0 when the copy does not even have the table)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return scalar(conn, "SELECT count(*) FROM app_events")
    except sqlite3.OperationalError as error:
        assert "no such table" in str(error)
        return 0
    finally:
        conn.close()


def online_backup(source: Path, target: Path) -> None:
    """What the backup core does: backup API in one step, then journal_mode=DELETE."""
    src = open_read_only(source)
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
    finally:
        dst.close()
        src.close()


def run_tool(script: str, *args: str, python: str = sys.executable, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, str(TOOLS_DIR / script), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    path = tmp_path / "gym.db"
    demo_db.create_demo_db(path, members=40, seed=5)
    return path


# ---------------------------------------------------------------- demo_db


def test_demo_db_is_wal_with_gym_tables_and_clean(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "folder" / "gym.db"
    summary = demo_db.create_demo_db(path, members=60, seed=3)

    assert path.is_file()
    assert not Path(f"{path}-wal").exists()
    assert [p.name for p in path.parent.iterdir()] == ["gym.db"]  # no build leftovers
    conn = open_read_only(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert GYM_TABLES <= tables
        assert scalar(conn, "PRAGMA journal_mode") == "wal"
        assert scalar(conn, "PRAGMA user_version") == demo_db.SCHEMA_VERSION
        assert scalar(conn, "PRAGMA integrity_check") == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        referenced = {row[2] for row in conn.execute("PRAGMA foreign_key_list(rentals)")}
        assert referenced == {"members", "lockers"}
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"rentals_member_id", "access_log_member_at"} <= indexes
        assert scalar(conn, "SELECT count(*) FROM members") == 60
        assert scalar(conn, "SELECT count(*) FROM rentals") > 0
        assert scalar(conn, "SELECT count(*) FROM access_log") > 0
        # A locker with an open rental is marked rented.
        assert (
            scalar(
                conn,
                "SELECT count(*) FROM current_rentals AS c JOIN lockers AS l ON l.id = c.locker_id "
                "WHERE l.status != 'rented'",
            )
            == 0
        )
        counts = {table: scalar(conn, f"SELECT count(*) FROM {table}") for table in sorted(GYM_TABLES)}
    finally:
        conn.close()
    assert summary["tables"] == counts
    assert summary["journal_mode"] == "wal"
    assert summary["bytes"] == path.stat().st_size


def test_demo_db_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = demo_db.create_demo_db(tmp_path / "a.db", members=30, size_mb=0.5, seed=11)
    second = demo_db.create_demo_db(tmp_path / "b.db", members=30, size_mb=0.5, seed=11)
    other = demo_db.create_demo_db(tmp_path / "c.db", members=30, size_mb=0.5, seed=12)
    assert (tmp_path / "a.db").read_bytes() == (tmp_path / "b.db").read_bytes()
    assert (tmp_path / "a.db").read_bytes() != (tmp_path / "c.db").read_bytes()
    assert first["tables"] == second["tables"]
    assert other["seed"] == 12


def test_demo_db_size_mb_is_roughly_honored_with_incompressible_photos(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    summary = demo_db.create_demo_db(path, members=20, size_mb=24, seed=1)
    wanted = 24 * 1024 * 1024
    assert wanted * 0.99 <= path.stat().st_size <= wanted * 1.01
    assert summary["photos_added"] > 0
    conn = open_read_only(path)
    try:
        photo = scalar(conn, "SELECT data FROM photos ORDER BY id LIMIT 1")
        assert scalar(conn, "PRAGMA integrity_check") == "ok"
    finally:
        conn.close()
    assert len(zlib.compress(photo)) > 0.99 * len(photo)  # ssh -C cannot shrink it


def test_demo_db_delete_journal_mode(tmp_path: Path) -> None:
    path = tmp_path / "rollback.db"
    summary = demo_db.create_demo_db(path, members=5, journal_mode="delete")
    conn = open_read_only(path)
    try:
        assert scalar(conn, "PRAGMA journal_mode") == "delete"
    finally:
        conn.close()
    assert summary["journal_mode"] == "delete"


def test_demo_db_cli_refuses_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "gym.db"
    created = run_tool("demo_db.py", str(path), "--members", "10", "--seed", "2")
    assert created.returncode == 0, created.stderr
    summary = json.loads(created.stdout)
    assert created.stdout.count("\n") == 1
    assert summary["path"] == str(path)
    assert summary["tables"]["members"] == 10
    before = path.read_bytes()

    refused = run_tool("demo_db.py", str(path), "--members", "3")
    assert refused.returncode == 2
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["gym.db"]

    replaced = run_tool("demo_db.py", str(path), "--members", "3", "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["tables"]["members"] == 3

    with pytest.raises(demo_db.DemoDbError, match="already exists"):
        demo_db.create_demo_db(path)


def test_demo_db_cli_rejects_bad_numbers(tmp_path: Path) -> None:
    result = run_tool("demo_db.py", str(tmp_path / "x.db"), "--size-mb", "-5")
    assert result.returncode == 2
    assert "--size-mb" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


# ---------------------------------------------------------------- app_writer


def test_writer_commits_at_rate_keeps_invariant_and_stops_on_sigterm(demo: Path) -> None:
    with app_writer.start_writer(demo, rate=50) as writer:
        writer.wait_ready(timeout=10)
        time.sleep(1.2)
        mid = writer.status()
        assert mid["state"] == "running" and mid["pid"] == writer.pid
        final = writer.stop()

    assert final["returncode"] == 0
    assert final["state"] == "stopped"
    assert final["stop_reason"] == "signal SIGTERM"
    assert 35 <= final["rate"] <= 55, final
    assert final["commits"] == final["committed"] >= 50
    assert final["errors"] == final["locked_errors"] == 0
    assert 0 < final["p50_ms"] <= final["p99_ms"] <= final["max_ms"]
    assert final["updated"] >= final["started"]
    ok, n, detail = app_writer.check_invariant(demo)
    assert ok, detail
    assert n == final["committed"]


def test_online_backup_during_flat_out_writes_is_consistent(demo: Path, tmp_path: Path) -> None:
    with app_writer.start_writer(demo, rate=0) as writer:
        before = writer.wait_committed(300)["committed"]
        online_backup(demo, tmp_path / "backup.db")
        final = writer.stop()
    ok, n, detail = app_writer.check_invariant(tmp_path / "backup.db", immutable=True)
    assert ok, detail
    assert before <= n <= final["committed"]
    assert final["rate"] > 100  # flat out


def test_plain_copy_of_db_misses_rows_that_sit_in_the_wal(demo: Path, tmp_path: Path) -> None:
    wal = Path(f"{demo}-wal")
    with app_writer.start_writer(demo, rate=0, no_autocheckpoint=True) as writer:
        writer.wait_committed(200)
        wal_early = wal.stat().st_size
        committed = writer.wait_committed(2000)["committed"]
        assert wal.stat().st_size > wal_early  # no checkpoint: the WAL only grows

        shutil.copyfile(demo, tmp_path / "copy_while_running.db")
        assert events_in_copy(tmp_path / "copy_while_running.db") < committed

        # An app process (here: a reader) still has the database open, so the writer's
        # exit does not checkpoint either: the rows stay in the -wal.
        reader = open_read_only(demo)
        try:
            scalar(reader, "SELECT count(*) FROM app_counter")
            final = writer.stop()
            assert wal.exists() and wal.stat().st_size > 0
            shutil.copyfile(demo, tmp_path / "copy_after_stop.db")
            ok, n, detail = app_writer.check_invariant(reader)  # the live database, -wal included
            assert ok, detail
            assert n == final["committed"]
        finally:
            reader.close()

    assert events_in_copy(tmp_path / "copy_after_stop.db") < final["committed"]
    online_backup(demo, tmp_path / "backup.db")
    ok, n, detail = app_writer.check_invariant(tmp_path / "backup.db", immutable=True)
    assert ok and n == final["committed"], detail


def test_writer_counts_locked_errors_and_carries_on(demo: Path) -> None:
    with app_writer.start_writer(demo, rate=100, busy_timeout_ms=100) as writer:
        writer.wait_ready()
        blocker = sqlite3.connect(str(demo), isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # holds the write lock longer than the busy timeout
            time.sleep(0.6)
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        after_lock = writer.status()["committed"]
        writer.wait_committed(after_lock + 10)
        final = writer.stop()
    assert final["locked_errors"] >= 2
    assert final["errors"] >= final["locked_errors"]
    assert "locked" in final["last_error"]
    assert app_writer.check_invariant(demo)[0]


def test_writer_cli_duration_status_file_and_journal_mode(demo: Path, tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    ready_file = tmp_path / "ready"
    result = run_tool(
        "app_writer.py", str(demo), "--rate", "0", "--duration", "0.5", "--journal-mode", "delete",
        "--status-file", str(status_file), "--ready-file", str(ready_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ready_file.exists()
    status = json.loads(status_file.read_text())
    assert status["stop_reason"] == "duration"
    assert status["journal_mode"] == "delete"
    assert status["committed"] == status["commits"] > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    ok, n, _detail = app_writer.check_invariant(demo)
    assert ok and n == status["committed"]


def test_writer_stops_on_sigint_too(demo: Path, tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    ready_file = tmp_path / "ready"
    with app_writer.start_writer(demo, rate=200, status_file=status_file, ready_file=ready_file) as writer:
        writer.wait_ready()
        os.kill(writer.pid, signal.SIGINT)
        assert writer.process.wait(10) == 0
    status = json.loads(status_file.read_text())
    assert status["state"] == "stopped" and status["stop_reason"] == "signal SIGINT"


def test_writer_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = run_tool("app_writer.py", str(missing), "--duration", "1")
    assert result.returncode == 2
    assert "no such database" in result.stderr
    assert "Traceback" not in result.stderr
    assert not missing.exists()

    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello, not a database\n" * 100)
    result = run_tool("app_writer.py", str(not_a_db), "--duration", "1")
    assert result.returncode == 2
    assert "not a database" in result.stderr and "Traceback" not in result.stderr


def test_writer_in_process_on_a_plain_database_and_invariant_failures(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    sqlite3.connect(str(path)).close()
    ok, _n, detail = app_writer.check_invariant(path)
    assert not ok and "app_counter" in detail

    status = app_writer.run_writer(app_writer.WriterOptions(db=path, rate=0, duration=0.2))
    assert status["commits"] > 0 and status["stop_reason"] == "duration"
    ok, n, detail = app_writer.check_invariant(path)
    assert ok and n == status["committed"], detail

    conn = sqlite3.connect(str(path))
    with conn:
        conn.execute("DELETE FROM app_events WHERE seq = 1")
    ok, n, detail = app_writer.check_invariant(conn)
    conn.close()
    assert not ok and n == status["committed"] and "broken" in detail
    assert app_writer.check_invariant(tmp_path / "nope.db")[0] is False


def test_latency_percentiles_are_close() -> None:
    stats = app_writer.LatencyStats()
    assert stats.percentile_s(0.5) is None
    for millis in range(1, 101):
        stats.add(millis / 1000)
    assert stats.percentile_s(0.50) == pytest.approx(0.050, rel=0.03)
    assert stats.percentile_s(0.99) == pytest.approx(0.099, rel=0.03)
    assert stats.max_s == 0.1


@pytest.mark.skipif(not PYTHON39.exists(), reason="no Python 3.9 interpreter here")
def test_tools_run_under_python_39(tmp_path: Path) -> None:
    path = tmp_path / "gym39.db"
    created = run_tool("demo_db.py", str(path), "--members", "10", "--size-mb", "1", python=str(PYTHON39))
    assert created.returncode == 0, created.stderr
    with app_writer.start_writer(path, python=str(PYTHON39), rate=0, no_autocheckpoint=True) as writer:
        writer.wait_committed(50)
        final = writer.stop()
    assert final["returncode"] == 0, final
    ok, n, detail = app_writer.check_invariant(path)
    assert ok and n == final["committed"], detail
