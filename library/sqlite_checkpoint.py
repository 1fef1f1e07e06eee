#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import sqlite3

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_BAD_INPUT, KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.sqlitedb import CHECKPOINT_MODES, checkpoint


ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    mode=dict(type="str", default="PASSIVE", choices=list(CHECKPOINT_MODES)),
    busy_timeout_ms=dict(type="int", default=5000),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    if params["busy_timeout_ms"] < 0:
        module.fail_json(msg="busy_timeout_ms must be 0 or more, got %d" % params["busy_timeout_ms"],
                         kind=KIND_BAD_INPUT, changed=False)
    try:
        result = checkpoint(params["path"], params["mode"], params["busy_timeout_ms"], check_mode=module.check_mode)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, changed=False)
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg="checkpoint of %s failed: %s" % (params["path"], exc), kind=KIND_IO, changed=False)

    warning = result.pop("warning", None)
    if warning and not result["skipped"]:
        module.warn(warning)
    # A top-level "path" makes Ansible add the file's stat to the result, overwriting "mode".
    result.pop("path", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
