#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.archive import archive_options, archived_backups
from ansible.module_utils.sqlite_fleet.errors import KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.inputs import validate_abs_path, validate_name


ARGUMENT_SPEC = dict(archive_options(), name=dict(type="str", required=True))


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        archive_dir = validate_abs_path(params["archive_dir"], "archive folder")
        folder = os.path.join(archive_dir, validate_name(params["host"], "host"), validate_name(params["name"]))
        listing = archived_backups(folder, clean=not module.check_mode, lock_timeout=params["lock_timeout"])
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind)
    except OSError as exc:
        module.fail_json(msg="listing the archive of %s for %s failed: %s" % (params["name"], params["host"], exc),
                         kind=KIND_IO)
    module.exit_json(changed=bool(listing["removed_unfinished"]), folder=folder, **listing)


if __name__ == "__main__":
    main()
