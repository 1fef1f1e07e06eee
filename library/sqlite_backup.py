#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_backup
short_description: Take a consistent, verified backup of a live SQLite database
description:
  - Copies a live SQLite database inside one read transaction (see O(method)), while the application keeps
    writing, into C(<backup_dir>/<name>_backup_<YYYYMMDD>_<HHMMSS>.db) (UTC; a suffix such as C(_1) when that
    second is already taken).
  - The copy is switched to C(journal_mode=DELETE), checked with C(PRAGMA quick_check) or C(integrity_check),
    fsynced and linked to its final name without overwriting anything. A C(.sha256) file in C(sha256sum)
    format and a JSON manifest (source host and path, time, label, SQLite version, page layout, journal mode,
    row counts, integrity result, checksum) are written beside it; the manifest's rename is the commit.
  - Unfinished backups left by an interrupted run are removed first, under the folder's lock.
  - A source database that fails its integrity check is still backed up (the copy may be all there is), but
    the backup is flagged unverified in its manifest and the task B(fails) with a message saying so.
  - With O(retention), the folder is then pruned by that policy, as M(sqlitefleet.sqlite_fleet.sqlite_retention)
    does; with O(export), what the controller's archive lacks is then staged for the pull, as
    M(sqlitefleet.sqlite_fleet.sqlite_export) does. One run of the module does all of it, so a backup-and-pull
    sends one module to the host per database.
