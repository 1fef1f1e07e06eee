"""Consistency under load: snapshots of a database that a separate writer process keeps
committing to, flat out, and the plain file copy that the original scripts made.

Each writer transaction inserts a row into ``app_events`` and bumps ``app_counter.n``; a
consistent copy has ``n == count(*) == max(seq)`` and ``min(seq) == 1``. The writer
publishes its committed count after each COMMIT (every few ms), so a count read just
before a snapshot starts is a lower bound of what the snapshot must hold.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "module_utils"))
import sqlite_fleet as core  # noqa: E402
from unit_helpers import (  # noqa: E402
    app_writer,
    backup_invariant,
    committed,
    create_demo_db,
    folder_files,
    open_backup,
    stop_writer,
)

SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
GYM_TABLES = ("members", "lockers", "rentals", "access_log", "counters", "photos")


def demo_with_app_tables(path: Path, journal_mode: str) -> dict[str, int]:
    """The gym demo database plus the writer's (empty) app tables, all in the main file."""
    summary = create_demo_db(path, members=200, journal_mode=journal_mode, seed=7)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in app_writer.APP_TABLES_SQL:
            conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.close()  # the last connection checkpoints: the tables are in the .db itself
    assert not os.path.exists(str(path) + "-wal")
    return summary["tables"]


def snapshot_under_load(db: Path, folder: Path, writer: Any, count: int, gym_tables: dict[str, int],
                        **snapshot_args: Any) -> list[dict[str, Any]]:
    """``count`` snapshots one after another, each checked at once; returns what was seen."""
    seen = []
    previous = 0
    for _ in range(count):
        writer_alive_and_well(writer)
        before = committed(writer)  # read just BEFORE the snapshot starts
        result = core.snapshot(str(db), str(folder), "gym", **snapshot_args)
        after = committed(writer)
        backup = result["backup"]
        assert result["verified"] is True, result["problems"]

        verify = core.verify_backup(backup, integrity="full")  # integrity_check, checksum, rows
        assert verify["ok"] is True, verify["problems"]
        ok, n, detail = backup_invariant(backup)
        assert ok, "%s: %s" % (result["file"], detail)
        assert n >= before, "%s lost committed rows: holds %d, %d were committed before it began" % (
            result["file"], n, before)
        assert n >= previous  # snapshots taken one after another never go back in time
        conn = open_backup(backup)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            for table, rows in gym_tables.items():  # the app's own data, untouched by the writer
                assert conn.execute('SELECT count(*) FROM "%s"' % table).fetchone()[0] == rows
        finally:
            conn.close()
        leftovers = [f for f in folder_files(folder) if f.endswith(SIDE_SUFFIXES)]
        assert leftovers == [], leftovers
        seen.append({"file": result["file"], "before": before, "after": after, "rows": n,
                     "manifest": result["manifest"]})
        previous = n
    return seen


def writer_alive_and_well(writer: Any) -> None:
    status = writer.status()
    assert writer.running(), "writer exited: %s %s" % (status, writer.stderr_text())
    assert status.get("errors", 0) == 0, status


def check_run(seen: list[dict[str, Any]], folder: Path, final: int, count: int) -> None:
    files = [s["file"] for s in seen]
    assert len(set(files)) == count
    listing = core.list_backups(str(folder), "gym")
    assert sorted(b["file"] for b in listing["backups"]) == sorted(files)
    assert listing["unfinished"] == [] and listing["invalid"] == []
    assert all(s["rows"] <= final for s in seen)
    # the writer really was writing while the snapshots ran
    assert seen[-1]["rows"] > seen[0]["rows"]
    busy = sum(1 for s in seen if s["after"] > s["before"])
    assert busy >= count // 4, "the writer committed during only %d of %d snapshots" % (busy, count)


