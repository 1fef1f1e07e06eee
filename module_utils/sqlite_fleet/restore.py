# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restores (choosing a backup, the target plan, live or replace) and working copies.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import secrets
import shutil
import sqlite3
import stat
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .catalog import list_backups, read_manifest
from .errors import KIND_BAD_INPUT, KIND_CORRUPT, KIND_LOCKED, BackupError
from .files import chown_if_needed, ensure_private_dir, fsync_path, sha256_file
from .inputs import SQLITE_HEADER, check_database_file, validate_abs_path, validate_busy_timeout
from .names import TMP_PREFIX, dated_in_future, parse_backup_filename, utcnow
from .snapshots import snapshot
from .sqlitedb import (
    give_side_files_to_owner,
    open_readonly,
    run_integrity_check,
    side_files_present,
    sqlite_failure,
    table_row_counts,
)
from .verify import row_count_differences, verify_backup

# --------------------------------------------------------------------------- working copies

WORKING_PREV_RE = re.compile(r"^(?P<base>.+)\.prev-(?P<stamp>\d{8}T\d{6}\d{6}Z)(?:_(?P<seq>\d+))?$")


def install_working_copy(src: str, dest: str, *, keep: int = 3, check_mode: bool = False,
                         now: _dt.datetime | None = None) -> dict[str, Any]:
    """Install a verified backup as a working copy at ``dest``, atomically, keeping the old ones.

    The previous copy is renamed ``<dest>.prev-<UTC stamp>`` (with its ``-wal``, which must never
    be replayed into another database) and the ``keep`` newest of those are kept. The new copy
    must have exactly the tables and row counts of the backup's manifest before it replaces ``dest``.
    """
    src = validate_abs_path(src, "source backup")
    dest = validate_abs_path(dest, "working copy path")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise BackupError("keep must be at least 1: the previous working copy is never dropped", KIND_BAD_INPUT)
    manifest = read_manifest(src)
    if os.path.isdir(dest):
        raise BackupError("working copy path %s is a directory" % dest, KIND_BAD_INPUT)
    if os.path.exists(dest) and not os.path.islink(dest) and sha256_file(dest) == manifest["sha256"]:
        return {"changed": False, "dest": dest, "previous": [], "removed": [], "sha256": manifest["sha256"],
                "tables": manifest["tables"], "msg": "%s already holds %s" % (dest, manifest["file"])}
    directory = os.path.dirname(dest)
    stamp = (now or utcnow()).astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    previous = "%s.prev-%s" % (dest, stamp) if os.path.lexists(dest) else None
    if check_mode:
        return {"changed": True, "dest": dest, "previous": [previous] if previous else [], "removed": [],
                "sha256": manifest["sha256"], "tables": manifest["tables"],
                "msg": "would install %s at %s" % (manifest["file"], dest)}
    ensure_private_dir(directory, None)
    tmp = os.path.join(directory, "%s%s.%s" % (TMP_PREFIX, os.path.basename(dest), secrets.token_hex(4)))
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o600)
        fsync_path(tmp)
        if sha256_file(tmp) != manifest["sha256"]:
            raise BackupError("the copy of %s does not have the manifest's sha256" % manifest["file"], KIND_CORRUPT)
        conn = open_readonly(tmp, immutable=True)
        try:
            diffs = row_count_differences(manifest["tables"], table_row_counts(conn))
        finally:
            conn.close()
        if diffs:
            raise BackupError("the working copy differs from the manifest: %s" % "; ".join(diffs[:5]), KIND_CORRUPT)
        if previous:
            os.link(dest, previous) if not os.path.islink(dest) else os.rename(dest, previous)
            for suffix in ("-wal", "-journal"):
                if os.path.lexists(dest + suffix):
                    os.rename(dest + suffix, previous + suffix)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest + "-shm")
        os.rename(tmp, dest)
        fsync_path(directory, directory=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    removed = prune_previous_copies(dest, keep)
    return {"changed": True, "dest": dest, "previous": [previous] if previous else [], "removed": removed,
            "sha256": manifest["sha256"], "tables": manifest["tables"], "backup": manifest["file"],
            "msg": "installed %s at %s" % (manifest["file"], dest)}


def prune_previous_copies(dest: str, keep: int) -> list[str]:
    directory, base = os.path.split(dest)
    olds = sorted((e for e in os.listdir(directory)
                   if (m := WORKING_PREV_RE.match(e)) and m["base"] == base), reverse=True)
    removed = []
    for entry in olds[keep:]:
        for suffix in ("", "-wal", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, entry + suffix))
        removed.append(entry)
    return removed


# --------------------------------------------------------------------------- restore

