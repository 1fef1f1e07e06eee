#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import sqlite3

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_BAD_INPUT, KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.inputs import validate_lock_timeout
from ansible.module_utils.sqlite_fleet.names import parse_iso_utc
from ansible.module_utils.sqlite_fleet.retention import apply_retention, retention_options, retention_policy


def file_list(files):
    return "".join("%s\n" % entry for entry in sorted(files))


ARGUMENT_SPEC = dict(
    backup_dir=dict(type="path", required=True),
    name=dict(type="str", required=True),
    **retention_options(),
    lock_timeout=dict(type="float", default=600),
    now=dict(type="str"),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        validate_lock_timeout(params["lock_timeout"])
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, changed=False)
    now = None
    if params["now"] is not None:
        now = parse_iso_utc(params["now"])
        if now is None:
            module.fail_json(msg="now must be an ISO-8601 timestamp such as 2026-11-22T03:00:00Z, got %r"
                             % params["now"], kind=KIND_BAD_INPUT, changed=False)
    try:
        policy = retention_policy(params)
        result = apply_retention(params["backup_dir"], params["name"], policy, now=now,
                                 timezone=params["timezone"], check_mode=module.check_mode,
                                 lock_timeout=params["lock_timeout"])
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, changed=False)
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg="pruning %s failed: %s" % (params["backup_dir"], exc), kind=KIND_IO, changed=False)

    for flagged in result["flagged"]:
        module.warn("%s fails its checksum (%s): %s unverified, never kept as the newest verified backup"
                    % (flagged["file"], flagged["why"], "would be flagged" if module.check_mode else "flagged"))
    if module._diff:
        before = result["kept"] + result["deleted"]
        result["diff"] = {
            "before_header": "%s (%s backups)" % (params["backup_dir"], params["name"]),
            "after_header": "%s (%s backups)" % (params["backup_dir"], params["name"]),
            "before": file_list(before),
            "after": file_list(result["kept"]),
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
