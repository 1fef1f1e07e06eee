#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

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
