"""The fleet's state, one row per host and database: what ``status``, the metrics and the report show.

Sources, each read by history.py: the archive itself (newest verified backup, through the
core), the run records (newest verified backup on the host, last backup run), the drill log
(last drill) and the inventory (which hosts and databases there should be, so that one that
never reported is "never backed up", not absent).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .fleet_inventory import Fleet, max_age_seconds
from .history import (
    BACKUP_COMMANDS,
    Drill,
    Run,
    archive_databases,
    archived,
    core,
    newest_verified,
    read_drills,
    read_runs,
    sqlite_version,
)

FORMAT_VERSION = 1
# A row's state, worst first; "never" and "stale" make status exit 4, "drill_failed" 5.
STATES = ("never", "stale", "drill_failed", "run_failed", "ok")
STATE_WORDS = {"never": "NEVER", "stale": "STALE", "drill_failed": "DRILL FAILED", "run_failed": "RUN FAILED",
               "ok": "OK"}
EXIT_OK, EXIT_BAD_INPUT, EXIT_STALE, EXIT_DRILL_FAILED = 0, 2, 4, 5
def limit_text(seconds: float) -> str:
    """A threshold as it was given: ``36 h``, ``90 min``."""
    return "%g h" % round(seconds / 3600, 2) if seconds >= 3600 else "%g min" % round(seconds / 60, 2)


def iso(moment: _dt.datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


@dataclass
class FleetStatus:
    generated: _dt.datetime
    archive_dir: str
    max_age_seconds: float
    rows: list[dict[str, Any]]
    runs: list[Run]
    drills: list[Drill]
    unreadable: list[str]
    inventory: list[str] = field(default_factory=list)

    def counted(self) -> list[dict[str, Any]]:
        """Rows that count for the exit code and the metrics: the inventory's (all of them without one)."""
        return [row for row in self.rows if row["in_inventory"]]

    def state_counts(self) -> dict[str, int]:
        """How many counted rows are in each state, every state named, worst first."""
        counted = self.counted()
        return {state: sum(1 for row in counted if row["state"] == state) for state in STATES}

    def exit_code(self) -> int:
        states = {row["state"] for row in self.counted()}
        if states & {"never", "stale"}:
            return EXIT_STALE
        return EXIT_DRILL_FAILED if "drill_failed" in states else EXIT_OK

    def wal_reset_hosts(self) -> list[dict[str, Any]]:
        """Every host whose SQLite (Python's sqlite3 that takes the backups, or the app's) has the bug."""
        hosts: dict[str, dict[str, Any]] = {}
        for row in self.counted():
            sqlite = row["sqlite"]
            found = hosts.setdefault(row["host"], {"host": row["host"], "python_sqlite": sqlite["python"],
                                                   "app_sqlite": {}, "affected": []})
            if sqlite["app"]:
                found["app_sqlite"][row["database"] or "*"] = sqlite["app"]
            for what, version in (("Python sqlite3 %s", sqlite["python"]), ("app SQLite %s", sqlite["app"])):
                if version and core.has_wal_reset_bug(version) and (what % version) not in found["affected"]:
                    found["affected"].append(what % version)
        return [entry for entry in hosts.values() if entry["affected"]]

    def last_run(self) -> Run | None:
        """The newest run of any command (check runs included): what the fleet last did."""
        return self.runs[-1] if self.runs else None

    def to_json(self) -> dict[str, Any]:
        last = self.last_run()
        return {
            "format_version": FORMAT_VERSION,
            "generated": iso(self.generated),
            "archive_dir": self.archive_dir,
            "inventory": self.inventory,
            "max_age_seconds": self.max_age_seconds,
            "exit_code": self.exit_code(),
            "counts": self.state_counts(),
            "databases": self.rows,
            "wal_reset_bug": self.wal_reset_hosts(),
            "not_in_inventory": sorted({row["host"] for row in self.rows if not row["in_inventory"]}),
            "last_run": run_summary(last, None, None) if last else None,
            "unreadable": self.unreadable,
        }


# --------------------------------------------------------------------------- one row


