"""The offsite copy's core (module_utils/sqlite_offsite.py) against a real restic and a real
repository in a local folder, with real backups made by the core: what is sent, what is held
back, retention, check of a corrupted pack, and the one-line errors."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import sqlite_fleet as core
import sqlite_offsite as offsite
from unit_helpers import make_app_db

PASSWORD = "offsite-unit-test-pw-5f2c"

if shutil.which("restic") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("restic is not installed (tools/setup-system.sh test installs it)")
    pytest.skip("restic is not installed", allow_module_level=True)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def take(archive: Path, host: str, name: str, db: Path, label: str | None = None, seq: int = 0) -> Path:
    folder = archive / host / name
    folder.mkdir(parents=True, exist_ok=True)
    when = dt.datetime(2026, 12, 1, 3, 0, seq, tzinfo=dt.timezone.utc)
    result = core.snapshot(str(db), str(folder), name, label=label, source_host=host, now=when)
    assert result["verified"], result
    return Path(result["backup"])


def make_site(tmp_path: Path, rows: int) -> dict[str, object]:
    """An archive with two hosts (a database of ``rows`` incompressible 2 kB rows each) and a local repository."""
    archive = tmp_path / "archive"
    dbs = {}
    for index, host in enumerate(("pi1", "pi2")):
        dbs[host] = make_app_db(tmp_path / f"{host}.db", rows=rows + index, payload_bytes=2000)
        take(archive, host, "app", dbs[host])
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    env = offsite.restic_env(str(tmp_path / "repo"), password_file=str(pw), cache_dir=str(tmp_path / "cache"))
    assert offsite.init_repository(env)["created"]
    return {"archive": archive, "dbs": dbs, "env": env, "tmp": tmp_path, "pw": pw}


@pytest.fixture
def site(tmp_path: Path) -> dict[str, object]:
    return make_site(tmp_path, 300)


def restic(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["restic", *args], env=env, capture_output=True, text=True, check=True)


def test_only_verified_backups_go_offsite_in_one_tagged_snapshot(site) -> None:
    archive, env = site["archive"], site["env"]
    flagged = take(archive, "pi1", "app", site["dbs"]["pi1"], seq=5)
    core.flag_unverified(str(flagged), core.FLAG_CHECK, "test")
    damaged = take(archive, "pi2", "app", site["dbs"]["pi2"], label="pre-upgrade", seq=6)
    with open(damaged, "r+b") as handle:
        handle.seek(5000)
        byte = handle.read(1)
        handle.seek(5000)
        handle.write(bytes([byte[0] ^ 0xFF]))

    sent = offsite.send(str(archive), env)

    assert len(sent["backups"]) == 2 and sent["snapshot_id"]
    assert sorted(h["relpath"] for h in sent["held_back"]) == sorted(
        ["pi1/app/" + flagged.name, "pi2/app/" + damaged.name])
    snapshots = offsite.list_snapshots(env)
    assert len(snapshots) == 1
    assert {"sqlite-fleet", "host:pi1", "host:pi2", "db:pi1/app", "db:pi2/app"} <= set(snapshots[0]["tags"])
    listed = restic(env, "ls", "latest").stdout
    for path in sent["backups"]:
        for suffix in ("", ".sha256", ".json"):
            assert "/" + path + suffix + "\n" in listed
    assert flagged.name not in listed and damaged.name not in listed


def test_check_mode_sends_nothing(site) -> None:
    result = offsite.send(str(site["archive"]), site["env"], check_mode=True)
    assert result["changed"] is False and result["snapshot_id"] is None and len(result["backups"]) == 2
    assert offsite.list_snapshots(site["env"]) == []
    # before the repository exists (the first run with sqlite_offsite_init, in check mode)
    fresh = offsite.restic_env(str(site["tmp"] / "not-yet"), password="pw-for-a-new-repository")
    planned = offsite.send(str(site["archive"]), fresh, check_mode=True)
    assert planned["changed"] is False and len(planned["backups"]) == 2 and planned["data_added"] > 0
    assert not (site["tmp"] / "not-yet").exists()
    with pytest.raises(offsite.OffsiteError, match="no restic repository"):
        offsite.send(str(site["archive"]), fresh)


def test_wrong_password_missing_repository_and_open_password_file_are_one_line(site) -> None:
    archive = site["archive"]
    before = tree(archive)
    wrong = offsite.restic_env(site["env"]["RESTIC_REPOSITORY"], password="not-the-password")
    with pytest.raises(offsite.OffsiteError) as raised:
        offsite.send(str(archive), wrong)
    assert "wrong password" in str(raised.value) and "\n" not in str(raised.value)
    assert "not-the-password" not in str(raised.value)

    missing = offsite.restic_env(str(site["tmp"] / "nowhere"), password_file=str(site["pw"]))
    with pytest.raises(offsite.OffsiteError) as raised:
        offsite.send(str(archive), missing)
    assert "no restic repository at" in str(raised.value) and "sqlite_offsite_init=true" in str(raised.value)
    assert not (site["tmp"] / "nowhere").exists()

    site["pw"].chmod(0o644)
    with pytest.raises(offsite.OffsiteError, match="mode 0644: make it 0600"):
        offsite.restic_env(str(site["tmp"] / "repo"), password_file=str(site["pw"]))
    assert tree(archive) == before


def test_locked_repository_is_named(site) -> None:
    env = site["env"]
    offsite.send(str(site["archive"]), env)
    # a live restic (waiting for its stdin) holds a lock; forget needs the repository alone
    holder = subprocess.Popen(["restic", "backup", "--stdin", "--host", "holder"], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not any((Path(env["RESTIC_REPOSITORY"]) / "locks").iterdir()) and time.time() < deadline:
            time.sleep(0.1)
        with pytest.raises(offsite.OffsiteError) as raised:
            offsite.forget(env, {"last": 1})
        assert "is locked" in str(raised.value) and "\n" not in str(raised.value)
    finally:
        holder.kill()
        holder.wait()


def test_forget_keeps_the_newest_snapshot_of_every_database(site) -> None:
    archive, env = site["archive"], site["env"]
    first = offsite.send(str(archive), env)["snapshot_id"]
    shutil.rmtree(archive / "pi2")  # pi2 left the fleet: only the first snapshot holds it
    second = offsite.send(str(archive), env)["snapshot_id"]
    third = offsite.send(str(archive), env)["snapshot_id"]

    plan = offsite.forget(env, {"last": 1}, check_mode=True)
    assert [s["id"] for s in plan["forgotten"]] == [second]
    assert plan["spared_newest"] == [first]
    assert len(offsite.list_snapshots(env)) == 3

    done = offsite.forget(env, {"last": 1, "within": ""})
    assert done["changed"] and [s["id"] for s in done["forgotten"]] == [second]
    assert [s["short_id"] for s in offsite.list_snapshots(env)] == [first, third]
    with pytest.raises(offsite.OffsiteError, match="keeps nothing"):
        offsite.forget(env, {"last": 0, "within": ""})
    with pytest.raises(offsite.OffsiteError, match="not a duration"):
        offsite.forget(env, {"within": "ten days"})


def corrupt_largest_pack(env) -> Path:
    """64 zero bytes written into the middle of the repository's largest pack file; that file."""
    packs = sorted((Path(env["RESTIC_REPOSITORY"]) / "data").rglob("*"), key=lambda p: p.stat().st_size)
    victim = [p for p in packs if p.is_file()][-1]
    victim.chmod(0o600)
    with open(victim, "r+b") as handle:
        handle.seek(victim.stat().st_size // 2)
        handle.write(b"\x00" * 64)
    return victim


def test_check_names_a_corrupted_pack(site) -> None:
    env = site["env"]
    offsite.send(str(site["archive"]), env)
    assert offsite.check(env, "100%")["ok"]
    victim = corrupt_largest_pack(env)
    with pytest.raises(offsite.OffsiteError) as raised:
        offsite.check(env, "100%")
    assert victim.name[:16] in str(raised.value) and "\n" not in str(raised.value)


def test_restore_lays_out_an_archive_and_verifies_it(site) -> None:
    env = site["env"]
    sent = offsite.send(str(site["archive"]), env)
    target = site["tmp"] / "restored"
    result = offsite.restore(env, str(target), hosts=["pi2"])
    assert result["backups"] == [b for b in sent["backups"] if b.startswith("pi2/")]
    assert not (target / "pi1").exists()
    assert oct((target.stat().st_mode) & 0o777) == "0o700"


def test_a_drill_or_restore_from_a_corrupted_pack_fails_by_name(site) -> None:
    env = site["env"]
    offsite.send(str(site["archive"]), env)
    corrupt_largest_pack(env)
    with pytest.raises(offsite.OffsiteError) as raised:
        offsite.restore(env, str(site["tmp"] / "restored"))
    message = str(raised.value)
    assert "\n" not in message and "damaged data in the offsite repository" in message, message
    assert re.search(r"/pi\d/\w+/\w+_backup_\d{8}_\d{6}\.db", message), "the damaged backup is not named: " + message
