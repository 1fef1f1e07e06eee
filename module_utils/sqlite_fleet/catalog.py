# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manifests, .sha256 sidecars, the listing of a backup folder, unfinished files, and the commit
protocol shared by snapshots and archive imports.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import stat
import sys
import time
from collections.abc import Mapping
from typing import Any

from .errors import KIND_CORRUPT, KIND_IO, BackupError
from .files import fsync_path, sha256_file, write_file_atomic
from .names import (
    FORMAT_VERSION,
    LABEL_RE,
    MANIFEST_MAX_BYTES,
    TMP_PREFIX,
    TOOL_NAME,
    backup_filename,
    iso_utc,
    parse_backup_filename,
    parse_iso_utc,
    pending_marker,
    pending_target,
    sidecar_paths,
    utcnow,
)

# --------------------------------------------------------------------------- manifests

def read_manifest(backup_path: str) -> dict[str, Any]:
    """The manifest of a backup, checked for shape; raises BackupError(KIND_CORRUPT)."""
    manifest_path = backup_path + ".json"
    base = os.path.basename(backup_path)
    try:
        st = os.lstat(manifest_path)
    except FileNotFoundError:
        raise BackupError("%s has no manifest (%s): unfinished or not ours" % (base, manifest_path),
                          KIND_CORRUPT) from None
    if not stat.S_ISREG(st.st_mode):
        raise BackupError("manifest %s is not a regular file" % manifest_path, KIND_CORRUPT)
    if st.st_size > MANIFEST_MAX_BYTES:
        raise BackupError("manifest %s is %d bytes, over the %d limit" % (manifest_path, st.st_size,
                                                                          MANIFEST_MAX_BYTES), KIND_CORRUPT)
    try:
        with open(manifest_path, "rb") as handle:
            manifest = json.loads(handle.read(MANIFEST_MAX_BYTES + 1).decode("utf-8"))
    except RecursionError:
        raise BackupError("manifest %s is not valid JSON: nested too deeply" % manifest_path, KIND_CORRUPT) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError("manifest %s is not valid JSON: %s" % (manifest_path, exc), KIND_CORRUPT) from None
    problems = manifest_problems(manifest, base)
    if problems:
        raise BackupError("manifest %s is invalid: %s" % (manifest_path, "; ".join(problems)), KIND_CORRUPT)
    return manifest


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """A manifest as it is written: indented JSON, keys sorted, one final newline."""
    return (json.dumps(dict(manifest), indent=2, sort_keys=True) + "\n").encode()


def write_manifest(backup_path: str, manifest: Mapping[str, Any], owner: tuple[int, int] | None) -> None:
    """Write ``<backup>.json`` atomically (0600); the caller fsyncs the folder."""
    write_file_atomic(backup_path + ".json", manifest_bytes(manifest), 0o600, owner)


def manifest_problems(manifest: Any, filename: str) -> list[str]:
    """Why a manifest cannot describe the backup ``filename`` ([] if it can)."""
    if not isinstance(manifest, dict):
        return ["not a JSON object"]
    problems = []
    if manifest.get("format_version") != FORMAT_VERSION:
        problems.append("format_version %r is not %d" % (manifest.get("format_version"), FORMAT_VERSION))
    if manifest.get("file") != filename:
        problems.append("names file %r, not %r" % (manifest.get("file"), filename))
    parsed = parse_backup_filename(filename)
    if parsed is None or manifest.get("name") != parsed["name"]:
        problems.append("database name %r does not match the file name" % (manifest.get("name"),))
    if parse_iso_utc(manifest.get("created")) is None:
        problems.append("created time missing or malformed")
    sha = manifest.get("sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        problems.append("sha256 missing or malformed")
    if not isinstance(manifest.get("size_bytes"), int):
        problems.append("size_bytes missing")
    tables = manifest.get("tables")
    if not isinstance(tables, dict) or not all(
        isinstance(k, str) and (isinstance(v, int) or v is None) for k, v in tables.items()
    ):
        problems.append("tables must map table names to row counts")
    if not isinstance(manifest.get("verified"), bool):
        problems.append("verified flag missing")
    label = manifest.get("label")
    if label is not None and (not isinstance(label, str) or not LABEL_RE.fullmatch(label)):
        problems.append("label malformed")
    flagged = manifest.get("flagged")
    if flagged is not None and not (isinstance(flagged, dict) and flagged.get("reason") in (FLAG_CHECKSUM, FLAG_CHECK)
                                    and manifest.get("verified") is False):
        problems.append("flagged malformed")
    return problems


def read_sha256_sidecar(backup_path: str) -> str:
    path = backup_path + ".sha256"
    base = os.path.basename(backup_path)
    try:
        with open(path, "rb") as handle:
            text = handle.read(4096).decode("ascii", "replace")
    except FileNotFoundError:
        raise BackupError("%s has no checksum file %s" % (base, path), KIND_CORRUPT) from None
    match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)\n?", text)
    if not match or match.group(2) != base:
        raise BackupError("checksum file %s is malformed (want '<sha256>  %s')" % (path, base), KIND_CORRUPT)
    return match.group(1)


