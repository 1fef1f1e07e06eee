#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import finish_module
from ansible.module_utils.sqlite_fleet.restore_task import restore_task

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    backup=dict(type="path"),
    backup_dir=dict(type="path"),
    name=dict(type="str"),
    select=dict(type="str"),
    state=dict(type="str", default="restored", choices=["restored", "selected"]),
    mode=dict(type="str", default="replace", choices=["replace", "live"]),
    safety_dir=dict(type="path"),
    integrity=dict(type="str", default="full", choices=["full", "quick"]),
    busy_timeout_ms=dict(type="int", default=5000),
    expected_sha256=dict(type="str"),
    manifest=dict(type="dict"),
    owner=dict(type="str"),
    group=dict(type="str"),
    source_host=dict(type="str"),
)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[["backup", "backup_dir"], ["backup", "select"]],
        required_one_of=[["backup", "backup_dir"]],
        required_by={"backup_dir": "name"},
        supports_check_mode=True,
    )
    finish_module(module, restore_task)


if __name__ == "__main__":
    main()
