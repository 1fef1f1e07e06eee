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

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.sqlite_fleet.archive import drill_targets
from ansible.module_utils.sqlite_fleet.drills import (
    DRILL_REPORT_HTML,
    DRILL_REPORT_MD,
    DRILL_TEMPLATES,
    check_drill_options,
    drill_failure,
    drill_findings,
    drill_log_line,
    drill_report_context,
    plan_drills,
    run_drills,
    unused_probe_warnings,
)
from ansible.module_utils.sqlite_fleet.errors import KIND_BAD_INPUT, KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.files import append_json_lines, make_dir_private_if_missing, write_file_atomic
from ansible.module_utils.sqlite_fleet.names import utcnow
from ansible.module_utils.sqlite_fleet.present import human_age, human_bytes, human_seconds, human_time, markdown_text

try:
    import jinja2

    JINJA2_IMPORT_ERROR = None
except ImportError:  # the controller's Ansible always has it; a bare host interpreter may not
    jinja2 = None
    JINJA2_IMPORT_ERROR = traceback.format_exc()
TEMPLATE_ERRORS = (jinja2.TemplateError,) if jinja2 else ()

ARGUMENT_SPEC = dict(
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
)


def render_reports(templates_dir, context):
    """The Markdown and HTML drill reports (jinja2: the controller's, so it stays out of the core)."""
    loader = jinja2.FileSystemLoader(templates_dir)
    filters = {"bytes": human_bytes, "age": human_age, "when": human_time, "secs": human_seconds,
               "md": markdown_text}
    rendered = []
    for template, autoescape in zip(DRILL_TEMPLATES, (False, True)):
        # HTML: every host, database, file and probe name is escaped; Markdown cells go through |md.
        env = jinja2.Environment(loader=loader, autoescape=autoescape, undefined=jinja2.StrictUndefined,
                                 trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        env.filters.update(filters)
        rendered.append(env.get_template(template).render(**context))
    return rendered


def write_record(module, options, entries, findings, ignored, result):
    """The drill log's lines and the two reports; fails the module (the drills ran) when they cannot be written."""
    finished = utcnow()
    try:
        if options["drill_log"]:
            append_json_lines(options["drill_log"], [drill_log_line(e, finished, options["source"]) for e in entries])
            result.update(changed=True, drill_log=options["drill_log"])
        if options["report_dir"]:
            context = drill_report_context(entries, findings, ignored, options, finished)
            markdown, html = render_reports(options["templates_dir"], context)
            make_dir_private_if_missing(options["report_dir"])
            result["report_md"] = os.path.join(options["report_dir"], DRILL_REPORT_MD)
            result["report_html"] = os.path.join(options["report_dir"], DRILL_REPORT_HTML)
            write_file_atomic(result["report_md"], markdown.encode("utf-8"))
            write_file_atomic(result["report_html"], html.encode("utf-8"))
            result["changed"] = True
    except OSError as exc:
        module.fail_json(msg="the drills ran but their record could not be written: %s" % exc, kind=KIND_IO,
                         **result)
    except TEMPLATE_ERRORS as exc:
        module.fail_json(msg="the drills ran but the report template failed: %s" % exc, kind=KIND_IO, **result)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_by={"report_dir": "templates_dir"},
                           supports_check_mode=True)
    result = {"changed": False, "results": [], "failed_drills": [], "stale": [], "unreached": [], "lines": [],
              "ignored": []}
    try:
        options = check_drill_options(module.params)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=KIND_BAD_INPUT, **result)
    if options["report_dir"] and jinja2 is None:
        module.fail_json(msg=missing_required_lib("jinja2") + " (run this module on the controller, with "
                         "ansible_python_interpreter set to ansible_playbook_python)",
                         exception=JINJA2_IMPORT_ERROR, kind=KIND_BAD_INPUT, **result)
    archive_dir = options["archive_dir"]
    if not os.path.isdir(archive_dir):
        module.fail_json(msg="the archive %s does not exist: nothing was ever pulled into it (run backup.yml first)"
                         % archive_dir, kind=KIND_BAD_INPUT, **result)

    targets, result["ignored"] = drill_targets(archive_dir, options["hosts"], options["databases"])
    for folder in result["ignored"]:
        module.warn("archive folder %r is not named like a host or database: not drilled" % folder)
    if not targets:
        module.fail_json(msg="nothing to drill: the archive %s holds no host folder" % archive_dir,
                         kind=KIND_BAD_INPUT, **result)
    for warning in unused_probe_warnings(targets, options):
        module.warn(warning)

    now = utcnow()
    if module.check_mode:
        result.update(plan_drills(targets, options, now), changed=bool(options["drill_log"] or options["report_dir"]))
        module.exit_json(**result)

    entries, warnings = run_drills(targets, options, now)
    for warning in warnings:
        module.warn(warning)
    findings = drill_findings(entries, options)
    result.update(findings)
    write_record(module, options, entries, findings, result["ignored"], result)

    where = result.get("report_html") or options["drill_log"]
    failure = drill_failure(entries, options["max_age_hours"], "report: %s" % where if where else "")
    if failure:
        module.fail_json(msg=failure[0], kind=failure[1], **result)
    result["msg"] = "%d restore drill%s passed" % (len(entries), "" if len(entries) == 1 else "s")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
