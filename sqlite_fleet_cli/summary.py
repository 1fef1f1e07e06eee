# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a person reads: one progress line per step, and the closing summary, one line per host and
database, built from the run record (so the summary says exactly what the record says)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .events import human_age, human_bytes, offsite_line
from .stats import render_table, stats_rows


def step_line(host: str, database: str | None, text: str) -> str:
    return "%s %s: %s" % (host, database, text) if database else "%s: %s" % (host, text)


def summary_lines(record: Mapping[str, Any]) -> list[str]:
    """One line per host and database (a host without databases: one line), then the run's line;
    for a stats run, the statistics table."""
    if record.get("command") == "stats":
        return [*render_table(stats_rows(record)), run_line(record)]
    lines = []
    for host, row in (record.get("hosts") or {}).items():
        databases = row.get("databases") or {}
        if row.get("outcome") in ("unreachable", "skipped") or (row.get("outcome") == "failed" and not databases):
            lines.append("%s: %s%s" % (host, row["outcome"].upper() if row["outcome"] != "skipped" else "skipped",
                                       " - %s" % row["message"] if row.get("message") else ""))
            continue
        if not databases:
            lines.append("%s: %s" % (host, row.get("outcome")))
        for name, db in databases.items():
            lines.append("%s %s: %s" % (host, name, database_text(record, db)))
    if isinstance(record.get("offsite"), Mapping):
        lines.append(offsite_line(record["offsite"]))
    lines.append(run_line(record))
    return lines


def database_text(record: Mapping[str, Any], db: Mapping[str, Any]) -> str:
    if db.get("outcome") == "failed":
        return "FAILED - %s" % (db.get("message") or "failed")
    if db.get("outcome") == "skipped":
        return "skipped"
    if db.get("drill"):
        return drill_text(db)
    if db.get("restore"):
        return restore_text(db)
    if db.get("stats") is not None:
        return stats_text(db)
    if db.get("outcome") == "would":
        return would_text(db)
    parts = [db["backup"] if db.get("backup") else "no new backup"]
    if db.get("label"):
        parts[0] += " [%s]" % db["label"]
    if db.get("size_bytes") is not None:
        parts.append("%s in %.2f s" % (human_bytes(db["size_bytes"]), db.get("seconds") or 0))
    if db.get("bytes_sent") is not None:
        parts.append("sent %s" % human_bytes(db["bytes_sent"]))
    if db.get("backup"):
        where = ["on host"] if db.get("verified_on_host") else []
        if db.get("verified_in_archive"):
            where.append("in archive")
        parts.append("verified %s" % " and ".join(where) if where else "NOT verified")
    if db.get("deleted_on_host") or db.get("deleted_in_archive"):
        parts.append("deleted %d on host, %d in archive" % (len(db.get("deleted_on_host") or []),
                                                            len(db.get("deleted_in_archive") or [])))
    if db.get("working_copy"):
        parts.append("working copy %s" % db["working_copy"])
    return ", ".join(parts)


def would_text(db: Mapping[str, Any]) -> str:
    would = db.get("would") or {}
    parts = ["would take %s" % would["backup"]] if would.get("backup") else ["would take no backup"]
    if "deleted_on_host" in would:
        parts.append("would delete %d on host" % len(would["deleted_on_host"]))
    if would.get("send_files"):
        parts.append("would pull %d file(s), up to %s" % (len(would["send_files"]), human_bytes(would["send_bytes"])))
    if "deleted_in_archive" in would:
        parts.append("would delete %d in archive" % len(would["deleted_in_archive"]))
    return ", ".join(parts) + " (check mode: nothing was changed)"


def restore_text(db: Mapping[str, Any]) -> str:
    restore = db["restore"]
    if restore.get("restored"):
        text = "restored %s onto %s (%s)" % (restore["restored"], restore.get("target"), restore.get("mode"))
        if restore.get("safety_backup"):
            text += ", safety backup %s" % restore["safety_backup"]
        return text
    if restore.get("would_restore"):
        return "would restore %s (%s; check mode: nothing was changed)" % (restore["would_restore"],
                                                                         restore.get("mode"))
    return "chose %s, not restored" % restore.get("chosen")


def drill_text(db: Mapping[str, Any]) -> str:
    drill = db["drill"]
    if db.get("outcome") == "would":
        return "would drill %s (check mode)" % drill.get("backup")
    return "drill %s: %s, RTO %.2f s, newest backup %s old" % (
        "passed" if drill.get("ok") else "FAILED", drill.get("backup"), drill.get("rto_seconds") or 0,
        human_age(drill.get("age_seconds")))


def stats_text(db: Mapping[str, Any]) -> str:
    stats = db["stats"]
    facts = stats.get("database") or {}
    host, archive = stats.get("host_backups") or {}, stats.get("archive_backups") or {}
    return "%s (%s), %s backup(s) on host (newest %s old), %s in archive (newest %s old)" % (
        human_bytes(facts.get("size_bytes")), facts.get("journal_mode"), host.get("count"),
        human_age(host.get("newest_age_seconds")), archive.get("count"), human_age(archive.get("newest_age_seconds")))


def run_line(record: Mapping[str, Any]) -> str:
    hosts = record.get("hosts") or {}
    counts: dict[str, int] = {}
    for row in hosts.values():
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    tally = ", ".join("%d %s" % (n, outcome) + (" (%s)" % ", ".join(sorted(h for h, row in hosts.items()
                                                                        if row["outcome"] == outcome))
                                                  if outcome in ("failed", "unreachable") else "")
                      for outcome, n in sorted(counts.items())) or "no host"
    started = str(record.get("started") or "")
    started = ", started %s UTC" % started.replace("T", " ").rstrip("Z") if started else ""
    text = "%s%s: %s; %s in %.1f s%s (exit %d)" % (
        record.get("command") or record.get("playbook"), " (check mode)" if record.get("check_mode") else "",
        record["outcome"].upper() if record["outcome"] != "ok" else "ok", tally, record["duration_seconds"],
        started, record["exit_code"])
    if record.get("message"):
        text += " - %s" % record["message"]
    return text
