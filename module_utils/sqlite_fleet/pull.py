# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A pull on the controller, step by step: the offered transfers checked, fetched files imported, the
archive pruned (the sqlite_archive module and the sqlite_backup action plugin call these).

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .archive import check_pull_space, check_transfers, import_backup, settle_bases
from .catalog import core_sha256
from .delta import apply_delta
from .errors import KIND_BAD_INPUT, KIND_CORRUPT, KIND_IO, BackupError
from .files import ensure_private_dir
from .inputs import validate_abs_path, validate_name
from .names import CORE_VERSION, INCOMING_PREFIX, parse_backup_filename
from .retention import apply_retention, retention_policy

# What a pull does on the controller once the host staged its transfers, as plain functions: the
# sqlite_archive module and the sqlite_backup action plugin (one task per host) both call them.
NOT_STAGED = "/not-staged-in-check-mode"


def offered_transfers(transfers: Sequence[Any], check_mode: bool) -> list[Any]:
    """In check mode the host staged nothing: its transfers have no fetch_path to check yet."""
    if not check_mode:
        return list(transfers)
    return [dict(t, fetch_path=NOT_STAGED) if isinstance(t, dict) and t.get("fetch_path") is None else t
            for t in transfers]


def prepare_pull(archive_dir: str, host: str, transfers: Sequence[Any], databases: Sequence[str] | None, *,
                 check_mode: bool, warn: Callable[[str], None]) -> dict[str, Any]:
    """Check what the host offered (untrusted) and the archive's room for it, before anything is fetched;
    create the folders the files are fetched to. The result's ``transfers`` are rebuilt from checked fields."""
    host_dir = os.path.join(archive_dir, validate_name(host, "host"))
    transfers = check_transfers(offered_transfers(transfers, check_mode), databases)
    for transfer in transfers:
        if transfer["fetch_path"] == NOT_STAGED:
            transfer["fetch_path"] = None
    settled = settle_bases(host_dir, transfers, check_mode=check_mode)
    transfers = settled["transfers"]
    for problem in settled["flagged"]:
        warn("the archive's %s of %s fails its checksum (%s): flagged unverified"
             % (problem["file"], problem["name"], problem["why"]))
    for transfer in transfers:
        if transfer.get("fallback"):
            warn(transfer["fallback"])
    space = check_pull_space(host_dir, transfers, host)
    created = False
    for name in sorted({transfer["name"] for transfer in transfers}):  # where the files are fetched to
        for level in (archive_dir, host_dir, os.path.join(host_dir, name)):
            created = ensure_private_dir(level, None, check_mode=check_mode) or created
    for dropped in settled["dropped"]:
        warn(dropped["msg"])
    return dict(changed=created or bool(settled["flagged"] and not check_mode), transfers=transfers,
                dropped=settled["dropped"], flagged=settled["flagged"], folder=host_dir,
                msg="%d transfer(s) checked; %d bytes needed, %d free in the archive"
                % (len(transfers), space["need_bytes"], space["free_bytes"]), **space)


def import_pulled(params: Mapping[str, Any], folder: str) -> dict[str, Any]:
    """Import one fetched file (``incoming``: a whole backup, or a delta rebuilt on ``base``) into ``folder``."""
    incoming = validate_abs_path(params["incoming"], "incoming file")
    if os.path.dirname(incoming) != folder or not os.path.basename(incoming).startswith(INCOMING_PREFIX):
        raise BackupError("incoming file %s must lie in %s and start with %s" % (incoming, folder, INCOMING_PREFIX),
                          KIND_BAD_INPUT)
    if not os.path.isfile(incoming) or os.path.islink(incoming):
        raise BackupError("incoming file %s is missing or not a regular file" % incoming, KIND_BAD_INPUT)
    if params["mode"] == "full":
        return import_backup(incoming, params["manifest"], folder, source_host=params["host"],
                             integrity=params["integrity"], lock_timeout=params["lock_timeout"])
    base = params["base"] or ""
    rebuilt = incoming + ".rebuilt"
    applied = None
    try:
        if os.path.basename(base) != base or parse_backup_filename(base) is None:
            raise BackupError("base %r is not a backup file name" % base, KIND_BAD_INPUT)
        applied = apply_delta(os.path.join(folder, base), incoming, rebuilt)
    except FileNotFoundError:
        raise BackupError("the delta's base %s is not in the archive" % base, KIND_BAD_INPUT) from None
    finally:
        # the fetched delta is consumed either way; a half-rebuilt file never waits for the next run
        for leftover in (incoming,) if applied else (incoming, rebuilt):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    result = import_backup(rebuilt, params["manifest"], folder, source_host=params["host"],
                           integrity=params["integrity"], lock_timeout=params["lock_timeout"])
    result["pages_changed"] = applied["pages_changed"]
    return result


def outdated_runner(manifest: Mapping[str, Any]) -> str | None:
    """A warning when the host's own runner made this backup with another core than ours."""
    tool = manifest.get("tool") or {}
    if not manifest.get("runner") or not tool.get("core_sha256") or tool["core_sha256"] == core_sha256():
        return None
    return ("%s was made by the on-host runner %s with a core (%s...) that differs from the repository's "
            "(%s, %s...): run provision.yml to update the runner"
            % (manifest.get("file"), tool.get("version"), tool["core_sha256"][:12], CORE_VERSION,
               (core_sha256() or "")[:12]))


