# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Core of sqlite-fleet-backup: consistent online snapshots of live SQLite databases.

The parts, bottom up (a part imports only from the parts above it):

- ``errors``: The kinds of failure (the runner's exit codes) and BackupError.
- ``names``: Names the core gives and reads: backup file names, UTC times, hidden files, the pending marker.
- ``inputs``: Checks of what users pass in: names, labels, paths, timeouts, database files, identifiers.
- ``files``: Files and folders: fsync, hashing, atomic writes, owners, private folders, free space, the
  folder lock, the kernel copy, work in the background.
- ``progress``: Progress of a pull: the files the controller's fetch writes while it copies, and their reader.
- ``sqlitedb``: SQLite connections, checks, facts and checkpoints.
- ``catalog``: Manifests, .sha256 sidecars, the listing of a backup folder, unfinished files, and the commit
  protocol shared by snapshots and archive imports.
- ``pinned``: The pinned copy: the database file's bytes copied in the kernel while a read transaction pins
  the WAL, with that snapshot's WAL pages laid over them.
- ``snapshots``: Taking a backup: the copy (pinned copy, backup API or VACUUM INTO), its checks and its commit.
- ``verify``: Verifying finished backups: checksum, integrity, foreign keys and row counts against the
  manifest.
- ``retention``: Retention: the policy, the pure selection, the prune under the lock, folder statistics.
- ``delta``: Delta files: the pages that changed between two backups of one database, and their application.
- ``export``: The host side of a pull: the plan, the staging folders and what the fetch user may read.
- ``archive``: The archive side of a pull: vetting transfers and manifests, delta bases, space, imports.
- ``pull``: A pull on the controller, step by step: the offered transfers checked, fetched files imported,
  the archive pruned (the sqlite_archive module and the sqlite_backup action plugin call these).
- ``restore``: Restores (choosing a backup, the target plan, live or replace) and working copies.
- ``restore_task``: A restore as the sqlite_restore module asks for it: its options checked, the backup
  chosen and verified, the plan (check mode, diff), the new database's owner, the restore and its result.
- ``present``: Presentation helpers: sizes and ages for people.
- ``drills``: Restore drills: a backup restored into scratch space, checked and probed.

Relative imports only: the on-host runner imports this package without Ansible. This file
re-exports what the modules, the action plugin, the runner and the CLI use (tests reach the
parts through tests/core_parts.py). Made by tools/split_core.py from the former single-file core.
"""

from __future__ import annotations

from .archive import (
    archive_check,
    archive_options,
    archived_backups,
    check_transfers,
    drill_targets,
    import_backup,
    settle_bases,
    vet_host_manifest,
)
from .catalog import (
    FLAG_CHECK,
    FLAG_CHECKSUM,
    check_sidecars,
    checksum_problem,
    commit_file,
    core_files,
    core_sha256,
    flag_unverified,
    list_backups,
    manifest_bytes,
    manifest_problems,
    read_manifest,
    read_sha256_sidecar,
    remove_unfinished,
)
from .delta import DELTA_MAGIC, apply_delta, make_delta
from .drills import (
    DRILL_REPORT_HTML,
    DRILL_REPORT_MD,
    DRILL_TEMPLATES,
    check_drill_options,
    check_probes,
    drill,
    drill_failure,
    drill_findings,
    drill_log_line,
    drill_report_context,
    is_select_only,
    plan_drills,
    run_drills,
    run_probe,
    unused_probe_warnings,
)
from .errors import KIND_BAD_INPUT, KIND_CORRUPT, KIND_IO, KIND_LOCKED, KIND_NO_SPACE, BackupError
from .export import (
    EXPORT_PREFIX,
    STAGING_HOME_PREFIX,
    check_export_options,
    export_options,
    export_summary,
    new_staging_dir,
    plan_export,
    remove_staging_dir,
    stage_export,
    staging_folder_of,
)
from .files import (
    BACKUP_NICE,
    append_json_lines,
    check_free_space,
    ensure_private_dir,
    folder_lock,
    free_bytes,
    fsync_path,
    make_dir_private_if_missing,
    required_space,
    resolve_owner,
    rotate_log,
    run_at_priority,
    sha256_file,
    write_file_atomic,
)
from .inputs import (
    SQLITE_HEADER,
    quote_identifier,
    validate_abs_path,
    validate_busy_timeout,
    validate_label,
    validate_lock_timeout,
    validate_name,
    validate_sha256,
)
from .names import (
    CORE_VERSION,
    FORMAT_VERSION,
    INCOMING_PREFIX,
    LOCK_FILE,
    MANIFEST_MAX_BYTES,
    NAME_RE,
    PENDING_SUFFIX,
    TMP_PREFIX,
    TOOL_NAME,
    backup_filename,
    dated_in_future,
    future_warning,
    iso_utc,
    parse_backup_filename,
    parse_iso_utc,
    pending_marker,
    sidecar_paths,
    utcnow,
)
from .pinned import PIN_ATTEMPTS, SnapshotNotPinned, TrailingHash, begin_pinned_read, pinned_file_copy, read_wal_index
from .present import human_age, human_bytes, human_seconds, human_time, markdown_text
from .progress import PROGRESS_DIR_ENV, PullProgress, progress_file_name, read_pull_progress
from .pull import import_and_prune, import_pulled, outdated_runner, prepare_pull
from .restore import (
    choose_backup,
    choose_backup_in_folder,
    file_identities,
    install_working_copy,
    parse_restore_time,
    processes_holding,
    restore_backup,
    restore_target_plan,
    side_files_removed,
)
from .restore_task import restore_task
from .retention import (
    RETENTION_RULES,
    apply_retention,
    folder_stats,
    normalise_policy,
    resolve_timezone,
    retention_options,
    retention_policy,
    select_retention,
)
from .snapshots import FLUSH_MAX_BYTES, FLUSH_MIN_BYTES, METHODS, StepFlusher, copy_database, inspect_copy, snapshot
from .sqlitedb import (
    CHECKPOINT_MODES,
    INTEGRITY_LEVELS,
    checkpoint,
    database_facts,
    has_wal_reset_bug,
    open_readonly,
    run_integrity_check,
    table_row_counts,
    tune_for_checks,
    wal_reset_warning,
)
from .verify import (
    backups_to_verify,
    check_backup_database,
    unverifiable_result,
    verify_backup,
    verify_listed_backup,
    verify_summary,
)

# The core's files besides this one (core_sha256 hashes them all), bottom up.
PARTS = (
    "errors",
    "names",
    "inputs",
    "files",
    "progress",
    "sqlitedb",
    "catalog",
    "pinned",
    "snapshots",
    "verify",
    "retention",
    "delta",
    "export",
    "archive",
    "pull",
    "restore",
    "restore_task",
    "present",
    "drills",
)

__all__ = [
    "BACKUP_NICE",
    "BackupError",
    "CHECKPOINT_MODES",
    "CORE_VERSION",
    "DELTA_MAGIC",
    "DRILL_REPORT_HTML",
    "DRILL_REPORT_MD",
    "DRILL_TEMPLATES",
    "EXPORT_PREFIX",
    "FLAG_CHECK",
    "FLAG_CHECKSUM",
    "FLUSH_MAX_BYTES",
    "FLUSH_MIN_BYTES",
    "FORMAT_VERSION",
    "INCOMING_PREFIX",
    "INTEGRITY_LEVELS",
    "KIND_BAD_INPUT",
    "KIND_CORRUPT",
    "KIND_IO",
    "KIND_LOCKED",
    "KIND_NO_SPACE",
    "LOCK_FILE",
    "MANIFEST_MAX_BYTES",
    "METHODS",
    "NAME_RE",
    "PENDING_SUFFIX",
    "PIN_ATTEMPTS",
    "PROGRESS_DIR_ENV",
    "PullProgress",
    "RETENTION_RULES",
    "SQLITE_HEADER",
    "STAGING_HOME_PREFIX",
    "SnapshotNotPinned",
    "StepFlusher",
    "TMP_PREFIX",
    "TOOL_NAME",
    "TrailingHash",
    "append_json_lines",
    "apply_delta",
    "apply_retention",
    "archive_check",
    "archive_options",
    "archived_backups",
    "backup_filename",
    "backups_to_verify",
    "begin_pinned_read",
    "check_backup_database",
    "check_drill_options",
    "check_export_options",
    "check_free_space",
    "check_probes",
    "check_sidecars",
    "check_transfers",
    "checkpoint",
    "checksum_problem",
    "choose_backup",
    "choose_backup_in_folder",
    "commit_file",
    "copy_database",
    "core_files",
    "core_sha256",
    "database_facts",
    "dated_in_future",
    "drill",
    "drill_failure",
    "drill_findings",
    "drill_log_line",
    "drill_report_context",
    "drill_targets",
    "ensure_private_dir",
    "export_options",
    "export_summary",
    "file_identities",
    "flag_unverified",
    "folder_lock",
    "folder_stats",
    "free_bytes",
    "fsync_path",
    "future_warning",
    "has_wal_reset_bug",
    "human_age",
    "human_bytes",
    "human_seconds",
    "human_time",
    "import_and_prune",
    "import_backup",
    "import_pulled",
    "inspect_copy",
    "install_working_copy",
    "is_select_only",
    "iso_utc",
    "list_backups",
    "make_delta",
    "make_dir_private_if_missing",
    "manifest_bytes",
    "manifest_problems",
    "markdown_text",
    "new_staging_dir",
    "normalise_policy",
    "open_readonly",
    "outdated_runner",
    "parse_backup_filename",
    "parse_iso_utc",
    "parse_restore_time",
    "pending_marker",
    "pinned_file_copy",
    "plan_drills",
    "plan_export",
    "prepare_pull",
    "processes_holding",
    "progress_file_name",
    "quote_identifier",
    "read_manifest",
    "read_pull_progress",
    "read_sha256_sidecar",
    "read_wal_index",
    "remove_staging_dir",
    "remove_unfinished",
    "required_space",
    "resolve_owner",
    "resolve_timezone",
    "restore_backup",
    "restore_target_plan",
    "restore_task",
    "retention_options",
    "retention_policy",
    "rotate_log",
    "run_at_priority",
    "run_drills",
    "run_integrity_check",
    "run_probe",
    "select_retention",
    "settle_bases",
    "sha256_file",
    "side_files_removed",
    "sidecar_paths",
    "snapshot",
    "stage_export",
    "staging_folder_of",
    "table_row_counts",
    "tune_for_checks",
    "unused_probe_warnings",
    "unverifiable_result",
    "utcnow",
    "validate_abs_path",
    "validate_busy_timeout",
    "validate_label",
    "validate_lock_timeout",
    "validate_name",
    "validate_sha256",
    "verify_backup",
    "verify_listed_backup",
    "verify_summary",
    "vet_host_manifest",
    "wal_reset_warning",
    "write_file_atomic",
]
