#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_report
short_description: Summarise a fleet run, one line per host and database, and record it
description:
  - Runs on the controller at the end of a playbook. Takes what every host of the run reported
    (the C(sqlite_run) fact the playbooks set) and the list of hosts that should have reported.
  - For O(kind=backup), O(kind=pre_upgrade) and O(kind=sync), returns one line per host and
    database (backup name, size, seconds, bytes transferred, verified or why not) and writes a
    JSON run record into O(record_dir).
  - For O(kind=stats), renders the facts and backup statistics as a table (or JSON) and writes nothing.
  - A host that should have reported but did not (unreachable, or failed before reporting) is a failure.
options:
  kind:
    description: Which playbook ran.
    type: str
    choices: [backup, pre_upgrade, sync, stats]
    required: true
  hosts:
    description: The inventory names of every host that should have reported.
    type: list
    elements: str
    required: true
  runs:
    description: What each host reported (in the order of O(hosts); null for a host that did not report).
    type: list
    elements: raw
    required: true
  record_dir:
    description: Folder for the JSON run record (created C(0700)). Empty or unset writes no record.
    type: path
  format:
    description: With O(kind=stats), V(table) or V(json).
    type: str
    choices: [table, json]
    default: table
notes:
  - In check mode no record is written.
extends_documentation_fragment:
  - sqlite_fleet_attributes
author:
  - Sqlite Fleet Backup authors (@sqlite-fleet-backup)
"""

EXAMPLES = r"""
- name: Summarise the run
  sqlite_report:
    kind: backup
    hosts: "{{ groups['sqlite_hosts'] }}"
    runs: "{{ groups['sqlite_hosts'] | map('extract', hostvars, 'sqlite_run') | map('default', None) | list }}"
    record_dir: /srv/sqlite-archive/runs
  delegate_to: localhost
"""

RETURN = r"""
lines:
  description: One line per host and database.
  returned: always
  type: list
  elements: str
rows:
  description: The same as data, one dict per host and database.
  returned: always
  type: list
  elements: dict
failed_hosts:
  description: Hosts with a failure (or no report at all).
  returned: always
  type: list
  elements: str
record:
  description: Path of the run record written.
  returned: when a record was written
  type: str
table:
  description: With O(kind=stats), the rendered table (or JSON text).
  returned: kind=stats
  type: str
