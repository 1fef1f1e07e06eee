# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host side of a pull: the plan, the staging folders and what the fetch user may read.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .catalog import list_backups
from .delta import make_delta
from .errors import KIND_BAD_INPUT, KIND_IO, KIND_NO_SPACE, BackupError
from .files import check_free_space, chown_if_needed, copy_file_bytes, required_space
from .inputs import validate_abs_path, validate_name
from .names import dated_in_future

EXPORT_PREFIX = ".sqlite-export."
STAGING_HOME_PREFIX = ".sqlite-fleet-staging-"  # + the backup folder's name, beside it
STAGING_HOME_MODE = 0o711


def export_options() -> dict[str, dict[str, Any]]:
    """The export's options as the modules take them (an Ansible argument spec): sqlite_export's
    top-level options, and the suboptions of sqlite_backup's ``export``."""
    return {"have": {"type": "list", "elements": "dict", "default": []},
            "delta": {"type": "bool", "default": True},
            "max_backups": {"type": "int", "default": 0},
            "fetch_user": {"type": "str"}}


def check_export_options(export: Mapping[str, Any], where: str = "") -> None:
    """Refuse a bad export option before anything is done (``where``: ``export.`` for sqlite_backup's)."""
    if export["max_backups"] < 0:
        raise BackupError("%smax_backups must be 0 or more, got %d" % (where, export["max_backups"]), KIND_BAD_INPUT)
    if any(not isinstance(item.get("file"), str) for item in export["have"]):
        raise BackupError("%shave must be a list of {file, sha256}" % where, KIND_BAD_INPUT)
    try:
        fetch_user_entry(export["fetch_user"])
    except BackupError as exc:
        raise BackupError(where + str(exc), KIND_BAD_INPUT) from None


def export_summary(name: str, transfers: Sequence[Mapping[str, Any]]) -> str:
    """One line: how many backups of ``name`` are staged to send, and their bytes."""
    return "%d backup(s) of %s to send (%d bytes)" % (len(transfers), name, sum(t["bytes"] for t in transfers))


# Invariant: a delta is based only on a backup verified on the host that the archive holds verified
# and intact (or sends verified in this same plan); an unverified backup is always sent whole.
def plan_export(backup_dir: str, name: str, have: Sequence[Mapping[str, Any]], *, delta: bool = True,
                staging_dir: str | None = None, max_backups: int = 0,
                min_delta_saving: float = 0.1) -> dict[str, Any]:
    """Work out, and with ``staging_dir`` prepare, what the controller lacks of ``name``.

    ``have``: the archive's ``{file, sha256, verified, intact}`` for this database
    (:func:`archived_backups`). Every finished backup the archive lacks is sent, oldest first, as a
    delta against the newest older base (see the invariant above), else whole; so is one whose
    archive copy was found corrupt (``intact`` false) while the host's copy is verified. With a
    staging folder, full copies are hard-linked there (a prune cannot pull them away
    mid-transfer) and deltas written there, beside a hard link of the whole file when that is
    free (``full_fetch_path``: the controller falls back to it when a base fails its checksum).
    Without one (check mode) nothing is written.

    What is written there belongs to the staging folder's owner (the fetch_user of
    :func:`new_staging_dir`), mode 0600; a backup that owner could not read is copied there
    rather than hard-linked (as is one on another filesystem than a staging folder made
    beside the backup folder), after a check for free space; the backup keeps its owner.
    """
    backup_dir = validate_abs_path(backup_dir, "backup folder")
    name = validate_name(name)
    held: dict[str, Mapping[str, Any]] = {}
    for item in have:
        if not isinstance(item, Mapping) or not isinstance(item.get("file"), str):
            raise BackupError("have must be a list of {file, sha256}", KIND_BAD_INPUT)
        held[item["file"]] = item
    listing = list_backups(backup_dir, name)
    future = {b["file"] for b in dated_in_future(listing["backups"])}
    # Oldest first; backups dated after now come first of all: their date says nothing of when they were taken.
    finished = sorted(listing["backups"], key=lambda b: (b["file"] not in future, b["created"], b["file"]))

    def order(backup: Mapping[str, Any]) -> tuple[bool, _dt.datetime, str]:
        return (backup["file"] not in future, backup["created"], backup["file"])

    def archived(backup: Mapping[str, Any]) -> Mapping[str, Any] | None:
        item = held.get(backup["file"])
        return item if item is not None and item.get("sha256") == backup["sha256"] else None

    def good_base(backup: Mapping[str, Any]) -> bool:
        item = archived(backup)
        return bool(backup["verified"] and item and item.get("verified", True) is not False
                    and item.get("intact", True) is not False)

    def to_send(backup: Mapping[str, Any]) -> bool:
        item = archived(backup)
        if backup["file"] not in held:
            return True
        return bool(item and item.get("intact", True) is False and backup["verified"])

    conflicts = [b["file"] for b in finished if b["file"] in held and archived(b) is None]
    missing = [b for b in finished if to_send(b)]
    if max_backups:
        missing = missing[-max_backups:]
    bases = [b for b in finished if good_base(b)]
    staging_owner = None
    if staging_dir is not None:
        staging_stat = os.stat(staging_dir)
        staging_owner = (staging_stat.st_uid, staging_stat.st_gid)
    transfers = []
    for backup in missing:
        older = [b for b in bases if order(b) < order(backup)]
        base = max(older, key=order) if delta and older and backup["verified"] else None
        transfer: dict[str, Any] = {"file": backup["file"], "name": name, "manifest": backup["manifest"],
                                    "size_bytes": backup["size_bytes"], "base": base["file"] if base else None,
                                    "mode": "delta" if base else "full", "fetch_path": None,
                                    "bytes": backup["size_bytes"]}
        if staging_dir is not None:
            stage_transfer(transfer, backup, base, staging_dir, staging_owner, min_delta_saving)
        transfers.append(transfer)
        if backup["verified"]:
            bases.append(backup)
    return {"transfers": transfers, "conflicts": conflicts, "staging_dir": staging_dir,
            "invalid": [i["file"] for i in listing["invalid"]], "host_backups": len(finished),
            "dated_in_future": sorted(future)}


