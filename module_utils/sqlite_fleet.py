# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Core of sqlite-fleet-backup: consistent online snapshots of live SQLite databases.

Standard library only, Python 3.9+, no Ansible import: the Ansible modules in
``library/`` wrap it, and the on-host runner ships this very file.

The pieces, from the bottom up:

* names: ``<name>_backup_<YYYYMMDD>_<HHMMSS>[_<n>].db`` (UTC) and their parsing;
* a per-folder ``flock`` that serialises every writer of a backup folder;
* :func:`snapshot` -- the commit protocol of DESIGN.md: copy under a temporary name
  inside one read transaction (a pinned copy: the file's bytes plus that snapshot's WAL
  pages; or the online backup API), make the copy ``journal_mode=DELETE``,
  check it, fsync, link to the final name (never overwriting), write the ``.sha256``,
  then rename the manifest into place: that rename is the commit;
* :func:`verify_backup` -- checksum, ``quick_check``/``integrity_check``,
  ``foreign_key_check`` and row counts against the manifest, opened read-only and
  immutable so that no ``-wal``/``-shm`` appears beside a finished backup;
* :func:`select_retention` -- a pure function of the backups' metadata, a policy and
  "now"; :func:`apply_retention` does the deleting, under the lock;
* :func:`database_facts` and :func:`folder_stats` for reports.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import functools
import hashlib
import json
import os
import pathlib
import re
import secrets
import shutil
import socket
import sqlite3
import stat
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

TOOL_NAME = "sqlite-fleet-backup"
CORE_VERSION = "0.1.0"
FORMAT_VERSION = 1

