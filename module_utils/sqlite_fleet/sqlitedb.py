# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite connections, checks, facts and checkpoints.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sqlite3
import stat
from collections.abc import Mapping
from typing import Any

from .errors import KIND_BAD_INPUT, KIND_CORRUPT, KIND_IO, KIND_LOCKED, KIND_NO_SPACE, BackupError
from .inputs import check_database_file, quote_identifier, validate_abs_path, validate_busy_timeout
from .names import iso_utc

INTEGRITY_LEVELS = ("quick", "full")


CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")


# --------------------------------------------------------------------------- sqlite helpers

def open_readonly(path: str, immutable: bool = False, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """Read-only connection; ``immutable`` for finished backups (no -wal/-shm, no locks)."""
    from urllib.parse import quote

    uri = "file:%s?mode=ro%s" % (quote(path), "&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000.0)
    conn.execute("PRAGMA busy_timeout=%d" % int(busy_timeout_ms))
    return conn


def tune_for_checks(conn: sqlite3.Connection, database_bytes: int) -> None:
    """A larger page cache and mmap make integrity_check several times faster."""
    cache_kib = min(max(database_bytes // 1024, 2048), 256 * 1024)
    conn.execute("PRAGMA cache_size=-%d" % cache_kib)
    conn.execute("PRAGMA mmap_size=%d" % min(database_bytes + (1 << 20), 1 << 30))


def user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY name"
    ).fetchall()
    return [row[0] for row in rows]


def table_row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    counts = {}
    for table in user_tables(conn):
        try:
            query = "SELECT count(*) FROM %s" % quote_identifier(table)  # noqa: S608 - identifier quoted
            counts[table] = conn.execute(query).fetchone()[0]
        except sqlite3.OperationalError as exc:
            # A virtual table whose module this SQLite lacks (fts5 on an old build...).
            if "no such module" not in str(exc):
                raise
    return counts


def run_integrity_check(conn: sqlite3.Connection, level: str, max_errors: int = 20) -> list[str]:
    """[] when the database is sound, else the first problems SQLite reports."""
    pragma = "quick_check" if level == "quick" else "integrity_check"
    rows = [row[0] for row in conn.execute("PRAGMA %s(%d)" % (pragma, max_errors)).fetchall()]
    return [] if rows == ["ok"] else rows


def run_foreign_key_check(conn: sqlite3.Connection, max_rows: int = 20) -> list[str]:
    problems = []
    for row in conn.execute("PRAGMA foreign_key_check"):
        problems.append("table %s rowid %s references missing %s (constraint %s)" % tuple(row))
        if len(problems) >= max_rows:
            problems.append("... more foreign key violations")
            break
    return problems


def pragma_value(conn: sqlite3.Connection, name: str) -> Any:
    row = conn.execute("PRAGMA %s" % name).fetchone()
    return row[0] if row else None


def sqlite_version_tuple(version: str = sqlite3.sqlite_version) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


def has_wal_reset_bug(version: str = sqlite3.sqlite_version) -> bool:
    """SQLite's WAL-reset bug: fixed in 3.51.3, backported to 3.44.6 and 3.50.7."""
    v = sqlite_version_tuple(version)
    if v < (3, 7, 0):
        return False
    if v < (3, 44, 6):
        return True
    if (3, 45, 0) <= v < (3, 50, 7):
        return True
    return (3, 51, 0) <= v < (3, 51, 3)


def wal_reset_warning(version: str = sqlite3.sqlite_version) -> str | None:
    if not has_wal_reset_bug(version):
        return None
    return (
        "this host's SQLite %s may carry the WAL-reset bug (fixed in 3.51.3, backported to 3.44.6 and "
        "3.50.7): a checkpoint from a second process while the app writes is one of its conditions; "
        "backups do not need a checkpoint, so leave it off unless you must" % version
    )


# --------------------------------------------------------------------------- facts

def database_facts(db_path: str, count_rows: bool = True, busy_timeout_ms: int = 5000) -> dict[str, Any]:
    """Size, page layout, journal mode, WAL size, tables and row counts, read-only.

    A WAL database with no ``-shm`` and an absent or empty ``-wal`` has no connection open and
    holds everything in its main file: it is then read as immutable, so that looking at it
    creates no ``-wal``/``-shm``. Otherwise it is read like any reader reads it (which may
    update the ``-shm`` index, never the data).
    """
    db_path = validate_abs_path(db_path, "database path")
    validate_busy_timeout(busy_timeout_ms)
    st = check_database_file(db_path)
    wal_path = db_path + "-wal"
    existed = side_files_present(db_path)
    wal_bytes = os.path.getsize(wal_path) if existed["-wal"] else 0
    with open(db_path, "rb") as handle:
        wal_header = handle.read(20)[18:20] == b"\x02\x02"
    immutable = wal_header and wal_bytes == 0 and not existed["-shm"]
    conn = open_readonly(db_path, immutable=immutable, busy_timeout_ms=busy_timeout_ms)
    try:
        conn.execute("BEGIN")
        facts = {
            "path": db_path,
            "size_bytes": st.st_size,
            "wal_bytes": wal_bytes,
            "sqlite_version": sqlite3.sqlite_version,
            "page_size": pragma_value(conn, "page_size"),
            "page_count": pragma_value(conn, "page_count"),
            "freelist_count": pragma_value(conn, "freelist_count"),
            # read as immutable, SQLite reports "delete": the header says WAL
            "journal_mode": "wal" if immutable else pragma_value(conn, "journal_mode"),
            "user_version": pragma_value(conn, "user_version"),
            "application_id": pragma_value(conn, "application_id"),
            "encoding": pragma_value(conn, "encoding"),
            "auto_vacuum": pragma_value(conn, "auto_vacuum"),
            "tables": table_row_counts(conn) if count_rows else {t: None for t in user_tables(conn)},
            "mtime": iso_utc(_dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc)),
            "owner_uid": st.st_uid,
            "owner_gid": st.st_gid,
        }
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise sqlite_failure(exc, "reading facts of %s" % db_path) from None
    finally:
        conn.close()
        give_side_files_to_owner(db_path, existed, st)
    facts["table_count"] = len(facts["tables"])
    facts["wal_reset_bug"] = has_wal_reset_bug()
    return facts


def sqlite_failure(exc: sqlite3.Error, doing: str) -> BackupError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return BackupError("database is locked while %s: %s (busy timeout exceeded)" % (doing, text), KIND_LOCKED)
    if "disk is full" in text:  # SQLITE_FULL: the folder filled up during the copy
        return BackupError("no space left while %s: %s" % (doing, text), KIND_NO_SPACE)
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return BackupError("database is corrupt while %s: %s" % (doing, text), KIND_CORRUPT)
    return BackupError("SQLite error while %s: %s" % (doing, text), KIND_IO)


def side_files_present(db_path: str) -> dict[str, bool]:
    return {suffix: os.path.exists(db_path + suffix) for suffix in ("-wal", "-shm")}


# Invariant: a -wal/-shm that our own reader created carries the database's owner and mode
# (never the umask's 0644 beside a 0600 database: the WAL holds the newest rows).
def give_side_files_to_owner(db_path: str, existed: Mapping[str, bool], db_stat: os.stat_result) -> None:
    """A read-only reader of a WAL database may create ``-wal``/``-shm``: with the process's
    umask (world-readable beside a private database) and, as root, owned by root (the app,
    running as its own user, could no longer write). Give them the database's mode and owner."""
    for suffix, was_there in existed.items():
        path = db_path + suffix
        if was_there:
            continue
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (db_stat.st_uid, db_stat.st_gid):
                os.chown(path, db_stat.st_uid, db_stat.st_gid, follow_symlinks=False)
            if stat.S_IMODE(st.st_mode) != stat.S_IMODE(db_stat.st_mode):
                os.chmod(path, stat.S_IMODE(db_stat.st_mode))


def checkpoint(db_path: str, mode: str = "PASSIVE", busy_timeout_ms: int = 5000,
               check_mode: bool = False) -> dict[str, Any]:
    """``PRAGMA wal_checkpoint(mode)``; nothing to do on a database not in WAL mode."""
    db_path = validate_abs_path(db_path, "database path")
    validate_busy_timeout(busy_timeout_ms)
    mode = str(mode).upper()
    if mode not in CHECKPOINT_MODES:
        raise BackupError("checkpoint mode must be one of %s" % ", ".join(CHECKPOINT_MODES), KIND_BAD_INPUT)
    st = check_database_file(db_path)
    existed = side_files_present(db_path)
    result: dict[str, Any] = {"path": db_path, "mode": mode, "warning": wal_reset_warning()}
    try:
        probe = open_readonly(db_path, busy_timeout_ms=busy_timeout_ms)
        try:
            journal_mode = pragma_value(probe, "journal_mode")
        finally:
            probe.close()
        result["journal_mode"] = journal_mode
        if journal_mode != "wal":
            result.update(changed=False, skipped=True, busy=0, log=0, checkpointed=0,
                          msg="database is not in WAL mode (%s): no checkpoint needed" % journal_mode)
            return result
        wal_bytes = os.path.getsize(db_path + "-wal") if os.path.exists(db_path + "-wal") else 0
        if check_mode:
            result.update(changed=wal_bytes > 0, skipped=False, busy=None, log=None, checkpointed=None,
                          wal_bytes_before=wal_bytes, msg="would run wal_checkpoint(%s)" % mode)
            return result
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=busy_timeout_ms / 1000.0)
        try:
            conn.execute("PRAGMA busy_timeout=%d" % int(busy_timeout_ms))
            busy, log, done = conn.execute("PRAGMA wal_checkpoint(%s)" % mode).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise sqlite_failure(exc, "checkpointing %s" % db_path) from None
    finally:
        give_side_files_to_owner(db_path, existed, st)
    result.update(changed=done > 0 or mode == "TRUNCATE" and wal_bytes > 0, skipped=False, busy=busy,
                  log=log, checkpointed=done, wal_bytes_before=wal_bytes,
                  msg="wal_checkpoint(%s): busy=%d log=%d checkpointed=%d" % (mode, busy, log, done))
    return result
