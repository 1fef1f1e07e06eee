#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.backup_task import backup_options, backup_task
from ansible.module_utils.sqlite_fleet.errors import finish_module

ARGUMENT_SPEC = backup_options()


def main():
    finish_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True), backup_task)


if __name__ == "__main__":
    main()
