"""The core on real SQLite files: names, snapshot commit protocol, verify, locks, facts.

Nothing is mocked: databases are real files, other processes are real processes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "module_utils"))
import sqlite_fleet as core  # noqa: E402
from unit_helpers import (  # noqa: E402
    LOCK_FILE_ONLY,
    backup_invariant,
    committed,
    core_subprocess_env,
    folder_files,
    make_app_db,
    open_backup,
    stop_writer,
)

UTC = dt.timezone.utc
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_no_side_files(folder: Path) -> None:
    leftovers = sorted(f for f in folder_files(folder) if f.endswith(SIDE_SUFFIXES))
    assert leftovers == [], "side files left in %s: %s" % (folder, leftovers)


def row_count(db: Path | str, table: str = "app_events") -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    finally:
        conn.close()


def backup_count(path: Path | str, table: str = "app_events") -> int:
    conn = open_backup(path)
    try:
        return conn.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    finally:
        conn.close()


def wal_holding_connection(db: Path, rows: int) -> sqlite3.Connection:
    """Commit ``rows`` more events with auto-checkpoint off and keep the connection open:
    the rows are committed, but only in the -wal (closing would checkpoint them)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    start = conn.execute("SELECT n FROM app_counter").fetchone()[0]
    for seq in range(start + 1, start + rows + 1):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO app_events (seq, at, payload) VALUES (?, 0, x'00')", (seq,))
        conn.execute("UPDATE app_counter SET n = n + 1")
        conn.execute("COMMIT")
    return conn


def main_file_only_count(db: Path, scratch: Path) -> int:
    """What a plain copy of only the .db file holds."""
    scratch.mkdir(exist_ok=True)
    copy = scratch / "plain-copy.db"
    shutil.copyfile(db, copy)
    return row_count(copy)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("seq", [0, 1, 2, 17])
@pytest.mark.parametrize("name", ["gym", "gym-controller", "app.v2", "my_app_backup", "A1"])
def test_backup_filename_round_trip(name: str, seq: int) -> None:
    created = dt.datetime(2026, 11, 22, 3, 4, 5, 678901, tzinfo=UTC)
    filename = core.backup_filename(name, created, seq)
    assert filename == "%s_backup_20261122_030405%s.db" % (name, "_%d" % seq if seq else "")
    parsed = core.parse_backup_filename(filename)
    assert parsed == {"name": name, "created": created.replace(microsecond=0), "seq": seq}


def test_backup_filename_is_utc_whatever_the_zone() -> None:
    berlin = dt.timezone(dt.timedelta(hours=2))
    created = dt.datetime(2026, 7, 1, 1, 30, 0, tzinfo=berlin)  # 2026-06-30 23:30 UTC
    filename = core.backup_filename("gym", created)
    assert filename == "gym_backup_20260630_233000.db"
    assert core.parse_backup_filename(filename)["created"] == created


@settings(max_examples=200, deadline=None)
@given(
    name=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,40}\Z").filter(lambda n: ".." not in n),
    seconds=st.integers(0, 4_000_000_000),
    seq=st.integers(0, 999_999),
)
def test_backup_filename_round_trip_property(name: str, seconds: int, seq: int) -> None:
    created = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=seconds)
    filename = core.backup_filename(core.validate_name(name), created, seq)
    assert core.parse_backup_filename(filename) == {"name": name, "created": created, "seq": seq}


@pytest.mark.parametrize("filename", [
    "gym_backup_20261122_030405.db.json",
    "gym_backup_20261122_030405.db.sha256",
    "gym_backup_20261122_0304.db",
    "gym_backup_20261340_030405.db",  # month 13
    "gym_backup_20261122_250000.db",  # hour 25
    "gym_backup_20261122_030405_0.db",  # suffixes start at 1
    "gym_backup_20261122_030405_x.db",
    "_backup_20261122_030405.db",
    ".gym_backup_20261122_030405.db",
    "gym_20261122_030405.db",
    "gym.db",
    "gym_backup_20261122_030405.db\n",  # "$" alone would accept a trailing newline
])
def test_parse_backup_filename_refuses_other_names(filename: str) -> None:
    assert core.parse_backup_filename(filename) is None