options:
  path:
    description:
      - Absolute path of the live database file to back up.
    type: path
    required: true
  name:
    description:
      - Name of the database; it becomes part of the backup file names.
      - Letters, digits, C(.), C(_) and C(-) only, starting with a letter or digit, no C(..), at most
        100 characters.
    type: str
    required: true
  backup_dir:
    description:
      - Absolute path of the backup folder. It is created (with missing parents) mode C(0700) if needed.
    type: path
    required: true
  label:
    description:
      - Optional label recorded in the manifest, for example V(pre-upgrade).
      - Labelled backups follow their own retention rule (O(retention.keep_label_days), as in
        M(sqlitefleet.sqlite_fleet.sqlite_retention)).
    type: str
  method:
    description:
      - All three copy inside one read transaction, so the copy is the database as of one commit while
        the app goes on writing (in WAL mode); the copy is then checked before it counts.
      - V(pinned_copy) copies the file's bytes inside the kernel while the read transaction pins the
        snapshot, then writes over them the WAL's newest version of every page that snapshot holds
        (read from the WAL up to the snapshot's end mark). It falls back to V(backup_api) by itself
        when it cannot tell that end mark exactly; the manifest's C(method) says which one ran.
      - V(backup_api) copies page by page with SQLite's online backup API.
      - V(vacuum_into) writes a compacted copy with C(VACUUM INTO). It reorders pages, so a delta pull of the
        next backup resends most of the file; prefer the others for backups that are pulled.
    type: str
    choices: [pinned_copy, backup_api, vacuum_into]
    default: pinned_copy
  integrity:
    description:
      - How thoroughly the copy is checked before it is committed.
      - V(quick) runs C(PRAGMA quick_check), V(full) runs C(PRAGMA integrity_check) (slower, also checks indexes).
    type: str
    choices: [quick, full]
    default: quick
  checkpoint:
    description:
      - Run C(PRAGMA wal_checkpoint) in this mode on the source before the backup.
      - No snapshot method needs a checkpoint (the pinned copy lays the snapshot's WAL pages over the file's),
        and a checkpoint from a second process is one of the conditions of SQLite's WAL-reset bug (fixed in
        3.51.3, backported to 3.44.6 and 3.50.7), so the default is V(none). When set on a host whose SQLite
        may carry the bug, a warning is returned.
    type: str
    choices: [none, PASSIVE, FULL, RESTART, TRUNCATE]
    default: none
  busy_timeout_ms:
    description:
      - How long to wait, in milliseconds, for a writer to release the database before giving up.
    type: int
    default: 5000
  lock_timeout:
    description:
      - How long to wait, in seconds, for the backup folder's lock held by another run (the host's cron
        runner, another play, a prune).
    type: float
    default: 600
  owner:
    description:
      - Owner (name or uid) of the backup files and folder.
      - Defaults to the owner of the database file.
    type: str
  group:
    description:
      - Group (name or gid) of the backup files and folder.
      - Defaults to the group of the database file.
    type: str
  source_host:
    description:
      - Host name recorded in the manifest. Playbooks pass C({{ inventory_hostname }}).
      - Defaults to the host's own name.
    type: str
  retention:
    description:
      - After the backup, prune this database's backups in O(backup_dir) by this policy, exactly as
        M(sqlitefleet.sqlite_fleet.sqlite_retention) does (same rules, same refusals); the result is in
        RV(retention).
      - The policy is checked before anything is done; a bad one (negative values, all rules 0, an unknown
        time zone) fails the task before any backup is taken.
      - Not applied when the source failed its integrity check (the task fails first).
  export:
    description:
      - After the backup (and the prune), stage in a private folder of O(backup_dir) every backup of this
        database the controller's archive lacks, as page-level deltas where possible, exactly as
        M(sqlitefleet.sqlite_fleet.sqlite_export) with O(sqlitefleet.sqlite_fleet.sqlite_export#module:state=present)
        does; RV(transfers) and RV(staging_dir) say what to fetch. Remove the folder after the transfer
        (M(sqlitefleet.sqlite_fleet.sqlite_fetch) does).
notes:
  - Backup files are created mode C(0600) and the folder C(0700), owned by the database's owner unless
    O(owner)/O(group) say otherwise. Run as root or as that owner.
  - In WAL mode the copy does not block the application's writers. In rollback-journal mode the copy holds a
    shared lock for its whole duration, so writers wait; the result reports how long
    (RV(writers_held_off_seconds)).
  - One lock (C(flock)) per backup folder serialises this module, M(sqlitefleet.sqlite_fleet.sqlite_retention)
    and the on-host runner.
  - In check mode nothing is written; the planned file name is returned, with what O(retention) would delete
    and what O(export) would send (among the backups already there).
  - Relative paths are refused.
attributes:
  diff_mode:
    support: full
    details: the backup files of O(name) in O(backup_dir) before and after (the new one, the pruned ones).
extends_documentation_fragment:
  - sqlite_fleet_attributes
  - sqlite_fleet_retention
  - sqlite_fleet_export
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_verify
  - module: sqlitefleet.sqlite_fleet.sqlite_retention
  - module: sqlitefleet.sqlite_fleet.sqlite_export
  - module: sqlitefleet.sqlite_fleet.sqlite_archive
  - name: SQLite online backup API
    description: How the backup API copies a live database.
    link: https://www.sqlite.org/backup.html
"""

EXAMPLES = r"""
- name: Back up the gym database
  sqlite_backup:
    path: /srv/gym/gym.db
    name: gym
    backup_dir: /var/backups/sqlite
    source_host: "{{ inventory_hostname }}"

- name: Emergency backup before an upgrade, fully checked
  sqlite_backup:
    path: /srv/gym/gym.db
    name: gym
    backup_dir: /var/backups/sqlite
    label: pre-upgrade
    integrity: full
  register: pre_upgrade_backup

- name: Back up, prune and stage what the archive lacks, in one module run
  sqlite_backup:
    path: /srv/gym/gym.db
    name: gym
    backup_dir: /var/backups/sqlite
    source_host: "{{ inventory_hostname }}"
    retention:
      keep_last: 3
      keep_days: 7
      timezone: Europe/Helsinki
    export:
      have: "{{ archive_list.have }}"
      fetch_user: pi
  become: true
  register: taken

- name: Backup owned by the backup user rather than the app
  sqlite_backup:
    path: /srv/gym/gym.db
    name: gym
    backup_dir: /var/backups/sqlite
    owner: backup
    group: backup
"""

RETURN = r"""
backup:
  description: Absolute path of the backup file (the planned one in check mode).
  returned: always
  type: str
  sample: /var/backups/sqlite/gym_backup_20261122_030000.db
file:
  description: File name of the backup (the planned one in check mode).
  returned: always
  type: str
  sample: gym_backup_20261122_030000.db
manifest:
  description: The manifest written beside the backup (C(<file>.json)); null in check mode.
  returned: always
  type: dict
  sample: {"name": "gym", "file": "gym_backup_20261122_030000.db", "verified": true, "label": null}
verified:
  description: Whether the copy passed its integrity check; null in check mode.
  returned: always
  type: bool
  sample: true
size_bytes:
  description: Size of the backup file in bytes.
  returned: when a backup was taken (not in check mode)
  type: int
  sample: 4096000
sha256:
  description: SHA-256 of the backup file, as in its C(.sha256) file and manifest.
  returned: when a backup was taken (not in check mode)
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
duration_seconds:
  description: Time from the start of the copy to the commit of the manifest.
  returned: when a backup was taken (not in check mode)
  type: float
  sample: 0.42
writers_held_off_seconds:
  description:
    - How long the application's writers were held off by the copy; 0 for a WAL database, the whole copy
      time for a rollback-journal database.
  returned: when a backup was taken (not in check mode)
  type: float
  sample: 0.0
journal_mode:
  description: Journal mode of the source database (the backup itself is always V(delete)).
  returned: when a backup was taken (not in check mode)
  type: str
  sample: wal
removed_unfinished:
  description: Files of interrupted earlier runs that were removed from the folder.
  returned: always
  type: list
  elements: str
  sample: [".sqlite-backup-tmp.gym.1234.a1b2c3d4.db"]
problems:
  description: Integrity problems of the source, when it failed its check (the task then fails).
  returned: always
  type: list
  elements: str
  sample: []
checkpoint_result:
  description: Result of the checkpoint run before the backup (see M(sqlitefleet.sqlite_fleet.sqlite_checkpoint)).
  returned: when O(checkpoint) is not V(none)
  type: dict
  sample: {"busy": 0, "log": 12, "checkpointed": 12, "journal_mode": "wal", "skipped": false}
retention:
  description:
    - What O(retention) did, as M(sqlitefleet.sqlite_fleet.sqlite_retention) returns it (C(changed), C(deleted),
      C(kept), C(decisions), C(removed_unfinished), C(invalid), C(msg)); in check mode, what it would delete.
  returned: when O(retention) is set and the backup was taken
  type: dict
  sample: {"changed": true, "deleted": ["gym_backup_20261101_030000.db"], "kept": ["gym_backup_20261122_030000.db"]}
transfers:
  description:
    - What O(export) staged, as M(sqlitefleet.sqlite_fleet.sqlite_export) returns it - one entry per backup to
      send, oldest first, with C(file), C(name), C(manifest), C(mode) (V(delta) or V(full)), C(base),
      C(fetch_path) (null in check mode), C(bytes) and C(size_bytes).
  returned: when O(export) is set and the backup was taken
  type: list
  elements: dict
staging_dir:
  description: The private staging folder holding the staged files (null in check mode or when nothing is missing).
  returned: when O(export) is set and the backup was taken
  type: str
  sample: /var/backups/sqlite/.sqlite-export.k2j4h1x9
export:
  description: The rest of what O(export) found - C(conflicts), C(invalid), C(host_backups) - and its C(msg).
  returned: when O(export) is set and the backup was taken
  type: dict
diff:
  description: The backup files of O(name) before and after, one per line (in check mode, the planned ones).
  returned: in diff mode
  type: dict
kind:
  description: Sort of failure (V(bad_input), V(locked), V(no_space), V(corrupt), V(io)).
  returned: failure
  type: str
  sample: bad_input
"""

import sqlite3

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.catalog import list_backups
from ansible.module_utils.sqlite_fleet.errors import KIND_CORRUPT, KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.export import check_export_options, export_options, export_summary, stage_export
from ansible.module_utils.sqlite_fleet.inputs import validate_busy_timeout, validate_lock_timeout
from ansible.module_utils.sqlite_fleet.retention import apply_retention, retention_options, retention_policy
from ansible.module_utils.sqlite_fleet.snapshots import METHODS, snapshot
from ansible.module_utils.sqlite_fleet.sqlitedb import CHECKPOINT_MODES, INTEGRITY_LEVELS, checkpoint

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    name=dict(type="str", required=True),
    backup_dir=dict(type="path", required=True),
    label=dict(type="str"),
    method=dict(type="str", default="pinned_copy", choices=list(METHODS)),
    integrity=dict(type="str", default="quick", choices=list(INTEGRITY_LEVELS)),
    checkpoint=dict(type="str", default="none", choices=["none"] + list(CHECKPOINT_MODES)),
    busy_timeout_ms=dict(type="int", default=5000),
    lock_timeout=dict(type="float", default=600),
    owner=dict(type="str"),
    group=dict(type="str"),
    source_host=dict(type="str"),
    retention=dict(type="dict", options=retention_options()),
    export=dict(type="dict", options=export_options()),
)


def backup_result(snap):
    """What the task returns: the core's snapshot result, with the manifest's key figures on top."""
    result = {key: snap[key] for key in ("changed", "backup", "file", "manifest", "verified", "problems",
                                         "removed_unfinished", "msg")}
    manifest = snap["manifest"]
    if manifest:
        result.update(
            size_bytes=manifest["size_bytes"],
            sha256=manifest["sha256"],
            duration_seconds=manifest["duration_seconds"],
            writers_held_off_seconds=manifest["writers_held_off_seconds"],
            journal_mode=manifest["source"]["journal_mode"],
        )
        if result["journal_mode"] != "wal":
            result["msg"] += (
                "; the source is in rollback-journal mode (%s): its writers were held off for %.3f s during the copy"
                % (result["journal_mode"], result["writers_held_off_seconds"])
            )
    return result


def folder_diff(params, before, after):
    """What --diff shows: the database's backup files in the folder, before and after."""
    header = "%s (%s backups)" % (params["backup_dir"], params["name"])
    return {"before_header": header, "after_header": header, "before": "".join("%s\n" % f for f in sorted(before)),
            "after": "".join("%s\n" % f for f in sorted(after))}


def corrupt_source_message(params, result):
    return (
        "source database %s is corrupt: it FAILED its %s integrity check (%s). It was still backed up as %s, "
        "but that backup is flagged unverified and does not count as a verified backup"
        % (params["path"], params["integrity"], "; ".join(result["problems"][:5]), result["backup"])
    )


def checked_policy(module, params):
    """The retention policy (None when unset); a bad policy or export fails here, before any backup is taken."""
    try:
        validate_lock_timeout(params["lock_timeout"])
        validate_busy_timeout(params["busy_timeout_ms"])
        policy = retention_policy(params["retention"]) if params["retention"] is not None else None
        if params["export"] is not None:
            check_export_options(params["export"], "export.")
        return policy
    except BackupError as exc:
        module.fail_json(msg="%s; nothing was backed up" % exc, kind=exc.kind, changed=False)


def take_backup(module, params):
    """The optional checkpoint, then the snapshot: the task's result so far."""
    changed, checkpoint_result = False, None
    try:
        if params["checkpoint"] != "none":
            checkpoint_result = checkpoint(params["path"], params["checkpoint"], params["busy_timeout_ms"],
                                           check_mode=module.check_mode)
            changed = checkpoint_result["changed"]
            if checkpoint_result["warning"] and not checkpoint_result["skipped"]:
                module.warn(checkpoint_result["warning"])
        snap = snapshot(params["path"], params["backup_dir"], params["name"], label=params["label"],
                        method=params["method"], integrity=params["integrity"],
                        busy_timeout_ms=params["busy_timeout_ms"], lock_timeout=params["lock_timeout"],
                        owner=params["owner"], group=params["group"], source_host=params["source_host"],
                        check_mode=module.check_mode)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, changed=changed)
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg="backup of %s failed: %s" % (params["path"], exc), kind=KIND_IO, changed=changed)
    result = backup_result(snap)
    if checkpoint_result is not None:
        result["checkpoint_result"] = checkpoint_result
    if result["verified"] is False:
        result["msg"] = corrupt_source_message(params, result)
        module.fail_json(kind=KIND_CORRUPT, **result)
    result["changed"] = result["changed"] or changed
    return result