def stage_transfer(transfer: dict[str, Any], backup: Mapping[str, Any], base: Mapping[str, Any] | None,
                   staging_dir: str, staging_owner: tuple[int, int], min_delta_saving: float) -> None:
    """Write one planned transfer into the staging folder and set its fetch paths and size."""
    if base is not None:
        delta_path = os.path.join(staging_dir, backup["file"] + ".delta")
        try:
            stats = make_delta(base["path"], backup["path"], delta_path,
                               base_sha256=base["sha256"], target_sha256=backup["sha256"])
        except BackupError:
            stats = None  # page size changed (VACUUM): send it whole
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise BackupError("no space left in %s for the delta of %s to send"
                              % (staging_dir, backup["file"]), KIND_NO_SPACE) from None
        if stats and stats["delta_bytes"] <= backup["size_bytes"] * (1 - min_delta_saving):
            os.chmod(delta_path, 0o600)
            chown_if_needed(delta_path, staging_owner)
            transfer.update(fetch_path=delta_path, bytes=stats["delta_bytes"],
                            pages_changed=stats["pages_changed"], pages_total=stats["pages_total"])
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(delta_path)
            transfer.update(mode="full", base=None)
    staged = os.path.join(staging_dir, backup["file"])
    readable = staging_owner[0] in (0, os.stat(backup["path"]).st_uid)
    linked = readable and link_if_same_filesystem(backup["path"], staged)
    if transfer["mode"] == "full":
        if not linked:
            copy_for_fetch_user(backup["path"], staged, backup["size_bytes"], staging_owner)
        transfer["fetch_path"] = staged
    elif linked:
        transfer["full_fetch_path"] = staged


def stage_export(backup_dir: str, name: str, have: Sequence[Mapping[str, Any]], *, delta: bool = True,
                 max_backups: int = 0, fetch_user: Any = None, check_mode: bool = False) -> dict[str, Any]:
    """:func:`plan_export` into a staging folder made only when there is something to send.

    In check mode only the plan, but refused where the real run would be (a fetch_user that can
    reach no staging folder). When staging fails, nothing of what it staged is left.
    """
    plan = plan_export(backup_dir, name, have, delta=delta, max_backups=max_backups)
    if not plan["transfers"]:
        return plan
    if check_mode:
        staging_parent(backup_dir, fetch_user)
        return plan
    staging = new_staging_dir(backup_dir, fetch_user)
    try:
        return plan_export(backup_dir, name, have, delta=delta, staging_dir=staging, max_backups=max_backups)
    except BaseException:
        discard_staging_dir(backup_dir, staging)
        raise


