# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Taking a backup: the copy (pinned copy, backup API or VACUUM INTO), its checks and its commit.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from .catalog import check_sidecars, commit_backup, core_sha256, remove_unfinished
from .errors import KIND_BAD_INPUT, KIND_IO, KIND_NO_SPACE, BackupError
from .files import (
    BACKUP_NICE,
    COPY_STEP_BYTES,
    Background,
    check_free_space,
    check_writable_dir,
    chown_if_needed,
    ensure_private_dir,
    folder_lock,
    fsync_and_hash,
    fsync_path,
    required_space,
    resolve_owner,
    run_at_priority,
)
from .inputs import (
    check_database_file,
    validate_abs_path,
    validate_busy_timeout,
    validate_label,
    validate_lock_timeout,
    validate_name,
)
from .names import (
    CORE_VERSION,
    FORMAT_VERSION,
    TMP_PREFIX,
    TOOL_NAME,
    backup_filename,
    iso_utc,
    parse_backup_filename,
    utcnow,
)
from .pinned import WAL_INDEX_HEADER, SnapshotNotPinned, begin_pinned_read, pinned_file_copy
from .sqlitedb import (
    INTEGRITY_LEVELS,
    give_side_files_to_owner,
    open_readonly,
    pragma_value,
    run_foreign_key_check,
    run_integrity_check,
    side_files_present,
    sqlite_failure,
    table_row_counts,
    tune_for_checks,
)

METHODS = ("pinned_copy", "backup_api", "vacuum_into")


# --------------------------------------------------------------------------- snapshot

