#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_working_copy
short_description: Install a verified backup as a working copy, keeping the previous ones
description:
  - Copies an archived backup to O(dest) under a temporary name, checks that its sha256 and its
    tables and per-table row counts equal the backup's manifest, and renames it over O(dest).
  - The previous working copy is never overwritten without being kept. It is renamed
    C(<dest>.prev-<UTC time>), together with its C(-wal) file (which must never be replayed
    into another database), and the O(keep) newest previous copies are kept.
  - Close programs that have the working copy open before replacing it; they would keep reading the old file.
options:
  src:
    description: Absolute path of the archived backup (its manifest C(<src>.json) must be beside it).
    type: path
    required: true
  dest:
    description: Absolute path of the working copy. Its folder is created C(0700) if missing.
    type: path
    required: true
  keep:
    description: How many previous working copies to keep (at least 1).
    type: int
    default: 3
notes:
  - In check mode nothing is written; the result says what would be installed and kept.
extends_documentation_fragment:
  - sqlite_fleet_attributes
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_archive
  - module: sqlitefleet.sqlite_fleet.sqlite_restore
"""

EXAMPLES = r"""
- name: Install the newest gym backup for analysis
  sqlite_working_copy:
    src: /srv/sqlite-archive/gym-pi/gym/gym_backup_20261122_090000.db
    dest: /srv/sqlite-working/gym-pi/gym.db
    keep: 3
  delegate_to: localhost
"""

RETURN = r"""
dest:
  description: The working copy.
  returned: always
  type: str
previous:
  description: Where the previous working copy was kept (empty when there was none).
  returned: always
  type: list
  elements: str
removed:
  description: Previous copies removed because more than O(keep) were kept.
  returned: always
  type: list
  elements: str
sha256:
  description: sha256 of the installed copy (the manifest's).
  returned: always
  type: str
tables:
  description: Row counts per table, equal to the manifest's.
  returned: always
  type: dict
kind:
  description: Sort of failure.
  returned: failure
  type: str
"""

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