def link_if_same_filesystem(source: str, staged: str) -> bool:
    """Hard-link ``staged`` to ``source``; False when they are on different filesystems."""
    try:
        os.link(source, staged)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return False
    return True


def copy_for_fetch_user(source: str, staged: str, size_bytes: int, owner: tuple[int, int]) -> None:
    """A 0600 copy of ``source`` at ``staged`` for ``owner``, refused up front when there is no room."""
    check_free_space(os.path.dirname(staged), required_space(size_bytes),
                     "a copy of %s for uid %d to fetch" % (os.path.basename(source), owner[0]))
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(source, "rb") as original:
            copy_file_bytes(original.fileno(), fd, os.fstat(original.fileno()).st_size)
    finally:
        os.close(fd)
    chown_if_needed(staged, owner)


def fetch_user_entry(fetch_user: Any) -> Any:
    """The passwd entry of ``fetch_user`` (name or uid); None when it is unset or empty."""
    if fetch_user in (None, ""):
        return None
    import pwd

    try:
        return pwd.getpwuid(int(fetch_user)) if str(fetch_user).isdigit() else pwd.getpwnam(fetch_user)
    except KeyError:
        raise BackupError("fetch_user %r does not exist on this host" % (fetch_user,), KIND_BAD_INPUT) from None


def folder_closed_to(path: str, user: Any) -> tuple[str, os.stat_result] | None:
    """The first folder from ``path`` up to ``/`` that ``user`` (a passwd entry) may not enter, else None.

    By the search bits that apply to it (owner, group - supplementary ones too - or other); root enters all.
    """
    if user.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    folder = os.path.normpath(path)
    while True:
        st = os.stat(folder)
        search = stat.S_IXUSR if st.st_uid == user.pw_uid else stat.S_IXGRP if st.st_gid in groups else stat.S_IXOTH
        if not st.st_mode & search:
            return folder, st
        if folder == os.path.dirname(folder):
            return None
        folder = os.path.dirname(folder)


def staging_home(backup_dir: str) -> str:
    """The folder beside ``backup_dir`` that holds the staging folders of a fetch_user who cannot enter it."""
    parent, base = os.path.split(os.path.normpath(backup_dir))
    if not base:
        raise BackupError("the backup folder %s has no parent folder to stage beside" % backup_dir, KIND_BAD_INPUT)
    return os.path.join(parent, STAGING_HOME_PREFIX + base)


def staging_parent(backup_dir: str, fetch_user: Any = None) -> str:
    """Where :func:`new_staging_dir` puts the staging folder for ``fetch_user`` (only reads, writes nothing).

    ``backup_dir`` itself when the fetch_user (if any) can enter it; else :func:`staging_home` beside it,
    when it can reach the parent folder; else BackupError(KIND_BAD_INPUT).
    """
    backup_dir = os.path.normpath(backup_dir)
    user = fetch_user_entry(fetch_user)
    if user is None or folder_closed_to(backup_dir, user) is None:
        return backup_dir
    home = staging_home(backup_dir)
    closed = folder_closed_to(os.path.dirname(home), user)
    if closed is not None:
        folder, st = closed
        raise BackupError(
            "fetch_user %s cannot enter %s (mode %04o, owner uid %d), so it could fetch nothing staged in the "
            "backup folder %s or beside it: let it own the backups (owner; sqlite_backup_owner in the roles) or "
            "keep them where it can reach, or fetch as root or as their owner (fetch_user; sqlite_archive_fetch_user "
            "in the roles)" % (user.pw_name, folder, stat.S_IMODE(st.st_mode), st.st_uid, backup_dir),
            KIND_BAD_INPUT)
    return home


