"""Files and folders around a backup, with real processes: locks, free space, owners."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlite_fleet as core
from unit_helpers import (
    LOCK_FILE_ONLY,
    SIDE_SUFFIXES,
    assert_no_side_files,
    backup_count,
    backup_invariant,
    committed,
    core_subprocess_env,
    folder_files,
    make_app_db,
    mode_of,
    stop_writer,
)

# --------------------------------------------------------------------------- locking


def test_rollback_journal_source_with_a_writer_running(tmp_path: Path, backup_dir: Path, start_writer) -> None:
    db = make_app_db(tmp_path / "app.db", journal_mode="delete", rows=2000, payload_bytes=500)
    writer = start_writer(db, journal_mode="delete", rate=0, busy_timeout_ms=20000)
    writer.wait_committed(2010)
    results = []
    for _ in range(3):
        before = committed(writer)
        result = core.snapshot(str(db), str(backup_dir), "app", busy_timeout_ms=10000)
        results.append(result)
        ok, rows, detail = backup_invariant(result["backup"])
        assert ok, detail
        assert rows >= before
    assert stop_writer(writer) > 2010
    for result in results:
        manifest = result["manifest"]
        assert result["verified"] is True
        assert manifest["source"]["journal_mode"] == "delete"
        assert manifest["writers_held_off_seconds"] > 0
        assert manifest["writers_held_off_seconds"] == manifest["copy_seconds"]
    assert_no_side_files(backup_dir)
    assert backup_invariant(db)[0]  # the source itself, once the writer is gone


LOCK_HOLDER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("INSERT INTO app_events (seq, at, payload) VALUES (1000000, 0, x'00')")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("ROLLBACK")
""")


