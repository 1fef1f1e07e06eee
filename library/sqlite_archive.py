#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

# This module runs on the controller, and pull.outdated_runner compares a runner's core_sha256 with
# the whole core's: it ships every part (no link carries this payload), so it can hash them all.
import ansible.module_utils.sqlite_fleet.backup_task  # noqa: F401
import ansible.module_utils.sqlite_fleet.drills  # noqa: F401
import ansible.module_utils.sqlite_fleet.export  # noqa: F401
import ansible.module_utils.sqlite_fleet.progress  # noqa: F401
import ansible.module_utils.sqlite_fleet.restore_task  # noqa: F401
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.archive import archive_options
from ansible.module_utils.sqlite_fleet.errors import KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.files import ensure_private_dir
from ansible.module_utils.sqlite_fleet.inputs import validate_abs_path, validate_name
from ansible.module_utils.sqlite_fleet.names import INCOMING_PREFIX
from ansible.module_utils.sqlite_fleet.pull import import_and_prune, import_pulled, outdated_runner, prepare_pull
from ansible.module_utils.sqlite_fleet.retention import retention_options


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive_options(),
            name=dict(type="str"),
            state=dict(type="str", required=True, choices=["prepare", "import"]),
            transfers=dict(type="list", elements="raw"),
            dropped=dict(type="list", elements="dict"),
            databases=dict(type="list", elements="str"),
            retention=dict(type="dict", options=retention_options()),
            incoming=dict(type="path"),
            mode=dict(type="str", default="full", choices=["full", "delta"]),
            base=dict(type="str"),
            manifest=dict(type="dict"),
            integrity=dict(type="str", default="full", choices=["quick", "full"]),
        ),
        required_if=[("state", "import", ["incoming", "transfers", "retention"], True),
                     ("state", "prepare", ["transfers"]), ("mode", "delta", ["base"])],
        required_by={"incoming": ["name", "manifest"]},
        mutually_exclusive=[("incoming", "transfers")],
        supports_check_mode=True,
    )
    params = module.params
    try:
        archive_dir = validate_abs_path(params["archive_dir"], "archive folder")
        host_dir = os.path.join(archive_dir, validate_name(params["host"], "host"))
        if params["state"] == "prepare":
            result = prepare_pull(archive_dir, params["host"], params["transfers"], params["databases"],
                                  check_mode=module.check_mode, warn=module.warn)
            module.exit_json(**result)
        if params["state"] == "import" and params["incoming"] is None:
            result, failure = import_and_prune(params, host_dir, check_mode=module.check_mode, diff=module._diff,
                                               warn=module.warn)
            if failure:
                module.fail_json(**dict(result, **failure))
            module.exit_json(**result)
        folder = os.path.join(host_dir, validate_name(params["name"]))
        paths = dict(folder=folder, incoming_dir=folder, incoming_prefix=INCOMING_PREFIX)
        for level in (archive_dir, os.path.dirname(folder), folder):
            ensure_private_dir(level, None, check_mode=module.check_mode)
        if module.check_mode:
            module.exit_json(changed=True, msg="would import %s" % params["incoming"], **paths)
        result = import_pulled(params, folder)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind)
    except OSError as exc:
        module.fail_json(msg="archive import for %s failed: %s" % (params["host"], exc), kind=KIND_IO)
    result.update(paths)
    outdated = outdated_runner(params["manifest"])
    if outdated:
        result["outdated_runner"] = outdated
        module.warn(outdated)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
