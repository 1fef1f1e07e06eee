#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import sqlite3

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_CORRUPT, KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.inputs import validate_abs_path, validate_name, validate_sha256
from ansible.module_utils.sqlite_fleet.sqlitedb import INTEGRITY_LEVELS
from ansible.module_utils.sqlite_fleet.verify import (
    backups_to_verify,
    unverifiable_result,
    verify_backup,
    verify_listed_backup,
    verify_summary,
)

ARGUMENT_SPEC = dict(
    path=dict(type="path"),
    backup_dir=dict(type="path"),
    name=dict(type="str"),
    select=dict(type="str", default="latest", choices=["latest", "all"]),
    integrity=dict(type="str", default="full", choices=list(INTEGRITY_LEVELS)),
    expected_sha256=dict(type="str"),
    check_rows=dict(type="bool", default=True),
)


def verify_folder(module, params, result):
    """The backups of O(backup_dir) that O(select) picks, and (select=all) its broken files as failed results."""
    backup_dir = validate_abs_path(params["backup_dir"], "backup_dir")
    name = validate_name(params["name"]) if params["name"] is not None else None
    paths, invalid = backups_to_verify(backup_dir, name, params["select"])
    results = [verify_listed_backup(path, params["integrity"], params["check_rows"]) for path in paths]
    result["invalid"] = [item["file"] for item in invalid]
    if params["select"] == "all":
        results += [unverifiable_result(item["path"], item["why"], params["integrity"]) for item in invalid]
    elif invalid:
        module.warn("%s holds files named like backups whose manifest is missing or broken (not verified "
                    "with select=latest): %s" % (backup_dir, ", ".join(result["invalid"])))
    return results


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[["path", "backup_dir"], ["path", "name"]],
        required_one_of=[["path", "backup_dir"]],
        required_by={"expected_sha256": "path"},
        supports_check_mode=True,
    )
    params = module.params
    result = {"changed": False, "ok": False, "verified_count": 0, "failed_backups": [], "results": []}
    try:
        if params["expected_sha256"] is not None:
            params["expected_sha256"] = validate_sha256(params["expected_sha256"])
        if params["path"] is not None:
            results = [verify_backup(validate_abs_path(params["path"], "path"), params["integrity"],
                                     params["expected_sha256"], params["check_rows"])]
        else:
            results = verify_folder(module, params, result)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, **result)
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg="verification failed: %s" % exc, kind=KIND_IO, **result)

    result.update(results=results, failed_backups=[r["file"] for r in results if not r["ok"]],
                  verified_count=sum(1 for r in results if r["ok"]), msg=verify_summary(results))
    result["ok"] = not result["failed_backups"]
    if result["failed_backups"]:
        module.fail_json(kind=KIND_CORRUPT, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
