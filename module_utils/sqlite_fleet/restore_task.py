# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A restore as the sqlite_restore module asks for it: its options checked, the backup chosen and
verified, the plan (check mode, diff), the new database's owner, the restore and its result.

Edit it here (the map: __init__.py).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .catalog import read_manifest
from .errors import KIND_BAD_INPUT, KIND_CORRUPT, KIND_IO, BackupError
from .files import resolve_owner
from .inputs import validate_abs_path, validate_name
from .names import dated_in_future, future_warning, iso_utc, parse_backup_filename
from .restore import (
    choose_backup_in_folder,
    file_identities,
    restore_backup,
    restore_target_plan,
    side_files_removed,
)
from .verify import verify_backup

SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def normalise_select(select: Any) -> str:
    """``latest``, a time (``YYYYMMDD_HHMMSS`` or ISO 8601) or a file name; a 14-digit time (YAML reads
    ``20261122_030000`` as the integer 20261122030000) gets its underscore back."""
    select = "latest" if select is None else str(select).strip()
    if re.fullmatch(r"\d{14}", select):
        select = select[:8] + "_" + select[8:]
    return select


def available_backups(backups: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A folder's finished backups as a restore reports them, each with a one-line summary."""
    return [{"file": b["file"], "created": iso_utc(b["created"]), "label": b["label"], "verified": b["verified"],
             "summary": "%s  taken %s%s%s" % (b["file"], b["created"].strftime("%Y-%m-%d %H:%M:%S UTC"),
                                             "  label %s" % b["label"] if b["label"] else "",
                                             "" if b["verified"] else "  UNVERIFIED (never chosen)")}
            for b in backups]


def verified_backup(backup_path: str, integrity: str, expected_sha256: str | None = None) -> dict[str, Any]:
    """verify_backup, turned into an error naming the file when anything fails."""
    checked = verify_backup(backup_path, integrity=integrity, expected_sha256=expected_sha256)
    if not checked["ok"]:
        raise BackupError("refusing to restore %s (%s): it failed verification: %s"
                          % (checked["file"], backup_path, "; ".join(checked["problems"])), KIND_CORRUPT)
    return checked


def manifest_for_plan(backup_path: str) -> dict[str, Any]:
    """The backup's manifest, for the plan; restore_backup verifies the backup itself (checksums, the
    previous hop's included, in one read) before it changes anything."""
    try:
        return read_manifest(backup_path)
    except BackupError as exc:
        raise BackupError("refusing to restore %s: %s" % (os.path.basename(backup_path), exc), exc.kind) from None


def backup_facts(path: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {"backup": os.path.basename(path), "backup_path": path, "created": manifest.get("created"),
            "label": manifest.get("label"), "sha256": manifest.get("sha256"),
            "size_bytes": manifest.get("size_bytes"), "tables": manifest.get("tables")}


def describe_target(target: str) -> str:
    """The restore target as a diff shows it: size and time, and its side files."""
    if not os.path.lexists(target):
        return "%s: does not exist (the restore creates it)\n" % target
    st = os.stat(target)
    lines = ["%s: %d bytes, modified %s" % (target, st.st_size, time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                             time.gmtime(st.st_mtime)))]
    for suffix in SIDE_SUFFIXES:
        if os.path.lexists(target + suffix):
            lines.append("%s%s: %d bytes" % (target, suffix, os.path.getsize(target + suffix)))
    return "\n".join(lines) + "\n"


def describe_backup(facts: Mapping[str, Any]) -> str:
    """The backup as a diff shows it: size, time, label, sha256 and row counts."""
    lines = ["%s: %s bytes, taken %s%s, sha256 %s" % (facts["backup_path"], facts["size_bytes"], facts["created"],
                                                      ", label %s" % facts["label"] if facts["label"] else "",
                                                      facts["sha256"])]
    for table, rows in sorted((facts["tables"] or {}).items()):
        lines.append("  %s: %s rows" % (table, rows))
    return "\n".join(lines) + "\n"


def checked_expected_sha256(value: Any) -> str | None:
    """The previous hop's checksum, lower case; 64 hexadecimal digits or refused."""
    if value is None:
        return None
    expected = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise BackupError("expected_sha256 must be 64 hexadecimal digits, got %r" % value, KIND_BAD_INPUT)
    return expected


def restore_source(params: Mapping[str, Any], result: dict[str, Any], warn: Callable[[str], None]) -> str:
    """The backup to restore: ``backup``, or the one ``select`` picks in ``backup_dir`` (then the
    folder's listing goes into ``result["available"]``)."""
    if params["backup_dir"] is None:
        backup_path = validate_abs_path(params["backup"], "backup")
        if parse_backup_filename(os.path.basename(backup_path)) is None:
            raise BackupError("%s is not named like a backup (<name>_backup_<YYYYMMDD>_<HHMMSS>.db)"
                              % os.path.basename(backup_path), KIND_BAD_INPUT)
        return backup_path
    backup_dir = validate_abs_path(params["backup_dir"], "backup_dir")
    name = validate_name(params["name"]) if params["name"] is not None else None
    chosen, listing = choose_backup_in_folder(backup_dir, name, normalise_select(params["select"]))
    result["available"] = available_backups(listing["backups"])
    future = future_warning(dated_in_future(listing["backups"]))
    if future:
        warn(future)
    return chosen["path"]


def planned_manifest(params: Mapping[str, Any], backup_path: str, expected: str | None, check_mode: bool,
                     result: dict[str, Any]) -> dict[str, Any]:
    """The backup's manifest. A real restore leaves verification to restore_backup, which verifies
    fully before it touches anything (so the check runs once); check mode and state=selected
    verify here; check mode may plan from the manifest of a backup a playbook would copy first."""
    present = os.path.lexists(backup_path)
    if not present and not (check_mode and params["state"] == "restored" and params["manifest"]):
        raise BackupError("backup %s does not exist" % backup_path, KIND_BAD_INPUT)
    if not present:
        manifest = params["manifest"]
        if manifest.get("file") != os.path.basename(backup_path):
            raise BackupError("the manifest given is for %r, not %s" % (manifest.get("file"),
                                                                        os.path.basename(backup_path)), KIND_BAD_INPUT)
        return manifest
    if check_mode or params["state"] == "selected":
        checked = verified_backup(backup_path, params["integrity"], expected)
        result["checks"] = checked["checks"]
        return checked["manifest"]
    return manifest_for_plan(backup_path)


def check_mode_message(facts: Mapping[str, Any], plan: Mapping[str, Any], target: str, mode: str,
                       safety_dir: str) -> str:
    removed = "; would remove %s" % ", ".join(os.path.basename(p) for p in plan["removed"]) if plan["removed"] else ""
    if plan["target_existed"] and not plan["unreadable"]:
        safety = "; a pre-restore safety backup would go to %s" % safety_dir
    elif plan["unreadable"]:
        safety = ("; the current file is unreadable (%s) and would be kept beside it as %s.unreadable-<time>"
                  % (plan["unreadable"], target))
    else:
        safety = ""
    return "would restore %s onto %s (%s)%s%s" % (facts["backup"], target, mode, removed, safety)


def restored_message(restored: Mapping[str, Any]) -> str:
    if restored["safety_backup"]:
        return "%s; the database as it was is in the safety backup %s" % (restored["msg"], restored["safety_backup"])
    if restored.get("set_aside"):
        return "%s; the unreadable database as it was is kept as %s" % (restored["msg"], restored["set_aside"])
    return "%s; there was no database before" % restored["msg"]


# Invariant: a refused or failed restore reports changed only when the target's identity changed,
# and lists as removed only the side files it did remove.
def restore_task(params: Mapping[str, Any], *, check_mode: bool, diff: bool,
                 warn: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The sqlite_restore module's work (``params``: its options): the result, and the failure
    (msg, kind) when something failed (the result then says what was done)."""
    started = time.monotonic()
    result: dict[str, Any] = {"changed": False}
    state: dict[str, Any] = {"target": params["path"], "before": "unset", "side_files": {}}
    try:
        done = restore_steps(params, result, state, check_mode=check_mode, diff=diff, warn=warn)
    except (BackupError, OSError, sqlite3.Error) as exc:
        target = state["target"]
        changed = state["before"] != "unset" and file_identities([target])[target] != state["before"]
        result.update(changed=changed, removed=side_files_removed(state["side_files"]))
        if isinstance(exc, BackupError):
            return result, {"msg": str(exc), "kind": exc.kind}
        return result, {"msg": "restore onto %s failed: %s" % (target, exc), "kind": KIND_IO}
    if done:
        result["duration_seconds"] = round(time.monotonic() - started, 3)
    return result, None


def restore_steps(params: Mapping[str, Any], result: dict[str, Any], state: dict[str, Any], *, check_mode: bool,
                  diff: bool, warn: Callable[[str], None]) -> bool:
    """restore_task's steps, filling ``result``; True when it ran (or chose) and timed the whole task."""
    target = state["target"] = validate_abs_path(params["path"], "path")
    if params["busy_timeout_ms"] < 0:
        raise BackupError("busy_timeout_ms must be 0 or more, got %d" % params["busy_timeout_ms"], KIND_BAD_INPUT)
    expected = checked_expected_sha256(params["expected_sha256"])
    name = validate_name(params["name"]) if params["name"] is not None else None
    backup_path = restore_source(params, result, warn)
    safety_dir = validate_abs_path(params["safety_dir"] or params["backup_dir"] or os.path.dirname(backup_path),
                                   "safety_dir")
    result.update(target=target, mode=params["mode"])
    manifest = planned_manifest(params, backup_path, expected, check_mode, result)
    facts = backup_facts(backup_path, manifest)
    result.update(facts)
    if params["state"] == "selected":
        result.update(manifest=manifest, msg="chose %s%s for %s (%s), verified (%s check)" % (
            facts["backup"], " [%s]" % facts["label"] if facts["label"] else "", target, params["mode"],
            params["integrity"]))
        return True
    plan = restore_target_plan(target, params["mode"])
    del plan["side_files"]
    result.update(plan, safety_dir=safety_dir, safety_backup=None,
                  journal_mode=(manifest.get("source") or {}).get("journal_mode") or "delete")
    if diff:
        result["diff"] = {"before_header": target, "after_header": facts["backup_path"],
                          "before": describe_target(target), "after": describe_backup(facts)}
    if check_mode:
        if plan["held_by"]:
            warn("%s is open in %s: a replace restore would be refused until the app is stopped"
                 % (target, ", ".join(plan["held_by"])))
        result.update(changed=True, msg=check_mode_message(facts, plan, target, params["mode"], safety_dir))
        return False
    del result["held_by"]  # the core refuses by itself, naming them
    new_owner = None
    if not plan["target_existed"]:  # a new database: its owner, or its folder's (resolved before any change)
        new_owner = resolve_owner(params["owner"], params["group"], os.stat(os.path.dirname(target)))
    state["side_files"] = file_identities(plan["removed"])
    state["before"] = file_identities([target])[target]
    restored = restore_backup(backup_path, target, mode=params["mode"], safety_dir=safety_dir,
                              safety_name=name or manifest["name"], busy_timeout_ms=params["busy_timeout_ms"],
                              integrity=params["integrity"], source_host=params["source_host"],
                              new_owner=new_owner, expected_sha256=expected)
    if new_owner is not None:
        result.update(owner_uid=new_owner[0], owner_gid=new_owner[1])
    result.update(changed=True, removed=restored["removed"], safety_backup=restored["safety_backup"],
                  set_aside=restored.get("set_aside"), journal_mode=restored["journal_mode"],
                  seconds=restored["seconds"], msg=restored_message(restored))
    return True
