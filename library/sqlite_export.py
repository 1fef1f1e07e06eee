#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_export
short_description: Prepare the backups a controller lacks for a delta pull
description:
  - Runs on a host. Compares the host's finished backups of one database with what the
    controller's archive already holds (O(have)) and prepares every missing backup, oldest first.
  - A backup is sent as a page-level delta against the newest older backup that both sides hold,
    or one sent earlier in the same run; as the host has both files, it works out the changed pages
    itself and nothing has to travel upstream. The first time, or when the page size changed, or when
    the delta would save less than 10%, the backup is sent whole.
  - Prepared files go into a private staging folder inside O(backup_dir) (full copies are hard links,
    so a concurrent prune cannot pull them away), or beside it for a O(fetch_user) that cannot enter it.
    Remove it with O(state=absent) after the transfer (or with M(sqlitefleet.sqlite_fleet.sqlite_fetch), which
    fetches the files and then removes the folder).
  - M(sqlitefleet.sqlite_fleet.sqlite_backup) does the same with its
    O(sqlitefleet.sqlite_fleet.sqlite_backup#module:export) option, in the same module run as the backup.
  - Only finished backups (name pattern and valid manifest) are ever offered; symbolic links are never followed.
options:
  backup_dir:
    description: Absolute path of the host's backup folder.
    type: path
    required: true
  name:
    description: Database name (as in the backup file names). Required with O(state=present).
    type: str
  state:
    description:
      - V(present) prepares the transfers; V(absent) removes the staging folder O(staging_dir).
    type: str
    choices: [present, absent]
    default: present
  staging_dir:
    description: The staging folder to remove with O(state=absent).
    type: path
notes:
  - In check mode the plan is returned and nothing is written.
extends_documentation_fragment:
  - sqlite_fleet_attributes
  - sqlite_fleet_export.options
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_archive_info
  - module: sqlitefleet.sqlite_fleet.sqlite_fetch
  - module: sqlitefleet.sqlite_fleet.sqlite_archive
"""

EXAMPLES = r"""
- name: Prepare what the archive lacks
  sqlite_export:
    backup_dir: /var/backups/sqlite
    name: gym
    have: "{{ archive_list.have }}"
  register: export

- name: Remove the staging folder after the transfer
  sqlite_export:
    backup_dir: /var/backups/sqlite
    state: absent
    staging_dir: "{{ export.staging_dir }}"
"""

RETURN = r"""
transfers:
  description:
    - One entry per backup to send, oldest first, with C(file), C(name), C(manifest), C(mode) (V(delta) or
      V(full)), C(base) (the shared backup a delta applies to), C(fetch_path) (what to fetch), C(bytes)
      (its size) and C(size_bytes) (the backup's size).
  returned: state=present
  type: list
  elements: dict
staging_dir:
  description: The private staging folder holding the prepared files (null in check mode or when nothing is missing).
  returned: state=present
  type: str
conflicts:
  description: Backups both sides hold under the same name but with different checksums (never sent).
  returned: state=present
  type: list
  elements: str
invalid:
  description: Files named like backups whose manifest is missing or broken (never sent).
  returned: state=present
  type: list
  elements: str
kind:
  description: Sort of failure, V(bad_input) or V(io).
  returned: failure
  type: str
"""

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
