# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The statistics of a stats run, from its record: one row per host and database, as a table or
as one JSON document (``-e sqlite_stats_format=json``; ``sqlite-fleet stats --json`` prints the
whole record, which holds the same figures under each database's ``stats``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .events import human_age, human_bytes


def stats_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for host, row in (record.get("hosts") or {}).items():
        databases = row.get("databases") or {}
        if not databases and row.get("outcome") != "skipped":
            rows.append({"host": host, "database": None, "ok": False, "problems": [row.get("message") or "not read"]})
        for name, db in databases.items():
            stats = db.get("stats") or {}
            facts, backups, archive = (stats.get("database") or {}, stats.get("host_backups") or {},
                                       stats.get("archive_backups") or {})
            ok = db.get("outcome") == "ok"
            rows.append({
                "host": host, "database": name, "ok": ok, "problems": [] if ok else [db.get("message") or "not read"],
                "db_size_bytes": facts.get("size_bytes"), "wal_bytes": facts.get("wal_bytes"),
                "journal_mode": facts.get("journal_mode"), "page_size": facts.get("page_size"),
                "page_count": facts.get("page_count"), "freelist_count": facts.get("freelist_count"),
                "sqlite_version": facts.get("sqlite_version"), "tables": facts.get("tables"),
                "host_backups": backups.get("count"), "host_backups_bytes": backups.get("total_bytes"),
                "host_newest": backups.get("newest"), "host_newest_age_seconds": backups.get("newest_age_seconds"),
                "host_oldest": backups.get("oldest"),
                "archive_backups": archive.get("count"), "archive_newest": archive.get("newest"),
                "archive_newest_age_seconds": archive.get("newest_age_seconds"),
            })
    return rows


def total_rows(tables: Any) -> str:
    return "-" if not isinstance(tables, Mapping) else str(sum(v or 0 for v in tables.values()))


COLUMNS = (
    ("host", "host", str), ("database", "db", str),
    ("db_size_bytes", "size", human_bytes), ("wal_bytes", "wal", human_bytes),
    ("journal_mode", "journal", str), ("tables", "rows", total_rows),
    ("host_backups", "backups", str), ("host_backups_bytes", "on host", human_bytes),
    ("host_newest_age_seconds", "newest age", human_age),
    ("archive_backups", "archived", str), ("archive_newest_age_seconds", "archive age", human_age),
)


def render_table(rows: list[Mapping[str, Any]]) -> list[str]:
    header = [title for _, title, _ in COLUMNS]
    body = []
    for row in rows:
        if not row["ok"]:
            body.append([row["host"], str(row["database"]), "FAILED: %s" % "; ".join(row["problems"])])
            continue
        body.append([fmt(row.get(key)) if row.get(key) is not None or fmt in (human_bytes, human_age) else "-"
                     for key, _, fmt in COLUMNS])
    full = [header] + [cells for cells in body if len(cells) == len(header)]
    widths = [max(len(cells[i]) for cells in full) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    for cells in body:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()
                     if len(cells) == len(header) else "  ".join(cells))
    return lines


def render_json(rows: list[Mapping[str, Any]]) -> str:
    return json.dumps(rows, indent=2, sort_keys=True)