def import_all(params: Mapping[str, Any], host_dir: str, transfers: Sequence[Mapping[str, Any]], *,
               check_mode: bool, warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """Import every fetched transfer, in order; one result each (a failure does not stop the others)."""
    results = []
    for transfer in transfers:
        folder = os.path.join(host_dir, transfer["name"])
        entry: dict[str, Any] = {"name": transfer["name"], "file": transfer["file"], "mode": transfer["mode"]}
        if check_mode:
            results.append(dict(entry, changed=True, failed=False, msg="would import %s" % transfer["file"]))
            continue
        one = dict(params, name=transfer["name"], incoming=os.path.join(folder, INCOMING_PREFIX + transfer["file"]),
                   mode=transfer["mode"], base=transfer["base"], manifest=transfer["manifest"])
        try:
            entry.update(import_pulled(one, folder), failed=False)
            if entry.get("disputed"):
                entry.update(failed=True, kind=KIND_CORRUPT)
            elif entry.get("verified") is False:
                warn(entry["msg"])
        except BackupError as exc:
            entry.update(changed=False, failed=True, msg=str(exc), kind=exc.kind)
        except OSError as exc:
            entry.update(changed=False, failed=True, kind=KIND_IO,
                         msg="archive import of %s from %s failed: %s" % (transfer["file"], params["host"], exc))
        outdated = None if entry["failed"] else outdated_runner(transfer["manifest"])
        if outdated:
            entry["outdated_runner"] = outdated
            warn(outdated)
        results.append(entry)
    return results


def archive_diff(host_dir: str, name: str, imported: Sequence[Mapping[str, Any]], pruned: Mapping[str, Any],
                 check_mode: bool) -> dict[str, str]:
    """What --diff shows for one database: its archived backups before and after this import and prune."""
    present = [d["file"] for d in pruned["decisions"]]
    new = [e["file"] for e in imported if e["name"] == name and not e["failed"]]
    before = [f for f in present if f not in new] if not check_mode else present
    after = pruned["kept"] + (new if check_mode else [])
    header = "%s (archived backups)" % os.path.join(host_dir, name)
    return {"before_header": header, "after_header": header, "before": "".join("%s\n" % f for f in sorted(before)),
            "after": "".join("%s\n" % f for f in sorted(set(after)))}


# Invariant: the archive is pruned only after every import of the pull succeeded.
def import_and_prune(params: Mapping[str, Any], host_dir: str, *, check_mode: bool, diff: bool,
                     warn: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Import a host's fetched transfers (``params``: transfers, dropped, databases, retention, host,
    integrity, lock_timeout), then prune its databases' archive folders: the result, and the failure
    (msg, kind) when something failed (the result then says what was done)."""
    policy = retention_policy(params["retention"]) if params.get("retention") is not None else None
    if policy is not None and params.get("databases") is None:
        raise BackupError("retention needs databases: the archive folders to prune", KIND_BAD_INPUT)
    transfers = check_transfers(offered_transfers(params.get("transfers") or [], check_mode), params.get("databases"))
    imported = import_all(params, host_dir, transfers, check_mode=check_mode, warn=warn)
    for dropped in params.get("dropped") or []:  # deltas whose base failed in state=prepare: reported, not imported
        imported.append({"name": str(dropped.get("name")), "file": str(dropped.get("file")), "mode": "delta",
                         "changed": False, "failed": True, "kind": KIND_CORRUPT, "msg": str(dropped.get("msg"))})
    failures = [entry for entry in imported if entry["failed"]]
    result: dict[str, Any] = dict(changed=any(entry["changed"] for entry in imported), imported=imported,
                                  folder=host_dir)
    if failures:
        return result, {"msg": "; ".join(entry["msg"] for entry in failures), "kind": failures[0]["kind"]}
    messages = ["%d backup(s) %simported" % (len(imported), "would be " if check_mode else "")]
    if policy is not None:
        result["pruned"] = []
        for name in params["databases"]:
            fresh = [entry["file"] for entry in imported if entry["name"] == name and entry.get("verified")]
            try:
                pruned = apply_retention(os.path.join(host_dir, validate_name(name)), name, policy,
                                         timezone=params["retention"]["timezone"], check_mode=check_mode,
                                         lock_timeout=params["lock_timeout"], trusted=fresh)
            except (BackupError, OSError) as exc:
                return result, {"msg": "pruning the archive of %s failed: %s" % (name, exc),
                                "kind": getattr(exc, "kind", KIND_IO)}
            for flagged in pruned["flagged"]:
                warn("the archive's %s of %s fails its checksum (%s): flagged unverified, never deleted "
                     "as the newest verified backup" % (flagged["file"], name, flagged["why"]))
            result["pruned"].append(dict(pruned, name=name))
            if diff:
                result.setdefault("diff", []).append(archive_diff(host_dir, name, imported, pruned, check_mode))
            result["changed"] = result["changed"] or pruned["changed"]
            messages.append(pruned["msg"])
    result["msg"] = "; ".join(messages)
    return result, None
