# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verifying finished backups: checksum, integrity, foreign keys and row counts against the manifest.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .catalog import list_backups, read_manifest, read_sha256_sidecar
from .errors import KIND_BAD_INPUT, KIND_CORRUPT, BackupError
from .files import Background, sha256_file
from .inputs import SQLITE_HEADER, validate_abs_path
from .names import parse_backup_filename
from .sqlitedb import (
    INTEGRITY_LEVELS,
    open_readonly,
    pragma_value,
    run_foreign_key_check,
    run_integrity_check,
    table_row_counts,
    tune_for_checks,
)


def verify_backup(backup_path: str, integrity: str = "full", expected_sha256: str | None = None,
                  check_rows: bool = True) -> dict[str, Any]:
    """Check a finished backup against its sidecars; never writes anything.

    Returns ``ok``, ``checks`` (name -> "ok" or a reason), ``problems``, ``manifest``, ``sha256``.
    ``expected_sha256`` is the checksum recorded at the first hop (e.g. the host's manifest).
    """
    backup_path = validate_abs_path(backup_path, "backup path")
    if integrity not in INTEGRITY_LEVELS:
        raise BackupError("integrity must be one of %s" % ", ".join(INTEGRITY_LEVELS), KIND_BAD_INPUT)
    base = os.path.basename(backup_path)
    if parse_backup_filename(base) is None:
        raise BackupError("%s is not named like a backup (<name>_backup_<YYYYMMDD>_<HHMMSS>.db)" % base,
                          KIND_BAD_INPUT)
    if os.path.islink(backup_path):
        raise BackupError("%s is a symbolic link: refusing to follow it" % backup_path, KIND_BAD_INPUT)
    if not os.path.isfile(backup_path):
        raise BackupError("backup %s does not exist" % backup_path, KIND_BAD_INPUT)
    started = time.monotonic()
    # The sha256 is computed in a thread while SQLite checks the file (both release the GIL).
    hashing = Background(sha256_file, backup_path)
    try:
        return _verify_backup(backup_path, integrity, expected_sha256, check_rows, hashing, started)
    finally:
        hashing.wait()


def _verify_backup(backup_path: str, integrity: str, expected_sha256: str | None, check_rows: bool,
                   hashing: Background, started: float) -> dict[str, Any]:
    base = os.path.basename(backup_path)
    checks: dict[str, str] = {}
    problems: list[str] = []

    def fail(check: str, why: str) -> None:
        checks[check] = why
        problems.append("%s: %s" % (check, why))

    manifest: dict[str, Any] | None = None
    try:
        manifest = read_manifest(backup_path)
        checks["manifest"] = "ok"
    except BackupError as exc:
        fail("manifest", str(exc))
    try:
        sidecar = read_sha256_sidecar(backup_path)
    except BackupError as exc:
        sidecar = None
        fail("checksum_file", str(exc))
    database_results = check_backup_database(backup_path, integrity, manifest, check_rows)
    actual = hashing.result()
    wanted = [("checksum file", sidecar)]
    if manifest:
        wanted.append(("manifest", manifest["sha256"]))
    if expected_sha256:
        wanted.append(("first hop", expected_sha256))
    mismatched = ["%s says %s" % (who, value[:12]) for who, value in wanted if value and value != actual]
    if mismatched:
        fail("checksum", "sha256 of the file is %s but %s" % (actual[:12], ", ".join(mismatched)))
    elif sidecar is None and not manifest:
        fail("checksum", "nothing to compare the sha256 with")
    else:
        checks["checksum"] = "ok"
    if manifest and os.path.getsize(backup_path) != manifest["size_bytes"]:
        fail("size", "file is %d bytes, manifest says %d" % (os.path.getsize(backup_path), manifest["size_bytes"]))
    if manifest and not manifest["verified"]:
        fail("source", "the backup was flagged unverified when taken (source failed its check)")

    for check, why in database_results:
        if why is None:
            checks[check] = "ok"
        else:
            fail(check, why)
    return {
        "ok": not problems,
        "file": base,
        "path": backup_path,
        "checks": checks,
        "problems": problems,
        "manifest": manifest,
        "sha256": actual,
        "integrity": integrity,
        "duration_seconds": round(time.monotonic() - started, 6),
    }


