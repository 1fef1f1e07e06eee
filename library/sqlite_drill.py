#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_drill
short_description: Rehearse restores of the archived SQLite backups and record a report
description:
  - Runs on the controller (delegate to C(localhost)). For every host folder and database folder of the
    archive (C(<archive_dir>/<host>/<name>/)), restores the newest verified backup into scratch space and
    proves it as a restore would need it, in these steps, each timed - the checksum against its C(.sha256)
    file and manifest, a copy into O(scratch_dir), a full C(PRAGMA integrity_check),
    C(PRAGMA foreign_key_check), the row count of every table against the manifest, and the probe queries
    of O(probes). The scratch copy is removed afterwards.
  - A database folder with no verified backup, or whose newest backup (verified or not) fails its checks,
    is a B(failed drill) that names the file. When the drilled backup fails, older verified backups are
    drilled too (at most three) to say which one would restore (RV(results[].last_good)).
  - A database whose newest backup is older than O(max_age_hours) is B(stale). Hosts whose newest backup
    of any database is older than O(unreached_days) are listed as not reached.
  - Appends one JSON line per drill to O(drill_log), and writes C(drill-report.md) and C(drill-report.html)
    into O(report_dir) (atomically, C(0600); a missing folder is created C(0700)). The HTML page is
    self-contained (inline CSS, no script, no external resource), problems first and in colour. It links to
    the fleet's history page C(<archive_dir>/fleet-report.html) that C(sqlite-fleet report) writes (a relative
    link when O(report_dir) is inside the archive).
  - The task B(fails), after writing the log and the reports, when any drill failed or any newest backup
    is stale; its message names them.
  - Each database folder is drilled under its lock, so a pull or a prune of the archive never removes a
    backup in the middle of its drill.
options:
  archive_dir:
    description:
      - The archive, C(<archive_dir>/<host>/<name>/<backup files>), as M(sqlitefleet.sqlite_fleet.sqlite_archive)
        fills it.
    type: path
    required: true
  scratch_dir:
    description:
      - Folder for the scratch copies (created C(0700)). It needs room for the largest backup.
      - Defaults to C(<archive_dir>/.drill-scratch) (same filesystem, and hidden, so never taken for a host).
    type: path
  hosts:
    description:
      - Inventory names of the hosts to drill. A listed host without an archive folder is a failed drill
        (never backed up, or never pulled).
      - Empty (the default) drills every host folder of the archive.
    type: list
    elements: str
    default: []
  databases:
    description:
      - Databases each host should have in the archive, a mapping of host to a list of database names. A
        listed database without an archive folder is a failed drill.
      - Databases found in the archive are drilled either way.
    type: dict
    default: {}
  probes:
    description:
      - Probe queries, a mapping of database name to a list of probes, each a mapping with C(name), C(sql) and
        C(expect), run on every restored copy of that database after the integrity checks.
      - C(sql) must be one C(SELECT) (or C(WITH)) statement; the first column of its first row is compared
        with C(expect), which is a comparison such as V(> 0), V(== 3), V(>= 10), V(!= 0), or a plain value
        compared for equality. C(expect) defaults to V(> 0). The copy is opened with C(query_only).
    type: dict
    default: {}
  host_probes:
    description:
      - Probes per host, a mapping of host to probes as in O(probes), used instead of O(probes) for that
        host's databases.
      - A host whose entry is missing, null, empty or an empty string uses O(probes).
    type: dict
    default: {}
  source:
    description:
      - Where the drilled backups came from, recorded in every drill log line - C(archive), or C(offsite) when
        O(archive_dir) is a copy just restored from the offsite repository (M(sqlitefleet.sqlite_fleet.sqlite_offsite)).
    type: str
    choices: [archive, offsite]
    default: archive
  drill_log:
    description:
      - JSON Lines file that gets one line per drill appended (created C(0600); earlier lines are kept).
      - Each line holds time, host, database, backup, created, age_seconds, size_bytes, status, ok, stale,
        problems, probes, seconds, restore_seconds, newest, drill_ok, last_good.
      - Unset writes no log.
    type: path
  report_dir:
    description:
      - Folder for C(drill-report.md) and C(drill-report.html), replaced atomically on each run. Unset writes
        no report.
    type: path
  templates_dir:
    description:
      - Folder holding C(report.md.j2) and C(report.html.j2) (the sqlite_drill role passes its C(templates)).
      - Required with O(report_dir).
    type: path
  max_age_hours:
    description: A newest backup older than this many hours is stale, and fails the task.
    type: float
    default: 36
  unreached_days:
    description: Hosts whose newest backup is older than this many days are listed as not reached.
    type: float
    default: 3
  trend_count:
    description: How many of the newest archived backups the size trend shows.
    type: int
    default: 10
  lock_timeout:
    description: Seconds to wait for a database folder's lock (held by a pull or a prune of the archive).
    type: float
    default: 600
