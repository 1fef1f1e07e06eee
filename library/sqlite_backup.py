#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

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