@pytest.mark.parametrize("bad", [
    "", "a/b", "/gym", "gym/", "..", "a..b", "../gym", ".gym", "-gym", "_gym", "gym db", "gym\n",
    "gym;rm", "gym$", "gym*", "gÿm", "gym\x00", "a" * 101, None, 7, b"gym",
])
def test_validate_name_refuses(bad: object) -> None:
    with pytest.raises(core.BackupError) as info:
        core.validate_name(bad)
    assert info.value.kind == core.KIND_BAD_INPUT


@pytest.mark.parametrize("good", ["gym", "gym-controller", "app.v2", "a_b", "A" * 100, "0"])
def test_validate_name_accepts(good: str) -> None:
    assert core.validate_name(good) == good


@pytest.mark.parametrize("bad", ["a/b", "..", "../x", ".x", "pre upgrade", "x" * 65, "ü", "a;b", "pre\n", 3])
def test_validate_label_refuses(bad: object) -> None:
    with pytest.raises(core.BackupError) as info:
        core.validate_label(bad)
    assert info.value.kind == core.KIND_BAD_INPUT


def test_validate_label_accepts_and_empty_means_none() -> None:
    assert core.validate_label("pre-upgrade") == "pre-upgrade"
    assert core.validate_label("") is None
    assert core.validate_label(None) is None


@pytest.mark.parametrize("kwargs", [
    {"name": "../evil"}, {"name": "a/b"}, {"name": ""}, {"label": "../x"}, {"label": "a b"},
    {"method": "cp"}, {"integrity": "none"}, {"busy_timeout_ms": -1},
])
def test_snapshot_bad_input_changes_nothing(tmp_path: Path, backup_dir: Path, kwargs: dict) -> None:
    db = make_app_db(tmp_path / "app.db", rows=3)
    args = {"name": "app", **kwargs}
    with pytest.raises(core.BackupError) as info:
        core.snapshot(str(db), str(backup_dir), **args)
    assert info.value.kind == core.KIND_BAD_INPUT
    assert not backup_dir.exists()


def test_snapshot_refuses_what_is_not_a_database(tmp_path: Path, backup_dir: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "text.db").write_text("hello, not a database\n" * 10)
    (tmp_path / "folder.db").mkdir()
    for target, why in [(tmp_path / "missing.db", "does not exist"), (tmp_path / "empty.db", "empty"),
                        (tmp_path / "text.db", "not an SQLite"), (tmp_path / "folder.db", "directory")]:
        with pytest.raises(core.BackupError, match=why) as info:
            core.snapshot(str(target), str(backup_dir), "app")
        assert info.value.kind == core.KIND_BAD_INPUT
    with pytest.raises(core.BackupError, match="absolute"):
        core.snapshot("app.db", str(backup_dir), "app")
    assert not backup_dir.exists()


def test_snapshot_check_mode_writes_nothing(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=3)
    result = core.snapshot(str(db), str(backup_dir), "app", check_mode=True)
    assert result["changed"] is True
    assert core.parse_backup_filename(result["file"])["name"] == "app"
    assert not backup_dir.exists()


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


# --------------------------------------------------------------------------- leftovers


def plant_leftovers(backup_dir: Path, template: Path) -> dict[str, Path]:
    """What interrupted runs leave, plus a foreign file that only looks like a backup."""
    planted = {
        "tmp": backup_dir / (core.TMP_PREFIX + "app.4242.deadbeef.db"),
        "tmp_journal": backup_dir / (core.TMP_PREFIX + "app.4242.deadbeef.db-journal"),
        "tmp_manifest": backup_dir / (core.TMP_PREFIX + "app_backup_20250101_000000.db.json.0badf00d"),
        "pending_db": backup_dir / "app_backup_20250101_000000.db",
        "pending_sha": backup_dir / "app_backup_20250101_000000.db.sha256",
        "pending_marker": backup_dir / ".app_backup_20250101_000000.db.pending",
        "orphan_manifest": backup_dir / "app_backup_20240101_000000.db.json",
        "orphan_sha": backup_dir / "app_backup_20240101_000000.db.sha256",
    }
    for path in planted.values():
        path.write_bytes(b"left over\n")
    shutil.copyfile(template, planted["pending_db"])
    # the sidecars a prune leaves when interrupted after removing the .db: written by this tool
    planted["orphan_manifest"].write_text(json.dumps({"file": planted["orphan_manifest"].name[:-5],
                                                      "tool": {"name": core.TOOL_NAME}}))
    planted["orphan_sha"].write_text("%s  %s\n" % ("0" * 64, planted["orphan_sha"].name[:-7]))
    foreign = {
        "foreign_db": backup_dir / "app_backup_20250102_000000.db",  # no manifest, no marker
        "notes": backup_dir / "notes.txt",
        "other_db": backup_dir / "other.db",
        # named like our sidecar of a removed backup, but not written by this tool
        "foreign_orphan_json": backup_dir / "app_backup_20230101_000000.db.json",
    }
    shutil.copyfile(template, foreign["foreign_db"])
    foreign["notes"].write_text("keep me\n")
    foreign["other_db"].write_text("keep me too\n")
    foreign["foreign_orphan_json"].write_text('{"note": "mine"}\n')
    return {**{"leftover:" + k: v for k, v in planted.items()}, **{"foreign:" + k: v for k, v in foreign.items()}}


