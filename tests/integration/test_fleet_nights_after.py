"""The nights after a fault, on real SSH hosts: three `backup.yml` nights follow each event and
the archive gets every new verified backup, with nothing good deleted.

- After the documented corrupt-database restore (docs/scenarios.md (b)), the restore's safety
  backup of the corrupt file is unverified: it is pulled whole and kept flagged unverified, and
  no later backup is sent as a delta based on it (it used to stop every later pull of the host).
- After a flipped bit in the archive's newest copy, the next delta based on it is sent whole
  instead, the corrupt copy is flagged, and the night after the host's good copy replaces it
  (it used to fail two nights and freeze the archive).
- A lying host cannot fill the archive's disk: the fetch stops at the size it announced.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration_helpers import (
    BACKUP_DIR,
    PlaybookRun,
    Site,
    backups_in,
    corrupt_table_pages,
    flip_byte,
    integrity_check,
    manifest_of,
    sha256_of,
)

pytestmark = pytest.mark.integration
NIGHTS = 3


@pytest.fixture
def site(make_fleet: Any, tmp_path: Path) -> Iterator[Site]:
    yield Site(make_fleet(1), tmp_path)


def add_members(db: Path, count: int) -> None:
    """What the app does during a day: new rows (so each night's backup differs)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for _ in range(count):
            conn.execute("INSERT INTO members (name, joined_at) VALUES ('new member', '2026-12-06')")
        conn.execute("COMMIT")
    finally:
        conn.close()


def newest_host_backup(site: Site) -> str:
    return backups_in(site.fleet["pi1"].path(BACKUP_DIR))[-1]


def assert_archived_and_verified(site: Site, backup: str) -> None:
    archived = site.archive_folder("pi1") / backup
    assert archived.exists(), (backup, backups_in(site.archive_folder("pi1")))
    manifest = manifest_of(archived)
    assert manifest["verified"] is True and sha256_of(archived) == manifest["sha256"], manifest


def nights(site: Site, inventory: Path, db: Path) -> list[PlaybookRun]:
    """Three nights: the app adds rows, then backup.yml runs; each must pull its new verified backup."""
    runs = []
    for night in range(NIGHTS):
        add_members(db, 5 + night)
        runs.append(site.backup(inventory))  # asserts exit 0
        assert_archived_and_verified(site, newest_host_backup(site))
    return runs


def test_after_a_corrupt_database_is_restored_the_nights_go_on(site: Site) -> None:
    host, db, inventory = site.one_host()
    site.backup(inventory)
    (first,) = backups_in(site.archive_folder("pi1"))
    corrupt_table_pages(db)
    restore = site.run_command("ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym",
                               inventory=inventory)
    assert restore.rc == 0, restore.explain()
    (safety,) = [name for name in backups_in(host.path(BACKUP_DIR)) if name != first]
    assert manifest_of(host.path(BACKUP_DIR) / safety)["verified"] is False

    runs = nights(site, inventory, db)

    # The safety backup is in the archive, whole, as evidence: flagged unverified, never a base.
    kept = site.archive_folder("pi1") / safety
    assert manifest_of(kept)["verified"] is False and integrity_check(kept) != ["ok"]
    assert "evidence" in runs[0].output, runs[0].explain()
    assert f"{safety} (delta)" not in runs[0].output
    # Nothing good was deleted: the first backup and every night's are still there, verified.
    archived = backups_in(site.archive_folder("pi1"))
    assert first in archived and len(archived) == 2 + NIGHTS, archived


def test_after_a_flipped_bit_in_the_archives_newest_copy_the_nights_go_on(site: Site) -> None:
    _host, db, inventory = site.one_host()
    site.backup(inventory)
    add_members(db, 3)
    site.backup(inventory)
    first, second = backups_in(site.archive_folder("pi1"))
    damaged = site.archive_folder("pi1") / second
    flip_byte(damaged, mask=0x01)
    good_sha = manifest_of(damaged)["sha256"]
    assert sha256_of(damaged) != good_sha

    runs = nights(site, inventory, db)

    # Night 1: the delta based on the damaged copy was sent whole instead, and the copy flagged.
    assert "is corrupt in the archive" in runs[0].output and "sent whole instead" in runs[0].output, \
        runs[0].explain()
    # Night 2: the host's good copy replaced the damaged one.
    assert sha256_of(damaged) == good_sha and manifest_of(damaged)["verified"] is True
    archived = backups_in(site.archive_folder("pi1"))
    assert first in archived and len(archived) == 2 + NIGHTS, archived


def test_a_host_that_serves_more_than_it_announced_cannot_fill_the_archive(site: Site) -> None:
    """The fetch stops at the announced size: on a 4 MiB archive filesystem a 1 MiB announcement
    for a 16 MiB file ends with that message, never with the disk full."""
    host = site.fleet["pi1"]
    staging = host.path(BACKUP_DIR) / ".sqlite-export.lying"
    staging.mkdir(parents=True, mode=0o700)
    served = staging / "gym_backup_20261206_030000.db"
    served.write_bytes(os.urandom(16 << 20))
    archive = site.archive / "pi1"
    archive.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(archive)], check=True)
    try:
        (archive / "gym").mkdir()
        playbook = site.tmp / "fetch.yml"
        playbook.write_text(json.dumps([{"hosts": "pi1", "gather_facts": False, "tasks": [{"sqlite_fetch": {
            "transfers": [{"name": "gym", "file": served.name, "mode": "full", "bytes": 1 << 20,
                           "fetch_path": f"{BACKUP_DIR}/{staging.name}/{served.name}"}],
            "dest": str(archive), "backup_dir": BACKUP_DIR, "staging_dirs": [f"{BACKUP_DIR}/{staging.name}"]}}]}]))

        run = site.run(str(playbook), inventory=site.inventory())

        assert run.rc != 0
        assert f"the host served more than the {1 << 20} bytes it announced" in run.output, run.explain()
        assert "No space left" not in run.output, run.explain()  # it stopped at 1 MiB, not at a full disk
        assert list((archive / "gym").iterdir()) == []
        assert not staging.exists()  # the staging folder is removed all the same
    finally:
        subprocess.run(["umount", str(archive)], check=True)
