"""A scripted two-week history of a fleet, on real files, for status, metrics and report tests.

Five hosts of ``sqlite_hosts``, one backup run a day for 14 days (the last an hour ago):
- alpha: healthy; its app links SQLite 3.45.1 (WAL-reset bug, named by the inventory);
- bravo: runs failed on two days (disk full); its Python sqlite3 is 3.46.1 (bug); its last drill
  failed (a byte of its newest archived backup flipped, drilled for real);
- charlie: unreachable for the last four days: stale; SQLite 3.44.6 (a fixed backport);
- delta: never reached: never backed up;
- a host and a database with hostile names (markup, quotes, ``&``), failing every run.
Plus a run that failed before any host (bad input), a --check run, an old-format record of
playbooks/report.yml and a record that is not JSON.

Every backup is real: the core snapshots a real SQLite file that grows a little every day, the
snapshot is dated to its day by rewriting its name and manifest as the core writes them, and
``core.import_backup`` puts it into the archive (checksum, integrity check, row counts). The
drills are the core's own ``drill`` on the archived files; the drill log gets the lines
library/sqlite_drill.py writes. The run records follow docs/run_record.md (format 2).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "module_utils", REPO / "tools"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import sqlite_fleet as core  # noqa: E402
from demo_db import create_demo_db  # noqa: E402

DB = "gym"
DAYS = 14
HOSTILE_HOST = "<img src=x onerror=alert(1)>"
HOSTILE_DB = '"quoted" & <b>bold</b>'
HOSTILE_MESSAGE = '<script>alert("pwned")</script> & "quotes"'
PYTHON_SQLITE = {"alpha": "3.51.3", "bravo": "3.46.1", "charlie": "3.44.6"}
APP_SQLITE = {"alpha": "3.45.1"}
BRAVO_FAILED_DAYS = (4, 5)
CHARLIE_LAST_DAY = 9  # unreachable afterwards
OFFSITE_HOSTS = ("alpha", "bravo")  # sent offsite every day but the last (its upload failed); charlie never
DRILL_DAYS = (0, 7, 13)
BAD_INPUT_DAY = 6
CHECK_DAY = 12
DISK_FULL = "snapshot of /srv/app/gym.db failed: database or disk is full"
UNREACHABLE = "ssh: connect to host %s port 22: No route to host"


@dataclass
class History:
    root: Path
    archive: Path
    inventory: Path
    now: dt.datetime
    runs: list[dict[str, Any]] = field(default_factory=list)
    flipped: Path | None = None

    def inventory_of(self, *hosts: str) -> Path:
        """Another inventory over the same archive with only ``hosts``."""
        path = self.root / ("hosts-%s.yml" % "-".join(hosts))
        write_inventory(path, self.archive, hosts)
        return path


def run_time(now: dt.datetime, day: int) -> dt.datetime:
    """Day 0 is 13 days and an hour ago; day 13 an hour ago."""
    return now - dt.timedelta(days=DAYS - 1 - day, hours=1)


def write_inventory(path: Path, archive: Path, hosts: tuple[str, ...] | list[str]) -> None:
    entries = {}
    for host in hosts:
        entry: dict[str, Any] = {"ansible_connection": "local",
                                 "sqlite_backup_databases": [{"name": HOSTILE_DB if host == HOSTILE_HOST else DB,
                                                              "path": "/srv/app/gym.db"}]}
        if host in APP_SQLITE:
            entry["sqlite_app_sqlite_version"] = APP_SQLITE[host]
        entries[host] = entry
    path.write_text(json.dumps({"all": {"children": {"sqlite_hosts": {
        "hosts": entries, "vars": {"sqlite_archive_dir": str(archive)}}}}}, indent=2))


def write_record(archive: Path, record: dict[str, Any], name: str | None = None) -> Path:
    """A run record as the CLI writes it: runs/<run_id>.json, 0600 in a 0700 folder."""
    folder = archive / "runs"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / (name or "%s.json" % record["run_id"])
    core.write_file_atomic(str(path), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return path


def grow(db: Path, day: int) -> None:
    """The app keeps writing: a few photos a day, so sizes and sends have a trend to draw."""
    conn = sqlite3.connect(db)
    try:
        for _ in range(1 + day % 3):
            conn.execute("INSERT INTO photos (member_id, taken_at, data) VALUES (1, 'day %d', randomblob(12000))"
                         % day)
        conn.commit()
    finally:
        conn.close()


def backup_of_day(db: Path, host_dir: Path, archive: Path, host: str, taken: dt.datetime) -> dict[str, Any]:
    """A real snapshot, dated ``taken`` (its name and manifest rewritten as the core writes them), imported
    into the archive by the core. Returns the archived manifest."""
    snap = core.snapshot(str(db), str(host_dir), DB, source_host=host)
    manifest = dict(snap["manifest"])
    manifest.update(file=core.backup_filename(DB, taken), created=core.iso_utc(taken),
                    sqlite_version=PYTHON_SQLITE[host])
    incoming = archive / host / DB / (".sqlite-backup-tmp.incoming.%s" % manifest["file"])
    incoming.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(snap["backup"], incoming)
    core.import_backup(str(incoming), manifest, str(archive / host / DB), source_host=host)
    return manifest


def database_entry(manifest: dict[str, Any], sent: int) -> dict[str, Any]:
    file, created = manifest["file"], manifest["created"]
    return {"outcome": "ok", "backup": file, "label": None, "created": created,
            "size_bytes": manifest["size_bytes"], "seconds": manifest["duration_seconds"], "bytes_sent": sent,
            "verified_on_host": True, "archived": [file], "verified_in_archive": True, "deleted_on_host": [],
            "deleted_in_archive": [], "newest_verified_on_host": file, "newest_verified_in_archive": file,
            "newest_verified_in_archive_created": created, "offsite": None, "restore": None, "drill": None,
            "message": None}


def failed_entry(message: str, newest_on_host: str | None, newest_archived: dict[str, Any] | None) -> dict[str, Any]:
    return {"outcome": "failed", "backup": None, "created": None, "size_bytes": None, "seconds": None,
            "bytes_sent": 0, "verified_on_host": None, "archived": [], "verified_in_archive": None,
            "newest_verified_on_host": newest_on_host,
            "newest_verified_in_archive": newest_archived["file"] if newest_archived else None,
            "newest_verified_in_archive_created": newest_archived["created"] if newest_archived else None,
            "message": message}


def record(run_id: str, started: dt.datetime, hosts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    outcomes = {h["outcome"] for h in hosts.values()}
    outcome = "failed" if "failed" in outcomes else "unreachable" if "unreachable" in outcomes else "ok"
    ended = started + dt.timedelta(seconds=40)
    base = {"format_version": 2, "run_id": run_id, "command": "backup", "playbook": "backup.yml",
            "argv": ["sqlite-fleet", "backup"], "via": "cli", "inventory": "/srv/fleet/hosts.yml", "limit": None,
            "check_mode": False, "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ended": ended.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration_seconds": 40.0,
            "exit_code": {"ok": 0, "failed": 1, "unreachable": 3}[outcome], "outcome": outcome, "message": None,
            "hosts": hosts}
    base.update(extra)
    return base


def drill_line(archive: Path, host: str, when: dt.datetime, scratch: Path) -> dict[str, Any]:
    """Drill the newest verified archived backup for real (core.drill) and log it as sqlite_drill does."""
    listing = core.list_backups(str(archive / host / DB))["backups"]
    newest = next(b for b in listing if b["verified"])
    outcome = core.drill(newest["path"], str(scratch))
    age = (when - newest["created"]).total_seconds()
    stale = age > 36 * 3600
    status = "fail" if outcome["problems"] else "stale" if stale else "ok"
    return {"time": core.iso_utc(when), "host": host, "database": DB, "backup": newest["file"],
            "created": outcome.get("created"), "age_seconds": round(age, 3), "size_bytes": newest["size_bytes"],
            "status": status, "ok": not outcome["problems"], "stale": stale, "problems": outcome["problems"],
            "probes": [], "seconds": outcome.get("seconds"), "restore_seconds": outcome.get("restore_seconds"),
            "newest": newest["file"], "last_good": None, "drill_ok": outcome["ok"]}


def build_history(root: Path, now: dt.datetime | None = None) -> History:
    now = (now or core.utcnow()).replace(microsecond=0)
    archive = root / "archive"
    archive.mkdir(mode=0o700)
    history = History(root=root, archive=archive, inventory=root / "hosts.yml", now=now)
    hosts = ["alpha", "bravo", "charlie", "delta", HOSTILE_HOST]
    write_inventory(history.inventory, archive, hosts)
    dbs = {}
    for index, host in enumerate(PYTHON_SQLITE):
        dbs[host] = root / "app" / host / "gym.db"
        dbs[host].parent.mkdir(parents=True)
        create_demo_db(dbs[host], members=40, seed=index + 1)
    newest: dict[str, dict[str, Any]] = {}
    drill_lines: list[dict[str, Any]] = []
    for day in range(DAYS):
        started = run_time(now, day)
        taken = started + dt.timedelta(seconds=5)
        entries: dict[str, Any] = {}
        for host, db in dbs.items():
            grow(db, day)
            if host == "bravo" and day in BRAVO_FAILED_DAYS:
                entries[host] = {"outcome": "failed", "message": DISK_FULL, "sqlite_version": PYTHON_SQLITE[host],
                                 "databases": {DB: failed_entry(DISK_FULL, newest[host]["file"], newest[host])}}
                continue
            if host == "charlie" and day > CHARLIE_LAST_DAY:
                entries[host] = {"outcome": "unreachable", "message": UNREACHABLE % host, "databases": {}}
                continue
            previous = newest.get(host)
            newest[host] = backup_of_day(db, root / "host-backups" / host, archive, host, taken)
            sent = newest[host]["size_bytes"] if previous is None else 4096 * (3 + day % 4)
            entries[host] = {"outcome": "ok", "message": None, "sqlite_version": PYTHON_SQLITE[host],
                             "databases": {DB: database_entry(newest[host], sent)}}
            if host in OFFSITE_HOSTS and day < DAYS - 1:  # the offsite copy of the last day failed
                entries[host]["databases"][DB]["offsite"] = {"file": newest[host]["file"],
                                                             "created": newest[host]["created"],
                                                             "snapshot_id": "snap%04d" % day}
        entries["delta"] = {"outcome": "unreachable", "message": UNREACHABLE % "delta", "databases": {}}
        entries[HOSTILE_HOST] = {"outcome": "failed", "message": HOSTILE_MESSAGE, "databases": {
            HOSTILE_DB: failed_entry(HOSTILE_MESSAGE, None, None)}}
        offsite = ({"outcome": "failed", "snapshot_id": None, "bytes_added": None, "files_sent": None,
                    "backups": None, "message": "offsite upload failed: the offsite back end is unreachable"}
                   if day == DAYS - 1 else {"outcome": "ok", "snapshot_id": "snap%04d" % day, "bytes_added": 40960,
                                            "files_sent": 6, "backups": 2 * (day + 1), "message": None})
        run = record("%s-%06x" % (started.strftime("%Y%m%dT%H%M%SZ"), day), started, entries, offsite=offsite)
        write_record(archive, run)
        history.runs.append(run)
        if day == BAD_INPUT_DAY:
            bad = record("%s-bad000" % (started + dt.timedelta(minutes=5)).strftime("%Y%m%dT%H%M%SZ"),
                         started + dt.timedelta(minutes=5), {}, exit_code=2, outcome="bad_input",
                         message="sqlite_backup_keep_last must be an integer, got 'many'")
            write_record(archive, bad)
        if day == CHECK_DAY:
            check = record("%s-c0ffee" % (started + dt.timedelta(minutes=20)).strftime("%Y%m%dT%H%M%SZ"),
                           started + dt.timedelta(minutes=20),
                           {h: {"outcome": "ok", "databases": {DB: {"outcome": "would", "backup": None}}}
                            for h in ("alpha", "bravo")}, check_mode=True)
            write_record(archive, check)
        if day in DRILL_DAYS:
            if day == DAYS - 1:  # the last drill of bravo fails: a byte of its newest archived backup flipped
                history.flipped = archive / "bravo" / DB / newest["bravo"]["file"]
                data = bytearray(history.flipped.read_bytes())
                data[len(data) // 2] ^= 0xFF
                history.flipped.write_bytes(bytes(data))
            drilled = started + dt.timedelta(minutes=30)
            drill_lines += [drill_line(archive, host, drilled, root / "scratch") for host in dbs]
    old = {"kind": "backup", "finished": run_time(now, 0).strftime("%Y-%m-%dT%H:%M:%SZ"), "hosts": ["alpha"],
           "failed_hosts": [], "ok": True, "rows": [{"host": "alpha", "database": DB, "ok": True, "problems": [],
                                                     "backup": None, "transferred_bytes": 0, "archived": []}]}
    write_record(archive, old, "backup-%s000000Z.json" % run_time(now, 0).strftime("%Y%m%dT%H%M%S"))
    (archive / "runs" / "20991231T000000Z-broken.json").write_text("{not json")
    (archive / "drills").mkdir(mode=0o700)
    (archive / "drills" / "drill-log.jsonl").write_text(
        "".join(json.dumps(line, sort_keys=True) + "\n" for line in drill_lines) + "not json either\n")
    os.chmod(archive / "drills" / "drill-log.jsonl", 0o600)
    return history
