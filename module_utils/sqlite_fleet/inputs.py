# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of what users pass in: names, labels, paths, timeouts, database files, identifiers.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

from .errors import KIND_BAD_INPUT, BackupError
from .names import LABEL_RE, NAME_RE

SQLITE_HEADER = b"SQLite format 3\x00"


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
