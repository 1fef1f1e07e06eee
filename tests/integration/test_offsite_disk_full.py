"""The offsite repository's disk fills up (a local-folder repository on a small tmpfs, real restic,
through the installed CLI): the backup run says so in one line and exits 1, the hosts' backups are
taken and archived all the same (nothing lost locally), and the next run after space was freed
sends what the failed one could not (it catches up)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_cli import SECRET, Run, Site
from tests.integration.test_cli_offsite_init import restic_cli_site

pytestmark = pytest.mark.integration


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return restic_cli_site(tmp_path)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` up, then give back ``leave`` bytes."""
    filler = folder / "filler"
    chunk = b"\0" * (64 << 10)
    with filler.open("wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        os.ftruncate(out.fileno(), max(0, out.tell() - leave))
    return filler


def archived(site: Site) -> dict[str, bytes]:
    return {str(p.relative_to(site.archive)): p.read_bytes() for p in sorted(site.archive.rglob("gym_backup_*"))
            if p.is_file()}


def offsite_lines(run: Run) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith("offsite")]


def test_a_full_offsite_disk_fails_in_one_line_loses_nothing_and_the_next_run_catches_up(site: Site) -> None:
    mount = site.tmp / "offsite-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        repo = mount / "repo"
        pw = site.tmp / "offsite.pw"
        pw.write_text(SECRET)
        pw.chmod(0o600)
        inventory = site.inventory()
        body = json.loads(inventory.read_text())
        body["all"]["vars"].update(sqlite_offsite_repository=str(repo), sqlite_offsite_password_file=str(pw))
        inventory.write_text(json.dumps(body, indent=2))
        init = site.cli("offsite", "init", "-i", str(inventory))
        assert init.rc == 0, init.explain()
        filler = fill(mount, 16 << 10)

        full = site.cli("backup", "-i", str(inventory))
        assert full.rc == 1, full.explain()
        lines = offsite_lines(full)
        assert len(lines) == 1 and lines[0].startswith("offsite FAILED: "), full.explain()
        assert "the offsite repository %s is full: " % repo in lines[0], full.explain()
        record = site.record()
        assert record["offsite"]["outcome"] == "failed" and "is full" in record["offsite"]["message"]
        # the hosts' backups were taken, pulled and verified all the same: nothing lost locally
        for host in ("h1", "h2"):
            assert record["hosts"][host]["outcome"] == "ok", record["hosts"][host]
            row = record["hosts"][host]["databases"]["gym"]
            assert row["verified_in_archive"] and row["offsite"] is None, row
        kept = archived(site)
        assert len([name for name in kept if name.endswith(".db")]) == 2, sorted(kept)
        assert SECRET not in full.stdout + full.stderr

        filler.unlink()
        caught_up = site.cli("backup", "-i", str(inventory))
        assert caught_up.rc == 0, caught_up.explain()
        assert offsite_lines(caught_up)[0].startswith("offsite: sent "), caught_up.explain()
        record = site.record()
        assert record["offsite"]["outcome"] == "ok" and record["offsite"]["snapshot_id"], record["offsite"]
        # the snapshot holds the backups the failed run could not send, and this run's
        assert record["offsite"]["backups"] == 4, record["offsite"]
        after = archived(site)
        assert all(after.get(name) == data for name, data in kept.items())  # the archive kept them as they were
        for host in ("h1", "h2"):
            row = record["hosts"][host]["databases"]["gym"]
            assert row["offsite"] and row["offsite"]["file"] == row["backup"], row
    finally:
        subprocess.run(["umount", str(mount)], check=True)
