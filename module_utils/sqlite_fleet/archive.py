# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The archive side of a pull: vetting transfers and manifests, delta bases, space, imports.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from .catalog import (
    FLAG_CHECK,
    FLAG_CHECKSUM,
    checksum_problem,
    commit_file,
    flag_unverified,
    list_backups,
    manifest_bytes,
    manifest_problems,
    remove_unfinished,
    write_manifest,
)
from .errors import KIND_CORRUPT, KIND_LOCKED, BackupError
from .files import check_free_space, chown_if_needed, folder_lock, free_bytes, fsync_path, required_space, sha256_file
from .inputs import validate_abs_path, validate_name
from .names import MANIFEST_MAX_BYTES, iso_utc, parse_backup_filename, utcnow
from .sqlitedb import open_readonly, run_integrity_check, table_row_counts, tune_for_checks
from .verify import row_count_differences


def archive_options() -> dict[str, dict[str, Any]]:
    """Where a database's folder lies in the archive and how long to wait for its lock, as the
    archive's modules and the sqlite_backup action plugin take them (an Ansible argument spec)."""
    return {"archive_dir": {"type": "path", "required": True}, "host": {"type": "str", "required": True},
            "lock_timeout": {"type": "float", "default": 600}}


def archived_backups(db_dir: str, clean: bool = False, lock_timeout: float = 600.0) -> dict[str, Any]:
    """What the archive holds for one database, newest first: file, sha256, created, verified and
    ``intact`` (False once its bytes were found not to match its checksum: the host may send it again).

    With ``clean``, first remove what an interrupted pull left, under the folder's lock.
    """
    removed: list[str] = []
    if clean and os.path.isdir(db_dir):
        with folder_lock(db_dir, timeout=lock_timeout):
            removed = remove_unfinished(db_dir)
    have = [{"file": b["file"], "sha256": b["sha256"], "created": iso_utc(b["created"]), "verified": b["verified"],
             "intact": b["flagged"] != FLAG_CHECKSUM}
            for b in list_backups(db_dir)["backups"]]
    return {"have": have, "removed_unfinished": removed}


def vet_host_manifest(manifest: Any) -> str:
    """The file a host's manifest (untrusted input) describes, once the manifest is acceptable.

    Its ``file`` must be a plain backup name (no path, no ``..``), it must pass
    :func:`manifest_problems` and, written as the archive writes it, stay within
    MANIFEST_MAX_BYTES (a bigger one could never be read back). Raises BackupError(KIND_CORRUPT).
    """
    filename = manifest.get("file") if isinstance(manifest, Mapping) else None
    if not isinstance(filename, str) or os.path.basename(filename) != filename or \
            parse_backup_filename(filename) is None:
        raise BackupError("the host's manifest names an unacceptable file %s" % repr(filename)[:200], KIND_CORRUPT)
    try:
        encoded = len(manifest_bytes(manifest))
    except (TypeError, ValueError, RecursionError) as exc:
        raise BackupError("the host's manifest for %s cannot be written as JSON: %s" % (filename, exc),
                          KIND_CORRUPT) from None
    if encoded > MANIFEST_MAX_BYTES:
        raise BackupError("the host's manifest for %s is %d bytes, over the %d limit" % (filename, encoded,
                                                                                        MANIFEST_MAX_BYTES),
                          KIND_CORRUPT)
    problems = manifest_problems(dict(manifest), filename)
    if problems:
        raise BackupError("the host's manifest for %s is invalid: %s" % (filename, "; ".join(problems)),
                          KIND_CORRUPT)
    return filename


