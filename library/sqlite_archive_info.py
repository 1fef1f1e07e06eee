#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_archive_info
short_description: List the backups the controller's archive holds for one host and database
description:
  - Runs on the controller (delegate to C(localhost)). Returns the finished backups in
    C(<archive_dir>/<host>/<name>/), newest first, for M(sqlitefleet.sqlite_fleet.sqlite_backup)
    (O(sqlitefleet.sqlite_fleet.sqlite_backup#module:export.have)) or M(sqlitefleet.sqlite_fleet.sqlite_export)
    (O(sqlitefleet.sqlite_fleet.sqlite_export#module:have)), so that a host stages only what the archive lacks.
  - Only finished backups are listed (a backup file with a valid manifest). What an interrupted earlier pull
    left in the folder - this tool's temporary and unfinished files, never a finished backup - is removed first,
    under the folder's lock, and listed in RV(removed_unfinished); the task then reports C(changed).
  - It creates nothing; a missing folder holds nothing (yet).
options:
  name:
    description: Database name.
    type: str
    required: true
  lock_timeout:
    description: Seconds to wait for the archive folder's lock (taken only to remove unfinished files).
    type: float
    default: 600
notes:
  - In check mode nothing is removed and the lock is not taken.
extends_documentation_fragment:
  - sqlite_fleet_archive
  - sqlite_fleet_attributes
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_archive
  - module: sqlitefleet.sqlite_fleet.sqlite_backup
  - module: sqlitefleet.sqlite_fleet.sqlite_export
"""

EXAMPLES = r"""
- name: What the archive holds for this host's gym database
  sqlite_archive_info:
    archive_dir: /srv/sqlite-archive
    host: "{{ inventory_hostname }}"
    name: gym
  delegate_to: localhost
  become: false
  register: archive_list

- name: Back up on the host and stage what the archive lacks
  sqlite_backup:
    path: /srv/gym/gym.db
    name: gym
    backup_dir: /var/backups/sqlite
    export:
      have: "{{ archive_list.have }}"
"""

RETURN = r"""
have:
  description:
    - The archive's backups of this database, newest first - C(file), C(sha256), C(created), C(verified) and
      C(intact) (false once the archive found its bytes no longer match its checksum; the host may send it again).
  returned: always
  type: list
  elements: dict
  sample: [{"file": "gym_backup_20261122_030000.db", "sha256": "9f86d0...", "created": "2026-11-22T03:00:00Z",
            "verified": true, "intact": true}]
removed_unfinished:
  description: What an interrupted earlier pull left in the folder, removed before listing (none in check mode).
  returned: always
  type: list
  elements: str
folder:
  description: The database's folder in the archive.
  returned: always
  type: str
  sample: /srv/sqlite-archive/pi1/gym
kind:
  description: Sort of failure, V(bad_input), V(locked) (the folder's lock was held too long) or V(io).
  returned: failure
  type: str
"""

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