def prune(module, params, policy, result):
    """O(retention) after the backup (the new backup trusted as verified)."""
    try:
        pruned = apply_retention(params["backup_dir"], params["name"], policy,
                                 timezone=params["retention"]["timezone"], check_mode=module.check_mode,
                                 lock_timeout=params["lock_timeout"], trusted=[result["file"]])
    except (BackupError, OSError, sqlite3.Error) as exc:
        result["msg"] = "%s, but pruning %s failed: %s" % (result["msg"], params["backup_dir"], exc)
        module.fail_json(kind=getattr(exc, "kind", KIND_IO), **result)
    for flagged in pruned["flagged"]:
        module.warn("%s fails its checksum (%s): flagged unverified, never kept as the newest verified backup"
                    % (flagged["file"], flagged["why"]))
    result.update(retention=pruned, changed=result["changed"] or pruned["changed"])
    result["msg"] += "; %s" % pruned["msg"]


def export(module, params, result):
    """O(export) after the backup: stage what the archive lacks."""
    wanted = params["export"]
    try:
        plan = stage_export(params["backup_dir"], params["name"], wanted["have"], delta=wanted["delta"],
                            max_backups=wanted["max_backups"], fetch_user=wanted["fetch_user"],
                            check_mode=module.check_mode)
    except (BackupError, OSError) as exc:
        result["msg"] = "%s, but staging the backups of %s for the pull failed: %s" % (result["msg"],
                                                                                   params["name"], exc)
        module.fail_json(kind=getattr(exc, "kind", KIND_IO), **result)
    export_msg = export_summary(params["name"], plan["transfers"])
    result.update(transfers=plan["transfers"], staging_dir=plan["staging_dir"],
                  export=dict(conflicts=plan["conflicts"], invalid=plan["invalid"],
                              host_backups=plan["host_backups"], msg=export_msg))
    result["changed"] = result["changed"] or bool(plan["staging_dir"])
    result["msg"] += "; %s" % export_msg


def backup_diff(module, params, result):
    if "retention" in result:
        present = [d["file"] for d in result["retention"]["decisions"]]
        kept = result["retention"]["kept"]
    else:
        present = kept = [b["file"] for b in list_backups(params["backup_dir"], params["name"])["backups"]]
    if module.check_mode:
        return folder_diff(params, present, kept + [result["file"]])
    return folder_diff(params, [f for f in present if f != result["file"]], kept)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    policy = checked_policy(module, params)
    result = take_backup(module, params)
    if policy is not None:
        prune(module, params, policy, result)
    if params["export"] is not None:
        export(module, params, result)
    if module._diff:
        result["diff"] = backup_diff(module, params, result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