def run_summary(run: Run, host: str | None, database: str | None) -> dict[str, Any]:
    """A run as a row shows it: for one host and database, else for the whole run."""
    host_entry = run.hosts.get(host) if host else None
    db_entry = run.database(host, database) if host and database else None
    outcome = (db_entry or {}).get("outcome") or (host_entry or {}).get("outcome") or run.outcome
    if outcome == "ok" and host_entry and host_entry.get("outcome") not in (None, "ok"):
        outcome = host_entry["outcome"]
    message = ((db_entry or {}).get("message") or (host_entry or {}).get("message") or run.message)
    return {"run_id": run.run_id, "command": run.command, "started": iso(run.started), "ended": iso(run.ended),
            "check_mode": run.check_mode, "outcome": outcome, "message": message if outcome != "ok" else None,
            "bytes_sent": (db_entry or {}).get("bytes_sent")}


def last_backup_run(runs: Sequence[Run], host: str) -> Run | None:
    """The newest run (not --check) that was to back up ``host``: backup, sync or pre-upgrade."""
    for run in reversed(runs):
        entry = run.hosts.get(host)
        if (not run.check_mode and run.command in BACKUP_COMMANDS and entry is not None
                and entry.get("outcome") != "skipped"):
            return run
    return None


def newest_on_host(runs: Sequence[Run], host: str, database: str) -> dict[str, Any] | None:
    """The newest verified backup on the host, as the latest run record that saw it says."""
    for run in reversed(runs):
        entry = run.database(host, database)
        if not run.check_mode and entry is not None and "newest_verified_on_host" in entry:
            file = entry["newest_verified_on_host"]
            parsed = core.parse_backup_filename(file) if file else None
            return {"newest_verified": file, "created": iso(parsed["created"]) if parsed else None,
                    "seen": iso(run.finished), "run_id": run.run_id}
    return None


def newest_offsite(runs: Sequence[Run], host: str, database: str, now: _dt.datetime) -> dict[str, Any] | None:
    """The newest backup sent offsite, as the latest run record whose offsite snapshot held it says
    (read from the records: status never calls restic); None when no record names one."""
    for run in reversed(runs):
        entry = run.database(host, database)
        offsite = entry.get("offsite") if entry is not None and not run.check_mode else None
        if offsite:
            created = offsite["created"]
            if created is None:
                parsed = core.parse_backup_filename(offsite["file"])
                created = parsed["created"] if parsed else None
            return {"newest": offsite["file"], "created": iso(created),
                    "age_seconds": round((now - created).total_seconds(), 3) if created else None,
                    "snapshot_id": offsite["snapshot_id"], "run_id": run.run_id, "sent": iso(run.started)}
    return None


def python_sqlite_of(runs: Sequence[Run], backups: Sequence[Mapping[str, Any]], host: str) -> str | None:
    """The host's Python sqlite3 version: the newer of the last record naming it and the newest manifest."""
    candidates: list[tuple[_dt.datetime, str]] = []
    recorded = next(((r.finished, r.hosts[host]["sqlite_version"]) for r in reversed(runs)
                     if host in r.hosts and r.hosts[host].get("sqlite_version")), None)
    if recorded:
        candidates.append(recorded)
    for backup in backups:
        version = sqlite_version(backup["manifest"].get("sqlite_version"))
        if version:
            candidates.append((backup["created"], version))
            break  # newest first
    return max(candidates)[1] if candidates else None


def last_drill_of(drills: Sequence[Drill], host: str, database: str) -> dict[str, Any] | None:
    drill = next((d for d in reversed(drills) if d.host == host and d.database == database), None)
    if drill is None:
        return None
    return {"time": iso(drill.time), "outcome": "passed" if drill.passed else "failed", "backup": drill.backup,
            "rto_seconds": drill.rto_seconds, "restore_seconds": drill.restore_seconds,
            "problems": drill.problems}


