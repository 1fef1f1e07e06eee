"""The five modules, run through Ansible itself on real SQLite files (nothing mocked).

Ansible starts in about 1.5 s, so related calls are batched into one playbook where the
test stays readable; module-scoped fixtures are shared per interpreter under test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from module_test_helpers import (
    BIN,
    MODULES,
    REPO,
    ansible_env,
    assert_no_traceback,
    assert_refused_unchanged,
    core,
    corrupt_table_pages,
    documented_options,
    interpreter_sqlite_version,
    make_database,
    run_cases,
    run_cases_in_copies,
    run_many,
    run_module,
    run_tasks,
    tree_state,
)

NOBODY = 65534  # nobody / nogroup: the "app user" owning the databases
BACKUP_NAME_RE = re.compile(r"^gym_backup_(\d{8}_\d{6})(?:_(\d+))?\.db$")


def backups_in(folder: Path, name: str = "gym") -> list[str]:
    return sorted(e for e in os.listdir(folder) if core.parse_backup_filename(e) and e.startswith(name + "_"))


def manifest_of(backup: Path) -> dict:
    return json.loads(Path(str(backup) + ".json").read_text())


# --------------------------------------------------------------------------- shared backups


@pytest.fixture(scope="module")
def fleet_backups(python, tmp_path_factory):
    """Three concurrent backups of a live WAL database owned by the app user, taken while
    committed rows sit only in its -wal, plus one backup of a rollback-journal database.

    The three hosts are aliases of this machine, so the three backups land in the same
    folder at (almost always) the same second; retried if the seconds happen to differ.
    """
    root = tmp_path_factory.mktemp("fleet")
    app = root / "srv"
    app.mkdir()
    db = make_database(app / "gym.db", rows=400)
    journal_db = make_database(app / "ledger.db", rows=200, journal_mode="delete")
    os.chown(journal_db, NOBODY, NOBODY)

    # The app: auto-checkpoint off, so what it commits now stays in gym.db-wal.
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.executemany("INSERT INTO members (name, note) VALUES (?, ?)", [("late %d" % i, "wal") for i in range(37)])
    for path in (db, Path(str(db) + "-wal"), Path(str(db) + "-shm")):
        os.chown(path, NOBODY, NOBODY)
    wal_bytes = os.path.getsize(str(db) + "-wal")
    main_file = sqlite3.connect("file:%s?mode=ro&immutable=1" % db, uri=True)  # ignores the -wal
    main_file_rows = main_file.execute("SELECT count(*) FROM members").fetchone()[0]
    main_file.close()

    backup_dir = root / "backups"
    try:
        for _attempt in range(4):
            if backup_dir.exists():
                shutil.rmtree(backup_dir)
            per_task = run_tasks([
                {"sqlite_backup": {"path": str(db), "name": "gym", "backup_dir": str(backup_dir),
                                   "source_host": "{{ inventory_hostname }}"}},
                {"sqlite_backup": {"path": str(journal_db), "name": "ledger", "backup_dir": str(backup_dir)},
                 "run_once": True},
            ], python, hosts=("pi1", "pi2", "pi3"), tmp_dir=root)
            stamps = Counter(BACKUP_NAME_RE.match(f).group(1) for f in backups_in(backup_dir))
            if max(stamps.values(), default=0) >= 2:
                break
    finally:
        writer.close()
    return {
        "root": root, "db": db, "journal_db": journal_db, "backup_dir": backup_dir,
        "wal": per_task[0], "journal": next(iter(per_task[1].values())),
        "expected_members": 400 + 37, "main_file_rows": main_file_rows, "wal_bytes": wal_bytes,
    }


def copy_folder(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, copy_function=shutil.copy2)
    return target


# --------------------------------------------------------------------------- sqlite_backup


def test_backup_of_live_wal_database_is_verified_private_and_complete(fleet_backups):
    assert fleet_backups["wal_bytes"] > 0 and fleet_backups["main_file_rows"] == 400  # rows only in the -wal
    backup_dir = fleet_backups["backup_dir"]
    for host, result in fleet_backups["wal"].items():
        assert not result.get("failed"), result
        assert result["changed"] is True and result["verified"] is True
        assert_no_traceback(result)
        backup = Path(result["backup"])
        assert backup.parent == backup_dir and result["file"] == backup.name
        assert result["journal_mode"] == "wal" and result["writers_held_off_seconds"] == 0
        assert result["size_bytes"] == backup.stat().st_size
        assert result["sha256"] == core.sha256_file(str(backup))
        assert result["duration_seconds"] >= 0 and result["removed_unfinished"] == []
        manifest = manifest_of(backup)
        assert manifest == result["manifest"]
        assert manifest["verified"] is True and manifest["source"]["host"] == host
        assert manifest["tables"] == {"members": fleet_backups["expected_members"], "visits": 400}
        assert Path(str(backup) + ".sha256").read_text() == "%s  %s\n" % (result["sha256"], backup.name)
        # the copy holds the rows that were only in the -wal, and is itself in DELETE mode
        conn = sqlite3.connect("file:%s?mode=ro&immutable=1" % backup, uri=True)
        assert conn.execute("SELECT count(*) FROM members").fetchone()[0] == fleet_backups["expected_members"]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        conn.close()

    folder = os.stat(backup_dir)
    assert stat.S_IMODE(folder.st_mode) == 0o700 and (folder.st_uid, folder.st_gid) == (NOBODY, NOBODY)
    files = [e for e in os.listdir(backup_dir) if not e.startswith(".")]
    assert len(files) == 4 * 3  # 3 gym + 1 ledger backups, each with .sha256 and .json
    for entry in files:
        st = os.stat(backup_dir / entry)
        assert stat.S_IMODE(st.st_mode) == 0o600, entry
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), entry
    assert not [e for e in os.listdir(backup_dir) if e.endswith(("-wal", "-shm", "-journal"))]


def test_backups_in_the_same_second_all_survive(fleet_backups):
    names = backups_in(fleet_backups["backup_dir"])
    assert len(names) == 3 and sorted(r["file"] for r in fleet_backups["wal"].values()) == names
    by_second = Counter(BACKUP_NAME_RE.match(n).group(1) for n in names)
    second, count = by_second.most_common(1)[0]
    assert count >= 2, "the three concurrent backups never shared a second: %s" % names
    same = [n for n in names if BACKUP_NAME_RE.match(n).group(1) == second]
    assert "gym_backup_%s.db" % second in same
    assert {BACKUP_NAME_RE.match(n).group(2) for n in same} - {None} == {str(i) for i in range(1, count)}
    assert all(manifest_of(fleet_backups["backup_dir"] / n)["verified"] for n in names)


def test_rollback_journal_source_reports_writers_held_off(fleet_backups):
    result = fleet_backups["journal"]
    assert not result.get("failed"), result
    assert result["journal_mode"] == "delete"
    assert result["writers_held_off_seconds"] > 0
    assert "rollback-journal" in result["msg"] and "held off" in result["msg"]
    assert result["manifest"]["tables"] == {"members": 200, "visits": 200}


def without_sqlite_side_files(state: dict[str, tuple]) -> dict[str, tuple]:
    """A read of a live WAL database maps its -shm (and may create an empty -wal): SQLite's own
    bookkeeping, not a change. Drop those and the mtime of the folder holding them."""
    kept = {key: value for key, value in state.items() if not key.endswith(("-wal", "-shm"))}
    kept["."] = kept["."][:5]
    return kept


def test_check_mode_writes_nothing(python, tmp_path):
    app, backups = tmp_path / "app", tmp_path / "backups"
    app.mkdir()
    backups.mkdir()
    db = make_database(app / "gym.db")
    existing = backups / "existing"
    core.snapshot(str(db), str(existing), "gym")
    before_app, before_backups = tree_state(app), tree_state(backups)
    new_dir, retention_args = backups / "new" / "sub", {"backup_dir": str(existing), "name": "gym", "keep_last": 1}
    results = run_many([
        {"sqlite_backup": {"path": str(db), "name": "gym", "backup_dir": str(new_dir)}, "check_mode": True},
        {"sqlite_backup": {"path": str(db), "name": "gym", "backup_dir": str(existing), "checkpoint": "TRUNCATE"},
         "check_mode": True},
        {"sqlite_retention": retention_args, "check_mode": True, "diff": True},
        {"sqlite_checkpoint": {"path": str(db), "mode": "TRUNCATE"}, "check_mode": True},
        {"sqlite_verify": {"backup_dir": str(existing)}, "check_mode": True},
        {"sqlite_info": {"path": str(db), "backup_dir": str(existing)}, "check_mode": True},
    ], python, tmp_dir=tmp_path)
    assert tree_state(backups) == before_backups
    assert without_sqlite_side_files(tree_state(app)) == without_sqlite_side_files(before_app)
    planned, into_existing, retention, checkpoint, verify, info = results
    for result in results:
        assert not result.get("failed"), result
        assert_no_traceback(result)
    assert planned["changed"] is True and planned["verified"] is None and planned["manifest"] is None
    assert re.fullmatch(r"gym_backup_\d{8}_\d{6}\.db", planned["file"])
    assert planned["backup"] == str(new_dir / planned["file"])
    assert into_existing["checkpoint_result"]["mode"] == "TRUNCATE"
    assert retention["changed"] is False and retention["deleted"] == []
    assert checkpoint["journal_mode"] == "wal" and checkpoint["checkpointed"] is None
    assert verify["changed"] is False and verify["ok"] is True
    assert info["changed"] is False and info["backups"]["count"] == 1


def test_corrupt_source_is_backed_up_unverified_and_fails(python, tmp_path):
    db = make_database(tmp_path / "gym.db", rows=3000, journal_mode="delete")
    corrupt_table_pages(db)
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] >= 3  # it still opens
    assert conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]
    conn.close()

    result = run_module("sqlite_backup", {"path": str(db), "name": "gym", "backup_dir": str(tmp_path / "bk")},
                        python=python)
    assert result["failed"] is True and result["changed"] is True
    assert result["kind"] == "corrupt"
    assert "corrupt" in result["msg"] and "unverified" in result["msg"]
    assert_no_traceback(result)
    backup = Path(result["backup"])
    assert backup.is_file() and result["verified"] is False and result["problems"]
    manifest = manifest_of(backup)
    assert manifest["verified"] is False and manifest["integrity"]["result"] == "failed"
    assert core.sha256_file(str(backup)) == manifest["sha256"]


# --------------------------------------------------------------------------- sqlite_verify


def test_verify_passes_then_catches_a_flipped_byte(python, fleet_backups, tmp_path):
    folder = copy_folder(fleet_backups["backup_dir"], tmp_path / "bk")
    victim = fleet_backups["wal"]["pi1"]
    target = folder / victim["file"]
    ok_latest, ok_all, ok_path = run_many([
        {"sqlite_verify": {"backup_dir": str(folder), "name": "gym"}},
        {"sqlite_verify": {"backup_dir": str(folder), "select": "all", "integrity": "quick"}},
        {"sqlite_verify": {"path": str(target), "expected_sha256": victim["sha256"].upper()}},
    ], python, tmp_dir=tmp_path)
    for result in (ok_latest, ok_all, ok_path):
        assert not result.get("failed"), result
        assert result["ok"] is True and result["changed"] is False and result["failed_backups"] == []
    assert ok_latest["verified_count"] == 1 and ok_latest["results"][0]["file"] == backups_in(folder)[-1]
    assert ok_all["verified_count"] == 4  # three gym and one ledger
    assert ok_path["results"][0]["checks"]["checksum"] == "ok"
    assert ok_path["results"][0]["checks"]["row_counts"] == "ok"

    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    before = tree_state(folder)
    by_path, by_folder = run_many([
        {"sqlite_verify": {"path": str(target)}},
        {"sqlite_verify": {"backup_dir": str(folder), "select": "all"}},
    ], python, tmp_dir=tmp_path)
    assert tree_state(folder) == before
    for result in (by_path, by_folder):
        assert result["failed"] is True and result["ok"] is False and result["changed"] is False
        assert result["kind"] == "corrupt"
        assert victim["file"] in result["msg"] and "checksum" in result["msg"]
        assert result["failed_backups"] == [victim["file"]]
        assert_no_traceback(result)
    assert by_folder["verified_count"] == 3
    assert [r["file"] for r in by_folder["results"] if not r["ok"]] == [victim["file"]]


def test_verify_reports_broken_files_with_select_all(python, fleet_backups, tmp_path):
    folder = copy_folder(fleet_backups["backup_dir"], tmp_path / "bk")
    stray = folder / "gym_backup_20200101_000000.db"
    stray.write_bytes(os.urandom(8192))  # named like a backup, no manifest
    latest, everything, empty = run_many([
        {"sqlite_verify": {"backup_dir": str(folder), "name": "gym"}},
        {"sqlite_verify": {"backup_dir": str(folder), "name": "gym", "select": "all"}},
        {"sqlite_verify": {"backup_dir": str(folder), "name": "other"}},
    ], python, tmp_dir=tmp_path)
    assert not latest.get("failed") and latest["invalid"] == [stray.name]
    assert any(stray.name in w for w in latest.get("warnings", []))
    assert everything["failed"] is True and everything["failed_backups"] == [stray.name]
    assert stray.name in everything["msg"] and "manifest" in everything["msg"]
    assert everything["verified_count"] == 3 and everything["invalid"] == [stray.name]
    assert empty["failed"] is True and "holds no backup of other" in empty["msg"] and empty["kind"] == "corrupt"
    assert stray.exists()


# --------------------------------------------------------------------------- sqlite_retention


def test_retention_check_mode_deletes_nothing_then_real_run_deletes_the_same(python, fleet_backups, tmp_path):
    folder = copy_folder(fleet_backups["backup_dir"], tmp_path / "bk")
    names = backups_in(folder)
    args = {"backup_dir": str(folder), "name": "gym", "keep_last": 1, "keep_daily": 1,
            "timezone": "Europe/Helsinki"}
    before = tree_state(folder)
    plan = run_module("sqlite_retention", args, check=True, diff=True, python=python)
    assert tree_state(folder) == before
    assert not plan.get("failed"), plan
    assert plan["changed"] is True
    assert sorted(plan["deleted"]) == names[:-1] and plan["kept"] == [names[-1]]
    decision = {d["file"]: d for d in plan["decisions"]}
    assert "newest verified backup" in decision[names[-1]]["reasons"]
    assert decision[names[0]]["reasons"] == ["not kept by any rule"]
    assert plan["diff"]["before"].splitlines() == names and plan["diff"]["after"].splitlines() == [names[-1]]

    done, again = run_many([
        {"sqlite_retention": args, "diff": True},
        {"sqlite_retention": dict(args, now="2099-01-01T00:00:00Z")},
    ], python, tmp_dir=tmp_path)
    assert not done.get("failed"), done
    assert done["changed"] is True and done["deleted"] == plan["deleted"] and done["kept"] == plan["kept"]
    assert backups_in(folder) == [names[-1]]
    for gone in plan["deleted"]:
        assert not any((folder / (gone + suffix)).exists() for suffix in ("", ".sha256", ".json"))
    assert backups_in(folder, "ledger")  # another database's backups are not touched
    assert again["changed"] is False and again["deleted"] == [] and again["kept"] == [names[-1]]


# --------------------------------------------------------------------------- sqlite_info


def test_info_returns_database_facts_and_backup_stats(python, fleet_backups, tmp_path):
    db = make_database(tmp_path / "gym.db", rows=123)
    folder = copy_folder(fleet_backups["backup_dir"], tmp_path / "bk")
    full, quick = run_many([
        {"sqlite_info": {"path": str(db), "backup_dir": str(folder), "name": "gym"}},
        {"sqlite_info": {"path": str(db), "count_rows": False}},
    ], python, tmp_dir=tmp_path)
    for result in (full, quick):
        assert not result.get("failed"), result
        assert result["changed"] is False
    facts = full["database"]
    assert facts["path"] == str(db) and facts["journal_mode"] == "wal" and facts["user_version"] == 3
    assert facts["tables"] == {"members": 123, "visits": 123} and facts["table_count"] == 2
    assert facts["page_size"] == 4096 and facts["sqlite_version"] == interpreter_sqlite_version(python)
    stats = full["backups"]
    assert stats["count"] == 3 and stats["verified_count"] == 3 and stats["exists"] is True
    assert stats["newest"] == backups_in(folder)[-1] and stats["oldest"] == backups_in(folder)[0]
    assert quick["database"]["tables"] == {"members": None, "visits": None} and quick["backups"] is None


# --------------------------------------------------------------------------- sqlite_checkpoint


def test_checkpoint_on_wal_and_non_wal_databases(python, tmp_path):
    db = make_database(tmp_path / "gym.db")
    plain = make_database(tmp_path / "plain.db", journal_mode="delete")
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.executemany("INSERT INTO visits (member_id, door) VALUES (?, ?)", [(1, "pool")] * 200)
        wal = Path(str(db) + "-wal")
        wal_bytes = wal.stat().st_size
        assert wal_bytes > 0
        planned, passive, truncate, skipped, backup = run_many([
            {"sqlite_checkpoint": {"path": str(db), "mode": "PASSIVE"}, "check_mode": True},
            {"sqlite_checkpoint": {"path": str(db)}},
            {"sqlite_checkpoint": {"path": str(db), "mode": "TRUNCATE"}},
            {"sqlite_checkpoint": {"path": str(plain), "mode": "FULL"}},
            {"sqlite_backup": {"path": str(db), "name": "gym", "backup_dir": str(tmp_path / "bk"),
                               "checkpoint": "PASSIVE"}},
        ], python, tmp_dir=tmp_path)
        assert writer.execute("SELECT count(*) FROM visits").fetchone()[0] == 700
        assert wal.stat().st_size == 0  # TRUNCATE emptied the -wal while the app kept it open
    finally:
        writer.close()
    for result in (planned, passive, truncate, skipped, backup):
        assert not result.get("failed"), result
        assert_no_traceback(result)
    assert planned["changed"] is True and planned["checkpointed"] is None and planned["wal_bytes_before"] == wal_bytes
    assert passive["changed"] is True and passive["journal_mode"] == "wal" and passive["mode"] == "PASSIVE"
    assert not passive.get("skipped")  # Ansible drops a false "skipped" from results
    assert passive["log"] > 0 and passive["checkpointed"] == passive["log"] and passive["busy"] == 0
    assert truncate["changed"] is True and truncate["mode"] == "TRUNCATE" and truncate["busy"] == 0
    assert skipped["skipped"] is True and skipped["changed"] is False and skipped["journal_mode"] == "delete"
    assert "warnings" not in skipped or not skipped["warnings"]
    assert backup["verified"] is True and backup["checkpoint_result"]["mode"] == "PASSIVE"

    if core.has_wal_reset_bug(interpreter_sqlite_version(python)):
        for result in (planned, passive, backup):
            assert any("WAL-reset bug" in w for w in result.get("warnings", [])), result
    else:
        assert not any("WAL-reset bug" in w for w in passive.get("warnings", []))


# --------------------------------------------------------------------------- bad input

def backup_args(**changes: Any) -> dict[str, Any]:
    """sqlite_backup's arguments for the case's database and backup folder, with ``changes``."""
    return {"path": "{d}/gym.db", "name": "gym", "backup_dir": "{d}/bk", **changes}


# id, module, args ({d} is the case's own folder), msg substring, kind (None: Ansible's own argument check)
BAD_INPUT = [
    ("missing-database", "sqlite_backup", backup_args(path="{d}/missing.db"), "does not exist", "bad_input"),
    ("directory-as-database", "sqlite_backup", backup_args(path="{d}/adir"), "is a directory", "bad_input"),
    ("text-file-as-database", "sqlite_backup", backup_args(path="{d}/notes.txt"),
     "not an SQLite 3 database", "bad_input"),
    ("empty-database", "sqlite_backup", backup_args(path="{d}/empty.db"), "is empty", "bad_input"),
    ("relative-database-path", "sqlite_backup", backup_args(path="gym.db"), "must be an absolute path", "bad_input"),
    ("relative-backup-dir", "sqlite_backup", backup_args(backup_dir="bk"), "must be an absolute path", "bad_input"),
    ("name-with-slash", "sqlite_backup", backup_args(name="gym/x"), "is not allowed", "bad_input"),
    ("name-with-dotdot", "sqlite_backup", backup_args(name="gym..old"), "is not allowed", "bad_input"),
    ("bad-label", "sqlite_backup", backup_args(label="pre upgrade"), "label", "bad_input"),
    ("unknown-owner", "sqlite_backup", backup_args(owner="no-such-user-here"),
     "does not exist on this host", "bad_input"),
    ("backup-dir-under-a-file", "sqlite_backup", backup_args(backup_dir="{d}/afile/bk"),
     "cannot create backup folder", "io"),
    ("backup-dir-is-a-file", "sqlite_backup", backup_args(backup_dir="{d}/afile"), "not a directory", "bad_input"),
    ("negative-lock-timeout", "sqlite_backup", backup_args(lock_timeout=-1), "from 0 to 604800, got -1.0", "bad_input"),
    ("retention-keeps-nothing", "sqlite_backup", backup_args(retention={}), "keeps nothing", "bad_input"),
    ("retention-negative-keep", "sqlite_backup", backup_args(retention={"keep_last": 2, "keep_days": -1}),
     "keep_days must be a non-negative integer, got -1; nothing was backed up", "bad_input"),
    ("retention-unknown-timezone", "sqlite_backup",
     backup_args(retention={"keep_last": 2, "timezone": "Mars/Olympus_Mons"}), "unknown time zone", "bad_input"),
    ("retention-bad-label-days", "sqlite_backup",
     backup_args(retention={"keep_last": 2, "keep_label_days": {"pre-upgrade": -3}}),
     "must be a whole number of days from 0 to 36525, got -3", "bad_input"),
    ("retention-unknown-rule", "sqlite_backup", backup_args(retention={"keep_last": 2, "keep_forever": True}),
     "retention.keep_forever", None),
    ("export-negative-max-backups", "sqlite_backup", backup_args(export={"max_backups": -1}),
     "export.max_backups must be 0 or more", "bad_input"),
    ("export-unknown-fetch-user", "sqlite_backup", backup_args(export={"fetch_user": "no-such-user-here"}),
     "export.fetch_user 'no-such-user-here' does not exist on this host", "bad_input"),
    ("export-have-without-file", "sqlite_backup", backup_args(export={"have": [{"sha256": "x"}]}),
     "export.have must be a list of {file, sha256}", "bad_input"),
    ("bad-method", "sqlite_backup", backup_args(method="cp"),
     "value of method must be one of: pinned_copy, backup_api, vacuum_into", None),
    ("bad-integrity", "sqlite_verify", {"backup_dir": "{d}/bk", "integrity": "paranoid"},
     "value of integrity must be one of: quick, full", None),
    ("bad-checkpoint-choice", "sqlite_backup", backup_args(checkpoint="passive"),
     "value of checkpoint must be one of", None),
    ("negative-keep", "sqlite_retention", {"backup_dir": "{d}/bk", "name": "gym", "keep_last": 3, "keep_daily": -1},
     "keep_daily must be a non-negative integer", "bad_input"),
    ("empty-retention-policy", "sqlite_retention", {"backup_dir": "{d}/bk", "name": "gym"},
     "keeps nothing", "bad_input"),
    ("unknown-timezone", "sqlite_retention",
     {"backup_dir": "{d}/bk", "name": "gym", "keep_daily": 7, "timezone": "Mars/Olympus_Mons"},
     "unknown time zone", "bad_input"),
    ("bad-now", "sqlite_retention", {"backup_dir": "{d}/bk", "name": "gym", "keep_last": 1, "now": "yesterday"},
     "ISO-8601", "bad_input"),
    ("bad-label-days", "sqlite_retention",
     {"backup_dir": "{d}/bk", "name": "gym", "keep_last": 1, "keep_label_days": {"pre-upgrade": -3}},
     "from 0 to 36525, got -3", "bad_input"),
    ("verify-missing-file", "sqlite_verify", {"path": "{d}/gym_backup_20260101_000000.db"},
     "does not exist", "bad_input"),
    ("verify-not-a-backup-name", "sqlite_verify", {"path": "{d}/gym.db"}, "not named like a backup", "bad_input"),
    ("verify-missing-folder", "sqlite_verify", {"backup_dir": "{d}/nowhere"}, "does not exist", "bad_input"),
    ("verify-bad-sha256", "sqlite_verify", {"path": "{d}/gym_backup_20260101_000000.db", "expected_sha256": "abc"},
     "64 hexadecimal digits", "bad_input"),
    ("verify-path-and-dir", "sqlite_verify", {"path": "{d}/x_backup_20260101_000000.db", "backup_dir": "{d}"},
     "mutually exclusive", None),
    ("info-nothing-asked", "sqlite_info", {"count_rows": False}, "one of the following is required", None),
    ("info-relative-path", "sqlite_info", {"path": "gym.db"}, "must be an absolute path", "bad_input"),
    ("checkpoint-bad-mode", "sqlite_checkpoint", {"path": "{d}/gym.db", "mode": "SOMETIMES"},
     "value of mode must be one of: PASSIVE, FULL, RESTART, TRUNCATE", None),
    ("checkpoint-text-file", "sqlite_checkpoint", {"path": "{d}/notes.txt"}, "not an SQLite 3 database", "bad_input"),
    ("checkpoint-negative-timeout", "sqlite_checkpoint", {"path": "{d}/gym.db", "busy_timeout_ms": -1},
     "busy_timeout_ms must be 0 or more", "bad_input"),
]


@pytest.fixture(scope="module")
def bad_input_runs(python, tmp_path_factory):
    """Every bad-input case in one playbook, each in its own folder holding a WAL database with one
    backup, a text file, an empty file, a directory and a regular file to put paths under."""
    root = tmp_path_factory.mktemp("bad-input")
    template = root / "template"
    template.mkdir()
    make_database(template / "gym.db", rows=50)
    core.snapshot(str(template / "gym.db"), str(template / "bk"), "gym")
    (template / "notes.txt").write_text("these are not the rows you are looking for\n" * 20)
    (template / "empty.db").write_bytes(b"")
    (template / "adir").mkdir()
    (template / "afile").write_text("a regular file\n")
    return run_cases_in_copies(template, root, [case[:3] for case in BAD_INPUT], lambda folder: {"d": str(folder)},
                               python)


@pytest.mark.parametrize(("case_id", "message", "kind"), [(c[0], c[3], c[4]) for c in BAD_INPUT],
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_fails_clearly_and_changes_nothing(bad_input_runs, case_id, message, kind):
    assert_refused_unchanged(*bad_input_runs[case_id], message, kind)


# --------------------------------------------------------------------------- documentation


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(module):
    proc = subprocess.run([str(BIN / "ansible-doc"), "-M", "library", module], cwd=REPO, env=ansible_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    for section in ("> MODULE %s" % module, "OPTIONS", "NOTES", "EXAMPLES", "RETURN VALUES", "check_mode",
                    "AUTHOR: Sqlite Fleet Backup authors (@sqlite-fleet-backup)"):
        assert section in text, section
    for option in documented_options(module):
        assert re.search(r"^[-= ]+%s\s" % re.escape(option), text, re.MULTILINE), option  # "- name  ..."


def test_documented_options_are_the_argument_spec(tmp_path):
    """DOCUMENTATION's options == the parameters the module accepts (Ansible lists them on an unknown one)."""
    required = {"sqlite_backup": {"path": "/x.db", "name": "x", "backup_dir": "/x"},
                "sqlite_retention": {"backup_dir": "/x", "name": "x"}}
    results = run_cases([(module, dict(required.get(module, {"path": "/x.db"}), no_such_option=1))
                         for module in MODULES], tmp_dir=tmp_path)
    for module, result in zip(MODULES, results):
        supported = re.search(r"Supported parameters include: ([^.]*)\.", result["msg"])
        assert supported, result["msg"]
        assert set(supported.group(1).replace(" ", "").split(",")) == set(documented_options(module))
