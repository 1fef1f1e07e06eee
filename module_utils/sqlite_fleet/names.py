# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names the core gives and reads: backup file names, UTC times, hidden files, the pending marker.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

TOOL_NAME = "sqlite-fleet-backup"
CORE_VERSION = "0.1.0"
FORMAT_VERSION = 1

LOCK_FILE = ".sqlite-backup.lock"
TMP_PREFIX = ".sqlite-backup-tmp."
PENDING_SUFFIX = ".pending"
INCOMING_PREFIX = TMP_PREFIX + "incoming."  # a pulled file before its import: <archive>/<host>/<name>/<this><file>
MANIFEST_MAX_BYTES = 1 << 20  # a manifest is a few KiB; anything huge is hostile or broken


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BACKUP_FILE_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)_backup_(?P<date>\d{8})_(?P<time>\d{6})(?:_(?P<seq>[1-9]\d{0,5}))?\.db$"
)


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


# --------------------------------------------------------------------------- restore

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
