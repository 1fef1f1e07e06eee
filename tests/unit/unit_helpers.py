"""Shared helpers for the core's unit tests: real SQLite files, real processes.

Test files import them as ``unit_helpers`` (tests/conftest.py puts tests/unit on sys.path); the
fixtures ``start_writer`` and ``backup_dir`` are in tests/unit/conftest.py. The core is imported
from ``module_utils/``, exactly as the on-host runner ships it: no Ansible. The app-like writer
and the demo database come from ``tools/`` (``app_writer.py``, ``demo_db.py``): each writer
transaction inserts a row into ``app_events`` and bumps ``app_counter.n``, so every consistent
copy has ``n == count(*) == max(seq)``. (tests/conftest.py puts module_utils/ and tools/ on sys.path.)
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import app_writer
import demo_db
import sqlite_fleet as core

CORE_DIR = Path(__file__).resolve().parents[2] / "module_utils"

LOCK_FILE_ONLY = frozenset({core.LOCK_FILE})
create_demo_db = demo_db.create_demo_db


def make_app_db(path: Path | str, journal_mode: str = "wal", rows: int = 0, payload_bytes: int = 64,
                user_version: int = 0) -> Path:
    """A database with the writer's app tables and ``rows`` events committed (checkpointed)."""
    path = Path(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode=%s" % journal_mode).fetchone()[0] == journal_mode
        conn.execute("PRAGMA user_version=%d" % user_version)
        conn.execute("BEGIN")
        for statement in app_writer.APP_TABLES_SQL:
            conn.execute(statement)
        for seq in range(1, rows + 1):
            conn.execute("INSERT INTO app_events (seq, at, payload) VALUES (?, ?, randomblob(?))",
                         (seq, time.time(), payload_bytes))
        conn.execute("UPDATE app_counter SET n = ? WHERE id = 1", (rows,))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path


def open_backup(path: Path | str) -> sqlite3.Connection:
    """A finished backup, opened the way the core opens them: read-only and immutable."""
    return core.open_readonly(str(path), immutable=True)


def backup_invariant(path: Path | str) -> tuple[bool, int, str]:
    """(ok, n, detail) of a finished backup (opened immutable: nothing appears beside it)."""
    return app_writer.check_invariant(path, immutable=True)


def committed(writer: Any) -> int:
    """The writer's committed count as published (after each COMMIT): a lower bound."""
    return int(writer.status()["committed"])


def stop_writer(writer: Any) -> int:
    """Stop the writer, insist that it ran cleanly, return its final committed count."""
    final = writer.stop()
    assert final["returncode"] == 0, final
    assert final["errors"] == 0, final
    return int(final["committed"])


def core_subprocess_env() -> dict[str, str]:
    """Environment for a helper process that imports the core."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(CORE_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def folder_files(folder: Path | str) -> set[str]:
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


UTC = dt.timezone.utc
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_no_side_files(folder: Path) -> None:
    leftovers = sorted(f for f in folder_files(folder) if f.endswith(SIDE_SUFFIXES))
    assert leftovers == [], "side files left in %s: %s" % (folder, leftovers)


def row_count(db: Path | str, table: str = "app_events") -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    finally:
        conn.close()


def backup_count(path: Path | str, table: str = "app_events") -> int:
    conn = open_backup(path)
    try:
        return conn.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    finally:
        conn.close()


def wal_holding_connection(db: Path, rows: int) -> sqlite3.Connection:
    """Commit ``rows`` more events with auto-checkpoint off and keep the connection open:
    the rows are committed, but only in the -wal (closing would checkpoint them)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    start = conn.execute("SELECT n FROM app_counter").fetchone()[0]
    for seq in range(start + 1, start + rows + 1):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO app_events (seq, at, payload) VALUES (?, 0, x'00')", (seq,))
        conn.execute("UPDATE app_counter SET n = n + 1")
        conn.execute("COMMIT")
    return conn


def main_file_only_count(db: Path, scratch: Path) -> int:
    """What a plain copy of only the .db file holds."""
    scratch.mkdir(exist_ok=True)
    copy = scratch / "plain-copy.db"
    shutil.copyfile(db, copy)
    return row_count(copy)