LOCK_FILE = ".sqlite-backup.lock"
TMP_PREFIX = ".sqlite-backup-tmp."
PENDING_SUFFIX = ".pending"
INCOMING_PREFIX = TMP_PREFIX + "incoming."  # a pulled file before its import: <archive>/<host>/<name>/<this><file>
MANIFEST_MAX_BYTES = 1 << 20  # a manifest is a few KiB; anything huge is hostile or broken
SQLITE_HEADER = b"SQLite format 3\x00"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BACKUP_FILE_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)_backup_(?P<date>\d{8})_(?P<time>\d{6})(?:_(?P<seq>[1-9]\d{0,5}))?\.db$"
)
INTEGRITY_LEVELS = ("quick", "full")
METHODS = ("pinned_copy", "backup_api", "vacuum_into")
CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")
RETENTION_RULES = ("keep_last", "keep_days", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def retention_options() -> dict[str, dict[str, Any]]:
    """The retention policy's options as the modules take them (an Ansible argument spec)."""
    options: dict[str, dict[str, Any]] = {rule: {"type": "int", "default": 0} for rule in RETENTION_RULES}
    options["keep_label_days"] = {"type": "dict", "default": {"pre-upgrade": 30}}
    options["timezone"] = {"type": "str", "default": "local"}
    return options

# Exit-code-like kinds of failure, shared by the modules and the runner.
KIND_BAD_INPUT = "bad_input"
KIND_LOCKED = "locked"
KIND_NO_SPACE = "no_space"
KIND_CORRUPT = "corrupt"
KIND_IO = "io"


class BackupError(Exception):
    """A failure with a message meant for an operator; ``kind`` says which sort."""

    def __init__(self, message: str, kind: str = KIND_IO) -> None:
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- inputs


def validate_name(name: Any, what: str = "name") -> str:
    """A database name becomes part of file names: letters, digits, ``._-`` only."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise BackupError(
            "%s %r is not allowed: use letters, digits, '.', '_' and '-' (no '/', no '..', "
            "at most 100 characters, starting with a letter or digit)" % (what, name),
            KIND_BAD_INPUT,
        )
    return name


def validate_label(label: Any) -> str | None:
    if label is None or label == "":
        return None
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise BackupError(
            "label %r is not allowed: letters, digits, '.', '_' and '-', at most 64 characters" % (label,),
            KIND_BAD_INPUT,
        )
    return label


def validate_abs_path(path: Any, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise BackupError("%s must be a non-empty path" % what, KIND_BAD_INPUT)
    if not os.path.isabs(path):
        raise BackupError("%s must be an absolute path, got %r" % (what, path), KIND_BAD_INPUT)
    if "\x00" in path:
        raise BackupError("%s contains a NUL byte" % what, KIND_BAD_INPUT)
    return os.path.normpath(path)


# SQLite keeps its busy timeout in a C int; more is read back as 0 (no waiting at all).
BUSY_TIMEOUT_MAX_MS = 2 ** 31 - 1
# A lock wait longer than a week is a mistake, and NaN or infinity would wait forever.
LOCK_TIMEOUT_MAX = 7 * 86400.0
# Retention horizons beyond this many days (a century) are mistakes that overflow date arithmetic.
RETENTION_DAYS_MAX = 36525
ID_MAX = 2 ** 32 - 2  # largest valid uid/gid (-1 means "unchanged" to chown)


def validate_busy_timeout(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BUSY_TIMEOUT_MAX_MS:
        raise BackupError("busy_timeout_ms must be a whole number of milliseconds from 0 to %d, got %r"
                          % (BUSY_TIMEOUT_MAX_MS, value), KIND_BAD_INPUT)
    return value


def validate_lock_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= LOCK_TIMEOUT_MAX:
        raise BackupError("lock_timeout must be a number of seconds from 0 to %d, got %r"
                          % (LOCK_TIMEOUT_MAX, value), KIND_BAD_INPUT)  # NaN fails every comparison
    return float(value)


def validate_sha256(value: Any, what: str = "expected_sha256") -> str:
    """A sha256 as 64 hexadecimal digits (spaces around and upper case allowed): the normal form."""
    normal = value.strip().lower() if isinstance(value, str) else value
    if not isinstance(normal, str) or not re.fullmatch(r"[0-9a-f]{64}", normal):
        raise BackupError("%s must be 64 hexadecimal digits, got %r" % (what, value), KIND_BAD_INPUT)
    return normal


def check_database_file(path: str) -> os.stat_result:
    """Refuse anything that is not an existing, non-empty SQLite database file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BackupError("database %s does not exist" % path, KIND_BAD_INPUT) from None
    except OSError as exc:
        raise BackupError("cannot read database %s: %s" % (path, exc.strerror), KIND_BAD_INPUT) from None
    if stat.S_ISDIR(st.st_mode):
        raise BackupError("database %s is a directory, not a database file" % path, KIND_BAD_INPUT)
    if not stat.S_ISREG(st.st_mode):
        raise BackupError("database %s is not a regular file" % path, KIND_BAD_INPUT)
    if st.st_size == 0:
        raise BackupError("database %s is empty (0 bytes): nothing to back up" % path, KIND_BAD_INPUT)
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise BackupError("cannot read database %s: %s" % (path, exc.strerror), KIND_BAD_INPUT) from None
    if header != SQLITE_HEADER:
        raise BackupError("%s is not an SQLite 3 database (bad header)" % path, KIND_BAD_INPUT)
    return st


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- names


def backup_filename(name: str, created: _dt.datetime, seq: int = 0) -> str:
    stamp = created.astimezone(_dt.timezone.utc).strftime("%Y%m%d_%H%M%S")
    suffix = "_%d" % seq if seq else ""
    return "%s_backup_%s%s.db" % (name, stamp, suffix)


def parse_backup_filename(filename: str) -> dict[str, Any] | None:
    """``gym_backup_20261122_030000_2.db`` -> name, created (UTC), seq; None if not ours."""
    match = BACKUP_FILE_RE.fullmatch(filename)  # fullmatch: "$" alone lets a trailing newline in
    if not match:
        return None
    try:
        created = _dt.datetime.strptime(match["date"] + match["time"], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return {
        "name": match["name"],
        "created": created.replace(tzinfo=_dt.timezone.utc),
        "seq": int(match["seq"] or 0),
    }


def sidecar_paths(backup_path: str) -> tuple[str, str]:
    return backup_path + ".sha256", backup_path + ".json"


def iso_utc(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Times outside these years are malformed: no backup was taken before 2000, and calendar arithmetic
# (local time zones, retention horizons) near the ends of datetime's range would overflow.
PLAUSIBLE_YEARS = (2000, 9000)


def parse_iso_utc(text: Any) -> _dt.datetime | None:
    """An ISO 8601 time as an aware UTC datetime (no zone means UTC); None when malformed or implausible."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_dt.timezone.utc)
        moment = moment.astimezone(_dt.timezone.utc)
    except (ValueError, OverflowError):
        return None
    return moment if PLAUSIBLE_YEARS[0] <= moment.year <= PLAUSIBLE_YEARS[1] else None


# Hidden names of what this tool keeps beside backups: the lock, temporary and staging files, the
# runner's metrics state, a restore's staging folder.
OUR_HIDDEN_PREFIXES = (".sqlite-backup", ".sqlite-export.", ".sqlite-restore", ".sqlite-fleet-")


def named_by_us(entry: str) -> bool:
    """Whether a folder entry is named the way this tool names what it writes into backup folders."""
    if entry.startswith(OUR_HIDDEN_PREFIXES) or pending_target(entry):
        return True
    for suffix in ("", ".sha256", ".json"):
        if entry.endswith(suffix) and parse_backup_filename(entry[:len(entry) - len(suffix)]):
            return True
    return False


def pending_marker(filename: str) -> str:
    """The name of the marker that says ``filename`` is being committed (removed once it is)."""
    return "." + filename + PENDING_SUFFIX


def pending_target(entry: str) -> str | None:
    """The backup file a pending marker ``entry`` stands for; None when ``entry`` is no marker."""
    if entry.startswith(".") and entry.endswith(PENDING_SUFFIX) and len(entry) > 1 + len(PENDING_SUFFIX):
        return entry[1:-len(PENDING_SUFFIX)]
    return None


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


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


# --------------------------------------------------------------------------- sqlite helpers


def open_readonly(path: str, immutable: bool = False, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """Read-only connection; ``immutable`` for finished backups (no -wal/-shm, no locks)."""
    from urllib.parse import quote

    uri = "file:%s?mode=ro%s" % (quote(path), "&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000.0)
    conn.execute("PRAGMA busy_timeout=%d" % int(busy_timeout_ms))
    return conn


def tune_for_checks(conn: sqlite3.Connection, database_bytes: int) -> None:
    """A larger page cache and mmap make integrity_check several times faster."""
    cache_kib = min(max(database_bytes // 1024, 2048), 256 * 1024)
    conn.execute("PRAGMA cache_size=-%d" % cache_kib)
    conn.execute("PRAGMA mmap_size=%d" % min(database_bytes + (1 << 20), 1 << 30))


def user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY name"
    ).fetchall()
    return [row[0] for row in rows]


def table_row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    counts = {}
    for table in user_tables(conn):
        try:
            query = "SELECT count(*) FROM %s" % quote_identifier(table)  # noqa: S608 - identifier quoted
            counts[table] = conn.execute(query).fetchone()[0]
        except sqlite3.OperationalError as exc:
            # A virtual table whose module this SQLite lacks (fts5 on an old build...).
            if "no such module" not in str(exc):
                raise
    return counts


def run_integrity_check(conn: sqlite3.Connection, level: str, max_errors: int = 20) -> list[str]:
    """[] when the database is sound, else the first problems SQLite reports."""
    pragma = "quick_check" if level == "quick" else "integrity_check"
    rows = [row[0] for row in conn.execute("PRAGMA %s(%d)" % (pragma, max_errors)).fetchall()]
    return [] if rows == ["ok"] else rows


def run_foreign_key_check(conn: sqlite3.Connection, max_rows: int = 20) -> list[str]:
    problems = []
    for row in conn.execute("PRAGMA foreign_key_check"):
        problems.append("table %s rowid %s references missing %s (constraint %s)" % tuple(row))
        if len(problems) >= max_rows:
            problems.append("... more foreign key violations")
            break
    return problems


def pragma_value(conn: sqlite3.Connection, name: str) -> Any:
    row = conn.execute("PRAGMA %s" % name).fetchone()
    return row[0] if row else None


def sqlite_version_tuple(version: str = sqlite3.sqlite_version) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


def has_wal_reset_bug(version: str = sqlite3.sqlite_version) -> bool:
    """SQLite's WAL-reset bug: fixed in 3.51.3, backported to 3.44.6 and 3.50.7."""
    v = sqlite_version_tuple(version)
    if v < (3, 7, 0):
        return False
    if v < (3, 44, 6):
        return True
    if (3, 45, 0) <= v < (3, 50, 7):
        return True
    return (3, 51, 0) <= v < (3, 51, 3)


def wal_reset_warning(version: str = sqlite3.sqlite_version) -> str | None:
    if not has_wal_reset_bug(version):
        return None
    return (
        "this host's SQLite %s may carry the WAL-reset bug (fixed in 3.51.3, backported to 3.44.6 and "
        "3.50.7): a checkpoint from a second process while the app writes is one of its conditions; "
        "backups do not need a checkpoint, so leave it off unless you must" % version
    )


# --------------------------------------------------------------------------- facts


def database_facts(db_path: str, count_rows: bool = True, busy_timeout_ms: int = 5000) -> dict[str, Any]:
    """Size, page layout, journal mode, WAL size, tables and row counts, read-only.

    A WAL database with no ``-shm`` and an absent or empty ``-wal`` has no connection open and
    holds everything in its main file: it is then read as immutable, so that looking at it
    creates no ``-wal``/``-shm``. Otherwise it is read like any reader reads it (which may
    update the ``-shm`` index, never the data).
    """
    db_path = validate_abs_path(db_path, "database path")
    validate_busy_timeout(busy_timeout_ms)
    st = check_database_file(db_path)
    wal_path = db_path + "-wal"
    existed = side_files_present(db_path)
    wal_bytes = os.path.getsize(wal_path) if existed["-wal"] else 0
    with open(db_path, "rb") as handle:
        wal_header = handle.read(20)[18:20] == b"\x02\x02"
    immutable = wal_header and wal_bytes == 0 and not existed["-shm"]
    conn = open_readonly(db_path, immutable=immutable, busy_timeout_ms=busy_timeout_ms)
    try:
        conn.execute("BEGIN")
        facts = {
            "path": db_path,
            "size_bytes": st.st_size,
            "wal_bytes": wal_bytes,
            "sqlite_version": sqlite3.sqlite_version,
            "page_size": pragma_value(conn, "page_size"),
            "page_count": pragma_value(conn, "page_count"),
            "freelist_count": pragma_value(conn, "freelist_count"),
            # read as immutable, SQLite reports "delete": the header says WAL
            "journal_mode": "wal" if immutable else pragma_value(conn, "journal_mode"),
            "user_version": pragma_value(conn, "user_version"),
            "application_id": pragma_value(conn, "application_id"),
            "encoding": pragma_value(conn, "encoding"),
            "auto_vacuum": pragma_value(conn, "auto_vacuum"),
            "tables": table_row_counts(conn) if count_rows else {t: None for t in user_tables(conn)},
            "mtime": iso_utc(_dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc)),
            "owner_uid": st.st_uid,
            "owner_gid": st.st_gid,
        }
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise sqlite_failure(exc, "reading facts of %s" % db_path) from None
    finally:
        conn.close()
        give_side_files_to_owner(db_path, existed, st)
    facts["table_count"] = len(facts["tables"])
    facts["wal_reset_bug"] = has_wal_reset_bug()
    return facts


def sqlite_failure(exc: sqlite3.Error, doing: str) -> BackupError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return BackupError("database is locked while %s: %s (busy timeout exceeded)" % (doing, text), KIND_LOCKED)
    if "disk is full" in text:  # SQLITE_FULL: the folder filled up during the copy
        return BackupError("no space left while %s: %s" % (doing, text), KIND_NO_SPACE)
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return BackupError("database is corrupt while %s: %s" % (doing, text), KIND_CORRUPT)
    return BackupError("SQLite error while %s: %s" % (doing, text), KIND_IO)


def side_files_present(db_path: str) -> dict[str, bool]:
    return {suffix: os.path.exists(db_path + suffix) for suffix in ("-wal", "-shm")}


# Invariant: a -wal/-shm that our own reader created carries the database's owner and mode
# (never the umask's 0644 beside a 0600 database: the WAL holds the newest rows).
def give_side_files_to_owner(db_path: str, existed: Mapping[str, bool], db_stat: os.stat_result) -> None:
    """A read-only reader of a WAL database may create ``-wal``/``-shm``: with the process's
    umask (world-readable beside a private database) and, as root, owned by root (the app,
    running as its own user, could no longer write). Give them the database's mode and owner."""
    for suffix, was_there in existed.items():
        path = db_path + suffix
        if was_there:
            continue
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (db_stat.st_uid, db_stat.st_gid):
                os.chown(path, db_stat.st_uid, db_stat.st_gid, follow_symlinks=False)
            if stat.S_IMODE(st.st_mode) != stat.S_IMODE(db_stat.st_mode):
                os.chmod(path, stat.S_IMODE(db_stat.st_mode))


def checkpoint(db_path: str, mode: str = "PASSIVE", busy_timeout_ms: int = 5000,
               check_mode: bool = False) -> dict[str, Any]:
    """``PRAGMA wal_checkpoint(mode)``; nothing to do on a database not in WAL mode."""
    db_path = validate_abs_path(db_path, "database path")
    validate_busy_timeout(busy_timeout_ms)
    mode = str(mode).upper()
    if mode not in CHECKPOINT_MODES:
        raise BackupError("checkpoint mode must be one of %s" % ", ".join(CHECKPOINT_MODES), KIND_BAD_INPUT)
    st = check_database_file(db_path)
    existed = side_files_present(db_path)
    result: dict[str, Any] = {"path": db_path, "mode": mode, "warning": wal_reset_warning()}
    try:
        probe = open_readonly(db_path, busy_timeout_ms=busy_timeout_ms)
        try:
            journal_mode = pragma_value(probe, "journal_mode")
        finally:
            probe.close()
        result["journal_mode"] = journal_mode
        if journal_mode != "wal":
            result.update(changed=False, skipped=True, busy=0, log=0, checkpointed=0,
                          msg="database is not in WAL mode (%s): no checkpoint needed" % journal_mode)
            return result
        wal_bytes = os.path.getsize(db_path + "-wal") if os.path.exists(db_path + "-wal") else 0
        if check_mode:
            result.update(changed=wal_bytes > 0, skipped=False, busy=None, log=None, checkpointed=None,
                          wal_bytes_before=wal_bytes, msg="would run wal_checkpoint(%s)" % mode)
            return result
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=busy_timeout_ms / 1000.0)
        try:
            conn.execute("PRAGMA busy_timeout=%d" % int(busy_timeout_ms))
            busy, log, done = conn.execute("PRAGMA wal_checkpoint(%s)" % mode).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise sqlite_failure(exc, "checkpointing %s" % db_path) from None
    finally:
        give_side_files_to_owner(db_path, existed, st)
    result.update(changed=done > 0 or mode == "TRUNCATE" and wal_bytes > 0, skipped=False, busy=busy,
                  log=log, checkpointed=done, wal_bytes_before=wal_bytes,
                  msg="wal_checkpoint(%s): busy=%d log=%d checkpointed=%d" % (mode, busy, log, done))
    return result


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


# --------------------------------------------------------------------------- snapshot


def snapshot(
    db_path: str,
    backup_dir: str,
    name: str,
    *,
    label: str | None = None,
    method: str = "pinned_copy",
    integrity: str = "quick",
    busy_timeout_ms: int = 5000,
    lock_timeout: float = 600.0,
    owner: Any = None,
    group: Any = None,
    source_host: str | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
    check_mode: bool = False,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """Take one consistent backup of a live database, following the commit protocol.

    Returns a dict with ``changed``, ``backup`` (path), ``file``, ``manifest``, ``verified``,
    ``problems`` (integrity problems of the source, if any), ``removed_unfinished``.
    A source that fails its check is still backed up: ``verified`` is then False and the
    caller must fail loudly.
    """
    db_path = validate_abs_path(db_path, "database path")
    backup_dir = validate_abs_path(backup_dir, "backup folder")
    name = validate_name(name)
    label = validate_label(label)
    if method not in METHODS:
        raise BackupError("method must be one of %s" % ", ".join(METHODS), KIND_BAD_INPUT)
    if integrity not in INTEGRITY_LEVELS:
        raise BackupError("integrity must be one of %s" % ", ".join(INTEGRITY_LEVELS), KIND_BAD_INPUT)
    validate_busy_timeout(busy_timeout_ms)
    validate_lock_timeout(lock_timeout)
    db_stat = check_database_file(db_path)
    if os.path.dirname(db_path) == backup_dir and parse_backup_filename(os.path.basename(db_path)):
        raise BackupError("the database %s is itself a backup in %s" % (db_path, backup_dir), KIND_BAD_INPUT)
    file_owner = resolve_owner(owner, group, db_stat)
    wal_path = db_path + "-wal"
    source_bytes = db_stat.st_size + (os.path.getsize(wal_path) if os.path.exists(wal_path) else 0)

    if check_mode:
        ensure_private_dir(backup_dir, file_owner, check_mode=True)
        planned = backup_filename(name, now or utcnow())
        return {"changed": True, "backup": os.path.join(backup_dir, planned), "file": planned,
                "manifest": None, "verified": None, "problems": [], "removed_unfinished": [],
                "msg": "would snapshot %s (%d bytes with its WAL) into %s" % (db_path, source_bytes, backup_dir)}

    ensure_private_dir(backup_dir, file_owner)
    check_writable_dir(backup_dir)
    with folder_lock(backup_dir, timeout=lock_timeout):
        removed = remove_unfinished(backup_dir)
        check_free_space(backup_dir, required_space(source_bytes), "a snapshot of %s" % db_path)
        tmp_path = os.path.join(backup_dir, "%s%s.%d.%s.db" % (TMP_PREFIX, name, os.getpid(), secrets.token_hex(4)))
        try:
            # A WAL database's writers never wait for us: yield the CPU to the app then. With a
            # rollback journal they wait for our shared lock, so the copy must end soonest.
            copy, checked, digest = run_at_priority(
                BACKUP_NICE if is_wal_file(db_path) else 0, copy_and_check,
                db_path, tmp_path, method, busy_timeout_ms, db_stat, integrity, file_owner)
            size = os.path.getsize(tmp_path)
            created = copy["started"]
            manifest = {
                "format_version": FORMAT_VERSION,
                "tool": {"name": TOOL_NAME, "version": CORE_VERSION, "core_sha256": core_sha256()},
                "name": name,
                "file": None,  # set once the final name is known
                "source": {"host": source_host or socket.gethostname(), "path": db_path,
                           "journal_mode": copy["journal_mode"], "size_bytes": source_bytes},
                "created": iso_utc(created),
                "label": label,
                "method": copy["method"],
                "sqlite_version": sqlite3.sqlite_version,
                "page_size": checked["page_size"],
                "page_count": checked["page_count"],
                "journal_mode": "delete",
                "user_version": checked["user_version"],
                "application_id": checked["application_id"],
                "tables": checked["tables"],
                "integrity": {"check": integrity, "result": "ok" if not checked["integrity_problems"] else "failed",
                              "problems": checked["integrity_problems"],
                              "foreign_key_problems": checked["foreign_key_problems"]},
                "verified": not checked["integrity_problems"],
                "sha256": digest,
                "size_bytes": size,
                "duration_seconds": None,
                "copy_seconds": round(copy["copy_seconds"], 6),
                "writers_held_off_seconds": round(copy["held_off_seconds"], 6),
            }
            if extra_manifest:
                manifest.update({k: v for k, v in extra_manifest.items() if k not in manifest})
            final_path = commit_backup(tmp_path, backup_dir, name, created, manifest, digest, file_owner,
                                       copy["started_monotonic"])
            check_sidecars(final_path, digest)
        finally:
            for leftover in (tmp_path, tmp_path + "-journal", tmp_path + "-wal", tmp_path + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
    problems = checked["integrity_problems"]
    return {
        "changed": True,
        "backup": final_path,
        "file": os.path.basename(final_path),
        "manifest": manifest,
        "verified": manifest["verified"],
        "problems": problems,
        "removed_unfinished": removed,
        "msg": ("backup %s taken and verified" % os.path.basename(final_path)) if not problems else
               ("source database %s FAILED its %s check; backed up as %s but flagged unverified: %s"
                % (db_path, integrity, os.path.basename(final_path), "; ".join(problems[:5]))),
    }


def copy_and_check(db_path: str, tmp_path: str, method: str, busy_timeout_ms: int, db_stat: os.stat_result,
                   integrity: str, file_owner: tuple[int, int]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Copy, check, fsync and hash a snapshot under its temporary name: (copy, checked, sha256)."""
    copy = copy_database(db_path, tmp_path, method, busy_timeout_ms, db_stat, hash_copy=True)
    os.chmod(tmp_path, 0o600)
    chown_if_needed(tmp_path, file_owner)
    # A pinned copy was hashed as it was written (its bytes are final, and in rollback-journal
    # mode already); the other copies once switched to journal_mode=DELETE. The fsync, and
    # the hash when still to do, run in a thread while SQLite checks the copy (all release the GIL).
    digest = copy.pop("sha256")
    hashed = file_identity(tmp_path) if digest else None
    finishing: list[Background] = []
    final_work = fsync_path if digest else fsync_and_hash
    try:
        checked = inspect_copy(tmp_path, integrity, read_only=bool(digest),
                               on_final=lambda: finishing.append(Background(final_work, tmp_path)))
    finally:
        for job in finishing:
            job.wait()
    result = finishing[0].result() if finishing else final_work(tmp_path)
    if not digest:
        digest = result
    elif file_identity(tmp_path) != hashed:  # something wrote to the copy after all: hash it again
        digest = fsync_and_hash(tmp_path)
    return copy, checked, digest


def file_identity(path: str) -> tuple[int, int, int]:
    """Size, modification time and change time (ns): what a write to the file changes."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns


# How much nicer than its caller a snapshot of a WAL database runs (Linux, per thread).
BACKUP_NICE = 10


def is_wal_file(db_path: str) -> bool:
    """True when the database file's header says WAL mode (bytes 18 and 19 are 2)."""
    with open(db_path, "rb") as handle:
        return handle.read(20)[18:20] == b"\x02\x02"


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
FLUSH_TARGET_SECONDS = 0.03
FLUSH_MIN_BYTES = 1 << 20
FLUSH_MAX_BYTES = 64 << 20
# While the app commits, the copy pauses after each flush for this share of the flush's
# time, so the app's own fsyncs find the disk free between our flushes.
YIELD_FACTOR = 2.0
# Source pages are read through mmap up to this size (a read() per page otherwise).
COPY_MMAP_BYTES = 1 << 30


class StepFlusher:
    """Progress callback of a stepped backup: flush the copy's new pages as the copy goes.

    A single fsync of a whole fresh copy at the end stalls every other fsync on the file
    system (the app's commits) for as long as the disk needs to write it all. Flushing in
    pieces that each take about FLUSH_TARGET_SECONDS keeps the app's commits that short of
    a wait, on a fast SSD (few, big flushes) as on an SD card (many small ones). The copy
    waits for each flush: measured with an app-like writer, that costs the app fewer
    commits than flushing in a thread beside the copy, for a slightly longer snapshot.

    ``activity``, when given, returns something that changes whenever the app commits (the
    wal-index header): when it changed since the last flush, the copy then pauses for
    YIELD_FACTOR times the flush's duration. An idle database is copied at full speed.
    """

    def __init__(self, path: str, flush: bool = True, step_bytes: int = COPY_STEP_BYTES,
                 activity: Any = None) -> None:
        self.path = path
        self.flush = flush
        self.step_bytes = step_bytes
        self.activity = activity
        self.steps = 0
        self.flushes = 0
        self.yielded_seconds = 0.0
        self.budget = FLUSH_MIN_BYTES
        self._pending = 0
        self._last_activity = activity() if activity is not None else None
        self._fd: int | None = None
        self._sync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync

    def __call__(self, status: int, remaining: int, total: int) -> None:
        self.steps += 1
        self._pending += self.step_bytes
        if remaining <= 0 or not self.flush or self._pending < self.budget:
            return  # after the last step the caller's own fsync follows
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        started = time.monotonic()
        self._sync(self._fd)
        seconds = time.monotonic() - started
        self.flushes += 1
        rate = self._pending / seconds if seconds > 0 else float("inf")
        self.budget = int(min(max(rate * FLUSH_TARGET_SECONDS, FLUSH_MIN_BYTES), FLUSH_MAX_BYTES))
        self._pending = 0
        if self.activity is not None:
            now = self.activity()
            if now != self._last_activity:
                self._last_activity = now
                time.sleep(seconds * YIELD_FACTOR)
                self.yielded_seconds += seconds * YIELD_FACTOR

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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


def copy_database(db_path: str, tmp_path: str, method: str, busy_timeout_ms: int,
                  db_stat: os.stat_result, hash_copy: bool = False) -> dict[str, Any]:
    """Copy the live database into ``tmp_path`` under one read transaction.

    ``pinned_copy`` copies the file's bytes while the read transaction pins the snapshot,
    then lays that snapshot's WAL frames over them (see :func:`pinned_file_copy`); when the
    snapshot cannot be pinned down exactly, the same transaction copies with the backup API
    instead, and the result says so (``method``). With ``hash_copy`` a pinned copy is hashed
    as it is written: ``sha256`` in the result (None for the other methods).
    """
    existed = side_files_present(db_path)
    source = None
    target = None
    flusher = None
    used = method
    digest = None
    held_fds: list[int] = []  # closed only after ``source``: see begin_pinned_read
    try:
        try:
            source = open_readonly(db_path, busy_timeout_ms=busy_timeout_ms)
            journal_mode = pragma_value(source, "journal_mode")
            wal_index = None
            if method == "pinned_copy" and journal_mode == "wal":
                wal_index = begin_pinned_read(source, db_path, held_fds)
                if wal_index is None:
                    used = "backup_api"
            if method != "vacuum_into" and not source.in_transaction:
                # The first read takes the snapshot (WAL) or the shared lock (rollback
                # journal), waiting up to the busy timeout for a writer to let go; the copy
                # then runs inside this one read transaction. (VACUUM INTO opens its own.)
                source.execute("BEGIN")
                source.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise sqlite_failure(exc, "starting a read transaction on %s" % db_path) from None
        started = utcnow()
        started_monotonic = time.monotonic()
        page_size = pragma_value(source, "page_size") or 4096
        # In WAL mode what the copy wrote goes to disk in pieces as it goes (StepFlusher), so
        # the final fsync has little left to write and the app's commits (each an fsync of its
        # -wal) never queue behind the whole copy. With a rollback journal our shared lock
        # holds the app's writers off until the copy ends: no flushing then, to end it sooner.
        pages_per_step = max(1, COPY_STEP_BYTES // page_size)
        # The app's commits show in the wal-index header: the flusher yields to them.
        activity = None
        if wal_index is not None:
            activity = functools.partial(os.pread, wal_index["shm_fd"], WAL_INDEX_HEADER.size, 0)
        flusher = StepFlusher(tmp_path, flush=journal_mode == "wal", step_bytes=pages_per_step * page_size,
                              activity=activity)
        try:
            if used == "pinned_copy":
                try:
                    digest = pinned_file_copy(source, db_path, tmp_path, wal_index, held_fds, flusher, hash_copy)
                except SnapshotNotPinned:
                    # pinned_file_copy removed its file: the backup API starts a new one.
                    used = "backup_api"
                    flusher.close()
                    flusher = StepFlusher(tmp_path, flush=journal_mode == "wal",
                                          step_bytes=pages_per_step * page_size, activity=activity)
            if used == "vacuum_into":
                source.execute("VACUUM INTO ?", (tmp_path,))
            elif used == "backup_api":
                if COPY_MMAP_BYTES:
                    # Read the source through mmap (SQLite keeps a mapped WAL database consistent).
                    source.execute("PRAGMA mmap_size=%d" % min(db_stat.st_size + (1 << 20), COPY_MMAP_BYTES))
                target = sqlite3.connect(tmp_path, isolation_level=None)
                target.execute("PRAGMA synchronous=OFF")
                # Steps of COPY_STEP_BYTES, all inside the read transaction opened above: the
                # snapshot cannot move, so the copy never restarts (a backup that opens a read
                # transaction per step restarts on every write of the app).
                source.backup(target, pages=pages_per_step, progress=flusher)
                target.close()
                target = None
        except sqlite3.Error as exc:
            raise sqlite_failure(exc, "copying %s" % db_path) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BackupError("no space left while copying %s: %s" % (db_path, exc), KIND_NO_SPACE) from None
            raise BackupError("copying %s failed: %s" % (db_path, exc), KIND_IO) from None
        finally:
            flusher.close()
            if source.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    source.execute("COMMIT")
        copy_seconds = time.monotonic() - started_monotonic
    finally:
        if target is not None:
            target.close()
        if source is not None:
            source.close()
        for fd in held_fds:
            os.close(fd)
        give_side_files_to_owner(db_path, existed, db_stat)
    return {
        "started": started,
        "started_monotonic": started_monotonic,
        "journal_mode": journal_mode,
        "method": used,
        "sha256": digest,
        "copy_seconds": copy_seconds,
        "steps": flusher.steps if flusher is not None else 1,
        "flushes": flusher.flushes if flusher is not None else 0,
        "yielded_seconds": flusher.yielded_seconds if flusher is not None else 0.0,
        # In WAL mode readers never block writers; with a rollback journal our shared
        # lock held every writer off for the whole copy.
        "held_off_seconds": 0.0 if journal_mode == "wal" else copy_seconds,
    }


# --------------------------------------------------------------------------- pinned copy
#
# A read transaction pins a snapshot. In rollback-journal mode its shared lock keeps every
# writer out of the database file, so the file's bytes ARE the snapshot. In WAL mode the
# snapshot is the database file plus the WAL's frames up to the reader's end mark
# (mxFrame): while we hold the read lock, a checkpoint copies no frame past our mark into
# the file, and the WAL is not restarted over frames we may need. So the snapshot can be
# rebuilt from the file's bytes (copied inside the kernel, as fast as cp) and, laid over
# them, the newest frame of every page among the frames not yet checkpointed when the
# read began. The end mark comes from the wal-index header in -shm (walformat.html):
# read it just before and just after the read transaction starts; when both reads are
# the same (its change counter included), no commit came in between and that header is
# our snapshot's. Otherwise try again; after a few tries fall back to the backup API.

WAL_INDEX_HEADER = struct.Struct("=IIIBBHII8s8s8s")  # one copy of the wal-index header
WAL_INDEX_VERSION = 3007000
WAL_NBACKFILL_OFFSET = 96  # after the two header copies: nBackfill, the frames checkpointed
WAL_HEADER_BYTES = 32
WAL_FRAME_HEADER_BYTES = 24
WAL_MAGIC = (0x377F0682, 0x377F0683)
PIN_ATTEMPTS = 25


class SnapshotNotPinned(Exception):
    """The pinned copy cannot tell exactly what the snapshot holds: use the backup API."""


def read_wal_index(shm_fd: int) -> tuple[bytes, dict[str, Any]] | None:
    """The wal-index header (raw bytes, fields) and nBackfill; None while it is being changed."""
    raw = os.pread(shm_fd, WAL_NBACKFILL_OFFSET + 4, 0)
    size = WAL_INDEX_HEADER.size
    if len(raw) < WAL_NBACKFILL_OFFSET + 4 or raw[:size] != raw[size:2 * size]:
        return None
    version, _unused, change, is_init, _big_end, page_size, mx_frame, n_page, _fck, salt, _ck = \
        WAL_INDEX_HEADER.unpack(raw[:size])
    if version != WAL_INDEX_VERSION or not is_init:
        return None
    n_backfill = struct.unpack("=I", raw[WAL_NBACKFILL_OFFSET:WAL_NBACKFILL_OFFSET + 4])[0]
    return raw[:size], {"change": change, "page_size": (page_size & 0xFE00) + ((page_size & 1) << 16),
                        "mx_frame": mx_frame, "n_page": n_page, "salt": salt, "n_backfill": n_backfill}


def begin_pinned_read(source: sqlite3.Connection, db_path: str, held_fds: list[int]) -> dict[str, Any] | None:
    """Open the read transaction and return its snapshot's wal-index header.

    None, with no transaction open, when the header kept changing under a busy writer or
    cannot be read (no -shm: the app holds the database in exclusive locking mode).
    The -shm descriptor goes into ``held_fds``: the caller closes it only after closing
    ``source``, as closing any descriptor of a file drops every POSIX lock this process
    holds on it (SQLite's read lock in the -shm among them).
    """
    shm_fd = None
    for attempt in range(PIN_ATTEMPTS):
        if shm_fd is None:
            shm_fd = open_held(db_path + "-shm", held_fds)
        before = read_wal_index(shm_fd) if shm_fd is not None else None
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if shm_fd is None:  # the first read made the -shm
            shm_fd = open_held(db_path + "-shm", held_fds)
        after = read_wal_index(shm_fd) if shm_fd is not None else None
        if before is not None and after is not None and before[0] == after[0]:
            return {**after[1], "shm_fd": shm_fd}
        source.execute("COMMIT")
        time.sleep(0.001 * attempt)
    return None


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


def pinned_file_copy(source: sqlite3.Connection, db_path: str, tmp_path: str,
                     wal_index: Mapping[str, Any] | None, held_fds: list[int], progress: Any = None,
                     hash_copy: bool = False) -> str | None:
    """Write the snapshot ``source``'s read transaction holds into the new file ``tmp_path``.

    ``wal_index``: the snapshot's wal-index header (WAL mode), None with a rollback journal.
    The descriptors it opens on the database and its WAL go into ``held_fds``, for the
    caller to close after ``source`` (see :func:`begin_pinned_read`).
    With ``hash_copy`` it returns the sha256 of the finished copy, hashed in a thread that
    trails the copy (each piece once its bytes are final), else None.
    Raises SnapshotNotPinned when what it finds does not add up; nothing is left written then.
    """
    page_size = pragma_value(source, "page_size")
    page_count = pragma_value(source, "page_count")
    # With no frame in the WAL (mx_frame 0) the snapshot is the file alone and the header's
    # page size and count are left 0.
    if wal_index is not None and wal_index["mx_frame"] and (wal_index["page_size"] != page_size
                                                           or wal_index["n_page"] != page_count):
        raise SnapshotNotPinned("the wal-index header does not describe this snapshot")
    total = page_size * page_count
    dst_fd = os.open(tmp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    hasher = TrailingHash(dst_fd) if hash_copy else None
    try:
        src_fd = open_held(db_path, held_fds)
        if src_fd is None:
            raise SnapshotNotPinned("cannot open %s" % db_path)
        wal_fd, frames = None, {}
        if wal_index is not None and wal_index["n_backfill"] < wal_index["mx_frame"]:
            wal_fd = open_held(db_path + "-wal", held_fds)
            if wal_fd is None:
                raise SnapshotNotPinned("cannot open the WAL of %s" % db_path)
            frames = snapshot_wal_frames(wal_fd, wal_index, page_count)
        finisher = PageFinisher(dst_fd, wal_fd, frames, page_size, page_count, hasher)

        def step(status: int, remaining: int, length: int) -> None:
            finisher.final_up_to(length - remaining)
            if progress is not None:
                progress(status, remaining, length)

        copied = copy_file_bytes(src_fd, dst_fd, total, step,
                                 progress.step_bytes if progress is not None else COPY_STEP_BYTES)
        os.ftruncate(dst_fd, total)
        missing = [page for page in range(copied // page_size + 1, page_count + 1) if page not in frames]
        if missing or copied % page_size:
            raise SnapshotNotPinned("%d page(s) are neither in the file nor in the WAL" % len(missing))
        finisher.final_up_to(total)
        digest = hasher.result(total) if hasher is not None else None
    except BaseException:
        if hasher is not None:
            hasher.abandon()
        os.close(dst_fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    os.close(dst_fd)
    return digest


class PageFinisher:
    """Makes a pinned copy's pages final in file order, as the copy of the file's bytes goes.

    Once the bytes up to an offset are copied, the newest WAL frame of every snapshot page
    below it is laid over them and, once page 1 is there, the header is made that of a
    rollback-journal database: from then on nothing writes those bytes again, and the
    hasher (when given) may read them.
    """

    def __init__(self, dst_fd: int, wal_fd: int | None, frames: Mapping[int, int], page_size: int,
                 page_count: int, hasher: TrailingHash | None) -> None:
        self.dst_fd = dst_fd
        self.wal_fd = wal_fd
        self.frames = frames
        self.pending = sorted(frames)
        self.page_size = page_size
        self.page_count = page_count
        self.hasher = hasher
        self.header_done = False
        self._next = 0

    def final_up_to(self, offset: int) -> None:
        pages = min(offset // self.page_size, self.page_count)
        while self._next < len(self.pending) and self.pending[self._next] <= pages:
            page_no = self.pending[self._next]
            page = os.pread(self.wal_fd, self.page_size, self.frames[page_no])  # type: ignore[arg-type]
            if len(page) != self.page_size:
                raise SnapshotNotPinned("WAL frame of page %d is cut short" % page_no)
            os.pwrite(self.dst_fd, page, (page_no - 1) * self.page_size)
            self._next += 1
        if pages >= 1 and not self.header_done:
            self.finish_header()
        if self.hasher is not None and self.header_done:
            self.hasher.advance(pages * self.page_size)

    def finish_header(self) -> None:
        # The copy is a rollback-journal database (bytes 18-19), and its in-header size
        # (offset 28) is valid (offset 92 equal to the change counter at 24).
        header = bytearray(os.pread(self.dst_fd, 100, 0))
        if header[:16] != SQLITE_HEADER:
            raise SnapshotNotPinned("the copy does not start with an SQLite header")
        header[18:20] = b"\x01\x01"
        header[28:32] = self.page_count.to_bytes(4, "big")
        header[92:96] = header[24:28]
        os.pwrite(self.dst_fd, bytes(header), 0)
        self.header_done = True


class TrailingHash:
    """sha256 of a file written front to back, computed in a thread that trails the writer.

    The writer calls :meth:`advance` once the bytes before an offset are final and
    :meth:`result` with the file's size once all are; :meth:`abandon` when it gives up.
    The thread reads through the writer's own descriptor (closing another descriptor of
    the file would drop the POSIX locks SQLite takes on it later).
    """

    CHUNK = 1 << 20

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._final = 0
        self._end: int | None = None
        self._stop = False
        self._ready = threading.Condition()
        self._job = Background(self._run)

    def advance(self, offset: int) -> None:
        with self._ready:
            if offset > self._final:
                self._final = offset
                self._ready.notify()

    def result(self, size: int) -> str:
        with self._ready:
            self._final = self._end = size
            self._ready.notify()
        return self._job.result()

    def abandon(self) -> None:
        with self._ready:
            self._stop = True
            self._ready.notify()
        self._job.wait()

    def _run(self) -> str | None:
        digest = hashlib.sha256()
        buffer = bytearray(self.CHUNK)
        view = memoryview(buffer)
        hashed = 0
        while True:
            with self._ready:
                while not self._stop and hashed >= self._final and (self._end is None or hashed < self._end):
                    self._ready.wait()
                if self._stop:
                    return None
                final, end = self._final, self._end
            if end is not None and hashed >= end:
                return digest.hexdigest()
            while hashed < final:
                want = min(self.CHUNK, final - hashed)
                read = os.preadv(self.fd, [view[:want]], hashed)
                if read <= 0:
                    raise OSError(errno.EIO, "the copy is shorter than its final size")
                digest.update(view[:read])
                hashed += read


def snapshot_wal_frames(fd: int, wal_index: Mapping[str, Any], page_count: int) -> dict[int, int]:
    """Where in the WAL the newest version of each page among the snapshot's frames not yet
    checkpointed (n_backfill+1 .. mx_frame) starts: {page number: offset of its bytes}."""
    page_size = wal_index["page_size"]
    frame_bytes = WAL_FRAME_HEADER_BYTES + page_size
    newest: dict[int, int] = {}
    header = os.pread(fd, WAL_HEADER_BYTES, 0)
    if (len(header) < WAL_HEADER_BYTES or int.from_bytes(header[:4], "big") not in WAL_MAGIC
            or int.from_bytes(header[8:12], "big") != page_size or header[16:24] != wal_index["salt"]):
        raise SnapshotNotPinned("the WAL header does not match the wal-index")
    for frame in range(wal_index["n_backfill"] + 1, wal_index["mx_frame"] + 1):
        offset = WAL_HEADER_BYTES + (frame - 1) * frame_bytes
        frame_header = os.pread(fd, WAL_FRAME_HEADER_BYTES, offset)
        if len(frame_header) < WAL_FRAME_HEADER_BYTES or frame_header[8:16] != wal_index["salt"]:
            raise SnapshotNotPinned("WAL frame %d is not part of the snapshot" % frame)
        page_no = int.from_bytes(frame_header[:4], "big")
        if 1 <= page_no <= page_count:
            newest[page_no] = offset + WAL_FRAME_HEADER_BYTES
    return newest


def inspect_copy(tmp_path: str, integrity: str, on_final: Any = None, read_only: bool = False) -> dict[str, Any]:
    """Switch the fresh copy to journal_mode=DELETE and check it (it is still private).

    ``on_final`` is called once the switch is done: from then on nothing writes the file.
    ``read_only``: the copy is final already (a pinned copy, hashed): it is opened read-only
    and immutable, so that the check cannot write it.
    """
    conn = open_readonly(tmp_path, immutable=True) if read_only else sqlite3.connect(tmp_path, isolation_level=None)
    try:
        if read_only:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        else:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if mode != "delete":
            raise BackupError("could not switch the copy to journal_mode=DELETE (got %s)" % mode, KIND_IO)
        if on_final is not None:
            on_final()
        size = os.path.getsize(tmp_path)
        tune_for_checks(conn, size)
        # The row counts run on a connection of their own beside the check (SQLite lets go
        # of the GIL): on two cores the check, the counts and the sha256 run side by side.
        counting = Background(count_rows_in, tmp_path, size)
        try:
            integrity_problems = run_integrity_check(conn, integrity)
            foreign_key_problems = run_foreign_key_check(conn) if not integrity_problems else []
        finally:
            counting.wait()
        try:
            tables = counting.result()
        except sqlite3.DatabaseError as exc:
            integrity_problems.append("row count failed: %s" % exc)
            tables = {}
        return {
            "integrity_problems": integrity_problems,
            "foreign_key_problems": foreign_key_problems,
            "tables": tables,
            "page_size": pragma_value(conn, "page_size"),
            "page_count": pragma_value(conn, "page_count"),
            "user_version": pragma_value(conn, "user_version"),
            "application_id": pragma_value(conn, "application_id"),
        }
    except sqlite3.DatabaseError as exc:
        return {"integrity_problems": ["copy cannot be read: %s" % exc], "foreign_key_problems": [],
                "tables": {}, "page_size": None, "page_count": None, "user_version": None,
                "application_id": None}
    finally:
        conn.close()


def count_rows_in(path: str, size: int) -> dict[str, int]:
    """Row count of every table of a finished (or final, still private) database file."""
    conn = open_readonly(path, immutable=True)
    try:
        tune_for_checks(conn, size)
        return table_row_counts(conn)
    finally:
        conn.close()


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
    ``LC_ALL=C sha256sum *.py | sha256sum``); recorded in manifests, the controller compares it."""
    global _CORE_SHA256
    if _CORE_SHA256 is None:
        lines = []
        try:
            for path in sorted(core_files(), key=os.path.basename):
                try:
                    with open(path, "rb") as handle:
                        data = handle.read()
                except OSError:
                    # Inside an Ansible module the core is read from the module's zip payload.
                    data = __loader__.get_data(path)  # type: ignore[name-defined]
                lines.append("%s  %s\n" % (hashlib.sha256(data).hexdigest(), os.path.basename(path)))
            _CORE_SHA256 = hashlib.sha256("".join(lines).encode()).hexdigest()
        except Exception:
            _CORE_SHA256 = ""
    return _CORE_SHA256 or None


# --------------------------------------------------------------------------- verify


def verify_backup(backup_path: str, integrity: str = "full", expected_sha256: str | None = None,
                  check_rows: bool = True) -> dict[str, Any]:
    """Check a finished backup against its sidecars; never writes anything.

    Returns ``ok``, ``checks`` (name -> "ok" or a reason), ``problems``, ``manifest``, ``sha256``.
    ``expected_sha256`` is the checksum recorded at the first hop (e.g. the host's manifest).
    """
    backup_path = validate_abs_path(backup_path, "backup path")
    if integrity not in INTEGRITY_LEVELS:
        raise BackupError("integrity must be one of %s" % ", ".join(INTEGRITY_LEVELS), KIND_BAD_INPUT)
    base = os.path.basename(backup_path)
    if parse_backup_filename(base) is None:
        raise BackupError("%s is not named like a backup (<name>_backup_<YYYYMMDD>_<HHMMSS>.db)" % base,
                          KIND_BAD_INPUT)
    if os.path.islink(backup_path):
        raise BackupError("%s is a symbolic link: refusing to follow it" % backup_path, KIND_BAD_INPUT)
    if not os.path.isfile(backup_path):
        raise BackupError("backup %s does not exist" % backup_path, KIND_BAD_INPUT)
    started = time.monotonic()
    # The sha256 is computed in a thread while SQLite checks the file (both release the GIL).
    hashing = Background(sha256_file, backup_path)
    try:
        return _verify_backup(backup_path, integrity, expected_sha256, check_rows, hashing, started)
    finally:
        hashing.wait()


def _verify_backup(backup_path: str, integrity: str, expected_sha256: str | None, check_rows: bool,
                   hashing: Background, started: float) -> dict[str, Any]:
    base = os.path.basename(backup_path)
    checks: dict[str, str] = {}
    problems: list[str] = []

    def fail(check: str, why: str) -> None:
        checks[check] = why
        problems.append("%s: %s" % (check, why))

    manifest: dict[str, Any] | None = None
    try:
        manifest = read_manifest(backup_path)
        checks["manifest"] = "ok"
    except BackupError as exc:
        fail("manifest", str(exc))
    try:
        sidecar = read_sha256_sidecar(backup_path)
    except BackupError as exc:
        sidecar = None
        fail("checksum_file", str(exc))
    database_results = check_backup_database(backup_path, integrity, manifest, check_rows)
    actual = hashing.result()
    wanted = [("checksum file", sidecar)]
    if manifest:
        wanted.append(("manifest", manifest["sha256"]))
    if expected_sha256:
        wanted.append(("first hop", expected_sha256))
    mismatched = ["%s says %s" % (who, value[:12]) for who, value in wanted if value and value != actual]
    if mismatched:
        fail("checksum", "sha256 of the file is %s but %s" % (actual[:12], ", ".join(mismatched)))
    elif sidecar is None and not manifest:
        fail("checksum", "nothing to compare the sha256 with")
    else:
        checks["checksum"] = "ok"
    if manifest and os.path.getsize(backup_path) != manifest["size_bytes"]:
        fail("size", "file is %d bytes, manifest says %d" % (os.path.getsize(backup_path), manifest["size_bytes"]))
    if manifest and not manifest["verified"]:
        fail("source", "the backup was flagged unverified when taken (source failed its check)")

    for check, why in database_results:
        if why is None:
            checks[check] = "ok"
        else:
            fail(check, why)
    return {
        "ok": not problems,
        "file": base,
        "path": backup_path,
        "checks": checks,
        "problems": problems,
        "manifest": manifest,
        "sha256": actual,
        "integrity": integrity,
        "duration_seconds": round(time.monotonic() - started, 6),
    }


def check_backup_database(backup_path: str, integrity: str, manifest: Mapping[str, Any] | None,
                          check_rows: bool) -> list[tuple[str, str | None]]:
    """The SQLite checks of :func:`verify_backup`, in order: (check, None when ok or why not)."""
    results: list[tuple[str, str | None]] = []

    def fail(check: str, why: str) -> None:
        results.append((check, why))

    try:
        with open(backup_path, "rb") as handle:
            header = handle.read(100)
        if header[:16] != SQLITE_HEADER:
            raise sqlite3.DatabaseError("file is not a database (bad header)")
        if header[18:20] != b"\x01\x01":
            fail("journal_mode", "file header is not in rollback-journal (DELETE) mode")
        conn = open_readonly(backup_path, immutable=True)
        try:
            tune_for_checks(conn, os.path.getsize(backup_path))
            integrity_problems = run_integrity_check(conn, integrity)
            if integrity_problems:
                fail("integrity", "; ".join(integrity_problems[:5]))
            else:
                results.append(("integrity", None))
                fk = run_foreign_key_check(conn)
                if fk:
                    fail("foreign_keys", "; ".join(fk[:5]))
                else:
                    results.append(("foreign_keys", None))
                if check_rows and manifest:
                    counts = table_row_counts(conn)
                    diff = row_count_differences(manifest["tables"], counts)
                    if diff:
                        fail("row_counts", "; ".join(diff[:10]))
                    else:
                        results.append(("row_counts", None))
                if manifest and manifest.get("page_count") is not None:
                    pages = pragma_value(conn, "page_count")
                    if pages != manifest["page_count"]:
                        fail("page_count", "file has %s pages, manifest says %s" % (pages, manifest["page_count"]))
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        fail("integrity", "cannot be read as a database: %s" % exc)
    return results


def row_count_differences(expected: Mapping[str, Any], actual: Mapping[str, int]) -> list[str]:
    diffs = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            diffs.append("table %s is missing" % table)
        elif table not in expected:
            diffs.append("table %s is not in the manifest" % table)
        elif expected[table] is not None and expected[table] != actual[table]:
            diffs.append("table %s has %d rows, manifest says %d" % (table, actual[table], expected[table]))
    return diffs


def unverifiable_result(path: str, why: str, integrity: str) -> dict[str, Any]:
    """A :func:`verify_backup`-shaped result for a file that could not be verified at all."""
    return {"ok": False, "file": os.path.basename(path), "path": path, "checks": {"manifest": why},
            "problems": ["manifest: %s" % why], "manifest": None, "sha256": None, "integrity": integrity,
            "duration_seconds": 0.0}


def backups_to_verify(backup_dir: str, name: str | None, select: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The backups to verify (newest first; ``latest``: the newest of each name) and the broken files
    to report, from the folder listing. No backup at all is a failed verification (corrupt)."""
    if not os.path.isdir(backup_dir):
        raise BackupError("backup folder %s does not exist" % backup_dir, KIND_BAD_INPUT)
    listing = list_backups(backup_dir, name)
    backups = listing["backups"]
    if select == "latest":
        newest: dict[str, Any] = {}
        for backup in backups:  # newest first
            newest.setdefault(backup["name"], backup)
        backups = [b for b in backups if newest[b["name"]] is b]
    if not backups:
        message = "backup folder %s holds no backup%s" % (backup_dir, " of %s" % name if name else "")
        if listing["invalid"]:
            message += "; files named like backups with a missing or broken manifest: %s" % ", ".join(
                item["file"] for item in listing["invalid"])
        raise BackupError(message, KIND_CORRUPT)
    return [b["path"] for b in backups], listing["invalid"]


def verify_listed_backup(path: str, integrity: str, check_rows: bool = True) -> dict[str, Any]:
    """:func:`verify_backup` of a listed backup; one removed or unreadable since the listing is a failed result."""
    try:
        return verify_backup(path, integrity, None, check_rows)
    except BackupError as exc:  # removed by a prune between the listing and now, unreadable...
        return unverifiable_result(path, str(exc), integrity)


def verify_summary(results: Sequence[Mapping[str, Any]]) -> str:
    """One line: which backups FAILED verification and why, or which were verified."""
    failed = [r for r in results if not r["ok"]]
    if failed:
        return "%d of %d backups FAILED verification: %s" % (
            len(failed), len(results), "; ".join("%s (%s)" % (r["file"], "; ".join(r["problems"])) for r in failed))
    return "%d backup%s verified: %s" % (len(results), "" if len(results) == 1 else "s",
                                         ", ".join(r["file"] for r in results))


# --------------------------------------------------------------------------- retention


def normalise_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a retention policy; refuse negative values and an empty policy."""
    clean: dict[str, Any] = {}
    for rule in RETENTION_RULES:
        value = policy.get(rule)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BackupError("%s must be a non-negative integer, got %r" % (rule, value), KIND_BAD_INPUT)
        if rule == "keep_days" and value > RETENTION_DAYS_MAX:
            raise BackupError("keep_days %d is over %d (a century)" % (value, RETENTION_DAYS_MAX), KIND_BAD_INPUT)
        clean[rule] = value
    if not any(clean[rule] for rule in RETENTION_RULES):
        raise BackupError(
            "the retention policy keeps nothing (all of %s are 0): refusing, since it would delete every "
            "backup but the newest" % ", ".join(RETENTION_RULES),
            KIND_BAD_INPUT,
        )
    labels = policy.get("keep_label_days") or {}
    if not isinstance(labels, Mapping):
        raise BackupError("keep_label_days must map labels to days", KIND_BAD_INPUT)
    clean["keep_label_days"] = {}
    for label, days in labels.items():
        validate_label(label)
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= RETENTION_DAYS_MAX:
            raise BackupError("keep_label_days[%s] must be a whole number of days from 0 to %d, got %r"
                              % (label, RETENTION_DAYS_MAX, days), KIND_BAD_INPUT)
        clean["keep_label_days"][label] = days
    return clean


def retention_policy(options: Mapping[str, Any]) -> dict[str, Any]:
    """The policy the modules' retention options (:func:`retention_options`) describe, checked
    (BackupError on a bad one, time zone included). Days of keep_label_days may arrive as strings
    of digits (YAML, key=value input)."""
    policy = {rule: options[rule] for rule in RETENTION_RULES}
    policy["keep_label_days"] = {label: int(days) if isinstance(days, str) and days.strip().isdigit() else days
                                 for label, days in (options.get("keep_label_days") or {}).items()}
    normalise_policy(policy)
    resolve_timezone(options.get("timezone"))
    return policy


def resolve_timezone(name: str | None) -> _dt.tzinfo | None:
    """None or "local" -> the system's local zone (None); else an IANA zone name."""
    if name in (None, "", "local"):
        return None
    if name in ("UTC", "utc"):
        return _dt.timezone.utc
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError on odd names
        raise BackupError("unknown time zone %r" % (name,), KIND_BAD_INPUT) from None


def select_retention(backups: Sequence[Mapping[str, Any]], policy: Mapping[str, Any], now: _dt.datetime,
                     tz: _dt.tzinfo | None = None) -> list[dict[str, Any]]:
    """Decide which backups to keep: a pure function of metadata, policy and now.

    ``backups``: mappings with ``file``, ``created`` (aware datetime), ``verified`` (bool) and
    ``label`` (str or None). A backup is kept when any rule keeps it (union). Returns one
    decision per backup, newest first: ``file``, ``created``, ``keep``, ``reasons``.
    """
    rules = normalise_policy(policy)
    ordered = sorted(backups, key=lambda b: (b["created"], b["file"]), reverse=True)
    reasons: dict[str, list[str]] = {b["file"]: [] for b in ordered}
    newest = ordered[0]["created"] if ordered else None

    if newest is not None and now < newest:
        for b in ordered:
            reasons[b["file"]].append("clock is behind the newest backup (%s < %s): nothing is deleted"
                                      % (iso_utc(now), iso_utc(newest)))
    else:
        verified = [b for b in ordered if b["verified"]]
        newest_verified = verified[0]["created"] if verified else None
        if verified:
            reasons[verified[0]["file"]].append("newest verified backup")
        for b in ordered:
            if not b["verified"] and (newest_verified is None or b["created"] > newest_verified):
                reasons[b["file"]].append("unverified but newer than the newest verified backup")
        by_label = [b for b in ordered if b.get("label") in rules["keep_label_days"]]
        for b in by_label:
            days = rules["keep_label_days"][b["label"]]
            if now - b["created"] <= _dt.timedelta(days=days):
                reasons[b["file"]].append("label %s: kept %d days" % (b["label"], days))
        labelled = {b["file"] for b in by_label}
        general = [b for b in ordered if b["file"] not in labelled]
        if rules["keep_days"]:
            horizon = now - _dt.timedelta(days=rules["keep_days"])
            for b in general:
                if b["created"] >= horizon:
                    reasons[b["file"]].append("keep_days %d" % rules["keep_days"])
        counted = [b for b in general if b["verified"]]
        for index, b in enumerate(counted[: rules["keep_last"]]):
            reasons[b["file"]].append("keep_last %d (#%d)" % (rules["keep_last"], index + 1))
        for rule, bucket_of in CALENDAR_RULES:
            wanted = rules[rule]
            seen: list[str] = []
            for b in counted:
                if len(seen) >= wanted:
                    break
                bucket = bucket_of(b["created"], tz)
                if bucket not in seen:
                    seen.append(bucket)
                    reasons[b["file"]].append("%s %s" % (rule, bucket))
    decisions = []
    for b in ordered:
        why = reasons[b["file"]]
        decisions.append({
            "file": b["file"],
            "created": b["created"],
            "label": b.get("label"),
            "verified": b["verified"],
            "keep": bool(why),
            "reasons": why or ["not kept by any rule"],
        })
    return decisions


def hour_bucket(moment: _dt.datetime, tz: _dt.tzinfo | None) -> str:
    """The hour of the local clock (the hour repeated when DST ends is one bucket)."""
    return moment.astimezone(tz).strftime("%Y-%m-%dT%H")


def day_bucket(moment: _dt.datetime, tz: _dt.tzinfo | None) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d")


def week_bucket(moment: _dt.datetime, tz: _dt.tzinfo | None) -> str:
    year, week, _ = moment.astimezone(tz).isocalendar()
    return "%04d-W%02d" % (year, week)


def month_bucket(moment: _dt.datetime, tz: _dt.tzinfo | None) -> str:
    return moment.astimezone(tz).strftime("%Y-%m")


def year_bucket(moment: _dt.datetime, tz: _dt.tzinfo | None) -> str:
    return "%04d" % moment.astimezone(tz).year


# The calendar rules, each with its bucket: keep the newest verified backup of each of the N latest.
CALENDAR_RULES = (("keep_hourly", hour_bucket), ("keep_daily", day_bucket), ("keep_weekly", week_bucket),
                  ("keep_monthly", month_bucket), ("keep_yearly", year_bucket))


def apply_retention(backup_dir: str, name: str, policy: Mapping[str, Any], *, now: _dt.datetime | None = None,
                    timezone: str | None = None, check_mode: bool = False, lock_timeout: float = 600.0,
                    trusted: Collection[str] = ()) -> dict[str, Any]:
    """Prune one database's backups in ``backup_dir``; in check mode only say what would go.

    ``trusted``: files whose bytes this run has just checked (a new snapshot, a fresh import).
    """
    backup_dir = validate_abs_path(backup_dir, "backup folder")
    name = validate_name(name)
    normalise_policy(policy)
    tz = resolve_timezone(timezone)
    now = now or utcnow()
    if not os.path.isdir(backup_dir):
        return {"changed": False, "deleted": [], "kept": [], "decisions": [], "removed_unfinished": [],
                "flagged": [], "invalid": [], "msg": "backup folder %s does not exist: nothing to prune" % backup_dir}
    lock = folder_lock(backup_dir, timeout=lock_timeout) if not check_mode else contextlib.nullcontext()
    with lock:
        removed = remove_unfinished(backup_dir, name, check_mode=check_mode)
        listing, decisions, flagged = select_with_checked_floor(backup_dir, name, policy, now, tz, trusted,
                                                                check_mode)
        doomed = [d["file"] for d in decisions if not d["keep"]]
        if not check_mode:
            for entry in doomed:
                path = os.path.join(backup_dir, entry)
                # .db first, manifest last: an interruption leaves sidecars that the
                # next run recognises as remains of a removed backup.
                for victim in (path, path + ".sha256", path + ".json"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(victim)
            if doomed:
                fsync_path(backup_dir, directory=True)
    for d in decisions:
        d["created"] = iso_utc(d["created"])
    msg = "%s %d of %d backups of %s" % ("would delete" if check_mode else "deleted", len(doomed), len(decisions),
                                         name)
    if flagged:
        msg += "; %s %s unverified: %s" % ("would flag" if check_mode else "flagged",
                                          ", ".join(f["file"] for f in flagged), "; ".join(f["why"] for f in flagged))
    return {
        "changed": bool(doomed or removed or (flagged and not check_mode)),
        "deleted": doomed,
        "kept": [d["file"] for d in decisions if d["keep"]],
        "decisions": decisions,
        "removed_unfinished": removed,
        "flagged": flagged,
        "invalid": [i["file"] for i in listing["invalid"]],
        "msg": msg,
    }


# Invariant: nothing is deleted while the backup that keeps the floor (the newest verified one)
# has bytes that no longer match its checksum; one sha256 per prune, more only when floors fail.
def select_with_checked_floor(backup_dir: str, name: str, policy: Mapping[str, Any], now: _dt.datetime,
                              tz: _dt.tzinfo | None, trusted: Collection[str], check_mode: bool,
                              ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, str]]]:
    """:func:`select_retention` over the folder, after checking the floor's bytes when anything would go.

    A floor that fails is flagged unverified (in check mode only in memory) and the next one down
    becomes the floor. Returns the listing, the decisions and the flagged backups.
    """
    flagged: list[dict[str, str]] = []
    checked = set(trusted)
    while True:
        listing = list_backups(backup_dir, name)
        for backup in listing["backups"]:
            if any(f["file"] == backup["file"] for f in flagged):
                backup["verified"] = False  # check mode: flagged in memory only
        decisions = select_retention(listing["backups"], policy, now, tz)
        floor = next((d for d in decisions if d["verified"]), None)
        if floor is None or floor["file"] in checked or all(d["keep"] for d in decisions):
            return listing, decisions, flagged
        checked.add(floor["file"])
        backup = next(b for b in listing["backups"] if b["file"] == floor["file"])
        why = checksum_problem(backup)
        if why is None:
            return listing, decisions, flagged
        flagged.append({"file": backup["file"], "why": why})
        if not check_mode:
            flag_unverified(backup["path"], FLAG_CHECKSUM, why, now)


# --------------------------------------------------------------------------- stats


def folder_stats(backup_dir: str, name: str | None = None, now: _dt.datetime | None = None) -> dict[str, Any]:
    """What the original ``--stats-only`` showed: count, total size, newest, oldest, age."""
    now = now or utcnow()
    listing = list_backups(backup_dir, name)
    backups = listing["backups"]
    total = 0
    for b in backups:
        total += b["size_bytes"]
        for sidecar in sidecar_paths(b["path"]):
            with contextlib.suppress(OSError):
                total += os.path.getsize(sidecar)
    newest = backups[0] if backups else None
    oldest = backups[-1] if backups else None
    newest_verified = next((b for b in backups if b["verified"]), None)
    return {
        "folder": backup_dir,
        "name": name,
        "count": len(backups),
        "verified_count": sum(1 for b in backups if b["verified"]),
        "total_bytes": total,
        "newest": newest["file"] if newest else None,
        "newest_created": iso_utc(newest["created"]) if newest else None,
        "newest_size_bytes": newest["size_bytes"] if newest else None,
        "newest_verified": newest_verified["file"] if newest_verified else None,
        "oldest": oldest["file"] if oldest else None,
        "oldest_created": iso_utc(oldest["created"]) if oldest else None,
        "newest_age_seconds": round((now - newest["created"]).total_seconds(), 3) if newest else None,
        "unfinished": [u["file"] for u in listing["unfinished"]],
        "invalid": [i["file"] for i in listing["invalid"]],
    }


# --------------------------------------------------------------------------- delta pulls
#
# A backup-API copy keeps the page order of its source, so two backups of one database
# differ only in the pages the app changed in between. The host holds both the new backup
# and the previous one that the controller already archived (same sha256), so it can work
# out the changed pages by itself and send just those: nothing has to travel upstream
# (rsync's receiver sends a checksum per block of its basis first).
#
# Delta file: DELTA_MAGIC, a 4-byte big-endian header length, a JSON header, then one zlib
# stream of, for each changed page in rising order, a 4-byte big-endian page number
# (0-based) and the page's bytes XOR the base's page (zeros where the base has none). An
# app that changes a row rewrites one cell of a page: the rest of the XOR is zeros, which
# compress to almost nothing, even when the data itself is incompressible.

DELTA_MAGIC = b"SQLFDLT2"
DELTA_ZLIB_LEVEL = 6
DELTA_HEADER_MAX = 1 << 16
DELTA_BLOCK_BYTES = 1 << 20
_PAGE_NO = struct.Struct(">I")


def page_size_of(path: str) -> int:
    """Page size from the database header (offset 16, big-endian; 1 means 65536)."""
    with open(path, "rb") as handle:
        header = handle.read(100)
    if header[:16] != SQLITE_HEADER:
        raise BackupError("%s is not an SQLite 3 database" % path, KIND_CORRUPT)
    size = int.from_bytes(header[16:18], "big")
    size = 65536 if size == 1 else size
    if size < 512 or size & (size - 1):
        raise BackupError("%s has an invalid page size %d" % (path, size), KIND_CORRUPT)
    return size


def make_delta(base_path: str, target_path: str, delta_path: str, *, base_sha256: str | None = None,
               target_sha256: str | None = None) -> dict[str, Any]:
    """Write the pages of ``target_path`` that differ from ``base_path`` into ``delta_path``.

    ``base_sha256``/``target_sha256``: the files' checksums when already known (their
    manifests), else computed here. They only label the delta: the receiver checks its base
    against the first and the rebuilt file against the target's manifest.
    """
    page_size = page_size_of(target_path)
    if page_size_of(base_path) != page_size:
        raise BackupError("page sizes differ between %s and %s: no delta possible"
                          % (os.path.basename(base_path), os.path.basename(target_path)), KIND_BAD_INPUT)
    target_size = os.path.getsize(target_path)
    changed = 0
    packer = zlib.compressobj(DELTA_ZLIB_LEVEL)
    with open(base_path, "rb") as base, open(target_path, "rb") as target, \
            open(delta_path, "wb") as out:
        header = json.dumps({
            "base_sha256": base_sha256 or sha256_file(base_path),
            "target_sha256": target_sha256 or sha256_file(target_path),
            "target_size": target_size,
            "page_size": page_size,
        }).encode()
        out.write(DELTA_MAGIC + len(header).to_bytes(4, "big") + header)
        # Compare a block of pages at a time; look at single pages only in blocks that differ.
        block_size = page_size * max(1, DELTA_BLOCK_BYTES // page_size)
        page_no = 0
        while True:
            block = target.read(block_size)
            if not block:
                break
            old = base.read(block_size)
            if old != block:
                for offset in range(0, len(block), page_size):
                    page = block[offset:offset + page_size]
                    old_page = old[offset:offset + page_size]
                    if old_page != page:
                        record = _PAGE_NO.pack(page_no + offset // page_size) + xor_bytes(page, old_page)
                        out.write(packer.compress(record))
                        changed += 1
            page_no += -(-len(block) // page_size)
        out.write(packer.flush())
        out.flush()
        os.fsync(out.fileno())
    return {"pages_total": page_no, "pages_changed": changed, "delta_bytes": os.path.getsize(delta_path),
            "target_bytes": target_size, "page_size": page_size}


def xor_bytes(page: bytes, old_page: bytes) -> bytes:
    """``page`` XOR ``old_page`` (zero-extended to ``page``'s length); its own inverse."""
    size = len(page)
    old_page = old_page.ljust(size, b"\0")
    return (int.from_bytes(page, "big") ^ int.from_bytes(old_page, "big")).to_bytes(size, "big")


def delta_records(delta: Any, record_size: int, name: str) -> Iterator[bytes]:
    """The records of a delta's compressed body, at most one record's worth inflated at a time."""
    unpacker = zlib.decompressobj()
    pending = b""
    while not unpacker.eof:
        data = unpacker.unconsumed_tail or delta.read(1 << 16)
        if not data:
            raise BackupError("delta %s is truncated" % name, KIND_CORRUPT)
        try:
            pending += unpacker.decompress(data, record_size)
        except zlib.error as exc:
            raise BackupError("delta %s is corrupt: %s" % (name, exc), KIND_CORRUPT) from None
        while len(pending) >= record_size:
            yield pending[:record_size]
            pending = pending[record_size:]
    if pending or unpacker.unused_data or delta.read(1):
        raise BackupError("delta %s has bytes after its last page" % name, KIND_CORRUPT)


def apply_delta(base_path: str, delta_path: str, out_path: str) -> dict[str, Any]:
    """Rebuild the target from ``base_path`` + ``delta_path`` into ``out_path`` (new file).

    Every field of the delta is bounded before use (it comes from a host); the caller still
    checks the result's sha256 against the manifest: the checksum decides.
    """
    name = os.path.basename(delta_path)
    with open(delta_path, "rb") as delta:
        if delta.read(len(DELTA_MAGIC)) != DELTA_MAGIC:
            raise BackupError("%s is not a delta file (of this version)" % name, KIND_CORRUPT)
        header_len = int.from_bytes(delta.read(4), "big")
        if not 0 < header_len <= DELTA_HEADER_MAX:
            raise BackupError("delta header length %d is out of range" % header_len, KIND_CORRUPT)
        try:
            header = json.loads(delta.read(header_len).decode("utf-8"))
            page_size = int(header["page_size"])
            target_size = int(header["target_size"])
            base_sha256 = str(header["base_sha256"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            raise BackupError("delta header of %s is malformed" % name, KIND_CORRUPT) from None
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1) or target_size < 0 \
                or target_size % page_size:
            raise BackupError("delta header has an impossible page or file size", KIND_CORRUPT)
        if sha256_file(base_path) != base_sha256:
            raise BackupError("the delta was made against another base than %s" % os.path.basename(base_path),
                              KIND_CORRUPT)
        fd = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            changed = rebuild_from_delta(fd, base_path, delta, target_size, page_size, name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out_path)
            raise
        finally:
            os.close(fd)
    return {"pages_changed": changed, "target_bytes": target_size}


def rebuild_from_delta(fd: int, base_path: str, delta: Any, target_size: int, page_size: int, name: str) -> int:
    """Write the base's pages, then the delta's, into ``fd``; returns the pages changed."""
    # Start from the base's pages (cut or zero-extended to the target's length) ...
    with open(base_path, "rb") as base:
        copy_file_bytes(base.fileno(), fd, target_size)
    os.ftruncate(fd, target_size)
    # ... and turn the changed ones into the target's (page numbers strictly rising, so a
    # hostile delta cannot inflate to more than the file's pages).
    pages_total = target_size // page_size
    changed = 0
    last = -1
    for record in delta_records(delta, _PAGE_NO.size + page_size, name):
        (page_no,) = _PAGE_NO.unpack(record[:_PAGE_NO.size])
        if not last < page_no < pages_total:
            raise BackupError("delta names page %d out of order or beyond the file's %d pages"
                              % (page_no, pages_total), KIND_CORRUPT)
        last = page_no
        old_page = os.pread(fd, page_size, page_no * page_size)
        os.pwrite(fd, xor_bytes(record[_PAGE_NO.size:], old_page), page_no * page_size)
        changed += 1
    os.fsync(fd)
    return changed


# --------------------------------------------------------------------------- archive side


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


# --------------------------------------------------------------------------- pull progress

PROGRESS_DIR_ENV = "SQLITE_FLEET_PROGRESS_DIR"  # set by the controller's CLI: where the fetch reports
PROGRESS_INTERVAL = 0.25  # seconds between two looks at a growing file (a few reports a second at most)
PROGRESS_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.")


def progress_file_name(host: str, database: str) -> str:
    """``<host>--<database>.json``, every character but letters, digits, ``_`` and ``.`` as %XX."""
    def escaped(text: str) -> str:
        return "".join(c if c in PROGRESS_SAFE else "".join("%%%02X" % b for b in c.encode("utf-8"))
                       for c in str(text))
    return "%s--%s.json" % (escaped(host), escaped(database))


# Invariant: a progress file is always whole (temporary name, then rename) and never fails the transfer it reports.
class PullProgress:
    """While a transfer copies a file to ``dest``, a thread looks at its size every ``interval``
    seconds and, when it grew, rewrites ``<folder>/<host>--<database>.json``:
    ``{"host", "database", "file", "bytes", "total", "updated"}`` (``updated``: Unix time).
    ``from_env`` gives one that reports into $SQLITE_FLEET_PROGRESS_DIR, or one that does nothing.
    """

    def __init__(self, folder: str | None, host: str, database: str, dest: str, total: int,
                 interval: float = PROGRESS_INTERVAL) -> None:
        self.folder = folder
        self.host, self.database, self.dest, self.total = str(host), str(database), dest, total
        self.interval = interval
        self.path = os.path.join(folder, progress_file_name(self.host, self.database)) if folder else None
        self.file = os.path.basename(dest)
        for prefix in (TMP_PREFIX, "incoming."):  # the archive's incoming name: the backup's own name
            self.file = self.file[len(prefix):] if self.file.startswith(prefix) else self.file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: int | None = None

    @classmethod
    def from_env(cls, host: str, database: str, dest: str, total: int) -> PullProgress:
        folder = os.environ.get(PROGRESS_DIR_ENV)
        return cls(folder if folder and os.path.isabs(folder) else None, host, database, dest, total)

    def __enter__(self) -> PullProgress:
        if self.path:
            self.report()
            self._thread = threading.Thread(target=self._watch, name="pull-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self.report()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def report(self) -> None:
        """Write the progress file when the destination's size changed since the last report."""
        try:
            size = os.path.getsize(self.dest)
        except OSError:
            size = 0
        if size == self._last or not self.path:
            return
        text = json.dumps({"host": self.host, "database": self.database, "file": self.file,
                           "bytes": size, "total": self.total, "updated": round(time.time(), 3)})
        tmp = "%s.%s.tmp" % (self.path, secrets.token_hex(4))
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)  # type: ignore[arg-type]
            with open(tmp, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(tmp, self.path)
            self._last = size
        except OSError:  # no room, a file size limit, a folder gone: the transfer goes on unreported
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def read_pull_progress(folder: str) -> list[dict[str, Any]]:
    """Every whole progress file in ``folder`` (see PullProgress), sorted by host and database;
    a missing folder or an unreadable, half-written or foreign file is left out."""
    found = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for name in names:
        if not name.endswith(".json") or "--" not in name:
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as stream:
                entry = json.loads(stream.read(64 << 10))
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("host"), str) and isinstance(entry.get("database"), str) \
                and all(isinstance(entry.get(key), int) and not isinstance(entry.get(key), bool)
                        for key in ("bytes", "total")) and isinstance(entry.get("updated"), (int, float)):
            found.append(entry)
    return sorted(found, key=lambda e: (e["host"], e["database"]))


# --------------------------------------------------------------------------- host side of a pull

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


# A host's clock may have run ahead when it took a backup: a date later than "now" (beyond this
# skew between clocks) orders nothing. Such backups are reported by name, never picked by date.
CLOCK_SKEW = _dt.timedelta(minutes=5)


def dated_in_future(backups: Sequence[Mapping[str, Any]], now: _dt.datetime | None = None) -> list[Mapping[str, Any]]:
    """The backups whose ``created`` is later than ``now`` plus :data:`CLOCK_SKEW`."""
    horizon = (now or utcnow()) + CLOCK_SKEW
    return [b for b in backups if b["created"] > horizon]


def future_warning(future: Sequence[Mapping[str, Any]], now: _dt.datetime | None = None) -> str | None:
    """One line naming backups dated in the future, or None when there are none."""
    if not future:
        return None
    return ("%s dated after now (%s): the clock of the host was ahead when it was taken; never chosen by date "
            "(name the file to use it)" % (", ".join("%s (%s)" % (b["file"], iso_utc(b["created"])) for b in future),
                                           iso_utc(now or utcnow())))


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


# --------------------------------------------------------------------------- restore drills


def run_probe(conn: sqlite3.Connection, probe: Mapping[str, Any]) -> dict[str, Any]:
    """One probe query: ``{name, sql, expect}``, expect like ``"> 0"``, ``"== 3"`` or a value."""
    sql = probe.get("sql")
    if not is_select_only(sql):
        return {"name": probe.get("name") or sql, "ok": False, "error": "a probe must be one SELECT statement"}
    try:
        row = conn.execute(sql).fetchone()
    except sqlite3.Error as exc:
        return {"name": probe.get("name") or sql, "ok": False, "error": str(exc)}
    value = row[0] if row else None
    expect = probe.get("expect", "> 0")
    ok = compare(value, expect)
    return {"name": probe.get("name") or sql, "ok": ok, "value": value, "expect": expect}


def compare(value: Any, expect: Any) -> bool:
    if isinstance(expect, str):
        match = re.fullmatch(r"\s*(==|!=|>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*", expect)
        if match:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return False
            op, number = match.group(1), float(match.group(2))
            return {"==": value == number, "!=": value != number, ">=": value >= number, "<=": value <= number,
                    ">": value > number, "<": value < number}[op]
    return value == expect


def drill(backup_path: str, scratch_dir: str, probes: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Restore a backup into scratch space and prove it: checksum, integrity_check,
    foreign_key_check, row counts against the manifest, probe queries; timed."""
    started = time.monotonic()
    result: dict[str, Any] = {"backup": os.path.basename(backup_path), "path": backup_path, "ok": False,
                              "problems": [], "probes": []}
    checked = verify_backup(backup_path, integrity="quick", check_rows=False)
    manifest = checked["manifest"] or {}
    result.update(created=manifest.get("created"), size_bytes=manifest.get("size_bytes"),
                  verified_when_taken=manifest.get("verified"), label=manifest.get("label"))
    for problem in checked["problems"]:
        result["problems"].append(problem)
    if result["problems"]:
        result["seconds"] = round(time.monotonic() - started, 3)
        return result
    os.makedirs(scratch_dir, mode=0o700, exist_ok=True)
    scratch = os.path.join(scratch_dir, "%s%s.%s" % (TMP_PREFIX, result["backup"], secrets.token_hex(4)))
    try:
        shutil.copyfile(backup_path, scratch)
        restored = time.monotonic()
        conn = sqlite3.connect(scratch, isolation_level=None)
        try:
            tune_for_checks(conn, os.path.getsize(scratch))
            problems = run_integrity_check(conn, "full")
            result["problems"].extend("integrity: %s" % p for p in problems)
            if not problems:
                result["problems"].extend("foreign keys: %s" % p for p in run_foreign_key_check(conn))
                result["problems"].extend("rows: %s" % d for d in
                                          row_count_differences(manifest["tables"], table_row_counts(conn)))
                conn.execute("PRAGMA query_only=1")
                for probe in probes:
                    outcome = run_probe(conn, probe)
                    result["probes"].append(outcome)
                    if not outcome["ok"]:
                        result["problems"].append("probe %s: %s" % (outcome["name"], outcome.get("error") or
                                                                    "got %r, want %s" % (outcome.get("value"),
                                                                                         outcome["expect"])))
        finally:
            conn.close()
        result["restore_seconds"] = round(restored - started, 3)
    except (OSError, sqlite3.Error) as exc:
        result["problems"].append("drill failed: %s" % exc)
    finally:
        for leftover in (scratch, scratch + "-journal", scratch + "-wal", scratch + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    result["ok"] = not result["problems"]
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


KIND_STALE = "stale"  # a drill's kind when only the newest backups are too old
DRILL_STATUS_RANK = {"fail": 0, "stale": 1, "ok": 2}
DRILL_STATUS_WORD = {"fail": "FAILED", "stale": "STALE", "ok": "OK"}
DRILL_MAX_FALLBACKS = 3  # older verified backups drilled after a failed one, to name the last good
DRILL_SCRATCH_DIR = ".drill-scratch"  # under the archive by default: same filesystem, never taken for a host
DRILL_REPORT_MD = "drill-report.md"
DRILL_REPORT_HTML = "drill-report.html"
DRILL_TEMPLATES = ("report.md.j2", "report.html.j2")


# Invariant: a probe runs only when its SQL starts as one SELECT (or WITH) statement; the copy is query_only too.
def is_select_only(sql: Any) -> bool:
    """True when ``sql`` is a string that starts as a SELECT or WITH statement."""
    return isinstance(sql, str) and sql.lstrip().lower().startswith(("select", "with"))


def check_probes(probes: Any, where: str) -> dict[str, list[dict[str, Any]]] | None:
    """``{name: [{name, sql, expect}]}`` -> the same, checked; raises BackupError(bad_input)."""
    if probes is None:
        return None
    if not isinstance(probes, dict):
        raise BackupError("%s must map database names to lists of probes" % where, KIND_BAD_INPUT)
    clean: dict[str, list[dict[str, Any]]] = {}
    for database, items in probes.items():
        validate_name(database, "database name in %s" % where)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise BackupError("%s[%s] must be a list of {name, sql, expect}" % (where, database), KIND_BAD_INPUT)
        clean[database] = []
        for index, probe in enumerate(items):
            what = "%s[%s][%d]" % (where, database, index)
            if not isinstance(probe, dict):
                raise BackupError("%s must be a mapping with name, sql and expect" % what, KIND_BAD_INPUT)
            unknown = sorted(set(probe) - {"name", "sql", "expect"})
            if unknown:
                raise BackupError("%s has unknown keys %s (use name, sql, expect)" % (what, ", ".join(unknown)),
                                  KIND_BAD_INPUT)
            sql = probe.get("sql")
            if not is_select_only(sql):
                raise BackupError("%s: sql must be one SELECT statement, got %r" % (what, sql), KIND_BAD_INPUT)
            checked = {"name": str(probe.get("name") or sql.strip()), "sql": sql}
            if probe.get("expect") is not None:
                checked["expect"] = probe["expect"]
            clean[database].append(checked)
    return clean


def check_drill_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The sqlite_drill module's options, checked and completed; raises BackupError(bad_input)."""
    for number in ("max_age_hours", "unreached_days", "lock_timeout"):
        if params[number] < 0:
            raise BackupError("%s must be 0 or more, got %s" % (number, params[number]), KIND_BAD_INPUT)
    if params["trend_count"] < 1:
        raise BackupError("trend_count must be at least 1, got %d" % params["trend_count"], KIND_BAD_INPUT)
    options = dict(params)
    archive_dir = options["archive_dir"] = validate_abs_path(params["archive_dir"], "archive_dir")
    options["scratch_dir"] = validate_abs_path(params["scratch_dir"] or os.path.join(archive_dir, DRILL_SCRATCH_DIR),
                                               "scratch_dir")
    for path in ("drill_log", "report_dir"):
        options[path] = validate_abs_path(params[path], path) if params[path] else None
    options["hosts"] = [validate_name(host, "host") for host in params["hosts"]]
    options["databases"] = {}
    for host, names in params["databases"].items():
        if names is None:
            names = []
        if not isinstance(names, list):
            raise BackupError("databases[%s] must be a list of database names" % host, KIND_BAD_INPUT)
        options["databases"][validate_name(host, "host")] = [validate_name(n) for n in names]
    options["probes"] = check_probes(params["probes"], "probes")
    options["host_probes"] = {}
    for host, per_host in params["host_probes"].items():
        if per_host in (None, "", {}):  # the host sets none of its own: it uses probes
            continue
        options["host_probes"][validate_name(host, "host")] = check_probes(per_host, "host_probes[%s]" % host)
    if options["report_dir"]:
        templates_dir = params["templates_dir"]
        missing = [t for t in DRILL_TEMPLATES if not os.path.isfile(os.path.join(templates_dir, t))]
        if missing:
            raise BackupError("templates_dir %s lacks %s" % (templates_dir, ", ".join(missing)), KIND_BAD_INPUT)
    return options


def unused_probe_warnings(targets: Sequence[tuple[str, str | None, str]], options: Mapping[str, Any]) -> list[str]:
    """One warning per database that has probes set but is not drilled."""
    drilled_names = {name for _, name, _ in targets}
    probed = set(options["probes"]) | {n for p in options["host_probes"].values() for n in p}
    return ["probes are set for database %s, which is not in the archive of the hosts drilled" % name
            for name in sorted(probed) if name not in drilled_names]


def new_drill_entry(host: str, name: str | None, folder: str) -> dict[str, Any]:
    return {"host": host, "database": name, "folder": folder, "status": "fail", "ok": False, "stale": False,
            "backup": None, "created": None, "label": None, "size_bytes": None, "newest": None,
            "newest_created": None, "age_seconds": None, "verified": None, "count": 0, "sizes": [],
            "problems": [], "probes": [], "seconds": None, "restore_seconds": None, "last_good": None,
            "drill_ok": None, "warnings": []}


def newest_backup_named(listing: Mapping[str, Any]) -> tuple[_dt.datetime, str, Mapping[str, Any] | None] | None:
    """The newest file named like a backup, with or without a valid manifest: (created, file, backup|None);
    backups dated after now are left out (their date says nothing).

    Ordered by what the names say (UTC second, then sequence number), for valid and broken files alike: a
    manifest's microseconds would otherwise put a valid backup after a broken one taken later in that second."""
    future = {b["file"] for b in dated_in_future(listing["backups"])}
    candidates = [(b["created"], b["file"], b) for b in listing["backups"] if b["file"] not in future]
    for item in listing["invalid"]:
        parsed = parse_backup_filename(item["file"])
        if parsed:
            candidates.append((parsed["created"], item["file"], None))

    def named_order(candidate: tuple[Any, str, Any]) -> tuple[Any, int, str]:
        parsed = parse_backup_filename(candidate[1])
        return (parsed["created"], parsed["seq"], candidate[1])  # type: ignore[index]

    return max(candidates, key=named_order) if candidates else None


def examine_drill_folder(entry: dict[str, Any], listing: Mapping[str, Any], now: _dt.datetime,
                         trend_count: int) -> tuple[_dt.datetime, str, Mapping[str, Any] | None] | None:
    """Fill in what the listing tells: newest backup, its age, the size trend."""
    backups = listing["backups"]
    entry["count"] = len(backups)
    entry["sizes"] = [b["size_bytes"] for b in backups[:trend_count]][::-1]
    future = future_warning(dated_in_future(backups), now)
    if future:
        entry["warnings"].append(future)
    newest = newest_backup_named(listing)
    if newest is None:
        return None
    created, file, backup = newest
    entry.update(newest=file, newest_created=iso_utc(created), age_seconds=round((now - created).total_seconds(), 3),
                 verified=backup["verified"] if backup else None)
    return newest


def drill_database(entry: dict[str, Any], probes: Sequence[Mapping[str, Any]], scratch_dir: str,
                   now: _dt.datetime, trend_count: int, lock_timeout: float) -> dict[str, Any]:
    """Drill the newest verified backup of one archive folder (under its lock) and check its newest backup."""
    folder = entry["folder"]
    if entry["database"] is None:
        entry["problems"].append("the archive holds no database of %s (%s is missing or empty): never backed up "
                                 "or never pulled" % (entry["host"], folder))
        return entry
    if not os.path.isdir(folder):
        entry["problems"].append("no archive folder %s: %s was never backed up or never pulled"
                                 % (folder, entry["database"]))
        return entry
    with folder_lock(folder, timeout=lock_timeout):
        listing = list_backups(folder)
        newest = examine_drill_folder(entry, listing, now, trend_count)
        try:
            chosen = choose_backup(listing["backups"], now=now)
        except BackupError:
            chosen = None
            entry["problems"].append("no verified backup to drill in %s%s" % (
                folder, " (newest: %s)" % entry["newest"] if entry["newest"] else " (the folder holds no backup)"))
        if chosen is not None:
            outcome = drill_backup_safely(chosen, scratch_dir, probes)
            entry.update(backup=outcome["backup"], created=outcome.get("created"), label=outcome.get("label"),
                         size_bytes=outcome.get("size_bytes") or chosen["size_bytes"], probes=outcome["probes"],
                         seconds=outcome.get("seconds"), restore_seconds=outcome.get("restore_seconds"),
                         drill_ok=outcome["ok"])
            entry["problems"].extend("%s: %s" % (outcome["backup"], p) for p in outcome["problems"])
            if not outcome["ok"]:
                entry["last_good"] = last_good_backup(listing["backups"], chosen, scratch_dir, probes)
        if newest is not None and (chosen is None or newest[1] != chosen["file"]):
            # The newest backup is not the one drilled: flagged unverified, or without a valid manifest.
            try:
                checked = verify_backup(os.path.join(folder, newest[1]), integrity="full")
                problems = checked["problems"]
            except BackupError as exc:  # gone since the listing, not a regular file...
                problems = [str(exc)]
            entry["problems"].extend("newest backup %s: %s" % (newest[1], p) for p in problems)
    return entry


def drill_backup_safely(backup: Mapping[str, Any], scratch_dir: str,
                        probes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`drill` of a listed backup; one that went away since the listing is a failed drill."""
    try:
        return drill(backup["path"], scratch_dir, probes)
    except BackupError as exc:  # removed or replaced since the listing
        return {"backup": backup["file"], "ok": False, "problems": [str(exc)], "probes": []}


def last_good_backup(backups: Sequence[Mapping[str, Any]], failed: Mapping[str, Any], scratch_dir: str,
                     probes: Sequence[Mapping[str, Any]]) -> str | None:
    """The newest verified backup older than ``failed`` that passes its drill (at most DRILL_MAX_FALLBACKS tried)."""
    older = [b for b in backups if b["verified"] and (b["created"], b["file"]) < (failed["created"], failed["file"])]
    for backup in older[:DRILL_MAX_FALLBACKS]:
        if drill_backup_safely(backup, scratch_dir, probes)["ok"]:
            return backup["file"]
    return None


def settle_drill_entry(entry: dict[str, Any], max_age_hours: float) -> dict[str, Any]:
    """Set the entry's stale, ok and status from its problems and its newest backup's age."""
    entry["stale"] = entry["age_seconds"] is not None and entry["age_seconds"] > max_age_hours * 3600
    entry["ok"] = not entry["problems"]
    entry["status"] = "fail" if entry["problems"] else ("stale" if entry["stale"] else "ok")
    return entry


def unreached_hosts(entries: Sequence[Mapping[str, Any]], unreached_days: float) -> list[dict[str, Any]]:
    """Hosts whose newest backup of any database is older than ``unreached_days`` (or that have none)."""
    newest_per_host: dict[str, Any] = {}
    for entry in entries:
        current = newest_per_host.setdefault(entry["host"], None)
        if entry["age_seconds"] is not None and (current is None or entry["age_seconds"] < current["age_seconds"]):
            newest_per_host[entry["host"]] = entry
    unreached = []
    for host, entry in sorted(newest_per_host.items()):
        if entry is None:
            unreached.append({"host": host, "days": None, "newest": None, "newest_created": None})
        elif entry["age_seconds"] > unreached_days * 86400:
            unreached.append({"host": host, "days": round(entry["age_seconds"] / 86400, 1), "newest": entry["newest"],
                              "newest_created": entry["newest_created"]})
    return unreached


def drill_sort_key(entry: Mapping[str, Any]) -> tuple[int, str, str]:
    return (DRILL_STATUS_RANK[entry["status"]], entry["host"], entry["database"] or "")


def plan_drills(targets: Sequence[tuple[str, str | None, str]], options: Mapping[str, Any],
                now: _dt.datetime) -> dict[str, Any]:
    """Check mode: which backup each drill would use, and which newest backups are stale; nothing written."""
    plan: dict[str, Any] = {"would_drill": [], "lines": [], "stale": []}
    for host, name, folder in targets:
        listing = list_backups(folder) if name and os.path.isdir(folder) else {"backups": [], "invalid": []}
        entry = new_drill_entry(host, name, folder)
        examine_drill_folder(entry, listing, now, options["trend_count"])
        try:
            backup = choose_backup(listing["backups"])["file"]
        except BackupError:
            backup = None
        plan["would_drill"].append({"host": host, "database": name, "backup": backup})
        plan["lines"].append("%s %s: %s" % (host, name or "-", "would drill %s" % backup if backup else
                                            "would FAIL: no verified backup to drill"))
        if settle_drill_entry(entry, options["max_age_hours"])["stale"]:
            plan["stale"].append("%s/%s" % (host, name))
            plan["lines"][-1] += "; newest backup %s is older than %g h" % (entry["newest"], options["max_age_hours"])
    plan["msg"] = "would drill %s" % ", ".join(
        "%s/%s (%s)" % (w["host"], w["database"] or "-", w["backup"] or "no verified backup: would fail")
        for w in plan["would_drill"])
    return plan


def run_drills(targets: Sequence[tuple[str, str | None, str]], options: Mapping[str, Any],
               now: _dt.datetime) -> tuple[list[dict[str, Any]], list[str]]:
    """Drill every target (its host's probes, else the common ones): the entries, failures first, and warnings.
    A scratch folder made here is removed again (the drills remove their copies)."""
    entries, warnings = [], []
    scratch_dir = options["scratch_dir"]
    scratch_existed = os.path.isdir(scratch_dir)
    try:
        for host, name, folder in targets:
            probes = options["host_probes"].get(host, options["probes"]).get(name or "", [])
            entry = new_drill_entry(host, name, folder)
            try:
                drill_database(entry, probes, scratch_dir, now, options["trend_count"], options["lock_timeout"])
            except (BackupError, OSError, sqlite3.Error) as exc:  # a lock held too long, an unreadable folder
                entry["problems"].append("the drill of %s could not run: %s" % (folder, exc))
            entries.append(settle_drill_entry(entry, options["max_age_hours"]))
            warnings.extend("%s/%s: %s" % (host, name, warning) for warning in entry["warnings"])
    finally:
        if not scratch_existed:
            with contextlib.suppress(OSError):
                os.rmdir(scratch_dir)
    entries.sort(key=drill_sort_key)
    return entries, warnings


def drill_findings(entries: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> dict[str, Any]:
    """What the drills found, as sqlite_drill returns it: results, unreached hosts, lines, failed and stale."""
    unreached = unreached_hosts(entries, options["unreached_days"])
    lines = [drill_summary_line(e, options["max_age_hours"]) for e in entries]
    lines += [unreached_line(item, options["unreached_days"]) for item in unreached]
    return {"results": list(entries), "unreached": unreached, "lines": lines,
            "failed_drills": ["%s/%s" % (e["host"], e["database"] or "-") for e in entries if e["status"] == "fail"],
            "stale": ["%s/%s" % (e["host"], e["database"]) for e in entries if e["stale"]]}


def drill_log_line(entry: Mapping[str, Any], now: _dt.datetime, source: str = "archive") -> dict[str, Any]:
    """One line of the drill log (JSON Lines; sqlite_fleet_cli's history reads it back); ``source``:
    where the drilled backups came from (the archive, or a copy restored from the offsite repository)."""
    return {"time": iso_utc(now), "source": source, "host": entry["host"],
            "database": entry["database"], "backup": entry["backup"],
            "created": entry["created"], "age_seconds": entry["age_seconds"], "size_bytes": entry["size_bytes"],
            "status": entry["status"], "ok": entry["ok"], "stale": entry["stale"], "problems": entry["problems"],
            "probes": entry["probes"], "seconds": entry["seconds"], "restore_seconds": entry["restore_seconds"],
            "newest": entry["newest"], "last_good": entry["last_good"], "drill_ok": entry["drill_ok"]}


def drill_report_context(entries: Sequence[Mapping[str, Any]], findings: Mapping[str, Any], ignored: Sequence[str],
                         options: Mapping[str, Any], finished: _dt.datetime) -> dict[str, Any]:
    """What the drill report templates get (each entry with its size sparkline and trend word)."""
    counts = {status: sum(1 for e in entries if e["status"] == status) for status in DRILL_STATUS_RANK}
    overall = "fail" if counts["fail"] else ("stale" if counts["stale"] else "ok")
    return {"entries": [dict(e, spark=sparkline(e["sizes"]), trend=size_trend(e["sizes"])) for e in entries],
            "unreached": findings["unreached"], "ignored": ignored, "counts": counts,
            "overall": overall, "overall_word": DRILL_STATUS_WORD[overall], "status_word": DRILL_STATUS_WORD,
            "generated": iso_utc(finished), "archive_dir": options["archive_dir"], "drill_log": options["drill_log"],
            "fleet_report": fleet_report_link(options["archive_dir"], options["report_dir"]),
            "max_age_hours": "%g" % options["max_age_hours"],
            "unreached_days": "%g" % options["unreached_days"], "trend_count": options["trend_count"]}


def drill_failure(entries: Sequence[Mapping[str, Any]], max_age_hours: float,
                  where: str) -> tuple[str, str] | None:
    """(message, kind) when any drill failed (corrupt) or any newest backup is stale; None when all passed."""
    failed = [e for e in entries if e["status"] == "fail"]
    stale = [e for e in entries if e["stale"]]
    if not failed and not stale:
        return None
    parts = []
    if failed:
        parts.append("restore drill FAILED for %s" % "; ".join(
            "%s/%s: %s" % (e["host"], e["database"] or "-", "; ".join(e["problems"][:3])) for e in failed))
    if stale:
        parts.append("newest backup older than %g h: %s" % (max_age_hours, ", ".join(
            "%s/%s (%s, %s old)" % (e["host"], e["database"], e["newest"], human_age(e["age_seconds"]))
            for e in stale)))
    return "; ".join(parts) + (" (%s)" % where if where else ""), KIND_CORRUPT if failed else KIND_STALE


# --------------------------------------------------------------------------- presentation


def human_bytes(value: float | None) -> str:
    """``1536`` -> ``1.5 KiB`` (``-`` for None), for reports and summaries."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024
    return "%.1f GiB" % size


def human_age(seconds: float | None) -> str:
    """``5400`` -> ``1.5 h`` (``-`` for None), for reports and summaries."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "in the future"
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return "%.1f %s" % (seconds / span, unit)
    return "%d s" % seconds


FLEET_REPORT = "fleet-report.html"  # the fleet's history page, written into the archive by `sqlite-fleet report`


def human_time(iso: Any) -> str:
    """An ISO UTC time -> ``2026-11-22 03:00:00 UTC`` (``-`` when it is not one)."""
    moment = parse_iso_utc(iso)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def human_seconds(value: float | None) -> str:
    """``0.25`` -> ``250 ms``, ``3.5`` -> ``3.50 s`` (``-`` for None)."""
    if value is None:
        return "-"
    return "%d ms" % round(value * 1000) if value < 1 else "%.2f s" % value


def sparkline(sizes: Sequence[float], width: int = 120, height: int = 28, pad: int = 3) -> dict[str, Any] | None:
    """Polyline points of an inline SVG sparkline (numbers only), or None for fewer than two sizes."""
    if len(sizes) < 2:
        return None
    low, high = min(sizes), max(sizes)
    span = (high - low) or 1
    step = (width - 2 * pad) / (len(sizes) - 1)
    points = []
    for index, size in enumerate(sizes):
        x = pad + index * step
        y = height - pad - (size - low) * (height - 2 * pad) / span if high != low else height / 2
        points.append("%.1f,%.1f" % (x, y))
    return {"points": " ".join(points), "width": width, "height": height,
            "last": points[-1].split(",")}


def size_trend(sizes: Sequence[float]) -> str:
    """A word for the trend of the sizes (oldest first)."""
    if len(sizes) < 2:
        return "one backup" if sizes else "no backup"
    first, last = sizes[0], sizes[-1]
    if first == last:
        return "steady"
    change = (last - first) * 100.0 / first if first else 100.0
    return "%s %.1f%%" % ("grew" if last > first else "shrank", abs(change))


def markdown_text(value: Any) -> str:
    """Free text in a Markdown table cell: no column break, no raw HTML, one line. Readable as
    plain text too: only what could start markup is escaped (``<`` before a tag's first
    character, ``&`` before an entity's name), so ``> 0`` stays ``> 0``."""
    text = "" if value is None else str(value)
    for old, new in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("`", "\\`"), ("[", "\\["), ("]", "\\]"),
                     ("\r", " "), ("\n", " ")):
        text = text.replace(old, new)
    text = re.sub(r"&(?=#?[A-Za-z0-9]+;)", "&amp;", text)
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)
    return text


def drill_summary_line(entry: Mapping[str, Any], max_age_hours: float) -> str:
    """One line for one drilled database (failed: its problems and the last good backup)."""
    where = "%s %s" % (entry["host"], entry["database"] or "-")
    if entry["status"] == "fail":
        text = "%s: FAILED - %s" % (where, "; ".join(entry["problems"]))
        if entry["last_good"]:
            text += " (the newest backup that passes is %s)" % entry["last_good"]
        return text
    probes = entry["probes"]
    text = "%s: %s - drilled %s (%s, taken %s ago), restored in %s, drill %s, %s" % (
        where, DRILL_STATUS_WORD[entry["status"]], entry["backup"], human_bytes(entry["size_bytes"]),
        human_age(entry["age_seconds"]), human_seconds(entry["restore_seconds"]), human_seconds(entry["seconds"]),
        "%d/%d probes ok" % (sum(1 for p in probes if p.get("ok")), len(probes)) if probes else "no probes")
    if entry["stale"]:
        text += "; newest backup %s is older than %s h" % (entry["newest"], "%g" % max_age_hours)
    return text


def unreached_line(item: Mapping[str, Any], unreached_days: float) -> str:
    if item["days"] is None:
        return "%s: not reached: the archive holds no backup of it" % item["host"]
    return "%s: not reached for %g days (newest backup %s, over the %g-day limit)" % (
        item["host"], item["days"], item["newest"], unreached_days)


def fleet_report_link(archive_dir: str, report_dir: str) -> dict[str, Any]:
    """Where the drill report links to the fleet's history page: relative when both live in the archive."""
    page = os.path.join(archive_dir, FLEET_REPORT)
    archive = os.path.abspath(archive_dir)
    inside = os.path.commonpath([os.path.abspath(report_dir), archive]) == archive
    return {"href": os.path.relpath(page, report_dir) if inside else pathlib.Path(page).as_uri(),
            "exists": os.path.isfile(page)}