# Why a backup was flagged unverified after it was committed (manifest "flagged.reason").
FLAG_CHECKSUM = "checksum"  # its bytes no longer match the checksum written at the first hop
FLAG_CHECK = "check"  # its bytes match, but a later SQLite check of them failed


def checksum_problem(backup: Mapping[str, Any]) -> str | None:
    """Why a listed backup's bytes do not match its manifest (or .sha256), else None: one sha256."""
    try:
        actual = sha256_file(backup["path"])
    except OSError as exc:
        return "cannot be read: %s" % exc.strerror
    recorded = [("its manifest", backup["sha256"])]
    with contextlib.suppress(BackupError):
        recorded.append(("its .sha256", read_sha256_sidecar(backup["path"])))
    mismatched = ["%s says %s" % (who, value[:12]) for who, value in recorded if value != actual]
    if mismatched:
        return "sha256 of the file is %s but %s" % (actual[:12], ", ".join(mismatched))
    return None


# Invariant: a flagged backup stays in its series as evidence but never counts as verified again.
def flag_unverified(backup_path: str, reason: str, why: str, now: _dt.datetime | None = None) -> dict[str, Any]:
    """Rewrite a committed backup's manifest with ``verified: false`` and why (atomic rename)."""
    manifest = read_manifest(backup_path)
    manifest["verified"] = False
    manifest["flagged"] = {"reason": reason, "why": why, "at": iso_utc(now or utcnow())}
    st = os.stat(backup_path + ".json")
    write_manifest(backup_path, manifest, (st.st_uid, st.st_gid))
    fsync_path(os.path.dirname(backup_path), directory=True)
    return manifest


# --------------------------------------------------------------------------- listing

