#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os
import sqlite3

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.inputs import validate_abs_path, validate_name
from ansible.module_utils.sqlite_fleet.retention import folder_stats
from ansible.module_utils.sqlite_fleet.sqlitedb import database_facts


def backup_folder_stats(backup_dir, name):
    backup_dir = validate_abs_path(backup_dir, "backup_dir")
    name = validate_name(name) if name is not None else None
    stats = folder_stats(backup_dir, name)
    stats["exists"] = os.path.isdir(backup_dir)
    return stats


ARGUMENT_SPEC = dict(
    path=dict(type="path"),
    backup_dir=dict(type="path"),
    name=dict(type="str"),
    count_rows=dict(type="bool", default=True),
)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_one_of=[["path", "backup_dir"]],
        required_by={"name": "backup_dir"},
        supports_check_mode=True,
    )
    params = module.params
    result = {"changed": False, "database": None, "backups": None}
    try:
        if params["path"] is not None:
            result["database"] = database_facts(params["path"], count_rows=params["count_rows"])
        if params["backup_dir"] is not None:
            result["backups"] = backup_folder_stats(params["backup_dir"], params["name"])
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, **result)
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg="reading facts failed: %s" % exc, kind=KIND_IO, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
