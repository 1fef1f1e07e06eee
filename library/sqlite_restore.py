#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_restore
short_description: Restore a verified SQLite backup onto a database, safely
description:
  - Restores one backup taken by M(sqlitefleet.sqlite_fleet.sqlite_backup) onto the database file O(path). The
    backup is either given (O(backup)) or chosen in a backup folder (O(backup_dir), O(name), O(select)) - the
    newest verified backup, the newest verified one taken at or before a UTC time, or one file by name.
  - The backup is verified first (its C(.sha256) file, its manifest, C(PRAGMA integrity_check), row counts);
    a backup that fails is refused and nothing is touched.
  - Before anything changes, a safety snapshot of the current database is taken into O(safety_dir) with the
    label V(pre-restore), so that a restore can itself be undone.
  - O(mode=replace) is for a stopped application. It refuses while any process holds the database or its
    C(-wal)/C(-shm) files, naming the processes. The backup is copied to a temporary name beside the
    database, given the original's owner and mode and the journal mode the manifest recorded (WAL stays
    WAL), fsynced, the old C(-wal)/C(-shm)/C(-journal) files (which belong to the old file and must never be
    replayed into the new one) are removed, and the copy is renamed over the database.
  - A database that does not exist yet is created (a new host) by O(mode=replace).
  - O(mode=live) writes the backup into the database through SQLite's online backup API, which is safe
    while the application keeps its connections open; its writers wait for the copy.
  - Afterwards the database is checked again (integrity and the manifest's row counts).
  - With O(state=selected) the backup is only chosen and verified, nothing is restored; a playbook runs this
    on the controller, in the archive, before it touches any host.
  - On any failure the original database stays in place.
options:
  path:
    description:
      - Absolute path of the database to restore onto (the restore target).
      - With O(state=selected), the target the backup is meant for; it is only reported.
    type: path
    required: true
  backup:
    description:
      - Absolute path of the backup file to restore, C(<name>_backup_<YYYYMMDD>_<HHMMSS>.db), with its
        C(.sha256) file and manifest beside it.
      - Mutually exclusive with O(backup_dir).
    type: path
  backup_dir:
    description:
      - Absolute path of a backup folder to choose the backup in (the host's backup folder, or one
        C(<archive>/<host>/<name>) folder of the archive). Needs O(name).
      - Mutually exclusive with O(backup).
    type: path
  name:
    description:
      - Name of the database whose backups to choose from, with O(backup_dir).
      - Also the name of the safety snapshot; with O(backup) it defaults to the name in the backup's manifest.
    type: str
  select:
    description:
      - Which backup of O(backup_dir) to restore.
      - V(latest) is the newest verified backup.
      - A time picks the newest verified backup taken at or before it, either C(YYYYMMDD_HHMMSS) (in UTC;
        C(YYYYMMDDHHMMSS) is accepted too) or ISO 8601 such as C(2026-12-04T21:51:30Z) or
        C(2026-12-04T22:51:30+01:00). A time without a zone is UTC.
      - A file name picks that backup.
      - Only with O(backup_dir); defaults to V(latest) there.
    type: str
  state:
    description:
      - V(restored) restores the backup onto O(path).
      - V(selected) only chooses and verifies the backup and returns it, with the list of backups available;
        nothing is changed.
    type: str
    choices: [restored, selected]
    default: restored
  mode:
    description:
      - V(replace) swaps the file atomically; the application must be stopped (the task refuses otherwise).
      - V(live) writes through SQLite's backup API while the application runs; the database must exist.
    type: str
    choices: [replace, live]
    default: replace
  safety_dir:
    description:
      - Folder of the V(pre-restore) safety snapshot of the current database (created C(0700) if needed).
      - Defaults to O(backup_dir), else the folder of O(backup). Playbooks that stage the backup in a temporary
        folder pass the host's backup folder here.
    type: path
  integrity:
    description:
      - Check of the backup before the restore and of the database after it.
      - V(full) runs C(PRAGMA integrity_check), V(quick) runs C(PRAGMA quick_check).
    type: str
    choices: [full, quick]
    default: full
  busy_timeout_ms:
    description:
      - How long to wait, in milliseconds, for the application to let go of the database (safety snapshot,
        live restore).
    type: int
    default: 5000
  expected_sha256:
    description:
      - SHA-256 the backup must have, as verified at the previous hop (for example on the controller before the
        copy to the host). The restore is refused when the file differs.
    type: str
  manifest:
    description:
      - Only for check mode, when O(backup) is not on this host yet because a playbook would copy it there
        first - the backup's manifest, so that the plan can still be shown. The backup was verified where it is.
      - Ignored when O(backup) exists.
    type: dict
  owner:
    description:
      - Owner (name or uid) of the database when it does not exist yet and is created by the restore.
      - Defaults to the owner of its folder. An existing database keeps its owner and mode.
    type: str
  group:
    description:
      - Group (name or gid) of a database created by the restore. Defaults to the group of its folder.
    type: str
  source_host:
    description:
      - The host's name as the fleet knows it (the inventory name), written as C(source.host) into the manifest
        of the V(pre-restore) safety snapshot, like every other backup of that host.
      - Defaults to the system's host name. The restore playbook passes C(inventory_hostname).
    type: str
notes:
  - Run as root or as the database's owner.
  - A database created by the restore is mode C(0600) from its first byte; a C(-wal)/C(-shm) created by the
    restore's own check takes the database's mode and owner.
  - The safety snapshot is an ordinary backup (label V(pre-restore)) in O(safety_dir); the next backup run pulls
    it into the archive like any other.
  - Processes holding the database are found through C(/proc) (Linux).
  - In check mode nothing is written; the plan is returned (which backup, target, mode, files that would be
    removed, processes holding the database). A held database is then reported as a warning.
  - Relative paths are refused.
attributes:
  diff_mode:
    support: full
extends_documentation_fragment:
  - sqlite_fleet_attributes
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_backup
  - module: sqlitefleet.sqlite_fleet.sqlite_verify
  - name: SQLite online backup API
    description: How a live restore copies the pages.
    link: https://www.sqlite.org/backup.html
"""

EXAMPLES = r"""
- name: Restore the newest verified backup of gym (the app is stopped)
  sqlite_restore:
    path: /srv/gym/gym.db
    backup_dir: /var/backups/sqlite
    name: gym

- name: Restore the state of 22 November, 03:00 UTC, while the app keeps running
  sqlite_restore:
    path: /srv/gym/gym.db
    backup_dir: /var/backups/sqlite
    name: gym
    select: "20261122_030000"
    mode: live

- name: Choose and verify a backup in the archive, on the controller
  sqlite_restore:
    state: selected
    path: /srv/gym/gym.db
    backup_dir: "/srv/sqlite-archive/gym-pi/gym"
    name: gym
    select: gym_backup_20261122_030000.db
  delegate_to: localhost
  become: false
  register: chosen

- name: Restore a backup copied to the host, checked against the controller's checksum
  sqlite_restore:
    path: /srv/gym/gym.db
    backup: "/var/backups/sqlite/.sqlite-restore/{{ chosen.backup }}"
    expected_sha256: "{{ chosen.sha256 }}"
    safety_dir: /var/backups/sqlite
    name: gym
"""

RETURN = r"""
backup:
  description: File name of the backup restored (or chosen).
  returned: success
  type: str
  sample: gym_backup_20261122_030000.db
backup_path:
  description: Absolute path of that backup.
  returned: success
  type: str
  sample: /var/backups/sqlite/gym_backup_20261122_030000.db
target:
  description: The database restored onto.
  returned: success
  type: str
  sample: /srv/gym/gym.db
mode:
  description: V(replace) or V(live).
  returned: success
  type: str
  sample: replace
created:
  description: UTC time the backup was taken (from its manifest).
  returned: success
  type: str
  sample: "2026-11-22T03:00:00.123456Z"
label:
  description: Label of the backup (for example V(pre-upgrade)), or null.
  returned: success
  type: str
  sample: pre-upgrade
sha256:
  description: SHA-256 of the backup.
  returned: success
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
size_bytes:
  description: Size of the backup file.
  returned: success
  type: int
  sample: 4096000
tables:
  description: Row count per table of the backup (and so of the restored database).
  returned: success
  type: dict
  sample: {"members": 344, "visits": 5120}
manifest:
  description: The backup's manifest.
  returned: with O(state=selected)
  type: dict
  sample: {"name": "gym", "file": "gym_backup_20261122_030000.db", "label": null, "verified": true}
checks:
  description: The verification of the backup, check name to V(ok).
  returned: when the backup was verified
  type: dict
  sample: {"checksum": "ok", "integrity": "ok", "row_counts": "ok"}
available:
  description:
    - The finished backups in O(backup_dir), newest first, with their time, label and verified flag, and a
      one-line C(summary) of each.
  returned: with O(backup_dir)
  type: list
  elements: dict
  sample: [{"file": "gym_backup_20261122_030000.db", "created": "2026-11-22T03:00:00.123456Z",
            "label": "pre-upgrade", "verified": true,
            "summary": "gym_backup_20261122_030000.db  taken 2026-11-22 03:00:00 UTC  label pre-upgrade"}]
journal_mode:
  description: Journal mode the restored database gets (the source's, from the manifest).
  returned: with O(state=restored)
  type: str
  sample: wal
removed:
  description:
    - The old C(-wal)/C(-shm)/C(-journal) files a replace restore removed (in check mode, would remove).
    - A restore that was refused or failed lists only what it did remove (usually nothing).
  returned: with O(state=restored)
  type: list
  elements: str
  sample: ["/srv/gym/gym.db-wal", "/srv/gym/gym.db-shm"]
safety_backup:
  description: Path of the V(pre-restore) safety snapshot of the database as it was; null when there was no
    database (or in check mode).
  returned: with O(state=restored)
  type: str
  sample: /var/backups/sqlite/gym_backup_20261123_101500.db
safety_dir:
  description: Folder of the safety snapshot.
  returned: with O(state=restored)
  type: str
  sample: /var/backups/sqlite
target_existed:
  description: Whether the database existed before (false when the restore creates it).
  returned: with O(state=restored)
  type: bool
  sample: true
owner_uid:
  description: Owner (uid) given to a database the restore created.
  returned: when the restore created the database
  type: int
  sample: 1000
owner_gid:
  description: Group (gid) given to a database the restore created.
  returned: when the restore created the database
  type: int
  sample: 1000
set_aside:
  description: Where the old database was kept when it was too broken to snapshot (replace mode only).
  returned: when that happened
  type: str
held_by:
  description: Processes (C(pid (command))) holding the database, found in check mode; a replace restore
    would be refused while they run.
  returned: check mode with O(state=restored)
  type: list
  elements: str
  sample: ["1234 (gunicorn)"]
seconds:
  description: Time of the copy itself and of the check after it.
  returned: success, not in check mode, with O(state=restored)
  type: float
  sample: 0.42
duration_seconds:
  description: Time of the whole task (verification, safety snapshot, copy, check).
  returned: success, not in check mode
  type: float
  sample: 1.3
kind:
  description: Sort of failure (V(bad_input), V(locked), V(no_space), V(corrupt), V(io)).
  returned: failure
  type: str
  sample: locked
"""

from ansible.module_utils.basic import AnsibleModule
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
    result, failure = restore_task(module.params, check_mode=module.check_mode, diff=module._diff, warn=module.warn)
    if failure:
        module.fail_json(**dict(result, **failure))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
