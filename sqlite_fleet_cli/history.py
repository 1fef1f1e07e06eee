"""What the controller knows of the fleet's past: run records, the drill log and the archive.

Readers only. The run records (``<archive>/runs/*.json``) are format 2 of the run record the CLI
writes (docs/cli.md); older records of playbooks/report.yml (``{"kind", "finished", "rows"}``)
are read for what they hold. Every field is untrusted: each record is rebuilt from checked
fields (strings, finite numbers, booleans, UTC times), a key that is missing or of the wrong
type reads as unknown, and a file that cannot be read at all is skipped and named in
``unreadable``. The archive is read through the core (``list_backups``), never by hand.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODULE_UTILS = Path(__file__).resolve().parents[1] / "module_utils"
if str(MODULE_UTILS) not in sys.path:
    sys.path.insert(0, str(MODULE_UTILS))

import sqlite_fleet as core  # noqa: E402  (the project's core, found beside this package)

RUNS_DIR = "runs"
DRILL_LOG = os.path.join("drills", "drill-log.jsonl")
DRILL_REPORT = os.path.join("drills", "drill-report.html")
RECORD_MAX_BYTES = 8 << 20  # a record is a few KiB per host; anything huge is broken or hostile
DRILL_LOG_MAX_BYTES = 64 << 20
TEXT_MAX = 2000
BACKUP_COMMANDS = ("backup", "sync", "pre-upgrade")  # the runs that take a backup and pull it
SQLITE_VERSION_RE = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}(?:\.\d{1,3})?$")


# --------------------------------------------------------------------------- checked fields


def text(value: Any, limit: int = TEXT_MAX) -> str | None:
    """A string field, cut to ``limit`` characters; anything else is unknown."""
    return value[:limit] if isinstance(value, str) else None


def number(value: Any) -> float | None:
    """A finite, non-negative number (never a bool); anything else is unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:  # an integer of 400 digits
        return None
    return result if math.isfinite(result) and result >= 0 else None


def flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def moment(value: Any) -> _dt.datetime | None:
    return core.parse_iso_utc(value)


def names(value: Any) -> list[str]:
    """A list of file names (strings only)."""
    return [item for item in value if isinstance(item, str)][:1000] if isinstance(value, list) else []


def sqlite_version(value: Any) -> str | None:
    """``3.40.1``-like text, or unknown: the core's version parser takes only digits and dots."""
    return value if isinstance(value, str) and SQLITE_VERSION_RE.fullmatch(value) else None


def safe_folder(name: str) -> bool:
    """A host or database name that can be an archive folder (never ``..``, ``/`` or markup)."""
    return bool(core.NAME_RE.fullmatch(name))


# --------------------------------------------------------------------------- run records


@dataclass
class Run:
    """One run record, rebuilt from its checked fields."""

    run_id: str
    command: str
    started: _dt.datetime
    ended: _dt.datetime | None
    check_mode: bool
    outcome: str | None
    exit_code: int | None
    message: str | None
    duration_seconds: float | None
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    @property
    def finished(self) -> _dt.datetime:
        return self.ended or self.started

    def database(self, host: str, name: str) -> dict[str, Any] | None:
        return (self.hosts.get(host) or {}).get("databases", {}).get(name)


@dataclass
class Runs:
    runs: list[Run]  # oldest first
    unreadable: list[str]