@pytest.mark.parametrize("autocheckpoint", [True, False], ids=["autocheckpoint", "no-autocheckpoint"])
def test_50_snapshots_of_a_wal_db_under_flat_out_writes(tmp_path: Path, start_writer: Any,
                                                        autocheckpoint: bool) -> None:
    db = tmp_path / "gym.db"
    gym_tables = demo_with_app_tables(db, "wal")
    folder = tmp_path / "backups"
    writer = start_writer(db, rate=0, journal_mode="wal", no_autocheckpoint=not autocheckpoint,
                          busy_timeout_ms=20000)
    writer.wait_committed(200)
    started = time.monotonic()
    seen = snapshot_under_load(db, folder, writer, 50, gym_tables)
    elapsed = time.monotonic() - started
    if not autocheckpoint:
        # the rows the snapshots hold were (mostly) only in the -wal: the main file never grew
        assert os.path.getsize(str(db) + "-wal") > os.path.getsize(db)
    final = stop_writer(writer)
    check_run(seen, folder, final, 50)
    for s in seen:
        assert s["manifest"]["source"]["journal_mode"] == "wal"
        assert s["manifest"]["writers_held_off_seconds"] == 0.0
    # the pinned copy ran, or fell back to the backup API now and then under flat-out commits
    pinned = sum(1 for s in seen if s["manifest"]["method"] == "pinned_copy")
    assert pinned >= 40 and all(s["manifest"]["method"] in ("pinned_copy", "backup_api") for s in seen)
    assert elapsed < 45, "50 snapshots took %.1f s" % elapsed


def test_10_snapshots_of_a_rollback_journal_db_under_flat_out_writes(tmp_path: Path, start_writer: Any) -> None:
    db = tmp_path / "gym.db"
    gym_tables = demo_with_app_tables(db, "delete")
    folder = tmp_path / "backups"
    writer = start_writer(db, rate=0, journal_mode="delete", busy_timeout_ms=20000)
    writer.wait_committed(50)
    seen = snapshot_under_load(db, folder, writer, 10, gym_tables, busy_timeout_ms=20000)
    final = stop_writer(writer)  # no "database is locked" for the app: errors == 0
    check_run(seen, folder, final, 10)
    for s in seen:
        manifest = s["manifest"]
        assert manifest["source"]["journal_mode"] == "delete"
        assert manifest["writers_held_off_seconds"] > 0  # the shared lock held the writer off
        assert manifest["method"] == "pinned_copy"
    assert not os.path.exists(str(db) + "-wal")


def test_10_backup_api_snapshots_of_a_wal_db_under_flat_out_writes(tmp_path: Path, start_writer: Any) -> None:
    db = tmp_path / "gym.db"
    gym_tables = demo_with_app_tables(db, "wal")
    folder = tmp_path / "backups"
    writer = start_writer(db, rate=0, journal_mode="wal", no_autocheckpoint=True, busy_timeout_ms=20000)
    writer.wait_committed(200)
    seen = snapshot_under_load(db, folder, writer, 10, gym_tables, method="backup_api")
    check_run(seen, folder, stop_writer(writer), 10)
    assert {s["manifest"]["method"] for s in seen} == {"backup_api"}


def test_a_plain_file_copy_of_a_live_wal_db_loses_committed_rows(tmp_path: Path, start_writer: Any) -> None:
    """What the original scripts did (shutil.copyfile of the .db alone) against the snapshot."""
    db = tmp_path / "gym.db"
    demo_with_app_tables(db, "wal")
    writer = start_writer(db, rate=0, journal_mode="wal", no_autocheckpoint=True, busy_timeout_ms=20000)
    writer.wait_committed(500)
    scratch = tmp_path / "plain-copies"
    scratch.mkdir()
    folder = tmp_path / "backups"
    for attempt in range(3):
        before = committed(writer)
        copy = scratch / ("gym-%d.db" % attempt)
        shutil.copyfile(db, copy)  # the .db only: the -wal stays behind
        conn = sqlite3.connect(copy, isolation_level=None)
        try:
            copied = conn.execute("SELECT count(*) FROM app_events").fetchone()[0]
        finally:
            conn.close()
        assert copied < before, "the plain copy holds %d rows of the %d committed" % (copied, before)

        result = core.snapshot(str(db), str(folder), "gym")
        ok, n, detail = backup_invariant(result["backup"])
        assert ok, detail
        assert n >= before > copied
    stop_writer(writer)