RESTORE_MODES = ("replace", "live")
STAMP_RE = re.compile(r"^\d{8}_\d{6}$")
ISO_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE)
TIME_SELECTOR_HELP = ("a time, YYYYMMDD_HHMMSS or ISO 8601 like 2026-12-04T21:51:30Z or 2026-12-04T22:51:30+01:00 "
                      "(UTC when no zone is given)")


def parse_restore_time(selector: Any) -> _dt.datetime | None:
    """A restore's time selector as an aware UTC time: ``YYYYMMDD_HHMMSS`` or ISO 8601 (``Z``,
    ``+HH:MM``, or no zone, which means UTC); None when ``selector`` is not shaped like a time.
    Raises for a time-shaped text that is no valid date."""
    text = str(selector).strip()
    if STAMP_RE.match(text):
        try:
            return _dt.datetime.strptime(text, "%Y%m%d_%H%M%S").replace(tzinfo=_dt.timezone.utc)
        except ValueError:
            raise BackupError("%r is not a valid time: %s" % (text, TIME_SELECTOR_HELP), KIND_BAD_INPUT) from None
    if not ISO_TIME_RE.match(text):
        return None
    iso = text[:-1] + "+00:00" if text[-1] in "zZ" else text
    try:
        moment = _dt.datetime.fromisoformat(iso.replace(" ", "T", 1).replace("t", "T", 1))
    except ValueError:
        raise BackupError("%r is not a valid time: %s" % (text, TIME_SELECTOR_HELP), KIND_BAD_INPUT) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc)


# Invariant: "latest" and a time never pick an unverified backup, a pre-restore safety snapshot
# (for "latest"), or a backup dated after now.
def choose_backup(backups: Sequence[Mapping[str, Any]], selector: str = "latest",
                  now: _dt.datetime | None = None) -> Mapping[str, Any]:
    """Pick from ``list_backups`` output: ``latest`` (newest verified, not a pre-restore safety
    snapshot), a time (``YYYYMMDD_HHMMSS`` or ISO 8601, UTC when no zone is given: the newest
    verified backup taken at or before it, see :func:`parse_restore_time`), or an exact file
    name. Backups dated after ``now`` are only ever chosen by name."""
    future = {b["file"] for b in dated_in_future(backups, now)}
    verified = [b for b in backups if b["verified"] and b["file"] not in future]
    if selector in (None, "", "latest"):
        # A pre-restore safety snapshot holds the state a restore replaced: "latest" never
        # means "undo the last restore" (name it by file or time for that).
        candidates = [b for b in verified if b.get("label") != "pre-restore"]
        if not candidates:
            raise BackupError("there is no verified backup to restore%s" % (
                " dated before now" if future else ""), KIND_BAD_INPUT)
        return candidates[0]
    moment = parse_restore_time(selector)
    if moment is not None:
        earlier = [b for b in verified if b["created"].replace(microsecond=0) <= moment]
        if not earlier:
            raise BackupError("no verified backup was taken at or before %s (%s UTC)"
                              % (selector, moment.strftime("%Y-%m-%d %H:%M:%S")), KIND_BAD_INPUT)
        return earlier[0]
    if os.path.basename(selector) != selector or parse_backup_filename(selector) is None:
        raise BackupError("backup %r is neither 'latest', %s, nor a backup file name"
                          % (selector, TIME_SELECTOR_HELP), KIND_BAD_INPUT)
    for b in backups:
        if b["file"] == selector:
            return b
    raise BackupError("there is no backup named %s" % selector, KIND_BAD_INPUT)


def choose_backup_in_folder(backup_dir: str, name: str,
                            select: str = "latest") -> tuple[Mapping[str, Any], dict[str, Any]]:
    """:func:`choose_backup` over a folder: the chosen backup and the folder's listing. A file
    named that is not a finished backup, or a choice that fails, is refused naming the folder
    and the backups it holds."""
    if not os.path.isdir(backup_dir):
        raise BackupError("backup folder %s does not exist" % backup_dir, KIND_BAD_INPUT)
    listing = list_backups(backup_dir, name)
    if select not in (None, "", "latest") and parse_restore_time(select) is None:
        for item in listing["invalid"] + listing["unfinished"]:
            if item["file"] == select:
                raise BackupError("%s in %s is not a finished backup: %s" % (select, backup_dir, item["why"]),
                                  KIND_CORRUPT)
    try:
        chosen = choose_backup(listing["backups"], select)
    except BackupError as exc:
        found = ", ".join("%s%s" % (b["file"], "" if b["verified"] else " (unverified)")
                          for b in listing["backups"][:10]) or "none"
        raise BackupError("%s in %s (backups of %s there, newest first: %s)" % (exc, backup_dir, name, found),
                          exc.kind) from None
    return chosen, listing