def check_transfers(transfers: Any, databases: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The transfers a host offered for a pull (``plan_export`` output, untrusted), checked field by
    field and rebuilt from the checked fields only.

    The controller builds file names in the archive from them before anything is verified, so each
    must name one of ``databases`` (when given), a plain backup file of that database described by
    an acceptable manifest, a mode, a base (deltas), sizes and the path to fetch on the host.
    Raises BackupError(KIND_CORRUPT) naming the first unacceptable transfer.
    """
    if not isinstance(transfers, list):
        raise BackupError("the host's transfers must be a list, got %s" % type(transfers).__name__, KIND_CORRUPT)
    checked: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def refuse(index: int, why: str) -> BackupError:
        return BackupError("the host offered an unacceptable transfer #%d: %s" % (index + 1, why), KIND_CORRUPT)

    def count_of(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for index, transfer in enumerate(transfers):
        if not isinstance(transfer, Mapping):
            raise refuse(index, "not a mapping")
        name = transfer.get("name")
        try:
            validate_name(name, "database name")
        except BackupError as exc:
            raise refuse(index, str(exc)) from None
        if databases is not None and name not in databases:
            raise refuse(index, "database %r is not one this host backs up (%s)" % (name, ", ".join(databases)))
        try:
            filename = vet_host_manifest(transfer.get("manifest"))
        except BackupError as exc:
            raise refuse(index, str(exc)) from None
        if transfer.get("file") != filename:
            raise refuse(index, "it names file %s but its manifest describes %s" % (repr(transfer.get("file"))[:200],
                                                                                  filename))
        if parse_backup_filename(filename)["name"] != name:
            raise refuse(index, "file %s is not a backup of database %s" % (filename, name))
        mode = transfer.get("mode")
        base = transfer.get("base")
        if mode == "delta":
            parsed_base = parse_backup_filename(base) if isinstance(base, str) else None
            if parsed_base is None or os.path.basename(base) != base or parsed_base["name"] != name \
                    or base == filename:
                raise refuse(index, "the base %s of the delta for %s is not a backup of %s"
                             % (repr(base)[:200], filename, name))
            if transfer["manifest"]["verified"] is not True:
                raise refuse(index, "%s is flagged unverified: it must be sent whole, not as a delta" % filename)
        elif mode == "full":
            base = None
        else:
            raise refuse(index, "mode %s is neither full nor delta" % repr(mode)[:50])
        size_bytes, sent_bytes = transfer.get("size_bytes"), transfer.get("bytes")
        if not count_of(size_bytes) or size_bytes != transfer["manifest"]["size_bytes"]:
            raise refuse(index, "size_bytes %r of %s is not the manifest's %r"
                         % (size_bytes, filename, transfer["manifest"]["size_bytes"]))
        if not count_of(sent_bytes) or (mode == "full" and sent_bytes != size_bytes):
            raise refuse(index, "bytes %r of %s is not a plausible size" % (sent_bytes, filename))
        try:
            fetch_path = validate_abs_path(transfer.get("fetch_path"), "fetch_path")
        except BackupError as exc:
            raise refuse(index, str(exc)) from None
        full_fetch_path = None
        if mode == "delta" and transfer.get("full_fetch_path") is not None:
            try:
                full_fetch_path = validate_abs_path(transfer.get("full_fetch_path"), "full_fetch_path")
            except BackupError as exc:
                raise refuse(index, str(exc)) from None
        if (name, filename) in seen:
            raise refuse(index, "%s is offered twice" % filename)
        seen.add((name, filename))
        clean = {"file": filename, "name": name, "mode": mode, "base": base, "fetch_path": fetch_path,
                 "bytes": sent_bytes, "size_bytes": size_bytes, "manifest": dict(transfer["manifest"])}
        if full_fetch_path is not None:
            clean["full_fetch_path"] = full_fetch_path
        for extra in ("pages_changed", "pages_total"):
            if count_of(transfer.get(extra)):
                clean[extra] = transfer[extra]
        checked.append(clean)
    return checked


# Invariant: a delta is applied only to a base the archive holds verified and whose bytes match
# its checksum now; a base that fails is flagged, and its delta is sent whole instead (or dropped).
def settle_bases(host_dir: str, transfers: Sequence[Mapping[str, Any]], *, check_mode: bool = False,
                 ) -> dict[str, Any]:
    """Check the archive's base of every delta among the checked ``transfers`` (one sha256 per base).

    A delta whose base is missing, unverified or corrupt becomes a full transfer of its
    ``full_fetch_path`` when the host staged one, else it is dropped with a message (the next
    run sends it against another base, or whole); so is a delta based on a dropped transfer.
    A corrupt base is flagged unverified (not in check mode). Returns ``transfers`` (what to
    fetch), ``dropped`` and ``flagged`` (``{file, name, why}``).
    """
    settled: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    flagged: list[dict[str, str]] = []
    base_problem: dict[tuple[str, str], str | None] = {}
    sent_verified: set[tuple[str, str]] = set()
    for transfer in transfers:
        transfer = dict(transfer)
        name = transfer["name"]
        if transfer["mode"] == "delta":
            key = (name, transfer["base"])
            if key in sent_verified:
                why = None
            elif key in base_problem:
                why = base_problem[key]
            elif any(t["name"] == name and t["file"] == transfer["base"] for t in transfers):
                why = base_problem[key] = "it was not sent (or not verified) in this run"
            else:
                why = base_problem[key] = archive_base_problem(os.path.join(host_dir, name), transfer["base"],
                                                               flagged, check_mode)
            if why is not None:
                message = "the base %s of the delta for %s %s" % (transfer["base"], transfer["file"], why)
                if transfer.get("full_fetch_path"):
                    transfer.update(mode="full", base=None, fetch_path=transfer["full_fetch_path"],
                                    bytes=transfer["size_bytes"], fallback=message + ": sent whole instead")
                    for extra in ("pages_changed", "pages_total"):
                        transfer.pop(extra, None)
                else:
                    dropped.append({"name": name, "file": transfer["file"],
                                    "msg": message + ": not pulled; the next run sends it whole or against "
                                                     "another base"})
                    continue
        transfer.pop("full_fetch_path", None)
        if transfer["manifest"]["verified"] is True:
            sent_verified.add((name, transfer["file"]))
        settled.append(transfer)
    return {"transfers": settled, "dropped": dropped, "flagged": flagged}


def archive_base_problem(db_dir: str, base: str, flagged: list[dict[str, str]], check_mode: bool) -> str | None:
    """Why the archive's ``base`` cannot be a delta's base (None when it can); flags a corrupt one."""
    found = next((b for b in list_backups(db_dir)["backups"] if b["file"] == base), None)
    if found is None:
        return "is not in the archive"
    if not found["verified"]:
        return "is flagged unverified in the archive"
    why = checksum_problem(found)
    if why is None:
        return None
    flagged.append({"name": os.path.basename(db_dir), "file": base, "why": why})
    if not check_mode:
        with folder_lock(db_dir):
            flag_unverified(found["path"], FLAG_CHECKSUM, why)
    return "is corrupt in the archive (%s)%s" % (why, "" if check_mode else ", now flagged unverified")


def check_pull_space(host_dir: str, transfers: Sequence[Mapping[str, Any]], source_host: str) -> dict[str, Any]:
    """Refuse a pull that cannot fit, before anything is fetched.

    Per filesystem of the archive folders ``<host_dir>/<name>``: the bytes to fetch plus the files
    rebuilt from deltas (the delta and its result exist at the same time), plus the snapshot's
    margin (:func:`required_space`), against the free space. Raises BackupError(KIND_NO_SPACE)
    with the numbers. ``transfers`` as returned by :func:`check_transfers`.
    """
    def existing(folder: str) -> str:
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)  # check mode: the folders may not exist yet
        return folder

    groups: dict[int, dict[str, Any]] = {}
    for transfer in transfers:
        folder = existing(os.path.join(host_dir, transfer["name"]))
        group = groups.setdefault(os.stat(folder).st_dev, {"folder": folder, "bytes": 0, "count": 0})
        group["bytes"] += transfer["bytes"] + (transfer["size_bytes"] if transfer["mode"] == "delta" else 0)
        group["count"] += 1
    need, free = 0, None if groups else free_bytes(existing(host_dir))
    for group in groups.values():
        needed = required_space(group["bytes"])
        check_free_space(group["folder"], needed, "the pull of %d backup(s) from %s (%d bytes to fetch and rebuild)"
                         % (group["count"], source_host, group["bytes"]))
        need += needed
        available = free_bytes(group["folder"])
        free = available if free is None else min(free, available)
    return {"need_bytes": need, "free_bytes": free}


# Invariant: nothing gets a final name in the archive unless its bytes are the host's (sha256);
# what fails a check there is kept flagged unverified, never as a verified backup.
def import_backup(incoming_path: str, manifest: Mapping[str, Any], db_dir: str, *, source_host: str,
                  integrity: str = "full", lock_timeout: float = 600.0, owner: tuple[int, int] | None = None,
                  ) -> dict[str, Any]:
    """Commit a pulled backup into ``db_dir`` of the archive, verified against the host's manifest.

    ``incoming_path`` is a private temporary file; it is consumed (linked, then removed) on
    success and removed on failure. The host's manifest is untrusted input: its file name
    must be a plain backup name and its sha256 must match the bytes, or nothing is imported.
    A backup the host flagged unverified is kept as evidence, still unverified; one the host
    calls verified that fails the archive's check (``integrity`` and the manifest's row counts)
    is kept flagged unverified too, and ``disputed`` says so. A copy in the archive found
    corrupt earlier (flagged ``checksum``) is replaced by the host's good bytes.
    """
    db_dir = validate_abs_path(db_dir, "archive folder")
    try:
        filename = vet_host_manifest(manifest)
    except BackupError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(incoming_path)
        raise
    final_path = os.path.join(db_dir, filename)
    try:
        actual = sha256_file(incoming_path)
        if actual != manifest["sha256"]:
            raise BackupError("%s from %s: sha256 %s does not match the host's manifest (%s)"
                              % (filename, source_host, actual[:12], manifest["sha256"][:12]), KIND_CORRUPT)
        problems, counts = archive_check(incoming_path, integrity, manifest)
        record = dict(manifest)
        disputed = bool(problems) and manifest["verified"] is True
        if disputed:
            record.update(verified=False, flagged={"reason": FLAG_CHECK, "at": iso_utc(utcnow()),
                                                   "why": "the archive's %s check: %s" % (integrity,
                                                                                         "; ".join(problems[:5]))})
        os.chmod(incoming_path, 0o600)
        if owner is not None:
            chown_if_needed(incoming_path, owner)
        fsync_path(incoming_path)
        # No leftover cleanup here: the other files fetched in this run wait beside this one.
        # Listing the archive before a pull (archive_listing) and pruning after it clean up.
        with folder_lock(db_dir, timeout=lock_timeout):
            repaired = os.path.lexists(final_path) and replace_corrupt_copy(incoming_path, db_dir, filename, actual)
            if repaired is None:
                return {"changed": False, "file": filename, "path": final_path, "sha256": actual,
                        "verified": True, "msg": "%s is already in the archive" % filename}
            if repaired:
                write_manifest(final_path, record, owner)
                fsync_path(db_dir, directory=True)
            elif not commit_file(incoming_path, db_dir, filename, actual, record, owner):
                raise BackupError("%s is being committed in the archive by another run" % filename, KIND_LOCKED)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(incoming_path)
    verified = record["verified"] is True
    if verified:
        msg = "%s from %s archived and verified (%s check)" % (filename, source_host, integrity)
    elif disputed:
        msg = ("%s from %s is verified on the host but FAILS the archive's %s check (%s): kept flagged unverified"
               % (filename, source_host, integrity, "; ".join(problems[:5])))
    else:
        msg = ("%s from %s was flagged unverified on the host: archived whole as evidence, never used as a "
               "verified backup" % (filename, source_host))
    if repaired:
        msg += "; it replaces the archive's corrupt copy"
    return {"changed": True, "file": filename, "path": final_path, "sha256": actual, "integrity": integrity,
            "tables": counts, "verified": verified, "disputed": disputed, "problems": problems,
            "repaired": bool(repaired), "msg": msg}


def archive_check(path: str, integrity: str, manifest: Mapping[str, Any]) -> tuple[list[str], dict[str, int]]:
    """The archive's SQLite check of a pulled copy: its problems ([] when it passes) and row counts."""
    try:
        conn = open_readonly(path, immutable=True)
        try:
            tune_for_checks(conn, os.path.getsize(path))
            problems = ["%s check: %s" % (integrity, p) for p in run_integrity_check(conn, integrity)]
            counts = table_row_counts(conn) if not problems else {}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return ["cannot be read as a database: %s" % exc], {}
    if not problems:
        problems = ["row counts: %s" % d for d in row_count_differences(manifest["tables"], counts)]
    return problems, counts


