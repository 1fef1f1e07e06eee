#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_info
short_description: Facts about a live SQLite database and its backups (read-only)
description:
  - Reports a database's size, WAL size, page layout, journal mode, C(user_version), tables and row counts,
    read-only, and whether this host's SQLite may carry the WAL-reset bug.
  - Reports a backup folder's statistics (count, verified count, total size with sidecars, newest and oldest
    backup, age of the newest, unfinished and broken files), for all databases or only O(name).
options:
  path:
    description:
      - Absolute path of a live database file.
    type: path
  backup_dir:
    description:
      - Absolute path of a backup folder.
    type: path
  name:
    description:
      - With O(backup_dir), only the backups of this database.
    type: str
  count_rows:
    description:
      - Count the rows of every table of O(path) (a full scan of each table).
    type: bool
    default: true
notes:
  - At least one of O(path) and O(backup_dir) is required.
  - Read-only; C(changed) is always false and check mode runs the same way.
  - The database is opened read-only. On a WAL database a reader may create the C(-wal)/C(-shm) files when
    they are missing; when this runs as root they are handed to the database's owner.
  - Relative paths are refused.
extends_documentation_fragment:
  - sqlite_fleet_attributes
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_backup
"""

EXAMPLES = r"""
- name: Database and backup statistics
  sqlite_info:
    path: /srv/gym/gym.db
    backup_dir: /var/backups/sqlite
    name: gym
  register: gym_info

- name: Show the age of the newest backup
  ansible.builtin.debug:
    msg: "{{ gym_info.backups.newest }} is {{ gym_info.backups.newest_age_seconds }} s old"
"""

RETURN = r"""
database:
  description: Facts about the database at O(path); null without O(path).
  returned: always
  type: dict
  contains:
    path:
      description: The database's path.
      type: str
    size_bytes:
      description: Size of the database file.
      type: int
    wal_bytes:
      description: Size of its C(-wal) file (0 when there is none).
      type: int
    sqlite_version:
      description: This host's SQLite version.
      type: str
    page_size:
      description: Page size in bytes.
      type: int
    page_count:
      description: Number of pages.
      type: int
    freelist_count:
      description: Number of free pages.
      type: int
    journal_mode:
      description: Journal mode (V(wal), V(delete)...).
      type: str
    user_version:
      description: The schema version kept by the application.
      type: int
    tables:
      description: Table name to row count (null counts with O(count_rows=false)).
      type: dict
    table_count:
      description: Number of tables.
      type: int
    wal_reset_bug:
      description: Whether this host's SQLite may carry the WAL-reset bug (fixed in 3.51.3, 3.44.6, 3.50.7).
      type: bool
  sample: {"path": "/srv/gym/gym.db", "size_bytes": 4096000, "journal_mode": "wal", "tables": {"members": 200}}
backups:
  description: Statistics of the backup folder O(backup_dir); null without O(backup_dir).
  returned: always
  type: dict
  contains:
    folder:
      description: The folder.
      type: str
    exists:
      description: Whether the folder exists.
      type: bool
    count:
      description: Number of finished backups.
      type: int
    verified_count:
      description: Number of verified backups.
      type: int
    total_bytes:
      description: Size of the backups with their sidecars.
      type: int
    newest:
      description: File name of the newest backup.
      type: str
    newest_created:
      description: When the newest backup was taken (UTC).
      type: str
    newest_age_seconds:
      description: Age of the newest backup.
      type: float
    newest_verified:
      description: File name of the newest verified backup.
      type: str
    oldest:
      description: File name of the oldest backup.
      type: str
    unfinished:
      description: Files left by interrupted runs.
      type: list
      elements: str
    invalid:
      description: Files named like backups whose manifest is missing or broken.
      type: list
      elements: str
  sample: {"folder": "/var/backups/sqlite", "count": 7, "verified_count": 7, "newest": "gym_backup_20261122_030000.db"}
kind:
  description: Sort of failure (V(bad_input), V(locked), V(corrupt), V(io)).
  returned: failure
  type: str
  sample: bad_input
"""

import os
import sqlite3

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.inputs import validate_abs_path, validate_name
from ansible.module_utils.sqlite_fleet.retention import folder_stats
from ansible.module_utils.sqlite_fleet.sqlitedb import database_facts


def backup_folder_stats(backup_dir, name):
    backup_dir = validate_abs_path(backup_dir, "backup_dir")
    name = validate_name(name) if name is not None else None
    stats = folder_stats(backup_dir, name)
    stats["exists"] = os.path.isdir(backup_dir)
    return stats


ARGUMENT_SPEC = dict(
    path=dict(type="path"),
    backup_dir=dict(type="path"),
    name=dict(type="str"),
    count_rows=dict(type="bool", default=True),
)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_one_of=[["path", "backup_dir"]],
        required_by={"name": "backup_dir"},
        supports_check_mode=True,
    )
    params = module.params
    result = {"changed": False, "database": None, "backups": None}
    try:
        if params["path"] is not None:
            result["database"] = database_facts(params["path"], count_rows=params["count_rows"])
        if params["backup_dir"] is not None:
            result["backups"] = backup_folder_stats(params["backup_dir"], params["name"])
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, **result)
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg="reading facts failed: %s" % exc, kind=KIND_IO, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