def list_backups(backup_dir: str, name: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Finished backups (name pattern + valid manifest), newest first, and the rest.

    ``backups``: dicts with file, path, name, created (datetime), label, verified, size_bytes,
    sha256, manifest.  ``unfinished``: our own files left by an interrupted run.
    ``invalid``: files named like backups whose manifest is missing or broken (never deleted).
    """
    result: dict[str, list[dict[str, Any]]] = {"backups": [], "unfinished": [], "invalid": []}
    try:
        entries = sorted(os.listdir(backup_dir))
    except FileNotFoundError:
        return result
    present = set(entries)
    pending = {pending_target(e) for e in entries} - {None}
    for entry in entries:
        path = os.path.join(backup_dir, entry)
        if entry.startswith(TMP_PREFIX) or pending_target(entry) is not None:
            result["unfinished"].append({"file": entry, "path": path, "why": "temporary file"})
            continue
        parsed = parse_backup_filename(entry)
        if parsed is None or (name is not None and parsed["name"] != name):
            continue
        if os.path.islink(path) or not os.path.isfile(path):
            result["invalid"].append({"file": entry, "path": path, "why": "not a regular file"})
            continue
        try:
            manifest = read_manifest(path)
        except BackupError as exc:
            bucket = "unfinished" if entry in pending else "invalid"
            result[bucket].append({"file": entry, "path": path, "why": str(exc)})
            continue
        created = parse_iso_utc(manifest["created"])
        result["backups"].append({
            "file": entry,
            "path": path,
            "name": manifest["name"],
            "created": created,
            "label": manifest.get("label"),
            "verified": manifest["verified"] is True,
            "size_bytes": os.path.getsize(path),
            "sha256": manifest["sha256"],
            "has_checksum_file": entry + ".sha256" in present,
            "flagged": (manifest.get("flagged") or {}).get("reason"),
            "manifest": manifest,
        })
    # sidecars whose backup is gone (a prune interrupted after removing the .db): only ours
    for entry in entries:
        for suffix in (".sha256", ".json"):
            if entry.endswith(".db" + suffix):
                db_entry = entry[: -len(suffix)]
                parsed = parse_backup_filename(db_entry)
                if parsed and (name is None or parsed["name"] == name) and db_entry not in present \
                        and is_our_sidecar(os.path.join(backup_dir, entry), db_entry):
                    result["unfinished"].append({"file": entry, "path": os.path.join(backup_dir, entry),
                                                 "why": "sidecar of a removed backup"})
    result["backups"].sort(key=lambda b: (b["created"], b["file"]), reverse=True)
    return result


def is_our_sidecar(path: str, db_entry: str) -> bool:
    """A .sha256 line or a manifest this tool writes for ``db_entry`` (never a stranger's file)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MANIFEST_MAX_BYTES + 1)
    except OSError:
        return False
    if path.endswith(".sha256"):
        return re.fullmatch(rb"[0-9a-f]{64}  " + re.escape(db_entry.encode()) + rb"\n", data) is not None
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("file") == db_entry and \
        (manifest.get("tool") or {}).get("name") == TOOL_NAME


def remove_unfinished(backup_dir: str, name: str | None = None, check_mode: bool = False) -> list[str]:
    """Remove what interrupted runs of this tool left. Call with the folder's lock held."""
    removed = []
    listing = list_backups(backup_dir, name)
    for item in listing["unfinished"]:
        target = pending_target(item["file"])
        if target is not None:
            if any(b["file"] == target for b in listing["backups"]):
                # The commit happened; only the marker's removal was lost.
                paths = [item["path"]]
            else:
                target_path = os.path.join(backup_dir, target)
                paths = [target_path, *sidecar_paths(target_path), item["path"]]
        else:
            paths = [item["path"]]
        for path in paths:
            if os.path.lexists(path):
                removed.append(os.path.basename(path))
                if not check_mode:
                    os.unlink(path)
    if removed and not check_mode:
        fsync_path(backup_dir, directory=True)
    return sorted(set(removed))


# --------------------------------------------------------------------------- commit

def commit_backup(tmp_path: str, backup_dir: str, name: str, created: _dt.datetime, manifest: dict[str, Any],
                  digest: str, owner: tuple[int, int], started_monotonic: float) -> str:
    """Commit the checked copy under the first free name of its second (``_1``, ``_2`` ...)."""
    entries = set(os.listdir(backup_dir))
    seq = 0
    while True:
        final = backup_filename(name, created, seq)
        taken = {final, final + ".sha256", final + ".json", pending_marker(final)}
        if not taken & entries:
            manifest["file"] = final
            manifest["duration_seconds"] = round(time.monotonic() - started_monotonic, 6)
            if commit_file(tmp_path, backup_dir, final, digest, manifest, owner):
                return os.path.join(backup_dir, final)
        entries.add(final)
        seq += 1


# The commit protocol, for snapshots and archive imports alike: a pending marker, a hard link to
# the final name (never overwriting), the .sha256, then the manifest: its rename is the commit.
def commit_file(tmp_path: str, backup_dir: str, final: str, digest: str, manifest: Mapping[str, Any],
                owner: tuple[int, int] | None) -> bool:
    """Commit the private, checked, fsynced ``tmp_path`` as ``final`` with its sidecars; False (nothing
    changed) when that name or its marker is taken. ``tmp_path`` stays for the caller to remove."""
    marker = os.path.join(backup_dir, pending_marker(final))
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    final_path = os.path.join(backup_dir, final)
    try:
        os.link(tmp_path, final_path)  # fails rather than overwrite
    except FileExistsError:
        os.unlink(marker)
        return False
    fsync_path(backup_dir, directory=True)
    write_file_atomic(final_path + ".sha256", ("%s  %s\n" % (digest, final)).encode("ascii"), 0o600, owner)
    write_manifest(final_path, manifest, owner)
    fsync_path(backup_dir, directory=True)
    os.unlink(marker)
    return True


def check_sidecars(backup_path: str, digest: str) -> None:
    """Read a just committed backup's ``.sha256`` and manifest back, as a verifier would."""
    if read_sha256_sidecar(backup_path) != digest or read_manifest(backup_path)["sha256"] != digest:
        raise BackupError("the sidecars of %s do not record its sha256 %s as written"
                          % (os.path.basename(backup_path), digest[:12]), KIND_IO)


_CORE_SHA256: str | None = None


def core_files() -> list[str]:
    """The core's source files: every file of the package this module is part of (its ``PARTS``
    and ``__init__.py``), or this single file."""
    here = os.path.abspath(__file__)
    parts = getattr(sys.modules.get(__name__.rpartition(".")[0]), "PARTS", None)
    if not parts:
        return [here]
    folder = os.path.dirname(here)
    return [os.path.join(folder, name + ".py") for name in ("__init__", *parts)]


def core_sha256() -> str | None:
    """sha256 of the ``sha256sum`` lines of the core's files sorted by name (in the package's folder:
    ``LC_ALL=C sha256sum *.py | sha256sum``); recorded in manifests, the controller compares it.
    None where a file of the core is missing: a module's AnsiballZ payload holds only the parts it
    imports (a hash of fewer files would pass for another core's)."""
    global _CORE_SHA256
    if _CORE_SHA256 is None:
        lines = []
        try:
            for path in sorted(core_files(), key=os.path.basename):
                try:
                    with open(path, "rb") as handle:
                        data = handle.read()
                except OSError:
                    # Inside an Ansible module the core is read from the module's zip payload (which
                    # raises for a part the module does not import: no sha256 then).
                    data = __loader__.get_data(path)  # type: ignore[name-defined]
                lines.append("%s  %s\n" % (hashlib.sha256(data).hexdigest(), os.path.basename(path)))
            _CORE_SHA256 = hashlib.sha256("".join(lines).encode()).hexdigest()
        except Exception:
            _CORE_SHA256 = ""
    return _CORE_SHA256 or None