def replace_corrupt_copy(incoming_path: str, db_dir: str, filename: str, digest: str) -> bool | None:
    """With the archive's lock held and ``filename`` present: True after replacing a copy flagged
    corrupt whose manifest records ``digest``; None when the archive holds it already; raises else."""
    existing = next((b for b in list_backups(db_dir)["backups"] if b["file"] == filename), None)
    if existing is not None and existing["sha256"] == digest:
        if existing["flagged"] != FLAG_CHECKSUM:
            return None
        os.replace(incoming_path, os.path.join(db_dir, filename))
        fsync_path(db_dir, directory=True)
        return True
    raise BackupError("the archive already holds a different %s: refusing to overwrite it" % filename,
                      KIND_CORRUPT)


def drill_targets(archive_dir: str, hosts: Sequence[str],
                  databases: Mapping[str, Sequence[str]]) -> tuple[list[tuple[str, str | None, str]], list[str]]:
    """The archive layout ``<archive_dir>/<host>/<name>/``: (host, database, folder) to drill, sorted, and
    the folders ignored (names not ours). No ``hosts``: every host folder; a host with no database: None."""
    ignored: list[str] = []
    hosts = list(hosts)
    if not hosts:
        for entry in sorted(os.listdir(archive_dir)):
            path = os.path.join(archive_dir, entry)
            if entry.startswith(".") or os.path.islink(path) or not os.path.isdir(path):
                continue
            if not any(not sub.startswith(".") and os.path.isdir(os.path.join(path, sub))
                       for sub in os.listdir(path)):
                continue  # the run records, the drill reports: files only, not a host
            try:
                hosts.append(validate_name(entry, "host"))
            except BackupError:
                ignored.append(entry)
    targets: list[tuple[str, str | None, str]] = []
    for host in hosts:
        host_dir = os.path.join(archive_dir, host)
        names = set(databases.get(host) or [])
        if os.path.isdir(host_dir) and not os.path.islink(host_dir):
            for entry in os.listdir(host_dir):
                path = os.path.join(host_dir, entry)
                if entry.startswith(".") or os.path.islink(path) or not os.path.isdir(path):
                    continue
                try:
                    names.add(validate_name(entry))
                except BackupError:
                    ignored.append("%s/%s" % (host, entry))
        if not names:
            targets.append((host, None, host_dir))
        for name in sorted(names):
            targets.append((host, name, os.path.join(host_dir, name)))
    return targets, ignored