@pytest.mark.parametrize("how", ["snapshot", "prune"])
def test_unfinished_leftovers_are_removed_foreign_files_stay(tmp_path: Path, backup_dir: Path, how: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    first = core.snapshot(str(db), str(backup_dir), "app")
    files = plant_leftovers(backup_dir, db)
    foreign = {k: v for k, v in files.items() if k.startswith("foreign:")}
    leftovers = {k: v for k, v in files.items() if k.startswith("leftover:")}
    foreign_content = {k: v.read_bytes() for k, v in foreign.items()}

    listing = core.list_backups(str(backup_dir), "app")
    assert [b["file"] for b in listing["backups"]] == [first["file"]]
    assert [i["file"] for i in listing["invalid"]] == [foreign["foreign:foreign_db"].name]
    assert {u["file"] for u in listing["unfinished"]} == {p.name for p in leftovers.values()} - {
        leftovers["leftover:pending_sha"].name}  # removed along with its pending .db

    if how == "snapshot":
        result = core.snapshot(str(db), str(backup_dir), "app")
        expected_files = {first["file"], result["file"]}
    else:
        check = core.apply_retention(str(backup_dir), "app", {"keep_last": 5}, check_mode=True)
        assert sorted(check["removed_unfinished"]) == sorted(p.name for p in leftovers.values())
        assert all(p.exists() for p in leftovers.values())  # check mode removes nothing
        result = core.apply_retention(str(backup_dir), "app", {"keep_last": 5})
        assert result["changed"] is True and result["deleted"] == []
        assert result["invalid"] == [foreign["foreign:foreign_db"].name]
        expected_files = {first["file"]}
    assert sorted(result["removed_unfinished"]) == sorted(p.name for p in leftovers.values())
    assert not [p for p in leftovers.values() if p.exists()]
    for key, path in foreign.items():
        assert path.read_bytes() == foreign_content[key], key
    listing = core.list_backups(str(backup_dir), "app")
    assert {b["file"] for b in listing["backups"]} == expected_files
    assert listing["unfinished"] == []
    assert [i["file"] for i in listing["invalid"]] == [foreign["foreign:foreign_db"].name]


def test_pending_marker_of_a_committed_backup_only_loses_the_marker(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    first = core.snapshot(str(db), str(backup_dir), "app")
    marker = backup_dir / ("." + first["file"] + core.PENDING_SUFFIX)
    marker.write_bytes(b"")
    assert core.remove_unfinished(str(backup_dir), "app") == [marker.name]
    assert core.verify_backup(first["backup"])["ok"]


@pytest.mark.parametrize("breakage", ["not json", "wrong file", "wrong format", "no sha", "not an object",
                                      "bad label", "too big", "a folder"])
def test_db_with_broken_manifest_is_invalid_not_a_backup(tmp_path: Path, backup_dir: Path, breakage: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    good = core.snapshot(str(db), str(backup_dir), "app")
    broken = backup_dir / "app_backup_20250101_000000.db"
    shutil.copyfile(good["backup"], broken)
    manifest = dict(good["manifest"], file=broken.name)
    manifest_path = Path(str(broken) + ".json")
    if breakage == "not json":
        manifest_path.write_text("{not json")
    elif breakage == "a folder":
        manifest_path.mkdir()
    else:
        if breakage == "wrong file":
            manifest["file"] = good["file"]
        elif breakage == "wrong format":
            manifest["format_version"] = 99
        elif breakage == "no sha":
            del manifest["sha256"]
        elif breakage == "bad label":
            manifest["label"] = "../x"
        elif breakage == "too big":
            manifest["padding"] = "x" * (core.MANIFEST_MAX_BYTES + 1)
        text = json.dumps(["not", "an", "object"] if breakage == "not an object" else manifest)
        manifest_path.write_text(text)
    listing = core.list_backups(str(backup_dir), "app")
    assert [b["file"] for b in listing["backups"]] == [good["file"]]
    assert [i["file"] for i in listing["invalid"]] == [broken.name]
    stats = core.folder_stats(str(backup_dir), "app")
    assert stats["count"] == 1 and stats["invalid"] == [broken.name]
    assert core.verify_backup(str(broken))["ok"] is False
    # retention never deletes it, and no later run removes it (it has no pending marker)
    core.apply_retention(str(backup_dir), "app", {"keep_last": 1})
    core.snapshot(str(db), str(backup_dir), "app")
    assert broken.exists() and manifest_path.exists()


# --------------------------------------------------------------------------- verify


@pytest.fixture
def good_backup(tmp_path: Path, backup_dir: Path) -> Path:
    db = tmp_path / "app.db"
    make_app_db(db, rows=300, payload_bytes=200)
    backup = Path(core.snapshot(str(db), str(backup_dir), "app")["backup"])
    assert core.verify_backup(str(backup))["ok"]
    return backup


def failed_checks(backup: Path) -> dict[str, str]:
    result = core.verify_backup(str(backup))
    assert result["ok"] is False
    assert result["problems"]
    return {k: v for k, v in result["checks"].items() if v != "ok"}


def test_verify_catches_a_flipped_byte(good_backup: Path) -> None:
    data = bytearray(good_backup.read_bytes())
    data[len(data) // 2] ^= 0x01
    good_backup.write_bytes(bytes(data))
    failed = failed_checks(good_backup)
    assert "checksum" in failed and "checksum file says" in failed["checksum"] and "manifest says" in failed["checksum"]


def test_verify_catches_a_truncated_file(good_backup: Path) -> None:
    size = good_backup.stat().st_size
    with open(good_backup, "r+b") as handle:
        handle.truncate(size - 4096)
    failed = failed_checks(good_backup)
    assert {"checksum", "size"} <= set(failed)


def test_verify_catches_a_missing_manifest(good_backup: Path) -> None:
    Path(str(good_backup) + ".json").unlink()
    failed = failed_checks(good_backup)
    assert "no manifest" in failed["manifest"]


def test_verify_catches_edited_row_counts(good_backup: Path) -> None:
    manifest_path = Path(str(good_backup) + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["app_events"] += 1
    manifest_path.write_text(json.dumps(manifest))
    failed = failed_checks(good_backup)
    assert set(failed) == {"row_counts"}
    assert "app_events has 300 rows, manifest says 301" in failed["row_counts"]


def test_verify_catches_an_edited_manifest_checksum(good_backup: Path) -> None:
    manifest_path = Path(str(good_backup) + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    failed = failed_checks(good_backup)
    assert set(failed) == {"checksum"} and "manifest says 000000000000" in failed["checksum"]


def test_verify_catches_a_missing_or_wrong_checksum_file(good_backup: Path) -> None:
    sidecar = Path(str(good_backup) + ".sha256")
    sidecar.unlink()
    assert set(failed_checks(good_backup)) == {"checksum_file"}
    sidecar.write_text("%s  %s\n" % ("1" * 64, good_backup.name))
    assert set(failed_checks(good_backup)) == {"checksum"}
    sidecar.write_text("%s  %s\n" % (core.sha256_file(str(good_backup)), "other_backup_20250101_000000.db"))
    assert set(failed_checks(good_backup)) == {"checksum_file"}


def test_verify_catches_a_wrong_first_hop_checksum(good_backup: Path) -> None:
    result = core.verify_backup(str(good_backup), expected_sha256="2" * 64)
    assert result["ok"] is False and "first hop says 222222222222" in result["checks"]["checksum"]


def test_sha256sum_c_accepts_the_sidecar(good_backup: Path) -> None:
    sidecar = good_backup.name + ".sha256"
    ok = subprocess.run(["sha256sum", "-c", sidecar], cwd=good_backup.parent, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "%s: OK" % good_backup.name
    data = bytearray(good_backup.read_bytes())
    data[200] ^= 0xFF
    good_backup.write_bytes(bytes(data))
    bad = subprocess.run(["sha256sum", "-c", sidecar], cwd=good_backup.parent, capture_output=True, text=True)
    assert bad.returncode != 0 and "FAILED" in bad.stdout


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


# --------------------------------------------------------------------------- facts


def test_database_facts_on_a_wal_db(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10, user_version=3)
    holder = wal_holding_connection(db, rows=7)
    try:
        facts = core.database_facts(str(db))
        assert facts["journal_mode"] == "wal"
        assert facts["wal_bytes"] == os.path.getsize(str(db) + "-wal") > 0
        assert facts["tables"] == {"app_counter": 1, "app_events": 17}
        assert facts["table_count"] == 2
        assert facts["user_version"] == 3
        assert facts["page_size"] == 4096 and facts["page_count"] >= 3
        assert facts["size_bytes"] == db.stat().st_size
        assert facts["owner_uid"] == db.stat().st_uid
        assert facts["sqlite_version"] == sqlite3.sqlite_version
        assert facts["wal_reset_bug"] == core.has_wal_reset_bug()
        assert core.database_facts(str(db), count_rows=False)["tables"] == {"app_counter": None, "app_events": None}
    finally:
        holder.close()


def test_database_facts_on_a_closed_wal_db_creates_no_side_files(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    assert sorted(os.listdir(tmp_path)) == ["app.db"]
    facts = core.database_facts(str(db))
    assert facts["journal_mode"] == "wal" and facts["wal_bytes"] == 0
    assert facts["tables"] == {"app_counter": 1, "app_events": 10}
    assert sorted(os.listdir(tmp_path)) == ["app.db"]


def test_database_facts_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(core.BackupError) as info:
        core.database_facts(str(tmp_path / "nope.db"))
    assert info.value.kind == core.KIND_BAD_INPUT


def test_checkpoint_on_a_wal_db(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    holder = wal_holding_connection(db, rows=20)
    try:
        dry = core.checkpoint(str(db), "PASSIVE", check_mode=True)
        assert dry["changed"] is True and dry["checkpointed"] is None
        assert main_file_only_count(db, tmp_path / "s1") == 10  # check mode did nothing
        result = core.checkpoint(str(db), "passive")
        assert result["journal_mode"] == "wal" and result["skipped"] is False
        assert result["busy"] == 0 and result["log"] == result["checkpointed"] > 0
        assert result["changed"] is True
        assert result["warning"] == core.wal_reset_warning()
        assert main_file_only_count(db, tmp_path / "s2") == 30  # now in the main file
        truncate = core.checkpoint(str(db), "TRUNCATE")
        assert truncate["busy"] == 0
        assert os.path.getsize(str(db) + "-wal") == 0
    finally:
        holder.close()


def test_checkpoint_on_a_rollback_journal_db(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", journal_mode="delete", rows=10)
    result = core.checkpoint(str(db), "FULL")
    assert result["skipped"] is True and result["changed"] is False and result["journal_mode"] == "delete"
    assert sorted(os.listdir(tmp_path)) == ["app.db"]
    with pytest.raises(core.BackupError) as info:
        core.checkpoint(str(db), "EVERYTHING")
    assert info.value.kind == core.KIND_BAD_INPUT


@pytest.mark.parametrize(("version", "buggy"), [
    ("3.7.0", True), ("3.31.1", True), ("3.40.1", True), ("3.44.5", True), ("3.44.6", False),
    ("3.45.0", True), ("3.50.6", True), ("3.50.7", False), ("3.51.0", True), ("3.51.2", True),
    ("3.51.3", False), ("3.52.0", False), ("3.6.23", False),
])
def test_has_wal_reset_bug(version: str, buggy: bool) -> None:
    assert core.has_wal_reset_bug(version) is buggy
    assert (core.wal_reset_warning(version) is not None) is buggy


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
