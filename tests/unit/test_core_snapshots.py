"""Taking a backup on real SQLite files: the snapshot and its commit protocol, two snapshots at once,
a corrupt source.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlite_fleet as core
from unit_helpers import (
    assert_no_side_files,
    backup_count,
    backup_invariant,
    core_subprocess_env,
    folder_files,
    main_file_only_count,
    make_app_db,
    mode_of,
    wal_holding_connection,
)

# --------------------------------------------------------------------------- snapshot


def test_snapshot_of_wal_db_holds_rows_only_in_the_wal(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    holder = wal_holding_connection(db, rows=25)
    try:
        assert os.path.getsize(str(db) + "-wal") > 0
        assert main_file_only_count(db, tmp_path / "scratch") == 10  # the 25 are only in the -wal
        result = core.snapshot(str(db), str(backup_dir), "app", integrity="full")
    finally:
        holder.close()
    backup = Path(result["backup"])
    assert result["verified"] is True and result["problems"] == []
    assert backup_count(backup) == 35
    assert backup_invariant(backup)[:2] == (True, 35)
    manifest = result["manifest"]
    assert manifest["tables"] == {"app_events": 35, "app_counter": 1}
    assert manifest["source"]["journal_mode"] == "wal"
    assert manifest["journal_mode"] == "delete"
    assert manifest["writers_held_off_seconds"] == 0.0
    # the file header says rollback journal (write and read version 1), not WAL (2)
    assert backup.read_bytes()[18:20] == b"\x01\x01"
    assert_no_side_files(backup_dir)
    files = folder_files(backup_dir)
    assert files == {backup.name, backup.name + ".sha256", backup.name + ".json", core.LOCK_FILE}
    assert mode_of(backup_dir) == 0o700
    for entry in files:
        assert mode_of(backup_dir / entry) == 0o600, entry


def test_snapshot_manifest_describes_the_backup(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=4, user_version=7)
    result = core.snapshot(str(db), str(backup_dir), "app", label="pre-upgrade", source_host="pi1",
                           extra_manifest={"run_id": "abc", "name": "must-not-override"})
    backup = Path(result["backup"])
    on_disk = json.loads((backup_dir / (backup.name + ".json")).read_text())
    assert on_disk == result["manifest"]
    assert on_disk["format_version"] == core.FORMAT_VERSION
    assert on_disk["file"] == backup.name and on_disk["name"] == "app"
    assert on_disk["label"] == "pre-upgrade" and on_disk["run_id"] == "abc"
    assert on_disk["source"]["host"] == "pi1" and on_disk["source"]["path"] == str(db)
    assert on_disk["user_version"] == 7
    assert on_disk["sqlite_version"] == sqlite3.sqlite_version
    assert on_disk["size_bytes"] == backup.stat().st_size
    assert on_disk["page_count"] * on_disk["page_size"] == backup.stat().st_size
    assert on_disk["sha256"] == core.sha256_file(str(backup))
    assert on_disk["integrity"]["result"] == "ok" and on_disk["verified"] is True
    assert core.manifest_problems(on_disk, backup.name) == []
    created = core.parse_iso_utc(on_disk["created"])
    assert core.parse_backup_filename(backup.name)["created"] == created.replace(microsecond=0)
    assert core.list_backups(str(backup_dir), "app")["backups"][0]["label"] == "pre-upgrade"


def test_snapshot_vacuum_into_method(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    holder = wal_holding_connection(db, rows=5)
    try:
        result = core.snapshot(str(db), str(backup_dir), "app", method="vacuum_into")
    finally:
        holder.close()
    assert result["verified"] is True
    assert backup_count(result["backup"]) == 15
    assert Path(result["backup"]).read_bytes()[18:20] == b"\x01\x01"
    assert core.verify_backup(result["backup"])["ok"] is True
    assert_no_side_files(backup_dir)


def test_verify_backup_ok_and_leaves_no_side_files(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=20)
    backup = core.snapshot(str(db), str(backup_dir), "app")["backup"]
    before = {f: (backup_dir / f).stat().st_mtime_ns for f in folder_files(backup_dir)}
    for integrity in ("quick", "full"):
        result = core.verify_backup(backup, integrity=integrity)
        assert result["ok"] is True, result["problems"]
        assert result["checks"] == {"manifest": "ok", "checksum": "ok", "integrity": "ok",
                                    "foreign_keys": "ok", "row_counts": "ok"}
    assert core.verify_backup(backup, expected_sha256=result["sha256"])["ok"] is True
    after = {f: (backup_dir / f).stat().st_mtime_ns for f in folder_files(backup_dir)}
    assert after == before  # nothing created, nothing written
    assert_no_side_files(backup_dir)


def test_verify_backup_refuses_bad_input(tmp_path: Path, backup_dir: Path) -> None:
    for path, why in [("relative_backup_20260101_000000.db", "absolute"),
                      (str(tmp_path / "gym.db"), "not named like a backup"),
                      (str(tmp_path / "gym_backup_20260101_000000.db"), "does not exist")]:
        with pytest.raises(core.BackupError, match=why) as info:
            core.verify_backup(path)
        assert info.value.kind == core.KIND_BAD_INPUT
    with pytest.raises(core.BackupError, match="integrity"):
        core.verify_backup(str(tmp_path / "gym_backup_20260101_000000.db"), integrity="none")


def wait_for_second_start() -> None:
    """Sleep until just after a whole second, so that the next few fast steps share it."""
    fraction = time.time() % 1.0
    if fraction > 0.02:
        time.sleep(1.0 - fraction + 0.01)


def test_two_snapshots_in_the_same_second_both_survive(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    for _attempt in range(5):
        shutil.rmtree(backup_dir, ignore_errors=True)
        wait_for_second_start()
        first = core.snapshot(str(db), str(backup_dir), "app")
        second = core.snapshot(str(db), str(backup_dir), "app")
        if first["file"][:-3] == second["file"][:-5]:
            break
    else:
        pytest.fail("could not take two snapshots within one second")
    assert second["file"] == first["file"][:-3] + "_1.db"
    for result in (first, second):
        assert core.verify_backup(result["backup"])["ok"]
        assert json.loads(Path(result["backup"] + ".json").read_text())["file"] == result["file"]
    listed = core.list_backups(str(backup_dir), "app")
    assert sorted(b["file"] for b in listed["backups"]) == sorted([first["file"], second["file"]])
    assert listed["unfinished"] == [] and listed["invalid"] == []
    assert not [f for f in folder_files(backup_dir) if f.endswith(core.PENDING_SUFFIX)]


def test_existing_file_with_the_planned_name_is_never_overwritten(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    backup_dir.mkdir(mode=0o700)
    start = core.utcnow().replace(microsecond=0)
    foreign = {}
    for offset in range(-1, 8):  # every second the snapshot could be named after
        moment = start + dt.timedelta(seconds=offset)
        for seq in (0, 1):
            path = backup_dir / core.backup_filename("app", moment, seq)
            path.write_bytes(b"somebody else's file %d %d\n" % (offset, seq))
            foreign[path.name] = path.read_bytes()
    result = core.snapshot(str(db), str(backup_dir), "app")
    assert result["file"].endswith("_2.db"), result["file"]
    assert core.parse_backup_filename(result["file"])["created"] - start < dt.timedelta(seconds=7)
    for name, content in foreign.items():
        assert (backup_dir / name).read_bytes() == content
    listing = core.list_backups(str(backup_dir), "app")
    assert [b["file"] for b in listing["backups"]] == [result["file"]]
    assert sorted(i["file"] for i in listing["invalid"]) == sorted(foreign)
    assert core.verify_backup(result["backup"])["ok"]


HELPER_SNAPSHOTS = textwrap.dedent("""
    import sys, sqlite_fleet as core
    db, folder, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for _ in range(count):
        print(core.snapshot(db, folder, "app")["file"], flush=True)