def processes_holding(paths: Sequence[str]) -> list[str]:
    """``pid (command)`` of every process with one of ``paths`` open (Linux /proc)."""
    wanted = set()
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            wanted.add((st.st_dev, st.st_ino))
    if not wanted or not os.path.isdir("/proc/self/fd"):
        return []
    holders = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        fd_dir = "/proc/%s/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in wanted:
                try:
                    with open("/proc/%s/comm" % pid) as handle:
                        command = handle.read().strip()
                except OSError:
                    command = "?"
                holders.append("%s (%s)" % (pid, command))
                break
    return holders


def restore_target_plan(target: str, mode: str) -> dict[str, Any]:
    """What a restore onto ``target`` meets: whether it exists, whether it is too broken to
    snapshot (``unreadable``: then replace mode keeps it aside), which side files a replace
    removes, and which processes hold it (a replace is refused while any does)."""
    exists = os.path.lexists(target)
    unreadable = None
    if exists:
        if os.path.islink(target) or not os.path.isfile(target):
            raise BackupError("restore target %s is not a regular file" % target, KIND_BAD_INPUT)
        try:
            check_database_file(target)
        except BackupError as exc:
            # An emptied file or a zeroed header is a database that broke (set it aside and
            # restore); any other content is probably not the app's database: refuse.
            with open(target, "rb") as handle:
                head = handle.read(len(SQLITE_HEADER))
            if mode != "replace" or head.strip(b"\x00"):
                raise
            unreadable = str(exc)
    elif mode == "live":
        raise BackupError("restore target %s does not exist: a live restore needs the database" % target,
                          KIND_BAD_INPUT)
    elif not os.path.isdir(os.path.dirname(target)):
        raise BackupError("the folder of %s does not exist" % target, KIND_BAD_INPUT)
    side_files = [target + suffix for suffix in ("-wal", "-shm", "-journal")]
    return {
        "target_existed": exists,
        "unreadable": unreadable,
        "side_files": side_files,
        "removed": [p for p in side_files if os.path.lexists(p)] if mode == "replace" else [],
        "held_by": processes_holding([target, *side_files]) if mode == "replace" else [],
    }


NEW_DATABASE_MODE = 0o600


