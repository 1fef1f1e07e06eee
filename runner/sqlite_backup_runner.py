#!/usr/bin/env python3
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sqlite-backup: the on-host runner, so a host keeps backing up when the controller is away.

provision.yml installs this file beside a copy of the core (the package ``sqlite_fleet/``) and a
config generated from the inventory; the host's cron runs it. It offers what the original
``backup_database.py`` offered, done with the same core as the Ansible modules:

    sqlite-backup backup [--db NAME] [--skip-checkpoint] [--cleanup [--keep-days N] [--keep-count N]] [--dry-run]
    sqlite-backup restore --db NAME [--backup latest|TIME|FILE] [--live] [--dry-run]
    sqlite-backup verify [--db NAME] [--all]
    sqlite-backup prune  [--db NAME] [--keep-days N] [--keep-count N] [--dry-run]
    sqlite-backup stats  [--db NAME]          (also: sqlite-backup --stats-only)
    sqlite-backup check-config
    sqlite-backup task --expect-core SHA256   (the controller's one-task backup: options as JSON on stdin)

Exit codes: 0 ok; 1 unexpected error; 2 bad input or configuration; 3 database or folder
locked; 4 not enough space; 5 corrupt or unverified (source or backup); 6 I/O error;
7 backup folder is not a mount point although the config requires one; 8 (task) refused: this
runner's core is not the one the controller expects, or the request was unreadable (nothing done).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# the core, installed beside this file (the package sqlite_fleet/)
from sqlite_fleet.backup_task import answer_task_request  # noqa: E402
from sqlite_fleet.catalog import list_backups  # noqa: E402
from sqlite_fleet.errors import (  # noqa: E402
    KIND_BAD_INPUT,
    KIND_CORRUPT,
    KIND_IO,
    KIND_LOCKED,
    KIND_NO_SPACE,
    BackupError,
)
from sqlite_fleet.files import resolve_owner, rotate_log, write_file_atomic  # noqa: E402
from sqlite_fleet.inputs import (  # noqa: E402
    validate_abs_path,
    validate_busy_timeout,
    validate_lock_timeout,
    validate_name,
)
from sqlite_fleet.names import CORE_VERSION, dated_in_future, future_warning  # noqa: E402
from sqlite_fleet.present import human_bytes  # noqa: E402
from sqlite_fleet.restore import choose_backup_in_folder, restore_backup  # noqa: E402
from sqlite_fleet.retention import (  # noqa: E402
    RETENTION_RULES,
    apply_retention,
    folder_stats,
    normalise_policy,
    resolve_timezone,
)
from sqlite_fleet.snapshots import snapshot  # noqa: E402
from sqlite_fleet.sqlitedb import CHECKPOINT_MODES, INTEGRITY_LEVELS, checkpoint, database_facts  # noqa: E402
from sqlite_fleet.verify import verify_backup  # noqa: E402

RUNNER_VERSION = CORE_VERSION
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3
EXIT_NO_SPACE = 4
EXIT_CORRUPT = 5
EXIT_IO = 6
EXIT_NOT_MOUNTED = 7
EXIT_BY_KIND = {
    KIND_BAD_INPUT: EXIT_BAD_INPUT,
    KIND_LOCKED: EXIT_LOCKED,
    KIND_NO_SPACE: EXIT_NO_SPACE,
    KIND_CORRUPT: EXIT_CORRUPT,
    KIND_IO: EXIT_IO,
}
KIND_NOT_MOUNTED = "not_mounted"
EXIT_BY_KIND[KIND_NOT_MOUNTED] = EXIT_NOT_MOUNTED

LOG_MAX_BYTES = 1 << 20
LOG_KEEP = 3
RETENTION_KEYS = RETENTION_RULES
DEFAULT_LOCK_TIMEOUT = 600.0
STATE_FILE = ".sqlite-backup-metrics.json"


# --------------------------------------------------------------------------- config


def load_config(path: str) -> dict[str, Any]:
    """The runner's JSON config (written by provision.yml), checked for shape."""
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        raise BackupError("config file %s does not exist (run provision.yml)" % path,
                          KIND_BAD_INPUT) from None
    except ValueError as exc:
        raise BackupError("config file %s is not valid JSON: %s" % (path, exc), KIND_BAD_INPUT) from None
    if not isinstance(config, dict):
        raise BackupError("config file %s must hold a JSON object" % path, KIND_BAD_INPUT)
    databases = config.get("databases")
    if not isinstance(databases, list) or not databases:
        raise BackupError("config file %s lists no databases" % path, KIND_BAD_INPUT)
    for db in databases:
        if not isinstance(db, dict) or "name" not in db or "path" not in db:
            raise BackupError("every database in %s needs a name and a path" % path, KIND_BAD_INPUT)
        validate_name(db["name"])
        validate_abs_path(db["path"], "database path of %s" % db["name"])
    names = [db["name"] for db in databases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BackupError("config file %s names database %s twice: each needs its own name (its backups "
                          "form one series)" % (path, ", ".join(twice)), KIND_BAD_INPUT)
    validate_abs_path(config.get("backup_dir"), "backup_dir")
    try:
        validate_lock_timeout(config.get("lock_timeout", DEFAULT_LOCK_TIMEOUT))
        validate_busy_timeout(config.get("busy_timeout_ms", 5000))
    except BackupError as exc:
        raise BackupError("%s in %s" % (exc, path), KIND_BAD_INPUT) from None
    return config


def lock_timeout_of(config: dict[str, Any]) -> float:
    """How long to wait for the backup folder's lock held by another run (seconds)."""
    return float(config.get("lock_timeout", DEFAULT_LOCK_TIMEOUT))


def select_databases(config: dict[str, Any], name: str | None) -> list[dict[str, Any]]:
    if name is None:
        return config["databases"]
    chosen = [db for db in config["databases"] if db["name"] == name]
    if not chosen:
        known = ", ".join(db["name"] for db in config["databases"])
        raise BackupError("no database named %r in the config (known: %s)" % (name, known), KIND_BAD_INPUT)
    return chosen


def retention_policy(config: dict[str, Any], db: dict[str, Any], keep_days: int | None,
                     keep_count: int | None) -> dict[str, Any]:
    """The config's policy (per-database overrides first); --keep-days/--keep-count win."""
    base = dict(config.get("retention") or {})
    base.update({k: v for k, v in (db.get("retention") or {}).items()})
    # per-item overrides as the inventory (and the sqlite_backup role) spells them
    # (YAML may hand them over as strings, which the Ansible modules accept too)
    base.update({k: int(db[k]) if isinstance(db[k], str) and db[k].isdigit() else db[k]
                 for k in RETENTION_KEYS if db.get(k) is not None})
    if keep_days is not None or keep_count is not None:
        # The original script's flags: a plain "younger than N days, at least N backups" policy.
        base = {k: 0 for k in RETENTION_KEYS} | {"keep_label_days": base.get("keep_label_days") or {}}
        base["keep_days"] = keep_days or 0
        base["keep_last"] = keep_count or 0
    return base


def require_mount(config: dict[str, Any]) -> None:
    """Refuse to write when the backup folder should be a mounted disk and is not."""
    if not config.get("require_mount"):
        return
    folder = config["backup_dir"]
    mount_point = config.get("mount_point") or folder
    if not os.path.ismount(mount_point):
        raise BackupError(
            "%s is not a mount point: the backup disk is missing, refusing to write to the SD card" % mount_point,
            KIND_NOT_MOUNTED,
        )


# --------------------------------------------------------------------------- metrics


def metric_labels(host: str, database: str) -> str:
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return '{host="%s",database="%s"}' % (esc(host), esc(database))


METRICS = (
    ("sqlite_backup_last_success_timestamp_seconds", "gauge", "Unix time of the last successful backup."),
    ("sqlite_backup_last_size_bytes", "gauge", "Size of the last successful backup in bytes."),
    ("sqlite_backup_last_duration_seconds", "gauge", "Duration of the last successful backup."),
    ("sqlite_backup_verified", "gauge", "1 when the newest backup passed its last verification, else 0."),
    ("sqlite_backup_last_run_timestamp_seconds", "gauge", "Unix time of the last run, successful or not."),
    ("sqlite_backup_last_run_success", "gauge", "1 when the last run succeeded, else 0."),
    ("sqlite_backup_count", "gauge", "Finished backups in the host's backup folder."),
)


def render_metrics(state: dict[str, dict[str, Any]], host: str) -> str:
    """Prometheus text exposition of every database's last known figures."""
    lines = []
    for metric, kind, help_text in METRICS:
        samples = [(db, values[metric]) for db, values in sorted(state.items()) if values.get(metric) is not None]
        if not samples:
            continue
        lines.append("# HELP %s %s" % (metric, help_text))
        lines.append("# TYPE %s %s" % (metric, kind))
        for db, value in samples:
            lines.append("%s%s %s" % (metric, metric_labels(host, db), format_number(value)))
    return "\n".join(lines) + "\n"


def format_number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def update_metrics(config: dict[str, Any], host: str, database: str, values: dict[str, Any]) -> str | None:
    """Merge one database's figures into the state and rewrite the .prom file atomically.

    The cron lines of a host's databases start in the same minute: the read-merge-write of
    the state runs under a lock of its own, or one run's figures overwrite the other's.
    Metrics never fail a run: a problem with them is reported on stderr and in the log.
    """
    metrics_dir = config.get("metrics_dir")
    if not metrics_dir:
        return None
    state_dir = config.get("state_dir") or config["backup_dir"]
    state_path = os.path.join(state_dir, STATE_FILE)
    prom_path = os.path.join(metrics_dir, config.get("metrics_file") or "sqlite_backup.prom")
    try:
        os.makedirs(metrics_dir, exist_ok=True)
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        lock_fd = os.open(state_path + ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            state: dict[str, dict[str, Any]] = {}
            with contextlib.suppress(FileNotFoundError, ValueError):
                with open(state_path, encoding="utf-8") as handle:
                    loaded = json.load(handle)
                if isinstance(loaded, dict):
                    state = {k: v for k, v in loaded.items() if isinstance(v, dict)}
            known = {db["name"] for db in config["databases"]}
            state = {k: v for k, v in state.items() if k in known}  # a removed database drops out
            state.setdefault(database, {}).update(values)
            # Not write_file_atomic: its temporary names are what a backup run holding the
            # folder's lock removes as leftovers, and this write does not hold that lock.
            tmp_path = "%s.%d.tmp" % (state_path, os.getpid())
            with open(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                handle.write(json.dumps(state, sort_keys=True).encode())
            os.replace(tmp_path, state_path)
            write_file_atomic(prom_path, render_metrics(state, host).encode(), 0o644)
        finally:
            os.close(lock_fd)
    except OSError as exc:
        message = "metrics not updated (%s): %s" % (prom_path, exc)
        print(message, file=sys.stderr)
        with contextlib.suppress(OSError):
            log_line(config, message)
        return None
    return prom_path


def ping(config: dict[str, Any], event: str) -> None:
    """healthchecks.io-style ping: <url>/start, <url> on success, <url>/fail. Never fatal."""
    url = config.get("healthchecks_url")
    if not url:
        return
    target = url.rstrip("/") + {"start": "/start", "success": "", "fail": "/fail"}[event]
    with contextlib.suppress(Exception):
        urllib.request.urlopen(target, timeout=10).close()  # noqa: S310 - operator-configured URL


# --------------------------------------------------------------------------- logging


def log_line(config: dict[str, Any], message: str) -> None:
    path = config.get("log_file")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = "%s %s\n" % (stamp, message)
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rotate_log(path, LOG_MAX_BYTES, LOG_KEEP)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)


# --------------------------------------------------------------------------- commands


def host_name(config: dict[str, Any]) -> str:
    return config.get("host") or socket.gethostname()


def taken_summary(snap: dict[str, Any]) -> str:
    """One line for a backup just taken (the file is named beside it in the log line)."""
    if not snap["verified"]:
        return snap["msg"]
    return "taken and verified (%s in %.1f s)" % (human_bytes(snap["manifest"]["size_bytes"]),
                                                   snap["manifest"]["duration_seconds"])


def cmd_backup(config: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    require_mount(config)
    if args.dry_run:
        return backup_dry_run(config, args)
    results = []
    for db in select_databases(config, args.db):
        started = time.time()
        record: dict[str, Any] = {"database": db["name"], "command": "backup"}
        try:
            if args.cleanup:  # bad retention input must fail before a backup is taken, not after
                policy = retention_policy(config, db, args.keep_days, args.keep_count)
                normalise_policy(policy)
                resolve_timezone(config.get("timezone"))
            mode = args.checkpoint or db.get("checkpoint") or config.get("checkpoint")
            if args.skip_checkpoint:
                mode = None
            if mode and mode != "none":
                record["checkpoint"] = checkpoint(db["path"], mode, int(config.get("busy_timeout_ms", 5000)))
            snap = snapshot(
                db["path"], config["backup_dir"], db["name"],
                label=args.label, method=db.get("method") or config.get("method", "pinned_copy"),
                integrity=db.get("integrity") or config.get("integrity", "quick"),
                busy_timeout_ms=int(config.get("busy_timeout_ms", 5000)),
                owner=db.get("owner") or config.get("owner") or None,
                group=db.get("group") or config.get("group") or None,
                source_host=host_name(config),
                lock_timeout=lock_timeout_of(config),
                extra_manifest={"runner": {"version": RUNNER_VERSION, "made_by": "on-host runner"}},
            )
            record.update(ok=snap["verified"], file=snap["file"], size_bytes=snap["manifest"]["size_bytes"],
                          duration_seconds=snap["manifest"]["duration_seconds"], msg=taken_summary(snap))
            if not snap["verified"]:
                record["kind"] = KIND_CORRUPT
            if args.cleanup:
                pruned = apply_retention(config["backup_dir"], db["name"], policy,
                                         timezone=config.get("timezone"), lock_timeout=lock_timeout_of(config),
                                         trusted=[snap["file"]] if snap["verified"] else [])
                record["deleted"] = pruned["deleted"]
                if pruned["flagged"]:
                    record["msg"] += "; %s" % pruned["msg"].split("; ", 1)[1]
            stats = folder_stats(config["backup_dir"], db["name"])
            values = {"sqlite_backup_last_run_timestamp_seconds": round(time.time(), 3),
                      "sqlite_backup_last_run_success": bool(snap["verified"]),
                      "sqlite_backup_verified": bool(snap["verified"]),
                      "sqlite_backup_count": stats["count"]}
            if snap["verified"]:
                values.update({"sqlite_backup_last_success_timestamp_seconds": round(time.time(), 3),
                               "sqlite_backup_last_size_bytes": snap["manifest"]["size_bytes"],
                               "sqlite_backup_last_duration_seconds": snap["manifest"]["duration_seconds"]})
            update_metrics(config, host_name(config), db["name"], values)
        except BackupError as exc:
            record.update(ok=False, kind=exc.kind, msg=str(exc))
            update_metrics(config, host_name(config), db["name"],
                           {"sqlite_backup_last_run_timestamp_seconds": round(time.time(), 3),
                            "sqlite_backup_last_run_success": False})
        record["seconds"] = round(time.time() - started, 3)
        results.append(record)
    return results


def backup_dry_run(config: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """What ``backup`` would do: the database and folder checked, nothing written, no checkpoint,
    no metrics; with --cleanup the backups the prune would delete (before this run's backup)."""
    results = []
    for db in select_databases(config, args.db):
        record: dict[str, Any] = {"database": db["name"], "command": "backup", "dry_run": True}
        try:
            policy = retention_policy(config, db, args.keep_days, args.keep_count) if args.cleanup else None
            if policy is not None:
                normalise_policy(policy)
                resolve_timezone(config.get("timezone"))
            snap = snapshot(db["path"], config["backup_dir"], db["name"], label=args.label,
                            method=db.get("method") or config.get("method", "pinned_copy"),
                            integrity=db.get("integrity") or config.get("integrity", "quick"),
                            owner=db.get("owner") or config.get("owner") or None,
                            group=db.get("group") or config.get("group") or None, check_mode=True)
            record.update(ok=True, file=snap["file"], msg=snap["msg"])
            if policy is not None and os.path.isdir(config["backup_dir"]):
                pruned = apply_retention(config["backup_dir"], db["name"], policy,
                                         timezone=config.get("timezone"), check_mode=True,
                                         lock_timeout=lock_timeout_of(config))
                record["deleted"] = pruned["deleted"]
                record["msg"] += "; then the prune: %s" % pruned["msg"]
        except BackupError as exc:
            record.update(ok=False, kind=exc.kind, msg=str(exc))
        results.append(record)
    return results


def cmd_restore(config: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Restore a database of this host from its own backup folder (the controller away): the
    newest verified backup, one taken at or before a time, or one by file name. The app must be
    stopped (refused while a process holds the database) unless --live; a pre-restore safety
    backup of the database as it was goes into the backup folder first."""
    if args.db is None and len(config["databases"]) > 1:
        raise BackupError("restore needs --db: this host has %s" % ", ".join(
            db["name"] for db in config["databases"]), KIND_BAD_INPUT)
    (db,) = select_databases(config, args.db or config["databases"][0]["name"])
    record: dict[str, Any] = {"database": db["name"], "command": "restore", "dry_run": args.dry_run}
    chosen, listing = choose_backup_in_folder(config["backup_dir"], db["name"], args.backup)
    future = future_warning(dated_in_future(listing["backups"]))
    if future:
        record["warning"] = future
        print("warning: %s" % future, file=sys.stderr)
    target = db["path"]
    new_owner = None
    if not os.path.lexists(target) and os.path.isdir(os.path.dirname(target)):
        new_owner = resolve_owner(None, None, os.stat(os.path.dirname(target)))
    done = restore_backup(chosen["path"], target, mode="live" if args.live else "replace",
                          safety_dir=config["backup_dir"], safety_name=db["name"],
                          busy_timeout_ms=int(config.get("busy_timeout_ms", 5000)),
                          check_mode=args.dry_run, source_host=host_name(config), new_owner=new_owner)
    record.update(ok=True, file=chosen["file"], target=target, removed=done["removed"],
                  safety_backup=done.get("safety_backup"), msg=done["msg"] + (
                      "; the database as it was is in %s" % os.path.basename(done["safety_backup"])
                      if done.get("safety_backup") else ""))
    return [record]


def cmd_verify(config: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for db in select_databases(config, args.db):
        listing = list_backups(config["backup_dir"], db["name"])
        chosen = listing["backups"] if args.all else listing["backups"][:1]
        if not chosen:
            results.append({"database": db["name"], "command": "verify", "ok": False, "kind": KIND_BAD_INPUT,
                            "msg": "no backup of %s in %s" % (db["name"], config["backup_dir"])})
            continue
        newest_ok = False
        for index, backup in enumerate(chosen):
            outcome = verify_backup(backup["path"], integrity=args.integrity)
            results.append({"database": db["name"], "command": "verify", "file": backup["file"],
                            "ok": outcome["ok"], "kind": None if outcome["ok"] else KIND_CORRUPT,
                            "msg": "ok" if outcome["ok"] else "; ".join(outcome["problems"])})
            if index == 0:
                newest_ok = bool(outcome["ok"])
        if args.all:
            for item in listing["invalid"]:
                results.append({"database": db["name"], "command": "verify", "file": item["file"], "ok": False,
                                "kind": KIND_CORRUPT, "msg": item["why"]})
        update_metrics(config, host_name(config), db["name"], {"sqlite_backup_verified": bool(newest_ok)})
    return results


def cmd_prune(config: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for db in select_databases(config, args.db):
        policy = retention_policy(config, db, args.keep_days, args.keep_count)
        pruned = apply_retention(config["backup_dir"], db["name"], policy, timezone=config.get("timezone"),
                                 check_mode=args.dry_run, lock_timeout=lock_timeout_of(config))
        results.append({"database": db["name"], "command": "prune", "ok": True, "deleted": pruned["deleted"],
                        "kept": pruned["kept"], "dry_run": args.dry_run, "msg": pruned["msg"]})
    return results


def cmd_stats(config: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for db in select_databases(config, args.db):
        record: dict[str, Any] = {"database": db["name"], "command": "stats", "ok": True,
                                  "backups": folder_stats(config["backup_dir"], db["name"])}
        try:
            record["facts"] = database_facts(db["path"])
        except BackupError as exc:
            record.update(ok=False, kind=exc.kind, msg=str(exc))
        results.append(record)
    return results


def cmd_check_config(config: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The config loaded: say what would be backed up where (provision.yml runs this)."""
    for db in config["databases"]:
        try:
            normalise_policy(retention_policy(config, db, None, None))
        except BackupError as exc:
            raise BackupError("retention of %s: %s" % (db["name"], exc), exc.kind) from None
    resolve_timezone(config.get("timezone"))
    return [{"database": db["name"], "command": "check-config", "ok": True,
             "msg": "%s -> %s" % (db["path"], config["backup_dir"])} for db in config["databases"]]


COMMANDS = {"backup": cmd_backup, "restore": cmd_restore, "verify": cmd_verify, "prune": cmd_prune, "stats": cmd_stats,
            "check-config": cmd_check_config}


# --------------------------------------------------------------------------- output


def human_line(record: dict[str, Any]) -> str:
    status = "ok" if record.get("ok") else "FAILED"
    if record["command"] == "stats" and "backups" in record:
        b = record["backups"]
        f = record.get("facts") or {}
        return ("%s: %s backups, %s bytes, newest %s (%.0f s old), oldest %s; database %s bytes, WAL %s bytes, "
                "%s mode, %s tables" % (record["database"], b["count"], b["total_bytes"], b["newest"],
                                        b["newest_age_seconds"] or 0, b["oldest"], f.get("size_bytes"),
                                        f.get("wal_bytes"), f.get("journal_mode"), f.get("table_count"))
                + ("" if record.get("ok") else " FAILED: %s" % record.get("msg")))
    # the file, then what happened to it (a message that names the file already stands alone)
    parts = (record.get("msg"),) if record.get("file") and record["file"] in str(record.get("msg")) else \
        (record.get("file"), record.get("msg"))
    detail = " ".join(str(part) for part in parts if part)
    return ("%s %s %s: %s" % (record["command"], record["database"], status, detail)).rstrip()


def exit_code(results: list[dict[str, Any]]) -> int:
    codes = [EXIT_BY_KIND.get(r.get("kind"), EXIT_UNEXPECTED) for r in results if not r.get("ok")]
    return max(codes) if codes else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqlite-backup",
        description="Consistent online backups of this host's SQLite databases (the on-host runner of "
                    "sqlite-fleet-backup).",
        epilog="exit codes: 0 ok, 1 unexpected error, 2 bad input or config, 3 locked, 4 not enough space, "
               "5 corrupt or unverified, 6 I/O error, 7 backup folder not mounted, 8 task refused (another core)",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--stats-only", action="store_true", help="show statistics only (same as 'stats')")
    parser.add_argument("--version", action="version", version="%(prog)s " + RUNNER_VERSION)
    # --config and --json are accepted after the command too (as cron lines tend to put them).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print results as JSON")
    sub = parser.add_subparsers(dest="command")

    backup = sub.add_parser("backup", parents=[common], help="snapshot, verify, optionally prune")
    backup.add_argument("--db", help="only this database (default: all in the config)")
    backup.add_argument("--skip-checkpoint", action="store_true",
                        help="never checkpoint first (the default unless the config asks for one)")
    backup.add_argument("--checkpoint", choices=list(CHECKPOINT_MODES), help="checkpoint first in this mode")
    backup.add_argument("--label", help="label recorded in the manifest (e.g. pre-upgrade)")
    backup.add_argument("--cleanup", action="store_true", help="prune by the retention policy afterwards")
    backup.add_argument("--keep-days", type=non_negative, help="with --cleanup: keep backups younger than N days")
    backup.add_argument("--keep-count", type=non_negative, help="with --cleanup: keep at least the N newest")
    backup.add_argument("--dry-run", action="store_true",
                        help="check and show what would be done; write nothing (no checkpoint, no metrics)")

    restore = sub.add_parser("restore", parents=[common],
                             help="restore a database from this host's backups (the app stopped, or --live)")
    restore.add_argument("--db", help="the database (required when the config has several)")
    restore.add_argument("--backup", default="latest",
                         help="latest (default: the newest verified backup), a time YYYYMMDD_HHMMSS or ISO 8601 "
                              "(UTC when no zone is given: the newest verified backup taken at or before it), or "
                              "a backup file name")
    restore.add_argument("--live", action="store_true",
                         help="write into the database through SQLite while the app runs (default: replace the "
                              "file, refused while a process holds it)")
    restore.add_argument("--dry-run", action="store_true", help="choose and verify, show the plan, change nothing")

    verify = sub.add_parser("verify", parents=[common], help="check the newest (or every) backup")
    verify.add_argument("--db")
    verify.add_argument("--all", action="store_true", help="every backup, not only the newest")
    verify.add_argument("--integrity", choices=list(INTEGRITY_LEVELS), default="full")

    prune = sub.add_parser("prune", parents=[common], help="apply the retention policy")
    prune.add_argument("--db")
    prune.add_argument("--keep-days", type=non_negative)
    prune.add_argument("--keep-count", type=non_negative)
    prune.add_argument("--dry-run", action="store_true", help="show what would be deleted")

    stats = sub.add_parser("stats", parents=[common], help="database and backup statistics")
    stats.add_argument("--db")

    sub.add_parser("check-config", parents=[common], help="load the config and list its databases")

    task = sub.add_parser("task", help="the controller's one-task backup: the sqlite_backup module's options as "
                                       "JSON on stdin, the result as JSON on stdout (no config read)")
    task.add_argument("--expect-core", required=True, metavar="SHA256",
                      help="refuse (exit 8, nothing done) unless this runner's core_sha256 is this")
    return parser


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more, got %d" % value)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stats_only:
        args.command, args.db = "stats", getattr(args, "db", None)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "task":
        code, reply = answer_task_request(sys.stdin.read(), args.expect_core)
        print(json.dumps(reply, sort_keys=True, default=str))
        return code
    config: dict[str, Any] = {}
    try:
        config = load_config(args.config)
        if args.command == "backup" and not args.dry_run:
            ping(config, "start")
        results = COMMANDS[args.command](config, args)
    except BackupError as exc:
        results = [{"command": args.command, "database": getattr(args, "db", None) or "-", "ok": False,
                    "kind": exc.kind, "msg": str(exc)}]
    except Exception as exc:  # the cron log must say what happened, not show a traceback
        results = [{"command": args.command, "database": getattr(args, "db", None) or "-", "ok": False,
                    "kind": None, "msg": "unexpected error: %s: %s" % (type(exc).__name__, exc)}]
    code = exit_code(results)
    if args.command == "backup" and config and not args.dry_run:
        ping(config, "success" if code == EXIT_OK else "fail")
    for record in results:
        if config:
            log_line(config, human_line(record))
    if args.json:
        print(json.dumps({"ok": code == EXIT_OK, "exit_code": code, "results": results}, indent=2, sort_keys=True,
                         default=str))
    else:
        for record in results:
            print(human_line(record), file=sys.stdout if record.get("ok") else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