def snapshot(
    db_path: str,
    backup_dir: str,
    name: str,
    *,
    label: str | None = None,
    method: str = "pinned_copy",
    integrity: str = "quick",
    busy_timeout_ms: int = 5000,
    lock_timeout: float = 600.0,
    owner: Any = None,
    group: Any = None,
    source_host: str | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
    check_mode: bool = False,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """Take one consistent backup of a live database, following the commit protocol.

    Returns a dict with ``changed``, ``backup`` (path), ``file``, ``manifest``, ``verified``,
    ``problems`` (integrity problems of the source, if any), ``removed_unfinished``.
    A source that fails its check is still backed up: ``verified`` is then False and the
    caller must fail loudly.
    """
    db_path = validate_abs_path(db_path, "database path")
    backup_dir = validate_abs_path(backup_dir, "backup folder")
    name = validate_name(name)
    label = validate_label(label)
    if method not in METHODS:
        raise BackupError("method must be one of %s" % ", ".join(METHODS), KIND_BAD_INPUT)
    if integrity not in INTEGRITY_LEVELS:
        raise BackupError("integrity must be one of %s" % ", ".join(INTEGRITY_LEVELS), KIND_BAD_INPUT)
    validate_busy_timeout(busy_timeout_ms)
    validate_lock_timeout(lock_timeout)
    db_stat = check_database_file(db_path)
    if os.path.dirname(db_path) == backup_dir and parse_backup_filename(os.path.basename(db_path)):
        raise BackupError("the database %s is itself a backup in %s" % (db_path, backup_dir), KIND_BAD_INPUT)
    file_owner = resolve_owner(owner, group, db_stat)
    wal_path = db_path + "-wal"
    source_bytes = db_stat.st_size + (os.path.getsize(wal_path) if os.path.exists(wal_path) else 0)

    if check_mode:
        ensure_private_dir(backup_dir, file_owner, check_mode=True)
        planned = backup_filename(name, now or utcnow())
        return {"changed": True, "backup": os.path.join(backup_dir, planned), "file": planned,
                "manifest": None, "verified": None, "problems": [], "removed_unfinished": [],
                "msg": "would snapshot %s (%d bytes with its WAL) into %s" % (db_path, source_bytes, backup_dir)}

    ensure_private_dir(backup_dir, file_owner)
    check_writable_dir(backup_dir)
    with folder_lock(backup_dir, timeout=lock_timeout):
        removed = remove_unfinished(backup_dir)
        check_free_space(backup_dir, required_space(source_bytes), "a snapshot of %s" % db_path)
        tmp_path = os.path.join(backup_dir, "%s%s.%d.%s.db" % (TMP_PREFIX, name, os.getpid(), secrets.token_hex(4)))
        try:
            # A WAL database's writers never wait for us: yield the CPU to the app then. With a
            # rollback journal they wait for our shared lock, so the copy must end soonest.
            copy, checked, digest = run_at_priority(
                BACKUP_NICE if is_wal_file(db_path) else 0, copy_and_check,
                db_path, tmp_path, method, busy_timeout_ms, db_stat, integrity, file_owner)
            size = os.path.getsize(tmp_path)
            created = copy["started"]
            manifest = {
                "format_version": FORMAT_VERSION,
                "tool": {"name": TOOL_NAME, "version": CORE_VERSION, "core_sha256": core_sha256()},
                "name": name,
                "file": None,  # set once the final name is known
                "source": {"host": source_host or socket.gethostname(), "path": db_path,
                           "journal_mode": copy["journal_mode"], "size_bytes": source_bytes},
                "created": iso_utc(created),
                "label": label,
                "method": copy["method"],
                "sqlite_version": sqlite3.sqlite_version,
                "page_size": checked["page_size"],
                "page_count": checked["page_count"],
                "journal_mode": "delete",
                "user_version": checked["user_version"],
                "application_id": checked["application_id"],
                "tables": checked["tables"],
                "integrity": {"check": integrity, "result": "ok" if not checked["integrity_problems"] else "failed",
                              "problems": checked["integrity_problems"],
                              "foreign_key_problems": checked["foreign_key_problems"]},
                "verified": not checked["integrity_problems"],
                "sha256": digest,
                "size_bytes": size,
                "duration_seconds": None,
                "copy_seconds": round(copy["copy_seconds"], 6),
                "writers_held_off_seconds": round(copy["held_off_seconds"], 6),
            }
            if extra_manifest:
                manifest.update({k: v for k, v in extra_manifest.items() if k not in manifest})
            final_path = commit_backup(tmp_path, backup_dir, name, created, manifest, digest, file_owner,
                                       copy["started_monotonic"])
            check_sidecars(final_path, digest)
        finally:
            for leftover in (tmp_path, tmp_path + "-journal", tmp_path + "-wal", tmp_path + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
    problems = checked["integrity_problems"]
    return {
        "changed": True,
        "backup": final_path,
        "file": os.path.basename(final_path),
        "manifest": manifest,
        "verified": manifest["verified"],
        "problems": problems,
        "removed_unfinished": removed,
        "msg": ("backup %s taken and verified" % os.path.basename(final_path)) if not problems else
               ("source database %s FAILED its %s check; backed up as %s but flagged unverified: %s"
                % (db_path, integrity, os.path.basename(final_path), "; ".join(problems[:5]))),
    }


def copy_and_check(db_path: str, tmp_path: str, method: str, busy_timeout_ms: int, db_stat: os.stat_result,
                   integrity: str, file_owner: tuple[int, int]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Copy, check, fsync and hash a snapshot under its temporary name: (copy, checked, sha256)."""
    copy = copy_database(db_path, tmp_path, method, busy_timeout_ms, db_stat, hash_copy=True)
    os.chmod(tmp_path, 0o600)
    chown_if_needed(tmp_path, file_owner)
    # A pinned copy was hashed as it was written (its bytes are final, and in rollback-journal
    # mode already); the other copies once switched to journal_mode=DELETE. The fsync, and
    # the hash when still to do, run in a thread while SQLite checks the copy (all release the GIL).
    digest = copy.pop("sha256")
    hashed = file_identity(tmp_path) if digest else None
    finishing: list[Background] = []
    final_work = fsync_path if digest else fsync_and_hash
    try:
        checked = inspect_copy(tmp_path, integrity, read_only=bool(digest),
                               on_final=lambda: finishing.append(Background(final_work, tmp_path)))
    finally:
        for job in finishing:
            job.wait()
    result = finishing[0].result() if finishing else final_work(tmp_path)
    if not digest:
        digest = result
    elif file_identity(tmp_path) != hashed:  # something wrote to the copy after all: hash it again
        digest = fsync_and_hash(tmp_path)
    return copy, checked, digest


def file_identity(path: str) -> tuple[int, int, int]:
    """Size, modification time and change time (ns): what a write to the file changes."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns


def is_wal_file(db_path: str) -> bool:
    """True when the database file's header says WAL mode (bytes 18 and 19 are 2)."""
    with open(db_path, "rb") as handle:
        return handle.read(20)[18:20] == b"\x02\x02"


FLUSH_TARGET_SECONDS = 0.03
FLUSH_MIN_BYTES = 1 << 20
FLUSH_MAX_BYTES = 64 << 20
# While the app commits, the copy pauses after each flush for this share of the flush's
# time, so the app's own fsyncs find the disk free between our flushes.
YIELD_FACTOR = 2.0
# Source pages are read through mmap up to this size (a read() per page otherwise).
COPY_MMAP_BYTES = 1 << 30


class StepFlusher:
    """Progress callback of a stepped backup: flush the copy's new pages as the copy goes.

    A single fsync of a whole fresh copy at the end stalls every other fsync on the file
    system (the app's commits) for as long as the disk needs to write it all. Flushing in
    pieces that each take about FLUSH_TARGET_SECONDS keeps the app's commits that short of
    a wait, on a fast SSD (few, big flushes) as on an SD card (many small ones). The copy
    waits for each flush: measured with an app-like writer, that costs the app fewer
    commits than flushing in a thread beside the copy, for a slightly longer snapshot.

    ``activity``, when given, returns something that changes whenever the app commits (the
    wal-index header): when it changed since the last flush, the copy then pauses for
    YIELD_FACTOR times the flush's duration. An idle database is copied at full speed.
    """

    def __init__(self, path: str, flush: bool = True, step_bytes: int = COPY_STEP_BYTES,
                 activity: Any = None) -> None:
        self.path = path
        self.flush = flush
        self.step_bytes = step_bytes
        self.activity = activity
        self.steps = 0
        self.flushes = 0
        self.yielded_seconds = 0.0
        self.budget = FLUSH_MIN_BYTES
        self._pending = 0
        self._last_activity = activity() if activity is not None else None
        self._fd: int | None = None
        self._sync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync

    def __call__(self, status: int, remaining: int, total: int) -> None:
        self.steps += 1
        self._pending += self.step_bytes
        if remaining <= 0 or not self.flush or self._pending < self.budget:
            return  # after the last step the caller's own fsync follows
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        started = time.monotonic()
        self._sync(self._fd)
        seconds = time.monotonic() - started
        self.flushes += 1
        rate = self._pending / seconds if seconds > 0 else float("inf")
        self.budget = int(min(max(rate * FLUSH_TARGET_SECONDS, FLUSH_MIN_BYTES), FLUSH_MAX_BYTES))
        self._pending = 0
        if self.activity is not None:
            now = self.activity()
            if now != self._last_activity:
                self._last_activity = now
                time.sleep(seconds * YIELD_FACTOR)
                self.yielded_seconds += seconds * YIELD_FACTOR

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def copy_database(db_path: str, tmp_path: str, method: str, busy_timeout_ms: int,
                  db_stat: os.stat_result, hash_copy: bool = False) -> dict[str, Any]:
    """Copy the live database into ``tmp_path`` under one read transaction.

    ``pinned_copy`` copies the file's bytes while the read transaction pins the snapshot,
    then lays that snapshot's WAL frames over them (see :func:`pinned_file_copy`); when the
    snapshot cannot be pinned down exactly, the same transaction copies with the backup API
    instead, and the result says so (``method``). With ``hash_copy`` a pinned copy is hashed
    as it is written: ``sha256`` in the result (None for the other methods).
    """
    existed = side_files_present(db_path)
    source = None
    target = None
    flusher = None
    used = method
    digest = None
    held_fds: list[int] = []  # closed only after ``source``: see begin_pinned_read
    try:
        try:
            source = open_readonly(db_path, busy_timeout_ms=busy_timeout_ms)
            journal_mode = pragma_value(source, "journal_mode")
            wal_index = None
            if method == "pinned_copy" and journal_mode == "wal":
                wal_index = begin_pinned_read(source, db_path, held_fds)
                if wal_index is None:
                    used = "backup_api"
            if method != "vacuum_into" and not source.in_transaction:
                # The first read takes the snapshot (WAL) or the shared lock (rollback
                # journal), waiting up to the busy timeout for a writer to let go; the copy
                # then runs inside this one read transaction. (VACUUM INTO opens its own.)
                source.execute("BEGIN")
                source.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise sqlite_failure(exc, "starting a read transaction on %s" % db_path) from None
        started = utcnow()
        started_monotonic = time.monotonic()
        page_size = pragma_value(source, "page_size") or 4096
        # In WAL mode what the copy wrote goes to disk in pieces as it goes (StepFlusher), so
        # the final fsync has little left to write and the app's commits (each an fsync of its
        # -wal) never queue behind the whole copy. With a rollback journal our shared lock
        # holds the app's writers off until the copy ends: no flushing then, to end it sooner.
        pages_per_step = max(1, COPY_STEP_BYTES // page_size)
        # The app's commits show in the wal-index header: the flusher yields to them.
        activity = None
        if wal_index is not None:
            activity = functools.partial(os.pread, wal_index["shm_fd"], WAL_INDEX_HEADER.size, 0)
        flusher = StepFlusher(tmp_path, flush=journal_mode == "wal", step_bytes=pages_per_step * page_size,
                              activity=activity)
        try:
            if used == "pinned_copy":
                try:
                    digest = pinned_file_copy(source, db_path, tmp_path, wal_index, held_fds, flusher, hash_copy)
                except SnapshotNotPinned:
                    # pinned_file_copy removed its file: the backup API starts a new one.
                    used = "backup_api"
                    flusher.close()
                    flusher = StepFlusher(tmp_path, flush=journal_mode == "wal",
                                          step_bytes=pages_per_step * page_size, activity=activity)
            if used == "vacuum_into":
                source.execute("VACUUM INTO ?", (tmp_path,))
            elif used == "backup_api":
                if COPY_MMAP_BYTES:
                    # Read the source through mmap (SQLite keeps a mapped WAL database consistent).
                    source.execute("PRAGMA mmap_size=%d" % min(db_stat.st_size + (1 << 20), COPY_MMAP_BYTES))
                target = sqlite3.connect(tmp_path, isolation_level=None)
                target.execute("PRAGMA synchronous=OFF")
                # Steps of COPY_STEP_BYTES, all inside the read transaction opened above: the
                # snapshot cannot move, so the copy never restarts (a backup that opens a read
                # transaction per step restarts on every write of the app).
                source.backup(target, pages=pages_per_step, progress=flusher)
                target.close()
                target = None
        except sqlite3.Error as exc:
            raise sqlite_failure(exc, "copying %s" % db_path) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BackupError("no space left while copying %s: %s" % (db_path, exc), KIND_NO_SPACE) from None
            raise BackupError("copying %s failed: %s" % (db_path, exc), KIND_IO) from None
        finally:
            flusher.close()
            if source.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    source.execute("COMMIT")
        copy_seconds = time.monotonic() - started_monotonic
    finally:
        if target is not None:
            target.close()
        if source is not None:
            source.close()
        for fd in held_fds:
            os.close(fd)
        give_side_files_to_owner(db_path, existed, db_stat)
    return {
        "started": started,
        "started_monotonic": started_monotonic,
        "journal_mode": journal_mode,
        "method": used,
        "sha256": digest,
        "copy_seconds": copy_seconds,
        "steps": flusher.steps if flusher is not None else 1,
        "flushes": flusher.flushes if flusher is not None else 0,
        "yielded_seconds": flusher.yielded_seconds if flusher is not None else 0.0,
        # In WAL mode readers never block writers; with a rollback journal our shared
        # lock held every writer off for the whole copy.
        "held_off_seconds": 0.0 if journal_mode == "wal" else copy_seconds,
    }


# --------------------------------------------------------------------------- checking a copy

def inspect_copy(tmp_path: str, integrity: str, on_final: Any = None, read_only: bool = False) -> dict[str, Any]:
    """Switch the fresh copy to journal_mode=DELETE and check it (it is still private).

    ``on_final`` is called once the switch is done: from then on nothing writes the file.
    ``read_only``: the copy is final already (a pinned copy, hashed): it is opened read-only
    and immutable, so that the check cannot write it.
    """
    conn = open_readonly(tmp_path, immutable=True) if read_only else sqlite3.connect(tmp_path, isolation_level=None)
    try:
        if read_only:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        else:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if mode != "delete":
            raise BackupError("could not switch the copy to journal_mode=DELETE (got %s)" % mode, KIND_IO)
        if on_final is not None:
            on_final()
        size = os.path.getsize(tmp_path)
        tune_for_checks(conn, size)
        # The row counts run on a connection of their own beside the check (SQLite lets go
        # of the GIL): on two cores the check, the counts and the sha256 run side by side.
        counting = Background(count_rows_in, tmp_path, size)
        try:
            integrity_problems = run_integrity_check(conn, integrity)
            foreign_key_problems = run_foreign_key_check(conn) if not integrity_problems else []
        finally:
            counting.wait()
        try:
            tables = counting.result()
        except sqlite3.DatabaseError as exc:
            integrity_problems.append("row count failed: %s" % exc)
            tables = {}
        return {
            "integrity_problems": integrity_problems,
            "foreign_key_problems": foreign_key_problems,
            "tables": tables,
            "page_size": pragma_value(conn, "page_size"),
            "page_count": pragma_value(conn, "page_count"),
            "user_version": pragma_value(conn, "user_version"),
            "application_id": pragma_value(conn, "application_id"),
        }
    except sqlite3.DatabaseError as exc:
        return {"integrity_problems": ["copy cannot be read: %s" % exc], "foreign_key_problems": [],
                "tables": {}, "page_size": None, "page_count": None, "user_version": None,
                "application_id": None}
    finally:
        conn.close()


def count_rows_in(path: str, size: int) -> dict[str, int]:
    """Row count of every table of a finished (or final, still private) database file."""
    conn = open_readonly(path, immutable=True)
    try:
        tune_for_checks(conn, size)
        return table_row_counts(conn)
    finally:
        conn.close()
