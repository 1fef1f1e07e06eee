#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_retention
short_description: Prune one database's SQLite backups by a retention policy
description:
  - Deletes the backups of database O(name) in O(backup_dir) that no rule of the policy keeps, with their
    C(.sha256) and manifest files, under the folder's lock. Unfinished backups left by interrupted runs
    are removed too.
  - A backup is kept when any rule keeps it (union, as in restic and borg). O(keep_last) and the calendar
    rules (O(keep_hourly), O(keep_daily), O(keep_weekly), O(keep_monthly), O(keep_yearly)) count verified
    backups only; calendar buckets use O(timezone).
  - The newest verified backup is always kept, and so is any unverified backup newer than it.
  - Labelled backups (for example V(pre-upgrade)) follow O(keep_label_days) instead of the general rules.
  - Nothing is deleted when "now" is earlier than the newest backup (a Pi without a real-time clock).
  - Only files this tool created are touched. Files named like backups whose manifest is missing or broken
    are reported in RV(invalid) and never deleted.
options:
  backup_dir:
    description:
      - Absolute path of the backup folder.
    type: path
    required: true
  name:
    description:
      - The database whose backups are pruned.
    type: str
    required: true
  lock_timeout:
    description:
      - How long to wait, in seconds, for the backup folder's lock held by another run.
    type: float
    default: 600
  now:
    description:
      - The moment to apply the policy at, as an ISO-8601 timestamp (UTC when it has no offset).
      - For tests and for replaying a decision; defaults to the current time.
    type: str
notes:
  - At least one of O(keep_last), O(keep_days), O(keep_hourly), O(keep_daily), O(keep_weekly), O(keep_monthly),
    O(keep_yearly) must be above 0, since an empty policy is refused. Negative values are refused.
  - In check mode nothing is deleted and the lock is not taken; RV(deleted) lists what would be deleted.
  - With C(--diff), the backup files before and after are shown.
  - Relative paths are refused.
attributes:
  diff_mode:
    support: full
extends_documentation_fragment:
  - sqlite_fleet_attributes
  - sqlite_fleet_retention.rules
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_backup
  - module: sqlitefleet.sqlite_fleet.sqlite_archive
"""

EXAMPLES = r"""
- name: Keep a week of dailies, a month of weeklies, a year of monthlies
  sqlite_retention:
    backup_dir: /var/backups/sqlite
    name: gym
    keep_last: 3
    keep_daily: 7
    keep_weekly: 5
    keep_monthly: 12
    timezone: Europe/Helsinki

- name: Show what would be deleted
  sqlite_retention:
    backup_dir: /var/backups/sqlite
    name: gym
    keep_days: 14
  check_mode: true
  diff: true
  register: prune_plan
"""

RETURN = r"""
deleted:
  description: Backup files deleted (in check mode, those that would be), with their sidecars.
  returned: always
  type: list
  elements: str
  sample: [gym_backup_20261101_030000.db]
flagged:
  description:
    - Backups found, before anything was deleted, to fail their checksum while they were the newest verified one
      (C(file), C(why)); their manifests now say C(verified=false) (in check mode they would), and the next
      verified backup down is kept instead.
  returned: always
  type: list
  elements: dict
kept:
  description: Backup files kept, newest first.
  returned: always
  type: list
  elements: str
  sample: [gym_backup_20261122_030000.db]
decisions:
  description: One decision per backup, newest first, with the reasons it is kept or deleted.
  returned: always
  type: list
  elements: dict
  contains:
    file:
      description: Backup file name.
      type: str
    created:
      description: When the backup was taken (UTC, ISO-8601).
      type: str
    label:
      description: The backup's label, if any.
      type: str
    verified:
      description: Whether the backup is verified.
      type: bool
    keep:
      description: Whether it is kept.
      type: bool
    reasons:
      description: The rules that keep it, or V(not kept by any rule).
      type: list
      elements: str
  sample: [{"file": "gym_backup_20261122_030000.db", "created": "2026-11-22T03:00:00.000000Z", "label": null,
            "verified": true, "keep": true, "reasons": ["newest verified backup", "keep_last 3 (#1)"]}]
removed_unfinished:
  description: Files of interrupted runs that were removed (in check mode, would be).
  returned: always
  type: list
  elements: str
  sample: []
invalid:
  description: Files named like backups of O(name) whose manifest is missing or broken; never deleted.
  returned: always
  type: list
  elements: str
  sample: []
diff:
  description: The backup files before and after, one per line.
  returned: in diff mode
  type: dict
  sample: {"before": "gym_backup_20261101_030000.db\ngym_backup_20261122_030000.db\n",
           "after": "gym_backup_20261122_030000.db\n"}
kind:
  description: Sort of failure (V(bad_input), V(locked), V(io)).
  returned: failure
  type: str
  sample: bad_input
"""

import sqlite3

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_BAD_INPUT, KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.inputs import validate_lock_timeout
from ansible.module_utils.sqlite_fleet.names import parse_iso_utc
from ansible.module_utils.sqlite_fleet.retention import apply_retention, retention_options, retention_policy


def file_list(files):
    return "".join("%s\n" % entry for entry in sorted(files))


ARGUMENT_SPEC = dict(
    backup_dir=dict(type="path", required=True),
    name=dict(type="str", required=True),
    **retention_options(),
    lock_timeout=dict(type="float", default=600),
    now=dict(type="str"),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        validate_lock_timeout(params["lock_timeout"])
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, changed=False)
    now = None
    if params["now"] is not None:
        now = parse_iso_utc(params["now"])
        if now is None:
            module.fail_json(msg="now must be an ISO-8601 timestamp such as 2026-11-22T03:00:00Z, got %r"
                             % params["now"], kind=KIND_BAD_INPUT, changed=False)
    try:
        policy = retention_policy(params)
        result = apply_retention(params["backup_dir"], params["name"], policy, now=now,
                                 timezone=params["timezone"], check_mode=module.check_mode,
                                 lock_timeout=params["lock_timeout"])
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, changed=False)
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg="pruning %s failed: %s" % (params["backup_dir"], exc), kind=KIND_IO, changed=False)

    for flagged in result["flagged"]:
        module.warn("%s fails its checksum (%s): %s unverified, never kept as the newest verified backup"
                    % (flagged["file"], flagged["why"], "would be flagged" if module.check_mode else "flagged"))
    if module._diff:
        before = result["kept"] + result["deleted"]
        result["diff"] = {
            "before_header": "%s (%s backups)" % (params["backup_dir"], params["name"]),
            "after_header": "%s (%s backups)" % (params["backup_dir"], params["name"]),
            "before": file_list(before),
            "after": file_list(result["kept"]),
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