def database_entry(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A database of a host of a run record, rebuilt; keys that were absent stay absent
    (``newest_verified_on_host`` absent means "not seen", null means "none there")."""
    entry: dict[str, Any] = {
        "outcome": text(raw.get("outcome"), 40),
        "backup": text(raw.get("backup"), 300),
        "label": text(raw.get("label"), 100),
        "created": moment(raw.get("created")),
        "size_bytes": number(raw.get("size_bytes")),
        "seconds": number(raw.get("seconds")),
        "bytes_sent": number(raw.get("bytes_sent")),
        "verified_on_host": flag(raw.get("verified_on_host")),
        "verified_in_archive": flag(raw.get("verified_in_archive")),
        "archived": names(raw.get("archived")),
        "deleted_on_host": names(raw.get("deleted_on_host")),
        "deleted_in_archive": names(raw.get("deleted_in_archive")),
        "newest_verified_in_archive": text(raw.get("newest_verified_in_archive"), 300),
        "newest_verified_in_archive_created": moment(raw.get("newest_verified_in_archive_created")),
        "message": text(raw.get("message")),
    }
    if "newest_verified_on_host" in raw:
        entry["newest_verified_on_host"] = text(raw.get("newest_verified_on_host"), 300)
    offsite = raw.get("offsite")
    if isinstance(offsite, Mapping) and isinstance(offsite.get("file"), str):
        entry["offsite"] = {"file": offsite["file"][:300], "created": moment(offsite.get("created")),
                            "snapshot_id": text(offsite.get("snapshot_id"), 100)}
    drill = raw.get("drill")
    if isinstance(drill, Mapping):
        entry["drill"] = {"ok": flag(drill.get("ok")), "backup": text(drill.get("backup"), 300),
                          "rto_seconds": number(drill.get("rto_seconds"))}
    return entry


def host_entry(raw: Mapping[str, Any]) -> dict[str, Any]:
    databases = raw.get("databases")
    return {
        "outcome": text(raw.get("outcome"), 40),
        "message": text(raw.get("message")),
        "sqlite_version": sqlite_version(raw.get("sqlite_version")),
        "databases": {name: database_entry(db) for name, db in databases.items()
                      if isinstance(name, str) and isinstance(db, Mapping)} if isinstance(databases, Mapping) else {},
    }


def run_from_v2(data: Mapping[str, Any], source: str) -> Run | None:
    started = moment(data.get("started")) or moment(data.get("ended"))
    if started is None:
        return None
    hosts = data.get("hosts")
    return Run(
        run_id=text(data.get("run_id"), 100) or source,
        command=text(data.get("command"), 40) or "?",
        started=started,
        ended=moment(data.get("ended")),
        check_mode=data.get("check_mode") is True,
        outcome=text(data.get("outcome"), 40),
        exit_code=data.get("exit_code") if type(data.get("exit_code")) is int else None,
        message=text(data.get("message")),
        duration_seconds=number(data.get("duration_seconds")),
        hosts={name: host_entry(host) for name, host in hosts.items()
               if isinstance(name, str) and isinstance(host, Mapping)} if isinstance(hosts, Mapping) else {},
        source=source,
    )


def run_from_v1(data: Mapping[str, Any], source: str) -> Run | None:
    """A record of playbooks/report.yml: ``kind``, ``finished``, ``rows`` of host and database."""
    finished = moment(data.get("finished"))
    rows = data.get("rows")
    if finished is None or not isinstance(rows, list):
        return None
    hosts: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("host"), str):
            continue
        host = hosts.setdefault(row["host"], {"outcome": "ok", "message": None, "sqlite_version": None,
                                              "databases": {}})
        problems = [p for p in row.get("problems") or [] if isinstance(p, str)] \
            if isinstance(row.get("problems"), list) else []
        ok = row.get("ok") is True
        if not ok:
            host["outcome"] = "failed"
            host["message"] = host["message"] or text("; ".join(problems)) or "failed"
        if not isinstance(row.get("database"), str):
            continue
        archived = names(row.get("archived"))
        backup = text(row.get("backup"), 300)
        entry = {"outcome": "ok" if ok else "failed", "backup": backup, "size_bytes": row.get("size_bytes"),
                 "seconds": row.get("seconds"), "bytes_sent": row.get("transferred_bytes"),
                 "verified_on_host": row.get("verified_on_host"), "archived": archived,
                 "verified_in_archive": bool(backup and backup in archived) or None,
                 "message": "; ".join(problems) or None}
        if backup and row.get("verified_on_host") is True:
            entry["newest_verified_on_host"] = backup  # the run's own backup: the newest on the host
        host["databases"][row["database"]] = database_entry(entry)
    command = (text(data.get("kind"), 40) or "?").replace("_", "-")
    return Run(run_id=source, command=command, started=finished, ended=finished, check_mode=False,
               outcome="ok" if data.get("ok") is True else "failed", exit_code=None, message=None,
               duration_seconds=None, hosts=hosts, source=source)


def read_json_file(path: str, limit: int) -> Any:
    """The JSON of a regular file no bigger than ``limit``; raises ValueError saying why not."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise ValueError("not a regular file of at most %d bytes" % limit)
        return json.loads(handle.read(limit + 1).decode("utf-8"))


def read_runs(archive_dir: str) -> Runs:
    """Every readable run record of the archive, oldest first."""
    folder = os.path.join(archive_dir, RUNS_DIR)
    try:
        entries = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return Runs([], [])
    runs: list[Run] = []
    unreadable: list[str] = []
    for entry in entries:
        if not entry.endswith(".json") or entry.startswith("."):
            continue  # a temporary name of a record being written, or a stranger's file
        try:
            data = read_json_file(os.path.join(folder, entry), RECORD_MAX_BYTES)
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            unreadable.append("%s/%s: %s" % (RUNS_DIR, entry, exc.__class__.__name__ if isinstance(
                exc, RecursionError) else exc))
            continue
        if not isinstance(data, Mapping):
            run = None
        elif "format_version" in data:
            run = run_from_v2(data, entry) if data.get("format_version") == 2 else None
        else:
            run = run_from_v1(data, entry)
        if run is None:
            unreadable.append("%s/%s: not a run record this version reads" % (RUNS_DIR, entry))
        else:
            runs.append(run)
    runs.sort(key=lambda r: (r.started, r.run_id))
    return Runs(runs, unreadable)


# --------------------------------------------------------------------------- drill log


@dataclass
class Drill:
    time: _dt.datetime
    host: str
    database: str
    passed: bool
    backup: str | None
    rto_seconds: float | None  # the whole drill: restore, integrity and row checks, probes
    restore_seconds: float | None  # checksum and copy into scratch space
    problems: list[str]


def drill_from_line(data: Any) -> Drill | None:
    """One line of the drill log (library/sqlite_drill.py writes it), rebuilt; None if unusable."""
    if not isinstance(data, Mapping):
        return None
    when = moment(data.get("time"))
    host, database = text(data.get("host"), 300), text(data.get("database"), 300)
    if when is None or host is None or database is None:
        return None  # a host without any archived database has database null: no database to chart
    status = data.get("status")
    passed = status in ("ok", "stale") if status in ("ok", "stale", "fail") else data.get("ok") is True
    problems = [p[:TEXT_MAX] for p in data.get("problems") or [] if isinstance(p, str)] \
        if isinstance(data.get("problems"), list) else []
    return Drill(time=when, host=host, database=database, passed=passed, backup=text(data.get("backup"), 300),
                 rto_seconds=number(data.get("seconds")), restore_seconds=number(data.get("restore_seconds")),
                 problems=problems[:20])


def read_drills(archive_dir: str) -> tuple[list[Drill], list[str]]:
    """The drill log's usable lines, oldest first, and what was skipped."""
    path = os.path.join(archive_dir, DRILL_LOG)
    try:
        with open(path, "rb") as handle:
            data = handle.read(DRILL_LOG_MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    except OSError as exc:
        return [], ["%s: %s" % (DRILL_LOG, exc)]
    skipped = ["%s: over %d bytes, only the first read" % (DRILL_LOG, DRILL_LOG_MAX_BYTES)] \
        if len(data) > DRILL_LOG_MAX_BYTES else []
    drills: list[Drill] = []
    bad = 0
    for line in data[:DRILL_LOG_MAX_BYTES].splitlines():
        if not line.strip():
            continue
        try:
            drill = drill_from_line(json.loads(line.decode("utf-8")))
        except (ValueError, UnicodeDecodeError, RecursionError):
            drill = None
        if drill is None:
            bad += 1
        else:
            drills.append(drill)
    if bad:
        skipped.append("%s: %d line%s not readable" % (DRILL_LOG, bad, "" if bad == 1 else "s"))
    drills.sort(key=lambda d: d.time)
    return drills, skipped


# --------------------------------------------------------------------------- the archive


def archived(archive_dir: str, host: str, database: str) -> list[dict[str, Any]]:
    """The finished backups the archive holds for one database, newest first (the core's listing)."""
    if not (safe_folder(host) and safe_folder(database)):
        return []
    return core.list_backups(os.path.join(archive_dir, host, database))["backups"]


def archive_databases(archive_dir: str) -> dict[str, list[str]]:
    """Host and database folders of the archive (named as the core names them), sorted."""
    found: dict[str, list[str]] = {}
    try:
        hosts = sorted(os.listdir(archive_dir))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for host in hosts:
        host_dir = os.path.join(archive_dir, host)
        if not safe_folder(host) or os.path.islink(host_dir) or not os.path.isdir(host_dir):
            continue
        databases = sorted(entry for entry in os.listdir(host_dir)
                           if safe_folder(entry) and not os.path.islink(os.path.join(host_dir, entry))
                           and os.path.isdir(os.path.join(host_dir, entry)))
        if databases:  # runs/, drills/, metrics/ hold files only: not hosts
            found[host] = databases
    return found


def newest_verified(backups: Iterable[Mapping[str, Any]], now: _dt.datetime) -> Mapping[str, Any] | None:
    """The newest backup flagged verified, never one dated in the future (a clock problem)."""
    return next((b for b in backups if b["verified"] and b["created"] <= now + _dt.timedelta(minutes=5)), None)
