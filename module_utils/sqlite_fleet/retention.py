# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention: the policy, the pure selection, the prune under the lock, folder statistics.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .catalog import FLAG_CHECKSUM, checksum_problem, flag_unverified, list_backups, remove_unfinished
from .errors import KIND_BAD_INPUT, BackupError
from .files import folder_lock, fsync_path
from .inputs import RETENTION_DAYS_MAX, validate_abs_path, validate_label, validate_name
from .names import iso_utc, sidecar_paths, utcnow

RETENTION_RULES = ("keep_last", "keep_days", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def retention_options() -> dict[str, dict[str, Any]]:
    """The retention policy's options as the modules take them (an Ansible argument spec)."""
    options: dict[str, dict[str, Any]] = {rule: {"type": "int", "default": 0} for rule in RETENTION_RULES}
    options["keep_label_days"] = {"type": "dict", "default": {"pre-upgrade": 30}}
    options["timezone"] = {"type": "str", "default": "local"}
    return options


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
