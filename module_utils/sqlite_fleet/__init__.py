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
- ``backup_task``: A backup as the sqlite_backup module asks for it: its options checked, the optional
  checkpoint, the snapshot, the prune and the export staged for a pull (the module and the runner's
  ``task`` command call it).
- ``present``: Presentation helpers: sizes and ages for people.
- ``drills``: Restore drills: a backup restored into scratch space, checked and probed.

Relative imports only: the on-host runner imports this package without Ansible.

This file is the map, not a door: it imports no part. A module imports the names it needs from
the parts themselves (``from ansible.module_utils.sqlite_fleet.snapshots import snapshot``), so
AnsiballZ's dependency finder ships that module only those parts and the parts they import
(tests/modules/test_core_shipping.py checks it). Code on the controller may still ask the
package for any name (``sqlite_fleet.human_bytes``, the CLI does): ``__getattr__`` below finds it
in the part that holds it, importing the parts on first use; AnsiballZ does not follow it.
"""

from __future__ import annotations

import importlib

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
    "backup_task",
    "present",
    "drills",
)


def __getattr__(name: str) -> object:
    """A name of any part (for code on the controller; modules import from the parts)."""
    if not name.startswith("__"):
        for part in PARTS:
            holder = importlib.import_module("." + part, __name__)
            if name in vars(holder):
                return vars(holder)[name]
    raise AttributeError("module %r has no attribute %r (nor has any of its parts)" % (__name__, name))
