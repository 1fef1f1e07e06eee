#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.export import (
    check_export_options,
    export_options,
    export_summary,
    remove_staging_dir,
    stage_export,
    staging_folder_of,
)
from ansible.module_utils.sqlite_fleet.inputs import validate_abs_path

ARGUMENT_SPEC = dict(
    backup_dir=dict(type="path", required=True),
    name=dict(type="str"),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    staging_dir=dict(type="path"),
    **export_options(),
)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("state", "present", ["name"]), ("state", "absent", ["staging_dir"])],
        supports_check_mode=True,
    )
    params = module.params
    try:
        check_export_options(params)
        backup_dir = validate_abs_path(params["backup_dir"], "backup folder")
        if params["state"] == "absent":
            if module.check_mode:
                module.exit_json(changed=os.path.isdir(staging_folder_of(backup_dir, params["staging_dir"])))
            module.exit_json(changed=remove_staging_dir(backup_dir, params["staging_dir"]))
        plan = stage_export(backup_dir, params["name"], params["have"], delta=params["delta"],
                            max_backups=params["max_backups"], fetch_user=params["fetch_user"],
                            check_mode=module.check_mode)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind)
    except OSError as exc:
        module.fail_json(msg="preparing the backups of %s failed: %s" % (params["name"], exc), kind=KIND_IO)
    module.exit_json(changed=bool(plan["staging_dir"]), msg=export_summary(params["name"], plan["transfers"]), **plan)


if __name__ == "__main__":
    main()
