# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run record (format_version 2, docs/cli.md): built from the fold, secrets left out, written
atomically as ``<runs folder>/<run_id>.json`` (0600 in a 0700 folder)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from .events import Fold
from .paths import core

FORMAT_VERSION = 2
# An -e value naming any of these (in a name or a value) never reaches a record, an artifact or argv.
SECRET_WORDS = re.compile(r"password|passwd|token|secret|key|url", re.IGNORECASE)
REDACTED = "<redacted>"
EXTRA_VARS_FLAGS = ("-e", "--extra-vars")

# A record's file name: its run_id (UTC start, 6 hex) and .json; nothing else in the folder is pruned.
RECORD_NAME = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{6}\.json$")
DEFAULT_KEEP_DAYS = 400

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = {"ok": EXIT_OK, "failed": EXIT_FAILED, "bad_input": EXIT_BAD_INPUT, "unreachable": EXIT_UNREACHABLE,
              "interrupted": EXIT_INTERRUPTED}


def utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(started: dt.datetime) -> str:
    """UTC start + 6 hex: sorts by time, unique enough for one controller."""
    return "%s-%s" % (started.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"), secrets.token_hex(3))


def is_secret(extra_vars: str) -> bool:
    """An -e value is secret when any name or value in it looks like one (a file reference never is)."""
    return not extra_vars.startswith("@") and bool(SECRET_WORDS.search(extra_vars))


def split_extra_vars(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """argv as (argument, the -e value it carries or None); ``-e V``, ``-eV``, ``--extra-vars=V`` alike."""
    pairs: list[tuple[str, str | None]] = []
    index = 0
    while index < len(argv):
        argument = argv[index]
        if argument in EXTRA_VARS_FLAGS and index + 1 < len(argv):
            pairs.append((argument, None))
            pairs.append((argv[index + 1], argv[index + 1]))
            index += 2
            continue
        if argument.startswith("--extra-vars="):
            pairs.append((argument, argument.split("=", 1)[1]))
        elif argument.startswith("-e") and not argument.startswith("--") and len(argument) > 2:
            pairs.append((argument, argument[2:]))
        else:
            pairs.append((argument, None))
        index += 1
    return pairs


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with every secret -e value replaced: ``-e <redacted>``."""
    redacted = []
    for argument, value in split_extra_vars(argv):
        if value is not None and is_secret(value):
            argument = REDACTED if argument == value else argument[: len(argument) - len(value)] + REDACTED
        redacted.append(argument)
    return redacted


def outcome_of(fold: Fold, rc: int | None, interrupted: bool = False) -> str:
    """The run's outcome (and so its exit code): interrupted > bad input > failed > unreachable > ok."""
    if interrupted:
        return "interrupted"
    if fold.bad_input:
        return "bad_input"
    rows = list(fold.hosts.values())
    if any(row["outcome"] == "failed" for row in rows):
        return "failed"
    if fold.message or (fold.offsite or {}).get("outcome") == "failed":
        return "failed"
    if any(row["outcome"] == "unreachable" for row in rows):
        return "unreachable"
    if rc not in (0, None):
        # Ansible failed before any host reported: a playbook, inventory or option it refused
        return "bad_input" if not any(row["outcome"] in ("ok", "failed") for row in rows) else "failed"
    return "ok"


def build_record(fold: Fold, *, run_id: str, command: str | None, playbook: str, argv: Sequence[str], via: str,
                 inventory: Any, limit: str | None, check_mode: bool, started: dt.datetime, ended: dt.datetime,
                 outcome: str, message: str | None = None) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "command": command or fold.run.get("command"),
        "playbook": playbook,
        "argv": redact_argv(argv),
        "via": via,
        "inventory": inventory,
        "limit": limit,
        "check_mode": check_mode,
        "started": utc_text(started),
        "ended": utc_text(ended),
        "duration_seconds": round((ended - started).total_seconds(), 1),
        "exit_code": EXIT_CODES[outcome],
        "outcome": outcome,
        "message": fold.message or message,
        "hosts": {name: fold.hosts[name] for name in sorted(fold.hosts)},
        "offsite": fold.offsite,
    }


def runs_folder(fold: Fold) -> str | None:
    """Where the guard said the records go (``<sqlite_archive_dir>/runs``); None before the guard ran."""
    folder = fold.run.get("runs_dir")
    return folder if isinstance(folder, str) and os.path.isabs(folder) else None


def keep_days_of(fold: Fold) -> tuple[int, str | None]:
    """The days of records to keep (sqlite_archive_run_keep_days, through the guard; 0 keeps all), and
    the one-line reason when the value is not a whole number of days 0 or more (then all are kept)."""
    value = fold.run.get("runs_keep_days", DEFAULT_KEEP_DAYS)
    text = str(value).strip()
    if not isinstance(value, bool) and text.isdigit():
        return int(text), None
    return 0, ("run records are all kept: sqlite_archive_run_keep_days must be a whole number of days, 0 or "
               "more (got %r)" % (value,))


# Only records older than keep_days go, never the newest one: a fleet that runs rarely keeps its last word.
def prune_records(folder: str, keep_days: int, now: dt.datetime) -> list[str]:
    if keep_days <= 0:
        return []
    cutoff = now.astimezone(dt.timezone.utc) - dt.timedelta(days=keep_days)
    named = sorted((match.group(1), name) for name in os.listdir(folder) if (match := RECORD_NAME.match(name)))
    removed = []
    for started, name in named[:-1]:
        if dt.datetime.strptime(started, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc) < cutoff:
            os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed


def file_record(record: Mapping[str, Any], fold: Fold, now: dt.datetime) -> tuple[str | None, list[str]]:
    """The record into the runs folder the guard named, then (not in check mode) the records older
    than the days kept removed: its path (None without a folder) and the summary's lines about it."""
    folder = runs_folder(fold)
    if not folder:
        return None, []
    path = write_record(record, folder)
    keep_days, problem = keep_days_of(fold)
    lines = ["record: %s" % path] + ([problem] if problem else [])
    removed = [] if record.get("check_mode") else prune_records(folder, keep_days, now)
    if removed:
        lines.append("removed %d run record(s) older than %d days from %s" % (len(removed), keep_days, folder))
    return path, lines


def write_record(record: Mapping[str, Any], folder: str) -> str:
    """Atomically: a temporary name, then the rename; 0600 in a 0700 folder."""
    sqlite_fleet = core()
    for level in (os.path.dirname(folder), folder):  # the archive itself first: private, as the pull makes it
        sqlite_fleet.ensure_private_dir(level, None)
    path = os.path.join(folder, "%s.json" % record["run_id"])
    sqlite_fleet.write_file_atomic(path, (json.dumps(record, indent=2, sort_keys=False) + "\n").encode())
    return path