notes:
  - Needs C(jinja2) for the reports, which the controller's Ansible always has; the sqlite_drill role runs
    it with C(ansible_playbook_python).
  - The drills only read the archive; the folder lock file is created when missing.
  - In check mode nothing is drilled or written; RV(would_drill) lists what would be drilled.
extends_documentation_fragment:
  - sqlite_fleet_attributes
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_verify
  - module: sqlitefleet.sqlite_fleet.sqlite_archive
author:
  - Sqlite Fleet Backup authors (@sqlite-fleet-backup)
"""

EXAMPLES = r"""
- name: Drill every archived database, record the drills and write the reports
  sqlite_drill:
    archive_dir: /srv/sqlite-archive
    hosts: "{{ groups['sqlite_hosts'] }}"
    probes:
      gym:
        - name: members exist
          sql: SELECT count(*) FROM members
          expect: "> 0"
        - name: one counter row per door
          sql: SELECT count(*) FROM counters
          expect: "== 3"
    drill_log: /srv/sqlite-archive/drills/drill-log.jsonl
    report_dir: /srv/sqlite-archive/drills
    templates_dir: "{{ role_path }}/templates"
    max_age_hours: 36
  delegate_to: localhost
  register: drill

- name: What would be drilled
  sqlite_drill:
    archive_dir: /srv/sqlite-archive
  check_mode: true
  delegate_to: localhost