""")


def test_concurrent_snapshots_from_two_processes_never_collide(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=50)
    procs = [subprocess.Popen([sys.executable, "-c", HELPER_SNAPSHOTS, str(db), str(backup_dir), "6"],
                              stdout=subprocess.PIPE, text=True, env=core_subprocess_env()) for _ in range(2)]
    names = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        names += out.split()
    assert len(names) == len(set(names)) == 12
    listing = core.list_backups(str(backup_dir), "app")
    assert sorted(b["file"] for b in listing["backups"]) == sorted(names)
    assert listing["unfinished"] == [] and listing["invalid"] == []
    for name in names:
        assert core.verify_backup(str(backup_dir / name))["ok"]


# --------------------------------------------------------------------------- corrupt source


def make_corrupt_db(path: Path, how: str) -> None:
    """A multi-page database with two table b-tree leaf pages broken: it opens, its schema
    reads, but integrity_check/quick_check find errors.

    ``reversed``: the cell pointer arrays reversed ("Rowid ... out of order", deterministic);
    ``out_of_range``: every cell pointer 0xffff (SQLite then either lists the bad offsets or
    gives up with "database disk image is malformed", from run to run).
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (v) VALUES (?)", (("x" * 100 + str(i),) for i in range(3000)))
    conn.execute("COMMIT")
    leaves = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 't' AND pagetype = 'leaf' "
                                         "ORDER BY pageno")]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    assert len(leaves) > 20
    with open(path, "r+b") as handle:
        for page in leaves[len(leaves) // 2: len(leaves) // 2 + 2]:
            offset = (page - 1) * page_size
            handle.seek(offset + 3)
            cells = int.from_bytes(handle.read(2), "big")
            handle.seek(offset + 8)
            pointers = handle.read(2 * cells)
            if how == "reversed":
                broken = b"".join(pointers[i:i + 2] for i in range(2 * cells - 2, -1, -2))
            else:
                broken = b"\xff" * (2 * cells)
            handle.seek(offset + 8)
            handle.write(broken)


def integrity_problems_of(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return core.run_integrity_check(conn, "full")
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["reversed", "out_of_range"])
@pytest.mark.parametrize("integrity", ["quick", "full"])
def test_corrupt_source_is_backed_up_but_flagged_unverified(tmp_path: Path, backup_dir: Path,
                                                            integrity: str, how: str) -> None:
    db = tmp_path / "broken.db"
    make_corrupt_db(db, how)
    assert integrity_problems_of(db)
    assert core.database_facts(str(db), count_rows=False)["page_count"] > 20  # it opens
    result = core.snapshot(str(db), str(backup_dir), "broken", integrity=integrity)
    assert result["verified"] is False
    assert result["problems"]
    if how == "reversed":
        assert "out of order" in " ".join(result["problems"])
    assert "FAILED" in result["msg"]
    manifest = json.loads(Path(result["backup"] + ".json").read_text())
    assert manifest["verified"] is False and manifest["integrity"]["result"] == "failed"
    assert manifest["integrity"]["problems"] == result["problems"]
    assert core.sha256_file(result["backup"]) == manifest["sha256"]
    listing = core.list_backups(str(backup_dir), "broken")
    assert [(b["file"], b["verified"]) for b in listing["backups"]] == [(result["file"], False)]
    verify = core.verify_backup(result["backup"])
    assert verify["ok"] is False and {"source", "integrity"} <= set(verify["checks"])
    assert verify["checks"]["checksum"] == "ok"  # the copy is exactly what was taken
    assert core.folder_stats(str(backup_dir), "broken")["verified_count"] == 0
    assert_no_side_files(backup_dir)