def ensure_staging_home(home: str) -> None:
    """Make :func:`staging_home` (or take the one an earlier run made): a folder of this user, mode 0711.

    Others may pass through it to a staging folder of their own (0700), not list or change it. Anything
    else under that name (a symbolic link, another owner's folder) is refused.
    """
    try:
        os.mkdir(home, STAGING_HOME_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise BackupError("cannot make the staging folder %s beside the backup folder: %s" % (home, exc.strerror),
                          KIND_IO) from None
    try:
        fd = os.open(home, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW)
    except OSError:
        fd = None
    try:
        st = os.fstat(fd) if fd is not None else None
        if st is None or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise BackupError("%s exists but is not a folder of uid %d, as this tool makes it: refusing to stage "
                              "there" % (home, os.geteuid()), KIND_BAD_INPUT)
        if stat.S_IMODE(st.st_mode) != STAGING_HOME_MODE:
            os.fchmod(fd, STAGING_HOME_MODE)
    finally:
        if fd is not None:
            os.close(fd)


def discard_staging_home(home: str) -> None:
    """Remove :func:`staging_home` once empty (another run may still stage there: then it stays)."""
    with contextlib.suppress(OSError):
        os.rmdir(home)


def new_staging_dir(backup_dir: str, fetch_user: Any = None) -> str:
    """A private folder (0700) for the files of one pull, where :func:`staging_parent` says.

    Inside ``backup_dir`` (same filesystem, so full copies are hard links) unless ``fetch_user`` (name
    or uid: the login user that fetches the staged files without privileges, Ansible with become)
    cannot enter it, as when the app and its backups belong to root or www-data: then in
    :func:`staging_home`, a folder of this user (0711) beside it, the backup folder untouched. The
    staging folder belongs to the fetch_user. BackupError(KIND_BAD_INPUT) before anything is made when
    the fetch_user can reach neither. Staging folders over a day old are removed from both places.
    """
    backup_dir = os.path.normpath(backup_dir)
    user = fetch_user_entry(fetch_user)
    parent = staging_parent(backup_dir, fetch_user)
    remove_stale_staging(backup_dir)
    for attempt in range(3):
        if parent != backup_dir:
            ensure_staging_home(parent)
        try:
            staging = tempfile.mkdtemp(prefix=EXPORT_PREFIX, dir=parent)
            break
        except FileNotFoundError:  # another run removed the staging home, empty, in between
            if parent == backup_dir or attempt == 2:
                raise
    if user is not None:
        try:
            chown_if_needed(staging, (user.pw_uid, user.pw_gid))
        except BaseException:
            discard_staging_dir(backup_dir, staging)
            raise
    return staging


def staging_folder_of(backup_dir: str, staging_dir: Any) -> str:
    """``staging_dir``, normalised, when it is named like a folder of :func:`new_staging_dir` for
    ``backup_dir`` (directly in it or in its staging home), else BackupError(KIND_BAD_INPUT)."""
    staging_dir = validate_abs_path(staging_dir, "staging folder")
    backup_dir = os.path.normpath(backup_dir)
    name = os.path.basename(staging_dir)
    if os.path.dirname(staging_dir) not in (backup_dir, staging_home(backup_dir)) or \
            not name.startswith(EXPORT_PREFIX) or name == EXPORT_PREFIX or os.path.islink(staging_dir):
        raise BackupError("%s is not a staging folder of %s" % (staging_dir, backup_dir), KIND_BAD_INPUT)
    return staging_dir


def remove_staging_dir(backup_dir: str, staging_dir: str) -> bool:
    """Remove a staging folder made by :func:`new_staging_dir` (and its staging home once empty), nothing else."""
    staging_dir = staging_folder_of(backup_dir, staging_dir)
    removed = os.path.isdir(staging_dir)
    if removed:
        shutil.rmtree(staging_dir)
    if os.path.dirname(staging_dir) != os.path.normpath(backup_dir):
        discard_staging_home(os.path.dirname(staging_dir))
    return removed


def discard_staging_dir(backup_dir: str, staging_dir: str) -> None:
    """Best effort, when a run fails after :func:`new_staging_dir`: leave nothing of what it staged."""
    with contextlib.suppress(BackupError, OSError):
        remove_staging_dir(backup_dir, staging_dir)


def remove_stale_staging(backup_dir: str, max_age_seconds: float = 86400.0) -> list[str]:
    """Remove staging folders over ``max_age_seconds`` old (left by a run that lost its host), in
    ``backup_dir`` and in its staging home (only when that is this user's folder). Their paths."""
    removed = []
    backup_dir = os.path.normpath(backup_dir)
    home = staging_home(backup_dir)
    for parent in (backup_dir, home):
        try:
            if parent == home:
                st = os.lstat(home)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                    continue
            entries = os.listdir(parent)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            path = os.path.join(parent, entry)
            with contextlib.suppress(FileNotFoundError):  # another run's, removed meanwhile
                st = os.lstat(path)
                if entry.startswith(EXPORT_PREFIX) and stat.S_ISDIR(st.st_mode) \
                        and time.time() - st.st_mtime > max_age_seconds:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        if parent == home:
            discard_staging_home(home)
    return removed
