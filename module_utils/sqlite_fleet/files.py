# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files and folders: fsync, hashing, atomic writes, owners, private folders, free space, the folder
lock, the kernel copy, work in the background.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .errors import KIND_BAD_INPUT, KIND_IO, KIND_LOCKED, KIND_NO_SPACE, BackupError
from .inputs import ID_MAX, validate_lock_timeout
from .names import LOCK_FILE, TMP_PREFIX, named_by_us

# --------------------------------------------------------------------------- files

def fsync_path(path: str, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(chunk_size)
        view = memoryview(buffer)
        while True:
            read = handle.readinto(buffer)
            if not read:
                break
            digest.update(view[:read])
    return digest.hexdigest()


def write_file_atomic(path: str, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to a temporary name beside ``path``, fsync, rename over ``path``."""
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, "%s%s.%s" % (TMP_PREFIX, base, secrets.token_hex(4)))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            chown_if_needed(tmp, owner)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def resolve_owner(owner: Any, group: Any, reference: os.stat_result) -> tuple[int, int]:
    """Owner and group as ids: given names or ids, else those of the reference file."""
    import grp
    import pwd

    def lookup(value: Any, table: Any, what: str, default: int) -> int:
        if value is None or value == "":
            return default
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            if not 0 <= int(value) <= ID_MAX:
                raise BackupError("%s %r is not a valid id (0 to %d)" % (what, value, ID_MAX), KIND_BAD_INPUT)
            return int(value)
        try:
            entry = table(value)
        except KeyError:
            raise BackupError("%s %r does not exist on this host" % (what, value), KIND_BAD_INPUT) from None
        return entry[2]

    return (
        lookup(owner, pwd.getpwnam, "owner", reference.st_uid),
        lookup(group, grp.getgrnam, "group", reference.st_gid),
    )


def chown_if_needed(path: str, owner: tuple[int, int]) -> bool:
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) == owner:
        return False
    if os.geteuid() != 0 and owner[0] != os.geteuid():
        raise BackupError(
            "cannot give %s to uid %d: run as root or as the database's owner" % (path, owner[0]), KIND_IO
        )
    os.chown(path, owner[0], owner[1], follow_symlinks=False)
    return True


def ensure_private_dir(path: str, owner: tuple[int, int] | None, mode: int = 0o700,
                       check_mode: bool = False) -> bool:
    """Create the backup folder (and missing parents) 0700; fix mode/owner. Returns changed."""
    if os.path.islink(path):
        raise BackupError("backup folder %s is a symbolic link: refusing to follow it" % path, KIND_BAD_INPUT)
    if os.path.exists(path) and not os.path.isdir(path):
        raise BackupError("backup folder %s exists and is not a directory" % path, KIND_BAD_INPUT)
    changed = False
    if os.path.isdir(path):
        refuse_foreign_shared_dir(path, mode)
    else:
        changed = True
        if check_mode:
            return True
        try:
            os.makedirs(path, mode, exist_ok=True)  # another run may create it at the same moment
        except OSError as exc:
            raise BackupError("cannot create backup folder %s: %s" % (path, exc.strerror), KIND_IO) from None
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) != mode:
        changed = True
        if not check_mode:
            os.chmod(path, mode)
    if owner is not None and (st.st_uid, st.st_gid) != owner:
        changed = True
        if not check_mode:
            chown_if_needed(path, owner)
    return changed


# Invariant: we never change the mode of a folder we did not make that holds others' files: a
# shared folder (/tmp, 1777) made private would lock its other users out.
def refuse_foreign_shared_dir(path: str, mode: int) -> None:
    """Refuse an existing folder that is not ``mode`` already and holds anything this tool does not name."""
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) == mode:
        return
    try:
        foreign = [entry for entry in os.listdir(path) if not named_by_us(entry)]
    except OSError:
        foreign = ["?"]
    if foreign:
        raise BackupError("folder %s exists with mode %04o and holds files that are not ours: refusing to make it "
                          "private (%04o); give the backups a folder of their own"
                          % (path, stat.S_IMODE(st.st_mode), mode), KIND_BAD_INPUT)


def check_writable_dir(path: str) -> None:
    if not os.access(path, os.W_OK | os.X_OK):
        raise BackupError("backup folder %s is not writable by this user" % path, KIND_BAD_INPUT)


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def required_space(database_bytes: int, margin_fraction: float = 0.10, margin_min: int = 16 << 20) -> int:
    return database_bytes + max(int(database_bytes * margin_fraction), margin_min)


def check_free_space(directory: str, needed: int, what: str) -> None:
    available = free_bytes(directory)
    if available < needed:
        raise BackupError(
            "not enough free space in %s for %s: need %d bytes (size plus margin), %d available"
            % (directory, what, needed, available),
            KIND_NO_SPACE,
        )


def make_dir_private_if_missing(path: str) -> None:
    """Create a missing folder 0700; leave an existing one as it is (it may be shared, e.g. /var/log)."""
    if not os.path.isdir(path):
        os.makedirs(path, 0o700, exist_ok=True)


def append_json_lines(path: str, lines: Sequence[Mapping[str, Any]]) -> None:
    """Append one JSON line per item to ``path`` (created 0600, its folder 0700 when missing), fsynced."""
    make_dir_private_if_missing(os.path.dirname(path))
    data = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate_log(path: str, max_bytes: int, keep: int = 3) -> None:
    """Cap a log's size: once it reaches ``max_bytes``, log -> log.1 -> ... -> log.<keep>."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.getsize(path) < max_bytes:
            return
        for index in range(keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace("%s.%d" % (path, index), "%s.%d" % (path, index + 1))
        os.replace(path, path + ".1")


# --------------------------------------------------------------------------- lock

@contextlib.contextmanager
def folder_lock(directory: str, timeout: float = 600.0, poll: float = 0.1) -> Iterator[str]:
    """Hold the folder's flock: one writer at a time (cron runner, Ansible, prune)."""
    timeout = validate_lock_timeout(timeout)
    lock_path = os.path.join(directory, LOCK_FILE)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise BackupError("cannot open lock file %s: %s" % (lock_path, exc.strerror), KIND_IO) from None
    if os.geteuid() == 0:
        # Root (Ansible) and the folder's owner (the host's cron runner) share this lock: a
        # root-owned 0600 lock file would shut the owner out of its own folder for good.
        with contextlib.suppress(OSError):
            folder_st, lock_st = os.stat(directory), os.fstat(fd)
            if (lock_st.st_uid, lock_st.st_gid) != (folder_st.st_uid, folder_st.st_gid):
                os.fchown(fd, folder_st.st_uid, folder_st.st_gid)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise BackupError(
                        "backup folder %s is locked by another run for more than %.0f s" % (directory, timeout),
                        KIND_LOCKED,
                    ) from None
                time.sleep(poll)
        yield lock_path
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- background work, flushing and hashing

# How much nicer than its caller a snapshot of a WAL database runs (Linux, per thread).
BACKUP_NICE = 10


def run_at_priority(nice: int, function: Any, *args: Any) -> Any:
    """``function(*args)``, ``nice`` steps nicer than the caller when ``nice`` > 0.

    On Linux the nice value belongs to a thread: the work runs in a thread of its own that
    lowers its own priority (and passes it on to the threads it starts), so the caller keeps
    its priority. Elsewhere, or with ``nice`` 0, it runs as it is.
    """
    if nice <= 0 or not sys.platform.startswith("linux") or not hasattr(threading, "get_native_id"):
        return function(*args)

    def lowered() -> Any:
        with contextlib.suppress(OSError):
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + nice))
        return function(*args)

    return Background(lowered).result()


# The backup API copies COPY_STEP_BYTES of pages per step. In WAL mode what the steps wrote
# is flushed to disk whenever it reaches a budget sized so that one flush takes about
# FLUSH_TARGET_SECONDS on this disk (measured as the copy goes, within the bounds below).
COPY_STEP_BYTES = 1 << 20


class Background:
    """Run ``function(*args)`` in a thread; :meth:`result` waits and returns or re-raises.

    For work that releases the GIL (hashing, fsync, SQLite) beside other such work.
    """

    def __init__(self, function: Any, *args: Any) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(function, args), daemon=True)
        self._thread.start()

    def _run(self, function: Any, args: tuple[Any, ...]) -> None:
        try:
            self._result = function(*args)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def fsync_and_hash(path: str) -> str:
    """fsync ``path``, then its sha256 (the bytes are final: nothing writes them any more)."""
    fsync_path(path)
    return sha256_file(path)


# --------------------------------------------------------------------------- the kernel copy

def open_held(path: str, held_fds: list[int]) -> int | None:
    """A read-only descriptor of ``path`` added to ``held_fds`` (None when it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    held_fds.append(fd)
    return fd


def copy_file_bytes(src_fd: int, dst_fd: int, length: int, progress: Any = None,
                    step_bytes: int = COPY_STEP_BYTES) -> int:
    """Copy up to ``length`` bytes from the start of ``src_fd``: inside the kernel where it can.

    Returns the bytes copied (fewer when the source is shorter). ``progress`` is called
    after each step of ``step_bytes`` as a backup progress callback would be:
    (status, remaining, total).
    """
    use_kernel = hasattr(os, "copy_file_range")
    offset = 0
    while offset < length:
        want = min(step_bytes, length - offset)
        done = 0
        if use_kernel:
            try:
                done = os.copy_file_range(src_fd, dst_fd, want, offset, offset)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                use_kernel = False
        if not use_kernel:
            data = os.pread(src_fd, want, offset)
            done = os.pwrite(dst_fd, data, offset) if data else 0
        if done <= 0:
            break
        offset += done
        if progress is not None:
            progress(0, length - offset, length)
    return offset
