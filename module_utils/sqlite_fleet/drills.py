# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore drills: a backup restored into scratch space, checked and probed.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .catalog import list_backups
from .errors import KIND_BAD_INPUT, KIND_CORRUPT, BackupError
from .files import folder_lock
from .inputs import validate_abs_path, validate_name
from .names import TMP_PREFIX, dated_in_future, future_warning, iso_utc, parse_backup_filename
from .present import (
    DRILL_STATUS_WORD,
    drill_summary_line,
    fleet_report_link,
    human_age,
    size_trend,
    sparkline,
    unreached_line,
)
from .restore import choose_backup
from .sqlitedb import run_foreign_key_check, run_integrity_check, table_row_counts, tune_for_checks
from .verify import row_count_differences, verify_backup


def run_probe(conn: sqlite3.Connection, probe: Mapping[str, Any]) -> dict[str, Any]:
    """One probe query: ``{name, sql, expect}``, expect like ``"> 0"``, ``"== 3"`` or a value."""
    sql = probe.get("sql")
    if not is_select_only(sql):
        return {"name": probe.get("name") or sql, "ok": False, "error": "a probe must be one SELECT statement"}
    try:
        row = conn.execute(sql).fetchone()
    except sqlite3.Error as exc:
        return {"name": probe.get("name") or sql, "ok": False, "error": str(exc)}
    value = row[0] if row else None
    expect = probe.get("expect", "> 0")
    ok = compare(value, expect)
    return {"name": probe.get("name") or sql, "ok": ok, "value": value, "expect": expect}


def compare(value: Any, expect: Any) -> bool:
    if isinstance(expect, str):
        match = re.fullmatch(r"\s*(==|!=|>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*", expect)
        if match:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return False
            op, number = match.group(1), float(match.group(2))
            return {"==": value == number, "!=": value != number, ">=": value >= number, "<=": value <= number,
                    ">": value > number, "<": value < number}[op]
    return value == expect