def test_locked_database_fails_quickly_with_kind_locked(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", journal_mode="delete", rows=10)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(core.BackupError) as info:
            core.snapshot(str(db), str(backup_dir), "app", busy_timeout_ms=300)
        elapsed = time.monotonic() - started
        assert info.value.kind == core.KIND_LOCKED
        assert "locked" in str(info.value)
        assert 0.25 <= elapsed < 5, elapsed
        assert folder_files(backup_dir) <= LOCK_FILE_ONLY  # no backup, no temp file, no sidecar
        with pytest.raises(core.BackupError) as info:
            core.database_facts(str(db), busy_timeout_ms=200)
        assert info.value.kind == core.KIND_LOCKED
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # once the lock is gone, the same call works (the holder's transaction never committed)
    result = core.snapshot(str(db), str(backup_dir), "app", busy_timeout_ms=300)
    assert backup_count(result["backup"]) == 10


FOLDER_LOCK_HOLDER = textwrap.dedent("""
    import sys, time, sqlite_fleet as core
    with core.folder_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
        with open(sys.argv[3], "w") as handle:
            handle.write(repr(time.time()))
""")


def test_folder_lock_serialises_two_processes(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    released_at = tmp_path / "released"
    holder = subprocess.Popen([sys.executable, "-c", FOLDER_LOCK_HOLDER, str(folder), "2.5", str(released_at)],
                              stdout=subprocess.PIPE, text=True, env=core_subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(core.BackupError) as info, core.folder_lock(str(folder), timeout=0.3):
            pass
        assert info.value.kind == core.KIND_LOCKED
        assert 0.3 <= time.monotonic() - started < 2.4
        with core.folder_lock(str(folder), timeout=30, poll=0.01) as lock_path:
            acquired_at = time.time()
            assert released_at.exists(), "got the lock while the other process still held it"
            assert acquired_at >= float(released_at.read_text())
            assert lock_path == str(folder / core.LOCK_FILE)
        assert mode_of(folder / core.LOCK_FILE) == 0o600
    finally:
        holder.wait(timeout=30)
        holder.stdout.close()
    assert holder.returncode == 0


def test_snapshot_waits_for_the_folder_lock_and_gives_up(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=3)
    backup_dir.mkdir(mode=0o700)
    holder = subprocess.Popen([sys.executable, "-c", FOLDER_LOCK_HOLDER, str(backup_dir), "3",
                               str(tmp_path / "released")], stdout=subprocess.PIPE, text=True,
                              env=core_subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(core.BackupError) as info:
            core.snapshot(str(db), str(backup_dir), "app", lock_timeout=0.3)
        assert info.value.kind == core.KIND_LOCKED
        with pytest.raises(core.BackupError) as info:
            core.apply_retention(str(backup_dir), "app", {"keep_last": 1}, lock_timeout=0.3)
        assert info.value.kind == core.KIND_LOCKED
        assert folder_files(backup_dir) <= LOCK_FILE_ONLY
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


# --------------------------------------------------------------------------- free space


def test_check_free_space_refuses_a_huge_need(tmp_path: Path) -> None:
    core.check_free_space(str(tmp_path), 1, "one byte")
    with pytest.raises(core.BackupError) as info:
        core.check_free_space(str(tmp_path), 1 << 62, "a snapshot of app.db")
    assert info.value.kind == core.KIND_NO_SPACE
    assert "not enough free space" in str(info.value)


def test_required_space_has_a_margin() -> None:
    assert core.required_space(0) == 16 << 20
    assert core.required_space(1 << 30) == (1 << 30) + (1 << 30) // 10


SMALL_TMPFS_SNAPSHOT = textwrap.dedent("""
    import json, os, sys, sqlite_fleet as core
    db, folder = sys.argv[1], sys.argv[2]
    try:
        core.snapshot(db, folder, "app")
        print(json.dumps({"kind": None}))
    except core.BackupError as exc:
        print(json.dumps({"kind": exc.kind, "msg": str(exc), "files": sorted(os.listdir(folder))}))
""")


def test_snapshot_refuses_when_the_folder_is_too_small(tmp_path: Path) -> None:
    """A real small filesystem: a 4 MiB tmpfs in a private mount namespace."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a private tmpfs")
    db = make_app_db(tmp_path / "app.db", rows=2000, payload_bytes=1000)  # ~2.5 MiB, fits; with margin not
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    script = 'mount -t tmpfs -o size=4m,mode=0700 tmpfs "$1" && exec "$2" -c "$3" "$4" "$1/backups"'
    run = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(mount_point),
                          sys.executable, SMALL_TMPFS_SNAPSHOT, str(db)],
                         capture_output=True, text=True, env=core_subprocess_env(), timeout=60)
    if run.returncode != 0 and "mount" in run.stderr:
        pytest.skip("cannot mount a tmpfs here: %s" % run.stderr.strip())
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout)
    assert outcome["kind"] == core.KIND_NO_SPACE, outcome
    assert outcome["files"] == [core.LOCK_FILE]
    assert os.listdir(mount_point) == []  # the tmpfs was private to the helper


# --------------------------------------------------------------------------- ownership


CRASHING_APP = textwrap.dedent("""
    import os, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    for seq in range(11, 21):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO app_events (seq, at, payload) VALUES (?, 0, x'00')", (seq,))
        conn.execute("UPDATE app_counter SET n = n + 1")
        conn.execute("COMMIT")
    os._exit(0)  # dies with 10 committed rows in the -wal only
""")


def test_no_root_owned_side_files_beside_another_users_db(tmp_path: Path, backup_dir: Path) -> None:
    """Run as root (as Ansible does) on a database owned by the app's user: whatever -wal/-shm
    the core's read-only opens create must belong to that user, or the app could not write."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    import pwd

    nobody = pwd.getpwnam("nobody")
    app_ids = (nobody.pw_uid, nobody.pw_gid)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    db = make_app_db(app_dir / "app.db", rows=10)
    os.chown(app_dir, *app_ids)
    os.chown(db, *app_ids)
    os.chmod(db, 0o640)

    def side_files() -> dict[str, tuple[int, int]]:
        return {f: (os.stat(app_dir / f).st_uid, os.stat(app_dir / f).st_gid)
                for f in os.listdir(app_dir) if f.endswith(SIDE_SUFFIXES)}

    def remove_side_files() -> None:
        for entry in side_files():
            os.unlink(app_dir / entry)

    # a clean WAL database (closed, no -wal/-shm): whatever appears is the app user's
    operations = [lambda: core.database_facts(str(db)), lambda: core.snapshot(str(db), str(backup_dir), "app"),
                  lambda: core.checkpoint(str(db)), lambda: core.snapshot(str(db), str(backup_dir), "app",
                                                                          method="vacuum_into")]
    for operation in operations:
        assert side_files() == {}
        operation()
        assert set(side_files().values()) <= {app_ids}
        remove_side_files()

    # the app crashed and left committed rows in its -wal (no -shm): reading it must build a
    # -shm, and that -shm must go to the app's user
    run = subprocess.run([sys.executable, "-c", CRASHING_APP, str(db)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    os.unlink(str(db) + "-shm")
    wal = Path(str(db) + "-wal")
    os.chown(wal, *app_ids)
    assert wal.stat().st_size > 0
    wal_bytes = wal.read_bytes()
    facts = core.database_facts(str(db))
    assert facts["tables"]["app_events"] == 20
    assert side_files() == {"app.db-wal": app_ids, "app.db-shm": app_ids}
    for operation in operations[1:]:
        if not wal.exists():  # the checkpoint's last connection moved the rows and removed it
            make_app_db(app_dir / "fresh.db", rows=10)
            os.replace(app_dir / "fresh.db", db)  # the database as the app left it, before the crash
            os.chown(db, *app_ids)
            wal.write_bytes(wal_bytes)
            os.chown(wal, *app_ids)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(db) + "-shm")
        operation()
        assert set(side_files().values()) <= {app_ids}, side_files()
    backups = core.list_backups(str(backup_dir), "app")["backups"]
    assert [backup_count(b["path"]) for b in backups[:2]] == [20, 20]

    # the backups (and the folder's lock file) belong to the database's owner too, privately
    for entry in folder_files(backup_dir):
        st_entry = os.stat(backup_dir / entry)
        assert (st_entry.st_uid, st_entry.st_gid) == app_ids, entry
        assert stat.S_IMODE(st_entry.st_mode) == 0o600
    st_dir = os.stat(backup_dir)
    assert (st_dir.st_uid, stat.S_IMODE(st_dir.st_mode)) == (nobody.pw_uid, 0o700)
    for b in backups:
        assert core.verify_backup(b["path"])["ok"]


AS_APP_USER = textwrap.dedent("""
    import json, sys, sqlite_fleet as core
    db, folder = sys.argv[1], sys.argv[2]
    try:
        taken = core.snapshot(db, folder, "app")["file"]
        pruned = core.apply_retention(folder, "app", {"keep_last": 10})["kept"]
        print(json.dumps({"taken": taken, "kept": pruned}))
    except core.BackupError as exc:
        print(json.dumps({"error": str(exc), "kind": exc.kind}))
""")


@pytest.fixture
def shared_tmp() -> Path:
    """A folder another user can reach (pytest's tmp_path is private to root)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="sqlite-fleet-unit-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_app_user_runner_can_still_back_up_after_a_root_run(shared_tmp: Path) -> None:
    """Ansible runs as root, the host's cron runner as the database's owner: a run as root
    must not leave anything in the folder (lock file included) that the owner cannot use."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    import pwd

    nobody = pwd.getpwnam("nobody")
    app_dir = shared_tmp / "app"
    app_dir.mkdir()
    db = make_app_db(app_dir / "app.db", rows=10)
    for path in (app_dir, db):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    backup_dir = shared_tmp / "backups"
    first = core.snapshot(str(db), str(backup_dir), "app")  # as root
    core.apply_retention(str(backup_dir), "app", {"keep_last": 10})  # as root
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3 that the app user may run")
    run = subprocess.run([system_python, "-c", AS_APP_USER, str(db), str(backup_dir)], capture_output=True,
                         text=True, env=core_subprocess_env(), user=nobody.pw_uid, group=nobody.pw_gid,
                         extra_groups=[], timeout=60, cwd="/")
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout)
    assert "error" not in outcome, outcome
    assert set(outcome["kept"]) == {first["file"], outcome["taken"]}
