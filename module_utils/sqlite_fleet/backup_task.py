# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backup as the sqlite_backup module asks for it: its options checked, the optional checkpoint, the
snapshot, the prune, the export staged for a pull, the diff and its result. The module and the on-host
runner's ``task`` command both call backup_task with the same options and return what it returns.

Edit it here (the map: __init__.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .catalog import core_sha256, list_backups
from .errors import KIND_CORRUPT, KIND_IO, BackupError
from .export import check_export_options, export_options, export_summary, stage_export
from .inputs import validate_busy_timeout, validate_lock_timeout
from .retention import apply_retention, retention_options, retention_policy
from .snapshots import METHODS, snapshot
from .sqlitedb import CHECKPOINT_MODES, INTEGRITY_LEVELS, checkpoint


def backup_options() -> dict[str, Any]:
    """The sqlite_backup module's options (an Ansible argument spec; the action plugin fills the
    runner's params from it too)."""
    return dict(
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


class TaskFailed(Exception):
    """The task stops here: ``failure`` (msg, kind) over the result so far."""

    def __init__(self, failure: dict[str, Any]) -> None:
        super().__init__(failure["msg"])
        self.failure = failure


def backup_result(snap: Mapping[str, Any]) -> dict[str, Any]:
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


def folder_diff(params: Mapping[str, Any], before: Sequence[str], after: Sequence[str]) -> dict[str, str]:
    """What --diff shows: the database's backup files in the folder, before and after."""
    header = "%s (%s backups)" % (params["backup_dir"], params["name"])
    return {"before_header": header, "after_header": header, "before": "".join("%s\n" % f for f in sorted(before)),
            "after": "".join("%s\n" % f for f in sorted(after))}


def corrupt_source_message(params: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    return (
        "source database %s is corrupt: it FAILED its %s integrity check (%s). It was still backed up as %s, "
        "but that backup is flagged unverified and does not count as a verified backup"
        % (params["path"], params["integrity"], "; ".join(result["problems"][:5]), result["backup"])
    )


def checked_policy(params: Mapping[str, Any]) -> Any:
    """The retention policy (None when unset); a bad policy or export fails here, before any backup is taken."""
    try:
        validate_lock_timeout(params["lock_timeout"])
        validate_busy_timeout(params["busy_timeout_ms"])
        policy = retention_policy(params["retention"]) if params["retention"] is not None else None
        if params["export"] is not None:
            check_export_options(params["export"], "export.")
        return policy
    except BackupError as exc:
        raise TaskFailed({"msg": "%s; nothing was backed up" % exc, "kind": exc.kind}) from None


def take_backup(params: Mapping[str, Any], result: dict[str, Any], *, check_mode: bool,
                warn: Callable[[str], None]) -> None:
    """The optional checkpoint, then the snapshot: ``result`` so far."""
    changed, checkpoint_result = False, None
    try:
        if params["checkpoint"] != "none":
            checkpoint_result = checkpoint(params["path"], params["checkpoint"], params["busy_timeout_ms"],
                                           check_mode=check_mode)
            changed = checkpoint_result["changed"]
            if checkpoint_result["warning"] and not checkpoint_result["skipped"]:
                warn(checkpoint_result["warning"])
        snap = snapshot(params["path"], params["backup_dir"], params["name"], label=params["label"],
                        method=params["method"], integrity=params["integrity"],
                        busy_timeout_ms=params["busy_timeout_ms"], lock_timeout=params["lock_timeout"],
                        owner=params["owner"], group=params["group"], source_host=params["source_host"],
                        check_mode=check_mode)
    except BackupError as exc:
        result["changed"] = changed
        raise TaskFailed({"msg": str(exc), "kind": exc.kind}) from None
    except (OSError, sqlite3.Error) as exc:
        result["changed"] = changed
        raise TaskFailed({"msg": "backup of %s failed: %s" % (params["path"], exc), "kind": KIND_IO}) from None
    result.update(backup_result(snap))
    if checkpoint_result is not None:
        result["checkpoint_result"] = checkpoint_result
    if result["verified"] is False:
        raise TaskFailed({"msg": corrupt_source_message(params, result), "kind": KIND_CORRUPT})
    result["changed"] = result["changed"] or changed


def prune(params: Mapping[str, Any], policy: Any, result: dict[str, Any], *, check_mode: bool,
          warn: Callable[[str], None]) -> None:
    """O(retention) after the backup (the new backup trusted as verified)."""
    try:
        pruned = apply_retention(params["backup_dir"], params["name"], policy,
                                 timezone=params["retention"]["timezone"], check_mode=check_mode,
                                 lock_timeout=params["lock_timeout"], trusted=[result["file"]])
    except (BackupError, OSError, sqlite3.Error) as exc:
        raise TaskFailed({"msg": "%s, but pruning %s failed: %s" % (result["msg"], params["backup_dir"], exc),
                          "kind": getattr(exc, "kind", KIND_IO)}) from None
    for flagged in pruned["flagged"]:
        warn("%s fails its checksum (%s): flagged unverified, never kept as the newest verified backup"
             % (flagged["file"], flagged["why"]))
    result.update(retention=pruned, changed=result["changed"] or pruned["changed"])
    result["msg"] += "; %s" % pruned["msg"]


def export(params: Mapping[str, Any], result: dict[str, Any], *, check_mode: bool) -> None:
    """O(export) after the backup: stage what the archive lacks."""
    wanted = params["export"]
    try:
        plan = stage_export(params["backup_dir"], params["name"], wanted["have"], delta=wanted["delta"],
                            max_backups=wanted["max_backups"], fetch_user=wanted["fetch_user"],
                            check_mode=check_mode)
    except (BackupError, OSError) as exc:
        raise TaskFailed({"msg": "%s, but staging the backups of %s for the pull failed: %s"
                                 % (result["msg"], params["name"], exc),
                          "kind": getattr(exc, "kind", KIND_IO)}) from None
    export_msg = export_summary(params["name"], plan["transfers"])
    result.update(transfers=plan["transfers"], staging_dir=plan["staging_dir"],
                  export=dict(conflicts=plan["conflicts"], invalid=plan["invalid"],
                              host_backups=plan["host_backups"], msg=export_msg))
    result["changed"] = result["changed"] or bool(plan["staging_dir"])
    result["msg"] += "; %s" % export_msg


def backup_diff(params: Mapping[str, Any], result: Mapping[str, Any], check_mode: bool) -> dict[str, str]:
    if "retention" in result:
        present = [d["file"] for d in result["retention"]["decisions"]]
        kept = result["retention"]["kept"]
    else:
        present = kept = [b["file"] for b in list_backups(params["backup_dir"], params["name"])["backups"]]
    if check_mode:
        return folder_diff(params, present, kept + [result["file"]])
    return folder_diff(params, [f for f in present if f != result["file"]], kept)


# Invariant: nothing is backed up unless every option checked out, and nothing is pruned or staged
# unless the new backup was taken and verified.
def backup_task(params: Mapping[str, Any], *, check_mode: bool, diff: bool,
                warn: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The sqlite_backup module's work (``params``: its options, defaults filled in): the result, and
    the failure (msg, kind) when a step failed (the result then says what was done)."""
    result: dict[str, Any] = {"changed": False}
    try:
        policy = checked_policy(params)
        take_backup(params, result, check_mode=check_mode, warn=warn)
        if policy is not None:
            prune(params, policy, result, check_mode=check_mode, warn=warn)
        if params["export"] is not None:
            export(params, result, check_mode=check_mode)
    except TaskFailed as failed:
        return result, failed.failure
    if diff:
        result["diff"] = backup_diff(params, result, check_mode)
    return result, None


# The runner's ``task`` command (runner/sqlite_backup_runner.py) answers a request on stdin with one
# JSON reply on stdout: TASK_RAN when backup_task ran (its failure is inside the reply), TASK_REFUSED
# when it did nothing (another core than the controller's, or a request it cannot read).
TASK_RAN = 0
TASK_REFUSED = 8


# Invariant: backup_task runs only with the core the controller expects; a refusal has changed nothing.
def answer_task_request(request_text: str, expect_core: str) -> tuple[int, dict[str, Any]]:
    """The runner's side: ``request_text`` is {"params": the module's options with defaults filled in,
    "check_mode", "diff"}; the exit code and the reply {"result", "failure", "warnings", "core_sha256"}."""
    ours = core_sha256()
    if not ours or ours != expect_core:
        return TASK_REFUSED, {"refused": "outdated", "core_sha256": ours,
                              "msg": "the runner's core (%s) is not the controller's (%s)" % (ours, expect_core)}
    try:
        request = json.loads(request_text)
        params, check_mode, diff = request["params"], bool(request["check_mode"]), bool(request["diff"])
        missing = sorted(set(backup_options()) - set(params))
    except (ValueError, KeyError, TypeError) as exc:
        return TASK_REFUSED, {"refused": "bad request", "core_sha256": ours, "msg": "unreadable request: %s" % exc}
    if missing:
        return TASK_REFUSED, {"refused": "bad request", "core_sha256": ours,
                              "msg": "the request lacks options %s" % ", ".join(missing)}
    warnings: list[str] = []
    try:
        result, failure = backup_task(params, check_mode=check_mode, diff=diff, warn=warnings.append)
    except Exception as exc:  # the controller must get a reply, never a traceback (it would fall back)
        result, failure = {"changed": False}, {"msg": "unexpected error in the runner: %s: %s"
                                                      % (type(exc).__name__, exc), "kind": KIND_IO}
    return TASK_RAN, {"result": result, "failure": failure, "warnings": warnings, "core_sha256": ours}


# Invariant: a reply counts only when the runner says it ran the task; anything else means "use the module".
def read_task_reply(exit_code: int, stdout: str) -> tuple[dict[str, Any] | None, str]:
    """The controller's side: the task's result (failed and msg set when it failed, warnings kept), or
    None and why the module must run instead (no runner, another core, unreadable output)."""
    try:
        reply = json.loads(stdout)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        return None, "no runner reply (exit code %d)" % exit_code
    if exit_code != TASK_RAN or not isinstance(reply.get("result"), dict):
        return None, "the runner refused (%s): %s" % (reply.get("refused") or exit_code, reply.get("msg"))
    result = dict(reply["result"])
    if reply.get("failure"):
        result.update(reply["failure"], failed=True)
    if reply.get("warnings"):
        result["warnings"] = list(reply["warnings"])
    return result, "ran"