def check_backup_database(backup_path: str, integrity: str, manifest: Mapping[str, Any] | None,
                          check_rows: bool) -> list[tuple[str, str | None]]:
    """The SQLite checks of :func:`verify_backup`, in order: (check, None when ok or why not)."""
    results: list[tuple[str, str | None]] = []

    def fail(check: str, why: str) -> None:
        results.append((check, why))

    try:
        with open(backup_path, "rb") as handle:
            header = handle.read(100)
        if header[:16] != SQLITE_HEADER:
            raise sqlite3.DatabaseError("file is not a database (bad header)")
        if header[18:20] != b"\x01\x01":
            fail("journal_mode", "file header is not in rollback-journal (DELETE) mode")
        conn = open_readonly(backup_path, immutable=True)
        try:
            tune_for_checks(conn, os.path.getsize(backup_path))
            integrity_problems = run_integrity_check(conn, integrity)
            if integrity_problems:
                fail("integrity", "; ".join(integrity_problems[:5]))
            else:
                results.append(("integrity", None))
                fk = run_foreign_key_check(conn)
                if fk:
                    fail("foreign_keys", "; ".join(fk[:5]))
                else:
                    results.append(("foreign_keys", None))
                if check_rows and manifest:
                    counts = table_row_counts(conn)
                    diff = row_count_differences(manifest["tables"], counts)
                    if diff:
                        fail("row_counts", "; ".join(diff[:10]))
                    else:
                        results.append(("row_counts", None))
                if manifest and manifest.get("page_count") is not None:
                    pages = pragma_value(conn, "page_count")
                    if pages != manifest["page_count"]:
                        fail("page_count", "file has %s pages, manifest says %s" % (pages, manifest["page_count"]))
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        fail("integrity", "cannot be read as a database: %s" % exc)
    return results


def row_count_differences(expected: Mapping[str, Any], actual: Mapping[str, int]) -> list[str]:
    diffs = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            diffs.append("table %s is missing" % table)
        elif table not in expected:
            diffs.append("table %s is not in the manifest" % table)
        elif expected[table] is not None and expected[table] != actual[table]:
            diffs.append("table %s has %d rows, manifest says %d" % (table, actual[table], expected[table]))
    return diffs


def unverifiable_result(path: str, why: str, integrity: str) -> dict[str, Any]:
    """A :func:`verify_backup`-shaped result for a file that could not be verified at all."""
    return {"ok": False, "file": os.path.basename(path), "path": path, "checks": {"manifest": why},
            "problems": ["manifest: %s" % why], "manifest": None, "sha256": None, "integrity": integrity,
            "duration_seconds": 0.0}


def backups_to_verify(backup_dir: str, name: str | None, select: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The backups to verify (newest first; ``latest``: the newest of each name) and the broken files
    to report, from the folder listing. No backup at all is a failed verification (corrupt)."""
    if not os.path.isdir(backup_dir):
        raise BackupError("backup folder %s does not exist" % backup_dir, KIND_BAD_INPUT)
    listing = list_backups(backup_dir, name)
    backups = listing["backups"]
    if select == "latest":
        newest: dict[str, Any] = {}
        for backup in backups:  # newest first
            newest.setdefault(backup["name"], backup)
        backups = [b for b in backups if newest[b["name"]] is b]
    if not backups:
        message = "backup folder %s holds no backup%s" % (backup_dir, " of %s" % name if name else "")
        if listing["invalid"]:
            message += "; files named like backups with a missing or broken manifest: %s" % ", ".join(
                item["file"] for item in listing["invalid"])
        raise BackupError(message, KIND_CORRUPT)
    return [b["path"] for b in backups], listing["invalid"]


def verify_listed_backup(path: str, integrity: str, check_rows: bool = True) -> dict[str, Any]:
    """:func:`verify_backup` of a listed backup; one removed or unreadable since the listing is a failed result."""
    try:
        return verify_backup(path, integrity, None, check_rows)
    except BackupError as exc:  # removed by a prune between the listing and now, unreadable...
        return unverifiable_result(path, str(exc), integrity)


def verify_summary(results: Sequence[Mapping[str, Any]]) -> str:
    """One line: which backups FAILED verification and why, or which were verified."""
    failed = [r for r in results if not r["ok"]]
    if failed:
        return "%d of %d backups FAILED verification: %s" % (
            len(failed), len(results), "; ".join("%s (%s)" % (r["file"], "; ".join(r["problems"])) for r in failed))
    return "%d backup%s verified: %s" % (len(results), "" if len(results) == 1 else "s",
                                         ", ".join(r["file"] for r in results))
