#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_verify
short_description: Verify SQLite backups against their checksum and manifest
description:
  - Checks finished backups taken by M(sqlitefleet.sqlite_fleet.sqlite_backup) without changing anything. For each
    backup, compares the SHA-256 of the file with its C(.sha256) file, its manifest and, optionally, the checksum
    written at the first hop; runs C(PRAGMA quick_check) or C(integrity_check) and C(foreign_key_check); compares the
    per-table row counts and the page count with the manifest; and refuses a backup that was flagged
    unverified when it was taken.
  - Verifies one backup file (O(path)) or the backups in a folder (O(backup_dir), optionally only those of
    database O(name)); in a folder, the newest backup of each database (O(select=latest)) or all of them
    (O(select=all)).
  - The task fails, naming each failing file and why, when any backup fails, or when the folder holds no
    backup for the database.
options:
  path:
    description:
      - Absolute path of one backup file, C(<name>_backup_<YYYYMMDD>_<HHMMSS>.db).
      - Mutually exclusive with O(backup_dir).
    type: path
  backup_dir:
    description:
      - Absolute path of a backup folder (on a host, or one C(<archive>/<host>/<name>) folder on the controller).
      - Mutually exclusive with O(path).
    type: path
  name:
    description:
      - With O(backup_dir), only the backups of this database.
    type: str
  select:
    description:
      - With O(backup_dir), which backups to verify.
      - V(latest) verifies the newest backup of each database name in the folder, V(all) verifies every one
        and also counts files that are named like backups but have a missing or broken manifest as failures.
    type: str
    choices: [latest, all]
    default: latest
  integrity:
    description:
      - V(quick) runs C(PRAGMA quick_check), V(full) runs C(PRAGMA integrity_check) (slower, also checks indexes).
    type: str
    choices: [quick, full]
    default: full
  expected_sha256:
    description:
      - Only with O(path). The SHA-256 recorded at the first hop (for example the host's manifest), so that
        an archive copy whose file and sidecars were changed together is still caught.
    type: str
  check_rows:
    description:
      - Compare each table's row count with the manifest.
    type: bool
    default: true
notes:
  - Never changes anything; C(changed) is always false and check mode runs the same checks.
  - Backups are opened read-only and immutable, so no C(-wal)/C(-shm) file appears beside them.
  - Relative paths are refused.
extends_documentation_fragment:
  - sqlite_fleet_attributes
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_backup
  - module: sqlitefleet.sqlite_fleet.sqlite_drill
"""

EXAMPLES = r"""
- name: Verify the newest backup of every database on the host
  sqlite_verify:
    backup_dir: /var/backups/sqlite

- name: Verify every backup of the gym database, quickly
  sqlite_verify:
    backup_dir: /var/backups/sqlite
    name: gym
    select: all
    integrity: quick

- name: Verify a pulled copy against the checksum written on the host
  sqlite_verify:
    path: "/srv/sqlite-archive/{{ inventory_hostname }}/gym/{{ backup.file }}"
    expected_sha256: "{{ backup.sha256 }}"
  delegate_to: localhost
"""

RETURN = r"""
ok:
  description: Whether every selected backup passed.
  returned: always
  type: bool
  sample: true
verified_count:
  description: How many backups passed.
  returned: always
  type: int
  sample: 1
failed_backups:
  description:
    - File names of the backups that failed (including broken ones with O(select=all)).
    - Not called C(failed), which is Ansible's own flag of a failed task.
  returned: always
  type: list
  elements: str
  sample: []
invalid:
  description: Files in the folder named like backups whose manifest is missing or broken.
  returned: with O(backup_dir)
  type: list
  elements: str
  sample: []
results:
  description: One result per backup, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    ok:
      description: Whether this backup passed every check.
      type: bool
    file:
      description: File name of the backup.
      type: str
    path:
      description: Absolute path of the backup.
      type: str
    checks:
      description: Check name (manifest, checksum_file, checksum, size, source, journal_mode, integrity, foreign_keys,
        row_counts, page_count) to V(ok) or the reason it failed.
      type: dict
    problems:
      description: The failed checks, each as C(<check>) followed by a colon and the reason.
      type: list
      elements: str
    manifest:
      description: The backup's manifest, when it could be read.
      type: dict
    sha256:
      description: SHA-256 of the file as it is now.
      type: str
    integrity:
      description: The integrity level used.
      type: str
    duration_seconds:
      description: Time spent on this backup.
      type: float
  sample: [{"ok": true, "file": "gym_backup_20261122_030000.db", "checks": {"checksum": "ok", "integrity": "ok"},
            "problems": []}]
kind:
  description: Sort of failure (V(bad_input), V(corrupt), V(io)).
  returned: failure
  type: str
  sample: corrupt
"""

import sqlite3

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_CORRUPT, KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.inputs import validate_abs_path, validate_name, validate_sha256
from ansible.module_utils.sqlite_fleet.sqlitedb import INTEGRITY_LEVELS
from ansible.module_utils.sqlite_fleet.verify import (
    backups_to_verify,
    unverifiable_result,
    verify_backup,
    verify_listed_backup,
    verify_summary,
)

ARGUMENT_SPEC = dict(
    path=dict(type="path"),
    backup_dir=dict(type="path"),
    name=dict(type="str"),
    select=dict(type="str", default="latest", choices=["latest", "all"]),
    integrity=dict(type="str", default="full", choices=list(INTEGRITY_LEVELS)),
    expected_sha256=dict(type="str"),
    check_rows=dict(type="bool", default=True),
)


def verify_folder(module, params, result):
    """The backups of O(backup_dir) that O(select) picks, and (select=all) its broken files as failed results."""
    backup_dir = validate_abs_path(params["backup_dir"], "backup_dir")
    name = validate_name(params["name"]) if params["name"] is not None else None
    paths, invalid = backups_to_verify(backup_dir, name, params["select"])
    results = [verify_listed_backup(path, params["integrity"], params["check_rows"]) for path in paths]
    result["invalid"] = [item["file"] for item in invalid]
    if params["select"] == "all":
        results += [unverifiable_result(item["path"], item["why"], params["integrity"]) for item in invalid]
    elif invalid:
        module.warn("%s holds files named like backups whose manifest is missing or broken (not verified "
                    "with select=latest): %s" % (backup_dir, ", ".join(result["invalid"])))
    return results


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[["path", "backup_dir"], ["path", "name"]],
        required_one_of=[["path", "backup_dir"]],
        required_by={"expected_sha256": "path"},
        supports_check_mode=True,
    )
    params = module.params
    result = {"changed": False, "ok": False, "verified_count": 0, "failed_backups": [], "results": []}
    try:
        if params["expected_sha256"] is not None:
            params["expected_sha256"] = validate_sha256(params["expected_sha256"])
        if params["path"] is not None:
            results = [verify_backup(validate_abs_path(params["path"], "path"), params["integrity"],
                                     params["expected_sha256"], params["check_rows"])]
        else:
            results = verify_folder(module, params, result)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, **result)
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg="verification failed: %s" % exc, kind=KIND_IO, **result)

    result.update(results=results, failed_backups=[r["file"] for r in results if not r["ok"]],
                  verified_count=sum(1 for r in results if r["ok"]), msg=verify_summary(results))
    result["ok"] = not result["failed_backups"]
    if result["failed_backups"]:
        module.fail_json(kind=KIND_CORRUPT, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