"""

RETURN = r"""
results:
  description: One entry per host and database, problems first (failed, then stale, then ok).
  returned: always
  type: list
  elements: dict
  contains:
    host:
      description: Inventory name (the archive's host folder).
      type: str
    database:
      description: Database name (the archive's database folder).
      type: str
    status:
      description: V(fail), V(stale) or V(ok).
      type: str
    ok:
      description: Whether the database passed (no problem at all; a stale backup can still be ok).
      type: bool
    drill_ok:
      description: Whether the drill of RV(results[].backup) itself passed (null when nothing was drilled).
      type: bool
    stale:
      description: Whether the newest backup is older than O(max_age_hours).
      type: bool
    backup:
      description: The backup drilled (the newest verified one), or null when there was none.
      type: str
    newest:
      description: The newest backup in the folder, verified or not.
      type: str
    newest_created:
      description: When the newest backup was taken (UTC).
      type: str
    age_seconds:
      description: Age of the newest backup.
      type: float
    size_bytes:
      description: Size of the drilled backup.
      type: int
    sizes:
      description: Sizes of the O(trend_count) newest backups, oldest first.
      type: list
      elements: int
    verified:
      description: Whether the newest backup was verified when taken (its manifest's flag), null without one.
      type: bool
    problems:
      description: What failed, each naming the file.
      type: list
      elements: str
    probes:
      description: The probes run, with C(name), C(ok), C(value), C(expect) (or C(error)).
      type: list
      elements: dict
    seconds:
      description: Time of the whole drill.
      type: float
    restore_seconds:
      description: Time to restore (checksums and the copy into scratch space).
      type: float
    last_good:
      description: After a failed drill, the newest older verified backup that passed, if any.
      type: str
  sample: [{"host": "pi1", "database": "gym", "status": "ok", "ok": true, "stale": false,
            "backup": "gym_backup_20261122_043012.db", "problems": [], "seconds": 0.41}]
failed_drills:
  description:
    - C(<host>/<database>) of every failed drill (C(<host>/-) for a host without any archived database).
    - Not called C(failed), which Ansible keeps for the task's own failed flag.
  returned: always
  type: list
  elements: str
  sample: ["pi2/gym"]
stale:
  description: C(<host>/<database>) of every database whose newest backup is older than O(max_age_hours).
  returned: always
  type: list
  elements: str
  sample: ["pi3/gym"]
unreached:
  description: Hosts whose newest backup is older than O(unreached_days) (C(days) null when there is none).
  returned: always
  type: list
  elements: dict
  sample: [{"host": "pi3", "days": 4.2, "newest": "gym_backup_20261118_043001.db"}]
lines:
  description:
    - One summary line per host and database, then one per host not reached.
    - In check mode, one line per drill that would run.
  returned: always
  type: list
  elements: str
report_md:
  description: Path of the Markdown report written.
  returned: when O(report_dir) is set and not in check mode
  type: str
report_html:
  description: Path of the HTML report written.
  returned: when O(report_dir) is set and not in check mode
  type: str
drill_log:
  description: Path of the drill log appended to.
  returned: when O(drill_log) is set and not in check mode
  type: str
would_drill:
  description: In check mode, C({host, database, backup}) of each drill that would run.
  returned: check mode
  type: list
  elements: dict
ignored:
  description: Folders of the archive that are not named like a host or database, and were not drilled.
  returned: always
  type: list
  elements: str
kind:
  description:
    - Sort of failure, V(corrupt) when a drill failed, V(stale) when only backups are too old, else
      V(bad_input), V(locked) or V(io).
  returned: failure
  type: str
  sample: corrupt
"""

import json
import os
import pathlib
import sqlite3
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.sqlite_fleet import (
    KIND_BAD_INPUT,
    KIND_CORRUPT,
    KIND_IO,
    BackupError,
    choose_backup,
    dated_in_future,
    drill,
    folder_lock,
    future_warning,
    human_age,
    human_bytes,
    iso_utc,
    list_backups,
    parse_backup_filename,
    parse_iso_utc,
    utcnow,
    validate_abs_path,
    validate_name,
    verify_backup,
    write_file_atomic,
)

try:
    import jinja2

    JINJA2_IMPORT_ERROR = None
except ImportError:  # the controller's Ansible always has it; a bare host interpreter may not
    jinja2 = None
    JINJA2_IMPORT_ERROR = traceback.format_exc()
TEMPLATE_ERRORS = (jinja2.TemplateError,) if jinja2 else ()

STATUS_RANK = {"fail": 0, "stale": 1, "ok": 2}
STATUS_WORD = {"fail": "FAILED", "stale": "STALE", "ok": "OK"}
REPORT_MD = "drill-report.md"
REPORT_HTML = "drill-report.html"
FLEET_REPORT = "fleet-report.html"  # the fleet's history page, written into the archive by `sqlite-fleet report`
MAX_FALLBACKS = 3
KIND_STALE = "stale"


# --------------------------------------------------------------------------- input


def check_probes(probes, where):
    """``{name: [{name, sql, expect}]}`` -> the same, checked; raises BackupError(bad_input)."""
    if probes is None:
        return None
    if not isinstance(probes, dict):
        raise BackupError("%s must map database names to lists of probes" % where, KIND_BAD_INPUT)
    clean = {}
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
            if not isinstance(sql, str) or not sql.lstrip().lower().startswith(("select", "with")):
                raise BackupError("%s: sql must be one SELECT statement, got %r" % (what, sql), KIND_BAD_INPUT)
            checked = {"name": str(probe.get("name") or sql.strip()), "sql": sql}
            if probe.get("expect") is not None:
                checked["expect"] = probe["expect"]
            clean[database].append(checked)
    return clean


def drill_targets(archive_dir, hosts, databases):
    """(host, database, folder) to drill, sorted, and the folders ignored (names not ours)."""
    ignored = []
    hosts = list(hosts)
    if not hosts:
        for entry in sorted(os.listdir(archive_dir)):
            path = os.path.join(archive_dir, entry)
            if entry.startswith(".") or os.path.islink(path) or not os.path.isdir(path):
                continue
            if not any(not sub.startswith(".") and os.path.isdir(os.path.join(path, sub))
                       for sub in os.listdir(path)):
                continue  # the run records, the drill reports: files only, not a host
            try:
                hosts.append(validate_name(entry, "host"))
            except BackupError:
                ignored.append(entry)
    targets = []
    for host in hosts:
        host_dir = os.path.join(archive_dir, host)
        names = set(databases.get(host) or [])
        if os.path.isdir(host_dir) and not os.path.islink(host_dir):
            for entry in os.listdir(host_dir):
                path = os.path.join(host_dir, entry)
                if entry.startswith(".") or os.path.islink(path) or not os.path.isdir(path):
                    continue
                try:
                    names.add(validate_name(entry))
                except BackupError:
                    ignored.append("%s/%s" % (host, entry))
        if not names:
            targets.append((host, None, host_dir))
        for name in sorted(names):
            targets.append((host, name, os.path.join(host_dir, name)))
    return targets, ignored


# --------------------------------------------------------------------------- drills


def new_entry(host, name, folder):
    return {"host": host, "database": name, "folder": folder, "status": "fail", "ok": False, "stale": False,
            "backup": None, "created": None, "label": None, "size_bytes": None, "newest": None,
            "newest_created": None, "age_seconds": None, "verified": None, "count": 0, "sizes": [],
            "problems": [], "probes": [], "seconds": None, "restore_seconds": None, "last_good": None,
            "drill_ok": None, "warnings": []}


def newest_of(listing):
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

    def named_order(candidate):
        parsed = parse_backup_filename(candidate[1])
        return (parsed["created"], parsed["seq"], candidate[1])

    return max(candidates, key=named_order) if candidates else None


def examine(entry, listing, now, trend_count):
    """Fill in what the listing tells: newest backup, its age, the size trend."""
    backups = listing["backups"]
    entry["count"] = len(backups)
    entry["sizes"] = [b["size_bytes"] for b in backups[:trend_count]][::-1]
    future = future_warning(dated_in_future(backups), now)
    if future:
        entry["warnings"].append(future)
    newest = newest_of(listing)
    if newest is None:
        return None
    created, file, backup = newest
    entry.update(newest=file, newest_created=iso_utc(created), age_seconds=round((now - created).total_seconds(), 3),
                 verified=backup["verified"] if backup else None)
    return newest


def drill_database(entry, probes, scratch_dir, now, trend_count, lock_timeout):
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
        newest = examine(entry, listing, now, trend_count)
        try:
            chosen = choose_backup(listing["backups"], now=now)
        except BackupError:
            chosen = None
            entry["problems"].append("no verified backup to drill in %s%s" % (
                folder, " (newest: %s)" % entry["newest"] if entry["newest"] else " (the folder holds no backup)"))
        if chosen is not None:
            outcome = drill_one(chosen, scratch_dir, probes)
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


def drill_one(backup, scratch_dir, probes):
    try:
        return drill(backup["path"], scratch_dir, probes)
    except BackupError as exc:  # removed or replaced since the listing
        return {"backup": backup["file"], "ok": False, "problems": [str(exc)], "probes": []}


def last_good_backup(backups, failed, scratch_dir, probes):
    """The newest verified backup older than ``failed`` that passes its drill (at most MAX_FALLBACKS tried)."""
    older = [b for b in backups if b["verified"] and (b["created"], b["file"]) < (failed["created"], failed["file"])]
    for backup in older[:MAX_FALLBACKS]:
        if drill_one(backup, scratch_dir, probes)["ok"]:
            return backup["file"]
    return None


def settle(entry, max_age_hours):
    entry["stale"] = entry["age_seconds"] is not None and entry["age_seconds"] > max_age_hours * 3600
    entry["ok"] = not entry["problems"]
    entry["status"] = "fail" if entry["problems"] else ("stale" if entry["stale"] else "ok")
    return entry


def unreached_hosts(entries, unreached_days):
    newest_per_host = {}
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


def sort_key(entry):
    return (STATUS_RANK[entry["status"]], entry["host"], entry["database"] or "")


# --------------------------------------------------------------------------- presentation


def human_time(iso):
    moment = parse_iso_utc(iso)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def human_seconds(value):
    if value is None:
        return "-"
    return "%d ms" % round(value * 1000) if value < 1 else "%.2f s" % value


def sparkline(sizes, width=120, height=28, pad=3):
    """Polyline points of an inline SVG sparkline (numbers only), or None for fewer than two sizes."""
    if len(sizes) < 2:
        return None
    low, high = min(sizes), max(sizes)
    span = (high - low) or 1
    step = (width - 2 * pad) / (len(sizes) - 1)
    points = []
    for index, size in enumerate(sizes):
        x = pad + index * step
        y = height - pad - (size - low) * (height - 2 * pad) / span if high != low else height / 2
        points.append("%.1f,%.1f" % (x, y))
    return {"points": " ".join(points), "width": width, "height": height,
            "last": points[-1].split(",")}


def size_trend(sizes):
    """A word for the trend of the sizes (oldest first)."""
    if len(sizes) < 2:
        return "one backup" if sizes else "no backup"
    first, last = sizes[0], sizes[-1]
    if first == last:
        return "steady"
    change = (last - first) * 100.0 / first if first else 100.0
    return "%s %.1f%%" % ("grew" if last > first else "shrank", abs(change))


def summary_line(entry, max_age_hours):
    where = "%s %s" % (entry["host"], entry["database"] or "-")
    if entry["status"] == "fail":
        text = "%s: FAILED - %s" % (where, "; ".join(entry["problems"]))
        if entry["last_good"]:
            text += " (the newest backup that passes is %s)" % entry["last_good"]
        return text
    probes = entry["probes"]
    text = "%s: %s - drilled %s (%s, taken %s ago), restored in %s, drill %s, %s" % (
        where, STATUS_WORD[entry["status"]], entry["backup"], human_bytes(entry["size_bytes"]),
        human_age(entry["age_seconds"]), human_seconds(entry["restore_seconds"]), human_seconds(entry["seconds"]),
        "%d/%d probes ok" % (sum(1 for p in probes if p.get("ok")), len(probes)) if probes else "no probes")
    if entry["stale"]:
        text += "; newest backup %s is older than %s h" % (entry["newest"], "%g" % max_age_hours)
    return text


def unreached_line(item, unreached_days):
    if item["days"] is None:
        return "%s: not reached: the archive holds no backup of it" % item["host"]
    return "%s: not reached for %g days (newest backup %s, over the %g-day limit)" % (
        item["host"], item["days"], item["newest"], unreached_days)


def markdown_text(value):
    """Free text in a Markdown table cell: no column break, no raw HTML, one line."""
    text = "" if value is None else str(value)
    for old, new in (("\\", "\\\\"), ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("*", "\\*"),
                     ("`", "\\`"), ("[", "\\["), ("]", "\\]"), ("\r", " "), ("\n", " ")):
        text = text.replace(old, new)
    return text


def fleet_report_link(archive_dir, report_dir):
    """Where the drill report links to the fleet's history page: relative when both live in the archive."""
    page = os.path.join(archive_dir, FLEET_REPORT)
    archive = os.path.abspath(archive_dir)
    inside = os.path.commonpath([os.path.abspath(report_dir), archive]) == archive
    return {"href": os.path.relpath(page, report_dir) if inside else pathlib.Path(page).as_uri(),
            "exists": os.path.isfile(page)}


def render_reports(templates_dir, context):
    loader = jinja2.FileSystemLoader(templates_dir)
    filters = {"bytes": human_bytes, "age": human_age, "when": human_time, "secs": human_seconds,
               "md": markdown_text}
    rendered = {}
    for template, autoescape in (("report.md.j2", False), ("report.html.j2", True)):
        # HTML: every host, database, file and probe name is escaped; Markdown cells go through |md.
        env = jinja2.Environment(loader=loader, autoescape=autoescape, undefined=jinja2.StrictUndefined,
                                 trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        env.filters.update(filters)
        rendered[template] = env.get_template(template).render(**context)
    return rendered["report.md.j2"], rendered["report.html.j2"]


# --------------------------------------------------------------------------- files


def make_private_parent(path):
    """Create a missing folder 0700; leave an existing one as it is (it may be shared, e.g. /var/log)."""
    if not os.path.isdir(path):
        os.makedirs(path, 0o700, exist_ok=True)


def append_log(path, lines):
    make_private_parent(os.path.dirname(path))
    data = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def log_line(entry, now, source="archive"):
    return {"time": iso_utc(now), "source": source, "host": entry["host"], "database": entry["database"],
            "backup": entry["backup"],
            "created": entry["created"], "age_seconds": entry["age_seconds"], "size_bytes": entry["size_bytes"],
            "status": entry["status"], "ok": entry["ok"], "stale": entry["stale"], "problems": entry["problems"],
            "probes": entry["probes"], "seconds": entry["seconds"], "restore_seconds": entry["restore_seconds"],
            "newest": entry["newest"], "last_good": entry["last_good"], "drill_ok": entry["drill_ok"]}


def failure_message(failed_entries, stale_entries, max_age_hours, where):
    parts = []
    if failed_entries:
        parts.append("restore drill FAILED for %s" % "; ".join(
            "%s/%s: %s" % (e["host"], e["database"] or "-", "; ".join(e["problems"][:3])) for e in failed_entries))
    if stale_entries:
        parts.append("newest backup older than %g h: %s" % (max_age_hours, ", ".join(
            "%s/%s (%s, %s old)" % (e["host"], e["database"], e["newest"], human_age(e["age_seconds"]))
            for e in stale_entries)))
    return "; ".join(parts) + (" (%s)" % where if where else "")


# --------------------------------------------------------------------------- main


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive_dir=dict(type="path", required=True),
            scratch_dir=dict(type="path"),
            hosts=dict(type="list", elements="str", default=[]),
            databases=dict(type="dict", default={}),
            probes=dict(type="dict", default={}),
            host_probes=dict(type="dict", default={}),
            drill_log=dict(type="path"),
            report_dir=dict(type="path"),
            templates_dir=dict(type="path"),
            max_age_hours=dict(type="float", default=36),
            unreached_days=dict(type="float", default=3),
            trend_count=dict(type="int", default=10),
            lock_timeout=dict(type="float", default=600),
            source=dict(type="str", default="archive", choices=["archive", "offsite"]),
        ),
        required_by={"report_dir": "templates_dir"},
        supports_check_mode=True,
    )
    params = module.params
    result = {"changed": False, "results": [], "failed_drills": [], "stale": [], "unreached": [], "lines": [],
              "ignored": []}

    def bad_input(message):
        module.fail_json(msg=message, kind=KIND_BAD_INPUT, **result)

    for number in ("max_age_hours", "unreached_days", "lock_timeout"):
        if params[number] < 0:
            bad_input("%s must be 0 or more, got %s" % (number, params[number]))
    if params["trend_count"] < 1:
        bad_input("trend_count must be at least 1, got %d" % params["trend_count"])
    try:
        archive_dir = validate_abs_path(params["archive_dir"], "archive_dir")
        scratch_dir = validate_abs_path(params["scratch_dir"] or os.path.join(archive_dir, ".drill-scratch"),
                                        "scratch_dir")
        drill_log = validate_abs_path(params["drill_log"], "drill_log") if params["drill_log"] else None
        report_dir = validate_abs_path(params["report_dir"], "report_dir") if params["report_dir"] else None
        hosts = [validate_name(host, "host") for host in params["hosts"]]
        databases = {}
        for host, names in params["databases"].items():
            if names is None:
                names = []
            if not isinstance(names, list):
                raise BackupError("databases[%s] must be a list of database names" % host, KIND_BAD_INPUT)
            databases[validate_name(host, "host")] = [validate_name(n) for n in names]
        probes = check_probes(params["probes"], "probes")
        host_probes = {}
        for host, per_host in params["host_probes"].items():
            if per_host in (None, "", {}):  # the host sets none of its own: it uses probes
                continue
            host_probes[validate_name(host, "host")] = check_probes(per_host, "host_probes[%s]" % host)
    except BackupError as exc:
        bad_input(str(exc))
    if report_dir:
        templates_dir = params["templates_dir"]
        missing = [t for t in ("report.md.j2", "report.html.j2") if not os.path.isfile(os.path.join(templates_dir, t))]
        if missing:
            bad_input("templates_dir %s lacks %s" % (templates_dir, ", ".join(missing)))
        if jinja2 is None:
            module.fail_json(msg=missing_required_lib("jinja2") + " (run this module on the controller, with "
                             "ansible_python_interpreter set to ansible_playbook_python)",
                             exception=JINJA2_IMPORT_ERROR, kind=KIND_BAD_INPUT, **result)
    if not os.path.isdir(archive_dir):
        bad_input("the archive %s does not exist: nothing was ever pulled into it (run backup.yml first)" % archive_dir)

    targets, ignored = drill_targets(archive_dir, hosts, databases)
    result["ignored"] = ignored
    for folder in ignored:
        module.warn("archive folder %r is not named like a host or database: not drilled" % folder)
    if not targets:
        module.fail_json(msg="nothing to drill: the archive %s holds no host folder" % archive_dir,
                         kind=KIND_BAD_INPUT, **result)
    drilled_names = {name for _, name, _ in targets}
    for name in sorted(set(probes) | {n for p in host_probes.values() for n in p}):
        if name not in drilled_names:
            module.warn("probes are set for database %s, which is not in the archive of the hosts drilled" % name)

    now = utcnow()
    if module.check_mode:
        would = []
        for host, name, folder in targets:
            listing = list_backups(folder) if name and os.path.isdir(folder) else {"backups": [], "invalid": []}
            entry = new_entry(host, name, folder)
            examine(entry, listing, now, params["trend_count"])
            try:
                backup = choose_backup(listing["backups"])["file"]
            except BackupError:
                backup = None
            would.append({"host": host, "database": name, "backup": backup})
            result["lines"].append("%s %s: %s" % (host, name or "-", "would drill %s" % backup if backup else
                                                  "would FAIL: no verified backup to drill"))
            if settle(entry, params["max_age_hours"])["stale"]:
                result["stale"].append("%s/%s" % (host, name))
                result["lines"][-1] += "; newest backup %s is older than %g h" % (entry["newest"],
                                                                                  params["max_age_hours"])
        result.update(changed=bool(drill_log or report_dir), would_drill=would, msg="would drill %s" % ", ".join(
            "%s/%s (%s)" % (w["host"], w["database"] or "-", w["backup"] or "no verified backup: would fail")
            for w in would))
        module.exit_json(**result)

    entries = []
    scratch_existed = os.path.isdir(scratch_dir)
    try:
        for host, name, folder in targets:
            chosen_probes = host_probes.get(host, probes).get(name or "", [])
            entry = new_entry(host, name, folder)
            try:
                drill_database(entry, chosen_probes, scratch_dir, now, params["trend_count"], params["lock_timeout"])
            except (BackupError, OSError, sqlite3.Error) as exc:  # a lock held too long, an unreadable folder
                entry["problems"].append("the drill of %s could not run: %s" % (folder, exc))
            entries.append(settle(entry, params["max_age_hours"]))
            for warning in entry["warnings"]:
                module.warn("%s/%s: %s" % (host, name, warning))
    finally:
        if not scratch_existed:
            try:
                os.rmdir(scratch_dir)  # ours, and empty: the drills remove their copies
            except OSError:
                pass
    entries.sort(key=sort_key)
    unreached = unreached_hosts(entries, params["unreached_days"])
    failed_entries = [e for e in entries if e["status"] == "fail"]
    stale_entries = [e for e in entries if e["stale"]]
    lines = [summary_line(e, params["max_age_hours"]) for e in entries]
    lines += [unreached_line(item, params["unreached_days"]) for item in unreached]
    result.update(results=entries, unreached=unreached, lines=lines,
                  failed_drills=["%s/%s" % (e["host"], e["database"] or "-") for e in failed_entries],
                  stale=["%s/%s" % (e["host"], e["database"]) for e in stale_entries])

    finished = utcnow()
    try:
        if drill_log:
            append_log(drill_log, [log_line(e, finished, params["source"]) for e in entries])
            result.update(changed=True, drill_log=drill_log)
        if report_dir:
            counts = {status: sum(1 for e in entries if e["status"] == status) for status in STATUS_RANK}
            overall = "fail" if counts["fail"] else ("stale" if counts["stale"] else "ok")
            for entry in entries:
                entry["spark"] = sparkline(entry["sizes"])
                entry["trend"] = size_trend(entry["sizes"])
            context = {"entries": entries, "unreached": unreached, "ignored": ignored, "counts": counts,
                       "overall": overall, "overall_word": STATUS_WORD[overall], "status_word": STATUS_WORD,
                       "generated": iso_utc(finished), "archive_dir": archive_dir, "drill_log": drill_log,
                       "fleet_report": fleet_report_link(archive_dir, report_dir),
                       "max_age_hours": "%g" % params["max_age_hours"],
                       "unreached_days": "%g" % params["unreached_days"], "trend_count": params["trend_count"]}
            markdown, html = render_reports(params["templates_dir"], context)
            for entry in entries:
                del entry["spark"], entry["trend"]
            make_private_parent(report_dir)
            result["report_md"] = os.path.join(report_dir, REPORT_MD)
            result["report_html"] = os.path.join(report_dir, REPORT_HTML)
            write_file_atomic(result["report_md"], markdown.encode("utf-8"))
            write_file_atomic(result["report_html"], html.encode("utf-8"))
            result["changed"] = True
    except OSError as exc:
        module.fail_json(msg="the drills ran but their record could not be written: %s" % exc, kind=KIND_IO,
                         **result)
    except TEMPLATE_ERRORS as exc:
        module.fail_json(msg="the drills ran but the report template failed: %s" % exc, kind=KIND_IO, **result)

    where = result.get("report_html") or drill_log
    if failed_entries or stale_entries:
        module.fail_json(msg=failure_message(failed_entries, stale_entries, params["max_age_hours"],
                                             "report: %s" % where if where else ""),
                         kind=KIND_CORRUPT if failed_entries else KIND_STALE, **result)
    result["msg"] = "%d restore drill%s passed" % (len(entries), "" if len(entries) == 1 else "s")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