"""

import datetime
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet import BackupError, ensure_private_dir, human_age, human_bytes, write_file_atomic

NOT_REPORTED = "unreachable, or failed before reporting"






def item_name(result):
    if "item" not in result:  # one result per database or backup of a module run (sqlite_archive's imported)
        return result.get("name")
    item = result.get("item") or {}
    if "item" in item:  # a loop over another task's results
        item = item["item"]
    return item.get("name") if isinstance(item, dict) else None


def results_for(results, name):
    return [r for r in results or [] if isinstance(r, dict) and item_name(r) == name]


def run_row(host, run, name):
    """One host/database of a backup, pre_upgrade or sync run."""
    row = {"host": host, "database": name, "ok": True, "problems": []}
    taken = results_for(run.get("taken"), name)
    if taken:
        t = taken[0]
        row.update(backup=t.get("file"), size_bytes=t.get("size_bytes"), seconds=t.get("duration_seconds"),
                   verified_on_host=t.get("verified"))
        if t.get("failed"):
            row["problems"].append("backup: %s" % t.get("msg", "failed"))
    elif run.get("expect_backup", True):
        row["problems"].append("no backup taken")
    transfers = [t for t in run.get("transfers") or [] if t.get("name") == name]
    row["transferred_bytes"] = sum(t.get("bytes") or 0 for t in transfers)
    row["transfers"] = ["%s (%s)" % (t.get("file"), t.get("mode")) for t in transfers]
    imported = results_for(run.get("imported"), name)
    failed_imports = [r for r in imported if r.get("failed")]
    for r in failed_imports:
        row["problems"].append("archive: %s" % r.get("msg", "import failed"))
    row["archived"] = [r.get("file") for r in imported if not r.get("failed") and r.get("file")]
    installed = results_for(run.get("installed"), name)
    for r in installed:
        if r.get("failed"):
            row["problems"].append("working copy: %s" % r.get("msg", "failed"))
        else:
            row["working_copy"] = r.get("dest")
    if run.get("failure") and not row["problems"]:
        row["problems"].append(run["failure"])
    row["ok"] = not row["problems"]
    return row


def run_line(row):
    if not row["ok"]:
        return "%s %s: FAILED - %s" % (row["host"], row["database"], "; ".join(row["problems"]))
    parts = ["%s %s: %s" % (row["host"], row["database"], row.get("backup") or "no new backup")]
    if row.get("size_bytes") is not None:
        parts.append("%s in %.2f s" % (human_bytes(row["size_bytes"]), row.get("seconds") or 0))
    parts.append("sent %s" % human_bytes(row["transferred_bytes"]))
    if row.get("backup") and row.get("backup") in row["archived"]:
        parts.append("verified on host and in archive")
    elif row.get("backup"):
        parts.append("verified on host")
    if row.get("working_copy"):
        parts.append("working copy %s" % row["working_copy"])
    return ", ".join(parts)


def stats_rows(host, run):
    rows = []
    for entry in run.get("info") or []:
        name = item_name(entry)
        db = entry.get("database") or {}
        backups = entry.get("backups") or {}
        archive = next((a.get("backups") or {} for a in results_for(run.get("archive_info"), name)), {})
        rows.append({
            "host": host, "database": name, "ok": not entry.get("failed"),
            "problems": [entry.get("msg")] if entry.get("failed") else [],
            "db_size_bytes": db.get("size_bytes"), "wal_bytes": db.get("wal_bytes"),
            "journal_mode": db.get("journal_mode"), "page_size": db.get("page_size"),
            "page_count": db.get("page_count"), "freelist_count": db.get("freelist_count"),
            "sqlite_version": db.get("sqlite_version"), "tables": db.get("tables"),
            "host_backups": backups.get("count"), "host_backups_bytes": backups.get("total_bytes"),
            "host_newest": backups.get("newest"), "host_newest_age_seconds": backups.get("newest_age_seconds"),
            "host_oldest": backups.get("oldest"),
            "archive_backups": archive.get("count"), "archive_newest": archive.get("newest"),
            "archive_newest_age_seconds": archive.get("newest_age_seconds"),
        })
    return rows


STATS_COLUMNS = (
    ("host", "host", str), ("database", "db", str),
    ("db_size_bytes", "size", human_bytes), ("wal_bytes", "wal", human_bytes),
    ("journal_mode", "journal", str), ("tables", "rows", lambda t: "-" if t is None else str(sum(
        v or 0 for v in t.values()))),
    ("host_backups", "backups", str), ("host_backups_bytes", "on host", human_bytes),
    ("host_newest_age_seconds", "newest age", human_age),
    ("archive_backups", "archived", str), ("archive_newest_age_seconds", "archive age", human_age),
)


def render_table(rows):
    header = [title for _, title, _ in STATS_COLUMNS]
    body = []
    for row in rows:
        if not row["ok"]:
            body.append([row["host"], str(row["database"]), "FAILED: %s" % "; ".join(row["problems"])])
            continue
        body.append([fmt(row.get(key)) if row.get(key) is not None or fmt in (human_bytes, human_age) else "-"
                     for key, _, fmt in STATS_COLUMNS])
    widths = [max(len(r[i]) for r in [header] + [b for b in body if len(b) == len(header)]) for i in
              range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    for cells in body:
        if len(cells) == len(header):
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip())
        else:
            lines.append("  ".join(cells))
    return "\n".join(lines)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kind=dict(type="str", required=True, choices=["backup", "pre_upgrade", "sync", "stats"]),
            hosts=dict(type="list", elements="str", required=True),
            runs=dict(type="list", elements="raw", required=True),
            record_dir=dict(type="path"),
            format=dict(type="str", default="table", choices=["table", "json"]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if len(params["runs"]) != len(params["hosts"]):
        module.fail_json(msg="runs must have one entry per host (%d hosts, %d runs)"
                         % (len(params["hosts"]), len(params["runs"])))
    rows, failed_hosts = [], []
    for host, run in zip(params["hosts"], params["runs"]):
        if not isinstance(run, dict):
            rows.append({"host": host, "database": None, "ok": False, "problems": [NOT_REPORTED]})
            failed_hosts.append(host)
            continue
        if params["kind"] == "stats":
            host_rows = stats_rows(host, run)
        else:
            host_rows = [run_row(host, run, name) for name in run.get("databases") or []]
            if run.get("failure") and not host_rows:
                host_rows = [{"host": host, "database": None, "ok": False, "problems": [run["failure"]]}]
        rows.extend(host_rows)
        if any(not r["ok"] for r in host_rows):
            failed_hosts.append(host)
    if params["kind"] == "stats":
        table = json.dumps(rows, indent=2, sort_keys=True) if params["format"] == "json" else render_table(rows)
        module.exit_json(changed=False, rows=rows, lines=table.splitlines(), table=table, failed_hosts=failed_hosts)
    lines = [run_line(r) if r.get("database") else "%s: FAILED - %s" % (r["host"], "; ".join(r["problems"]))
             for r in rows]
    result = dict(changed=False, rows=rows, lines=lines, failed_hosts=failed_hosts)
    if params["record_dir"] and not module.check_mode:
        now = datetime.datetime.now(datetime.timezone.utc)
        record = {"kind": params["kind"], "finished": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "hosts": params["hosts"],
                  "failed_hosts": failed_hosts, "ok": not failed_hosts, "rows": rows, "lines": lines}
        try:
            ensure_private_dir(params["record_dir"], None)
            path = os.path.join(params["record_dir"], "%s-%s.json" % (params["kind"], now.strftime("%Y%m%dT%H%M%S%fZ")))
            write_file_atomic(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        except (BackupError, OSError) as exc:
            module.fail_json(msg="cannot write the run record: %s" % exc, **result)
        result.update(changed=True, record=path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
