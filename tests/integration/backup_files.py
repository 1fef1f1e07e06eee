"""What the integration tests read from backups and databases: names, checksums, manifests,
SQLite's own checks. Shared by the test files that drive the playbooks."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

DB_NAME = "gym"
# group 1: the UTC stamp in the name
BACKUP_NAME = re.compile(rf"^{DB_NAME}_backup_(\d{{8}}_\d{{6}})(?:_\d+)?\.db$")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_ro(path: Path) -> sqlite3.Connection:
    """Read-only, immutable when no -wal is beside it (then nothing appears beside it either)."""
    wal = Path(str(path) + "-wal")
    immutable = "&immutable=1" if not wal.exists() or wal.stat().st_size == 0 else ""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{immutable}", uri=True, isolation_level=None)


def integrity_check(path: Path) -> list[str]:
    conn = open_ro(path)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def table_counts(path: Path) -> dict[str, int]:
    conn = open_ro(path)
    try:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
        return {table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables}
    finally:
        conn.close()


def backups_in(folder: Path) -> list[str]:
    """Backup file names (not sidecars) in folder, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir() if BACKUP_NAME.match(entry.name))


def manifest_of(backup: Path) -> dict[str, Any]:
    return json.loads(backup.with_name(backup.name + ".json").read_text())


def sha256sum_check(folder: Path) -> subprocess.CompletedProcess[str]:
    """Real coreutils ``sha256sum -c *.sha256`` in folder."""
    sums = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sha256"))
    assert sums, f"no .sha256 files in {folder}"
    return subprocess.run(["sha256sum", "-c", *sums], cwd=folder, capture_output=True, text=True, check=False)
