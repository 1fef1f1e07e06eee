#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.restore import install_working_copy


ARGUMENT_SPEC = dict(
    src=dict(type="path", required=True),
    dest=dict(type="path", required=True),
    keep=dict(type="int", default=3),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        result = install_working_copy(params["src"], params["dest"], keep=params["keep"],
                                      check_mode=module.check_mode)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind)
    except OSError as exc:
        module.fail_json(msg="installing the working copy %s failed: %s" % (params["dest"], exc), kind=KIND_IO)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