def file_identities(paths: Sequence[str]) -> dict[str, tuple[int, int, int] | None]:
    """(inode, size, mtime) of each path, None for one that does not exist."""
    identities: dict[str, tuple[int, int, int] | None] = {}
    for path in paths:
        try:
            st = os.lstat(path)
            identities[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            identities[path] = None
    return identities


def side_files_removed(before: Mapping[str, tuple[int, int, int] | None]) -> list[str]:
    """Of the side files that existed ``before`` a restore, those it removed (gone, or a new
    file under that name): a refused restore removed none."""
    now = file_identities(list(before))
    return [path for path, identity in before.items() if identity is not None and now[path] != identity]


def restore_backup(backup_path: str, target: str, *, mode: str = "replace", safety_dir: str | None = None,
                   safety_name: str | None = None, busy_timeout_ms: int = 5000, integrity: str = "full",
                   check_mode: bool = False, source_host: str | None = None,
                   new_owner: tuple[int, int] | None = None, expected_sha256: str | None = None) -> dict[str, Any]:
    """Restore a verified backup onto ``target``; the original stays in place on any failure.

    ``replace`` (the app is stopped): refuse while any process holds the database or its
    ``-wal``/``-shm``; copy to a temporary name beside it, fsync, take the original's owner and
    mode and the journal mode the manifest recorded, drop the old ``-wal``/``-shm``/``-journal``
    (they belong to the old file and must never be replayed into the new one), rename over it.
    ``live``: write the backup into the database through SQLite's backup API, which is safe
    while the app keeps its connections open. Either way a safety snapshot of the current
    database is taken first (label ``pre-restore``, its manifest naming ``source_host``, the
    inventory name, when given) and the result is checked afterwards. A database the restore
    creates is mode 0600 and owned by ``new_owner`` (uid, gid) from its first byte.
    ``expected_sha256``: the checksum verified at the previous hop (e.g. on the controller before
    the copy here), compared in the same single read that verifies the backup.
    """
    backup_path = validate_abs_path(backup_path, "backup")
    target = validate_abs_path(target, "restore target")
    validate_busy_timeout(busy_timeout_ms)
    if mode not in RESTORE_MODES:
        raise BackupError("mode must be one of %s" % ", ".join(RESTORE_MODES), KIND_BAD_INPUT)
    checked = verify_backup(backup_path, integrity=integrity, expected_sha256=expected_sha256)
    if not checked["ok"]:
        raise BackupError("refusing to restore %s: it failed verification: %s"
                          % (checked["file"], "; ".join(checked["problems"])), KIND_CORRUPT)
    manifest = checked["manifest"]
    target_plan = restore_target_plan(target, mode)
    exists, unreadable, side_files = (target_plan["target_existed"], target_plan["unreadable"],
                                      target_plan["side_files"])
    if target_plan["held_by"]:
        raise BackupError("refusing to replace %s: it is open in %s; stop the app first or restore live"
                          % (target, ", ".join(target_plan["held_by"])), KIND_LOCKED)
    plan = {"backup": checked["file"], "target": target, "mode": mode, "safety_backup": None,
            "journal_mode": (manifest.get("source") or {}).get("journal_mode") or "delete",
            "removed": target_plan["removed"]}
    aside = "%s.unreadable-%s" % (target, utcnow().strftime("%Y%m%dT%H%M%S%fZ"))
    if check_mode:
        if unreadable:
            plan["set_aside"] = aside
        plan.update(changed=True, msg="would restore %s onto %s (%s)" % (checked["file"], target, mode))
        return plan
    if exists and safety_dir and unreadable is None:
        try:
            safety = snapshot(target, safety_dir, safety_name or manifest["name"], label="pre-restore",
                              integrity="quick", busy_timeout_ms=busy_timeout_ms, source_host=source_host)
            plan["safety_backup"] = safety["backup"]
        except BackupError as exc:
            if exc.kind != KIND_CORRUPT or mode != "replace":
                raise
            unreadable = str(exc)
    if unreadable is not None:
        # Too broken to snapshot: keep the file itself (a hard link) beside the database.
        os.link(target, aside)
        plan.update(set_aside=aside, unreadable=unreadable)
    started = time.monotonic()
    if mode == "live":
        restore_live(backup_path, target, busy_timeout_ms)
    else:
        restore_replace(backup_path, target, plan["journal_mode"], side_files, new_owner)
    existed = side_files_present(target)
    conn = open_readonly(target, busy_timeout_ms=busy_timeout_ms)
    try:
        problems = run_integrity_check(conn, integrity)
        counts = {} if problems else table_row_counts(conn)
        # live: the app writes on at once, so only a replace can be held to the manifest's row
        # counts; a live restore must still bring back every table of the manifest.
        diffs = [] if problems else row_count_differences(manifest["tables"], counts) if mode == "replace" else \
            ["table %s is missing" % t for t in sorted(set(manifest["tables"]) - set(counts))]
    finally:
        conn.close()
        give_side_files_to_owner(target, existed, os.stat(target))
    if problems or diffs:
        raise BackupError("the restored database %s does not check out: %s (the safety backup is %s)"
                          % (target, "; ".join((problems or diffs)[:5]), plan["safety_backup"]), KIND_CORRUPT)
    plan.update(changed=True, seconds=round(time.monotonic() - started, 3), tables=manifest["tables"],
                msg="restored %s onto %s (%s), verified" % (checked["file"], target, mode))
    return plan


def restore_live(backup_path: str, target: str, busy_timeout_ms: int) -> None:
    source = open_readonly(backup_path, immutable=True)
    dest = sqlite3.connect(target, isolation_level=None, timeout=busy_timeout_ms / 1000.0)
    try:
        dest.execute("PRAGMA busy_timeout=%d" % int(busy_timeout_ms))
        source.backup(dest, pages=-1)
    except sqlite3.Error as exc:
        raise sqlite_failure(exc, "restoring into %s" % target) from None
    finally:
        dest.close()
        source.close()


def restore_replace(backup_path: str, target: str, journal_mode: str, side_files: Sequence[str],
                    new_owner: tuple[int, int] | None = None) -> None:
    """Copy beside, fsync, take the old file's owner and mode (a new database: 0600 and
    ``new_owner``), drop the old side files, rename over."""
    directory = os.path.dirname(target)
    reference = os.stat(target) if os.path.exists(target) else None
    tmp = os.path.join(directory, "%s%s.%s" % (TMP_PREFIX, os.path.basename(target), secrets.token_hex(4)))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private until it takes a mode
        with os.fdopen(fd, "wb") as out, open(backup_path, "rb") as source:
            shutil.copyfileobj(source, out, 1 << 20)
        if journal_mode == "wal":
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()
        if reference is not None:
            os.chmod(tmp, stat.S_IMODE(reference.st_mode))
            if os.geteuid() == 0:
                os.chown(tmp, reference.st_uid, reference.st_gid)
        else:
            os.chmod(tmp, NEW_DATABASE_MODE)
            if new_owner is not None:
                chown_if_needed(tmp, new_owner)
        fsync_path(tmp)
        for side in side_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(side)
        os.rename(tmp, target)
        fsync_path(directory, directory=True)
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