def database_row(host: str, database: str | None, *, archive_dir: str, runs: Sequence[Run],
                 drills: Sequence[Drill], app_sqlite: str | None, in_inventory: bool, max_age: float,
                 now: _dt.datetime) -> dict[str, Any]:
    backups = archived(archive_dir, host, database) if database else []
    newest = newest_verified(backups, now)
    age = (now - newest["created"]).total_seconds() if newest else None
    run = last_backup_run(runs, host)
    last_run = run_summary(run, host, database) if run else None
    last_drill = last_drill_of(drills, host, database) if database else None
    python_sqlite = python_sqlite_of(runs, backups, host)
    problems = []
    if newest is None:
        problems.append("no verified backup in the archive" + (" (%d unverified)" % len(backups) if backups else "")
                        if database else "no database known: sqlite_backup_databases is empty and the archive "
                        "holds none")
    elif age > max_age:
        problems.append("newest verified backup is %s old (limit %s)" % (core.human_age(age), limit_text(max_age)))
    if last_drill and last_drill["outcome"] == "failed":
        problems.append("last drill (%s) failed%s" % (last_drill["time"], ": " + last_drill["problems"][0]
                                                      if last_drill["problems"] else ""))
    if last_run and last_run["outcome"] != "ok":
        problems.append("last %s run (%s) %s%s" % (last_run["command"], last_run["started"], last_run["outcome"] or
                                                   "did not say", ": " + last_run["message"] if last_run["message"]
                                                   else ""))
    stale = newest is None or age > max_age
    state = ("never" if newest is None else "stale" if stale else
             "drill_failed" if last_drill and last_drill["outcome"] == "failed" else
             "run_failed" if last_run and last_run["outcome"] != "ok" else "ok")
    return {
        "host": host,
        "database": database,
        "state": state,
        "stale": stale,
        "problems": problems,
        "in_inventory": in_inventory,
        "archive": {"newest_verified": newest["file"] if newest else None,
                    "created": iso(newest["created"]) if newest else None,
                    "age_seconds": round(age, 3) if age is not None else None,
                    "size_bytes": newest["size_bytes"] if newest else None,
                    "verified_backups": sum(1 for b in backups if b["verified"]), "backups": len(backups)},
        "on_host": newest_on_host(runs, host, database) if database else None,
        "offsite": newest_offsite(runs, host, database, now) if database else None,
        "last_run": last_run,
        "last_drill": last_drill,
        "sqlite": {"python": python_sqlite, "app": app_sqlite,
                   "wal_reset_bug": (any(core.has_wal_reset_bug(v) for v in (python_sqlite, app_sqlite) if v)
                                     if python_sqlite or app_sqlite else None)},
    }


# --------------------------------------------------------------------------- the fleet


def fleet_databases(fleet: Fleet | None, archive_dir: str, runs: Sequence[Run]) -> list[tuple[str, str | None, bool]]:
    """(host, database, in the inventory) of every row: the inventory's first, then what only the archive
    and the records know (every one of them counts when there is no inventory)."""
    found: dict[str, list[str]] = {}
    for host, databases in archive_databases(archive_dir).items():
        found.setdefault(host, []).extend(databases)
    for run in runs:
        if run.check_mode:
            continue
        for host, entry in run.hosts.items():
            found.setdefault(host, []).extend(entry["databases"])
    rows: list[tuple[str, str | None, bool]] = []
    if fleet is not None:
        for host in fleet.hosts.values():
            names = list(dict.fromkeys(host.databases + found.pop(host.name, [])))
            rows.extend((host.name, name, True) for name in names)
            if not names:
                rows.append((host.name, None, True))
    for host, names in sorted(found.items()):
        rows.extend((host, name, fleet is None) for name in dict.fromkeys(names))
    return rows


def collect_status(archive_dir: str, fleet: Fleet | None = None, *, max_age: float | None = None,
                   now: _dt.datetime | None = None) -> FleetStatus:
    """One row per host and database, worst state first, from every record and drill there is.
    ``max_age`` defaults to the inventory's threshold (:func:`max_age_seconds`)."""
    max_age = max_age if max_age is not None else max_age_seconds(fleet, None)
    now = now or core.utcnow()
    history = read_runs(archive_dir)
    drills, skipped = read_drills(archive_dir)
    rows = []
    for host, database, in_inventory in fleet_databases(fleet, archive_dir, history.runs):
        app = fleet.hosts[host].app_sqlite_version(database or "") if fleet and host in fleet.hosts else None
        rows.append(database_row(host, database, archive_dir=archive_dir, runs=history.runs, drills=drills,
                                 app_sqlite=app, in_inventory=in_inventory, max_age=max_age, now=now))
    rows.sort(key=lambda r: (not r["in_inventory"], STATES.index(r["state"]), r["host"], r["database"] or ""))
    return FleetStatus(generated=now, archive_dir=archive_dir, max_age_seconds=max_age, rows=rows,
                       runs=history.runs, drills=drills, unreadable=history.unreadable + skipped,
                       inventory=fleet.inventory if fleet else [])