def drill(backup_path: str, scratch_dir: str, probes: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Restore a backup into scratch space and prove it: checksum, integrity_check,
    foreign_key_check, row counts against the manifest, probe queries; timed."""
    started = time.monotonic()
    result: dict[str, Any] = {"backup": os.path.basename(backup_path), "path": backup_path, "ok": False,
                              "problems": [], "probes": []}
    checked = verify_backup(backup_path, integrity="quick", check_rows=False)
    manifest = checked["manifest"] or {}
    result.update(created=manifest.get("created"), size_bytes=manifest.get("size_bytes"),
                  verified_when_taken=manifest.get("verified"), label=manifest.get("label"))
    for problem in checked["problems"]:
        result["problems"].append(problem)
    if result["problems"]:
        result["seconds"] = round(time.monotonic() - started, 3)
        return result
    os.makedirs(scratch_dir, mode=0o700, exist_ok=True)
    scratch = os.path.join(scratch_dir, "%s%s.%s" % (TMP_PREFIX, result["backup"], secrets.token_hex(4)))
    try:
        shutil.copyfile(backup_path, scratch)
        restored = time.monotonic()
        conn = sqlite3.connect(scratch, isolation_level=None)
        try:
            tune_for_checks(conn, os.path.getsize(scratch))
            problems = run_integrity_check(conn, "full")
            result["problems"].extend("integrity: %s" % p for p in problems)
            if not problems:
                result["problems"].extend("foreign keys: %s" % p for p in run_foreign_key_check(conn))
                result["problems"].extend("rows: %s" % d for d in
                                          row_count_differences(manifest["tables"], table_row_counts(conn)))
                conn.execute("PRAGMA query_only=1")
                for probe in probes:
                    outcome = run_probe(conn, probe)
                    result["probes"].append(outcome)
                    if not outcome["ok"]:
                        result["problems"].append("probe %s: %s" % (outcome["name"], outcome.get("error") or
                                                                    "got %r, want %s" % (outcome.get("value"),
                                                                                         outcome["expect"])))
        finally:
            conn.close()
        result["restore_seconds"] = round(restored - started, 3)
    except (OSError, sqlite3.Error) as exc:
        result["problems"].append("drill failed: %s" % exc)
    finally:
        for leftover in (scratch, scratch + "-journal", scratch + "-wal", scratch + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    result["ok"] = not result["problems"]
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


KIND_STALE = "stale"  # a drill's kind when only the newest backups are too old
DRILL_STATUS_RANK = {"fail": 0, "stale": 1, "ok": 2}


DRILL_MAX_FALLBACKS = 3  # older verified backups drilled after a failed one, to name the last good
DRILL_SCRATCH_DIR = ".drill-scratch"  # under the archive by default: same filesystem, never taken for a host
DRILL_REPORT_MD = "drill-report.md"
DRILL_REPORT_HTML = "drill-report.html"
DRILL_TEMPLATES = ("report.md.j2", "report.html.j2")


# Invariant: a probe runs only when its SQL starts as one SELECT (or WITH) statement; the copy is query_only too.
def is_select_only(sql: Any) -> bool:
    """True when ``sql`` is a string that starts as a SELECT or WITH statement."""
    return isinstance(sql, str) and sql.lstrip().lower().startswith(("select", "with"))


def check_probes(probes: Any, where: str) -> dict[str, list[dict[str, Any]]] | None:
    """``{name: [{name, sql, expect}]}`` -> the same, checked; raises BackupError(bad_input)."""
    if probes is None:
        return None
    if not isinstance(probes, dict):
        raise BackupError("%s must map database names to lists of probes" % where, KIND_BAD_INPUT)
    clean: dict[str, list[dict[str, Any]]] = {}
    for database, items in probes.items():
        validate_name(database, "database name in %s" % where)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise BackupError("%s[%s] must be a list of {name, sql, expect}" % (where, database), KIND_BAD_INPUT)
        clean[database] = []
        for index, probe in enumerate(items):
            what = "%s[%s][%d]" % (where, database, index)
            if not isinstance(probe, dict):
                raise BackupError("%s must be a mapping with name, sql and expect" % what, KIND_BAD_INPUT)
            unknown = sorted(set(probe) - {"name", "sql", "expect"})
            if unknown:
                raise BackupError("%s has unknown keys %s (use name, sql, expect)" % (what, ", ".join(unknown)),
                                  KIND_BAD_INPUT)
            sql = probe.get("sql")
            if not is_select_only(sql):
                raise BackupError("%s: sql must be one SELECT statement, got %r" % (what, sql), KIND_BAD_INPUT)
            checked = {"name": str(probe.get("name") or sql.strip()), "sql": sql}
            if probe.get("expect") is not None:
                checked["expect"] = probe["expect"]
            clean[database].append(checked)
    return clean


def check_drill_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The sqlite_drill module's options, checked and completed; raises BackupError(bad_input)."""
    for number in ("max_age_hours", "unreached_days", "lock_timeout"):
        if params[number] < 0:
            raise BackupError("%s must be 0 or more, got %s" % (number, params[number]), KIND_BAD_INPUT)
    if params["trend_count"] < 1:
        raise BackupError("trend_count must be at least 1, got %d" % params["trend_count"], KIND_BAD_INPUT)
    options = dict(params)
    archive_dir = options["archive_dir"] = validate_abs_path(params["archive_dir"], "archive_dir")
    options["scratch_dir"] = validate_abs_path(params["scratch_dir"] or os.path.join(archive_dir, DRILL_SCRATCH_DIR),
                                               "scratch_dir")
    for path in ("drill_log", "report_dir"):
        options[path] = validate_abs_path(params[path], path) if params[path] else None
    options["hosts"] = [validate_name(host, "host") for host in params["hosts"]]
    options["databases"] = {}
    for host, names in params["databases"].items():
        if names is None:
            names = []
        if not isinstance(names, list):
            raise BackupError("databases[%s] must be a list of database names" % host, KIND_BAD_INPUT)
        options["databases"][validate_name(host, "host")] = [validate_name(n) for n in names]
    options["probes"] = check_probes(params["probes"], "probes")
    options["host_probes"] = {}
    for host, per_host in params["host_probes"].items():
        if per_host in (None, "", {}):  # the host sets none of its own: it uses probes
            continue
        options["host_probes"][validate_name(host, "host")] = check_probes(per_host, "host_probes[%s]" % host)
    if options["report_dir"]:
        templates_dir = params["templates_dir"]
        missing = [t for t in DRILL_TEMPLATES if not os.path.isfile(os.path.join(templates_dir, t))]
        if missing:
            raise BackupError("templates_dir %s lacks %s" % (templates_dir, ", ".join(missing)), KIND_BAD_INPUT)
    return options


def unused_probe_warnings(targets: Sequence[tuple[str, str | None, str]], options: Mapping[str, Any]) -> list[str]:
    """One warning per database that has probes set but is not drilled."""
    drilled_names = {name for _, name, _ in targets}
    probed = set(options["probes"]) | {n for p in options["host_probes"].values() for n in p}
    return ["probes are set for database %s, which is not in the archive of the hosts drilled" % name
            for name in sorted(probed) if name not in drilled_names]


def new_drill_entry(host: str, name: str | None, folder: str) -> dict[str, Any]:
    return {"host": host, "database": name, "folder": folder, "status": "fail", "ok": False, "stale": False,
            "backup": None, "created": None, "label": None, "size_bytes": None, "newest": None,
            "newest_created": None, "age_seconds": None, "verified": None, "count": 0, "sizes": [],
            "problems": [], "probes": [], "seconds": None, "restore_seconds": None, "last_good": None,
            "drill_ok": None, "warnings": []}


def newest_backup_named(listing: Mapping[str, Any]) -> tuple[_dt.datetime, str, Mapping[str, Any] | None] | None:
    """The newest file named like a backup, with or without a valid manifest: (created, file, backup|None);
    backups dated after now are left out (their date says nothing).

    Ordered by what the names say (UTC second, then sequence number), for valid and broken files alike: a
    manifest's microseconds would otherwise put a valid backup after a broken one taken later in that second."""
    future = {b["file"] for b in dated_in_future(listing["backups"])}
    candidates = [(b["created"], b["file"], b) for b in listing["backups"] if b["file"] not in future]
    for item in listing["invalid"]:
        parsed = parse_backup_filename(item["file"])
        if parsed:
            candidates.append((parsed["created"], item["file"], None))

    def named_order(candidate: tuple[Any, str, Any]) -> tuple[Any, int, str]:
        parsed = parse_backup_filename(candidate[1])
        return (parsed["created"], parsed["seq"], candidate[1])  # type: ignore[index]

    return max(candidates, key=named_order) if candidates else None


def examine_drill_folder(entry: dict[str, Any], listing: Mapping[str, Any], now: _dt.datetime,
                         trend_count: int) -> tuple[_dt.datetime, str, Mapping[str, Any] | None] | None:
    """Fill in what the listing tells: newest backup, its age, the size trend."""
    backups = listing["backups"]
    entry["count"] = len(backups)
    entry["sizes"] = [b["size_bytes"] for b in backups[:trend_count]][::-1]
    future = future_warning(dated_in_future(backups), now)
    if future:
        entry["warnings"].append(future)
    newest = newest_backup_named(listing)
    if newest is None:
        return None
    created, file, backup = newest
    entry.update(newest=file, newest_created=iso_utc(created), age_seconds=round((now - created).total_seconds(), 3),
                 verified=backup["verified"] if backup else None)
    return newest


def drill_database(entry: dict[str, Any], probes: Sequence[Mapping[str, Any]], scratch_dir: str,
                   now: _dt.datetime, trend_count: int, lock_timeout: float) -> dict[str, Any]:
    """Drill the newest verified backup of one archive folder (under its lock) and check its newest backup."""
    folder = entry["folder"]
    if entry["database"] is None:
        entry["problems"].append("the archive holds no database of %s (%s is missing or empty): never backed up "
                                 "or never pulled" % (entry["host"], folder))
        return entry
    if not os.path.isdir(folder):
        entry["problems"].append("no archive folder %s: %s was never backed up or never pulled"
                                 % (folder, entry["database"]))
        return entry
    with folder_lock(folder, timeout=lock_timeout):
        listing = list_backups(folder)
        newest = examine_drill_folder(entry, listing, now, trend_count)
        try:
            chosen = choose_backup(listing["backups"], now=now)
        except BackupError:
            chosen = None
            entry["problems"].append("no verified backup to drill in %s%s" % (
                folder, " (newest: %s)" % entry["newest"] if entry["newest"] else " (the folder holds no backup)"))
        if chosen is not None:
            outcome = drill_backup_safely(chosen, scratch_dir, probes)
            entry.update(backup=outcome["backup"], created=outcome.get("created"), label=outcome.get("label"),
                         size_bytes=outcome.get("size_bytes") or chosen["size_bytes"], probes=outcome["probes"],
                         seconds=outcome.get("seconds"), restore_seconds=outcome.get("restore_seconds"),
                         drill_ok=outcome["ok"])
            entry["problems"].extend("%s: %s" % (outcome["backup"], p) for p in outcome["problems"])
            if not outcome["ok"]:
                entry["last_good"] = last_good_backup(listing["backups"], chosen, scratch_dir, probes)
        if newest is not None and (chosen is None or newest[1] != chosen["file"]):
            # The newest backup is not the one drilled: flagged unverified, or without a valid manifest.
            try:
                checked = verify_backup(os.path.join(folder, newest[1]), integrity="full")
                problems = checked["problems"]
            except BackupError as exc:  # gone since the listing, not a regular file...
                problems = [str(exc)]
            entry["problems"].extend("newest backup %s: %s" % (newest[1], p) for p in problems)
    return entry


def drill_backup_safely(backup: Mapping[str, Any], scratch_dir: str,
                        probes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`drill` of a listed backup; one that went away since the listing is a failed drill."""
    try:
        return drill(backup["path"], scratch_dir, probes)
    except BackupError as exc:  # removed or replaced since the listing
        return {"backup": backup["file"], "ok": False, "problems": [str(exc)], "probes": []}


def last_good_backup(backups: Sequence[Mapping[str, Any]], failed: Mapping[str, Any], scratch_dir: str,
                     probes: Sequence[Mapping[str, Any]]) -> str | None:
    """The newest verified backup older than ``failed`` that passes its drill (at most DRILL_MAX_FALLBACKS tried)."""
    older = [b for b in backups if b["verified"] and (b["created"], b["file"]) < (failed["created"], failed["file"])]
    for backup in older[:DRILL_MAX_FALLBACKS]:
        if drill_backup_safely(backup, scratch_dir, probes)["ok"]:
            return backup["file"]
    return None


def settle_drill_entry(entry: dict[str, Any], max_age_hours: float) -> dict[str, Any]:
    """Set the entry's stale, ok and status from its problems and its newest backup's age."""
    entry["stale"] = entry["age_seconds"] is not None and entry["age_seconds"] > max_age_hours * 3600
    entry["ok"] = not entry["problems"]
    entry["status"] = "fail" if entry["problems"] else ("stale" if entry["stale"] else "ok")
    return entry


def unreached_hosts(entries: Sequence[Mapping[str, Any]], unreached_days: float) -> list[dict[str, Any]]:
    """Hosts whose newest backup of any database is older than ``unreached_days`` (or that have none)."""
    newest_per_host: dict[str, Any] = {}
    for entry in entries:
        current = newest_per_host.setdefault(entry["host"], None)
        if entry["age_seconds"] is not None and (current is None or entry["age_seconds"] < current["age_seconds"]):
            newest_per_host[entry["host"]] = entry
    unreached = []
    for host, entry in sorted(newest_per_host.items()):
        if entry is None:
            unreached.append({"host": host, "days": None, "newest": None, "newest_created": None})
        elif entry["age_seconds"] > unreached_days * 86400:
            unreached.append({"host": host, "days": round(entry["age_seconds"] / 86400, 1), "newest": entry["newest"],
                              "newest_created": entry["newest_created"]})
    return unreached


def drill_sort_key(entry: Mapping[str, Any]) -> tuple[int, str, str]:
    return (DRILL_STATUS_RANK[entry["status"]], entry["host"], entry["database"] or "")


def plan_drills(targets: Sequence[tuple[str, str | None, str]], options: Mapping[str, Any],
                now: _dt.datetime) -> dict[str, Any]:
    """Check mode: which backup each drill would use, and which newest backups are stale; nothing written."""
    plan: dict[str, Any] = {"would_drill": [], "lines": [], "stale": []}
    for host, name, folder in targets:
        listing = list_backups(folder) if name and os.path.isdir(folder) else {"backups": [], "invalid": []}
        entry = new_drill_entry(host, name, folder)
        examine_drill_folder(entry, listing, now, options["trend_count"])
        try:
            backup = choose_backup(listing["backups"])["file"]
        except BackupError:
            backup = None
        plan["would_drill"].append({"host": host, "database": name, "backup": backup})
        plan["lines"].append("%s %s: %s" % (host, name or "-", "would drill %s" % backup if backup else
                                            "would FAIL: no verified backup to drill"))
        if settle_drill_entry(entry, options["max_age_hours"])["stale"]:
            plan["stale"].append("%s/%s" % (host, name))
            plan["lines"][-1] += "; newest backup %s is older than %g h" % (entry["newest"], options["max_age_hours"])
    plan["msg"] = "would drill %s" % ", ".join(
        "%s/%s (%s)" % (w["host"], w["database"] or "-", w["backup"] or "no verified backup: would fail")
        for w in plan["would_drill"])
    return plan


def run_drills(targets: Sequence[tuple[str, str | None, str]], options: Mapping[str, Any],
               now: _dt.datetime) -> tuple[list[dict[str, Any]], list[str]]:
    """Drill every target (its host's probes, else the common ones): the entries, failures first, and warnings.
    A scratch folder made here is removed again (the drills remove their copies)."""
    entries, warnings = [], []
    scratch_dir = options["scratch_dir"]
    scratch_existed = os.path.isdir(scratch_dir)
    try:
        for host, name, folder in targets:
            probes = options["host_probes"].get(host, options["probes"]).get(name or "", [])
            entry = new_drill_entry(host, name, folder)
            try:
                drill_database(entry, probes, scratch_dir, now, options["trend_count"], options["lock_timeout"])
            except (BackupError, OSError, sqlite3.Error) as exc:  # a lock held too long, an unreadable folder
                entry["problems"].append("the drill of %s could not run: %s" % (folder, exc))
            entries.append(settle_drill_entry(entry, options["max_age_hours"]))
            warnings.extend("%s/%s: %s" % (host, name, warning) for warning in entry["warnings"])
    finally:
        if not scratch_existed:
            with contextlib.suppress(OSError):
                os.rmdir(scratch_dir)
    entries.sort(key=drill_sort_key)
    return entries, warnings


def drill_findings(entries: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> dict[str, Any]:
    """What the drills found, as sqlite_drill returns it: results, unreached hosts, lines, failed and stale."""
    unreached = unreached_hosts(entries, options["unreached_days"])
    lines = [drill_summary_line(e, options["max_age_hours"]) for e in entries]
    lines += [unreached_line(item, options["unreached_days"]) for item in unreached]
    return {"results": list(entries), "unreached": unreached, "lines": lines,
            "failed_drills": ["%s/%s" % (e["host"], e["database"] or "-") for e in entries if e["status"] == "fail"],
            "stale": ["%s/%s" % (e["host"], e["database"]) for e in entries if e["stale"]]}


def drill_log_line(entry: Mapping[str, Any], now: _dt.datetime, source: str = "archive") -> dict[str, Any]:
    """One line of the drill log (JSON Lines; sqlite_fleet_cli's history reads it back); ``source``:
    where the drilled backups came from (the archive, or a copy restored from the offsite repository)."""
    return {"time": iso_utc(now), "source": source, "host": entry["host"],
            "database": entry["database"], "backup": entry["backup"],
            "created": entry["created"], "age_seconds": entry["age_seconds"], "size_bytes": entry["size_bytes"],
            "status": entry["status"], "ok": entry["ok"], "stale": entry["stale"], "problems": entry["problems"],
            "probes": entry["probes"], "seconds": entry["seconds"], "restore_seconds": entry["restore_seconds"],
            "newest": entry["newest"], "last_good": entry["last_good"], "drill_ok": entry["drill_ok"]}


def drill_report_context(entries: Sequence[Mapping[str, Any]], findings: Mapping[str, Any], ignored: Sequence[str],
                         options: Mapping[str, Any], finished: _dt.datetime) -> dict[str, Any]:
    """What the drill report templates get (each entry with its size sparkline and trend word)."""
    counts = {status: sum(1 for e in entries if e["status"] == status) for status in DRILL_STATUS_RANK}
    overall = "fail" if counts["fail"] else ("stale" if counts["stale"] else "ok")
    return {"entries": [dict(e, spark=sparkline(e["sizes"]), trend=size_trend(e["sizes"])) for e in entries],
            "unreached": findings["unreached"], "ignored": ignored, "counts": counts,
            "overall": overall, "overall_word": DRILL_STATUS_WORD[overall], "status_word": DRILL_STATUS_WORD,
            "generated": iso_utc(finished), "archive_dir": options["archive_dir"], "drill_log": options["drill_log"],
            "fleet_report": fleet_report_link(options["archive_dir"], options["report_dir"]),
            "max_age_hours": "%g" % options["max_age_hours"],
            "unreached_days": "%g" % options["unreached_days"], "trend_count": options["trend_count"]}


def drill_failure(entries: Sequence[Mapping[str, Any]], max_age_hours: float,
                  where: str) -> tuple[str, str] | None:
    """(message, kind) when any drill failed (corrupt) or any newest backup is stale; None when all passed."""
    failed = [e for e in entries if e["status"] == "fail"]
    stale = [e for e in entries if e["stale"]]
    if not failed and not stale:
        return None
    parts = []
    if failed:
        parts.append("restore drill FAILED for %s" % "; ".join(
            "%s/%s: %s" % (e["host"], e["database"] or "-", "; ".join(e["problems"][:3])) for e in failed))
    if stale:
        parts.append("newest backup older than %g h: %s" % (max_age_hours, ", ".join(
            "%s/%s (%s, %s old)" % (e["host"], e["database"], e["newest"], human_age(e["age_seconds"]))
            for e in stale)))
    return "; ".join(parts) + (" (%s)" % where if where else ""), KIND_CORRUPT if failed else KIND_STALE
