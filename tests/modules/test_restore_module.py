"""sqlite_restore, run through Ansible itself (``ansible-playbook`` on localhost) on real SQLite files.

Related calls are batched into one playbook (Ansible starts in about 1.5 s). The "app" holding a
database is this very test process (an open connection): to the module it is another process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
from app_writer import check_invariant, start_writer
from demo_db import create_demo_db
from module_test_helpers import (
    BIN,
    REPO,
    ansible_env,
    assert_no_traceback,
    assert_refused_unchanged,
    core,
    documented_options,
    make_database,
    run_cases,
    run_cases_in_copies,
    run_many,
    tree_state,
)

MODULE = "sqlite_restore"
NOBODY = 65534  # nobody / nogroup: the app user owning the database


def counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return core.table_row_counts(conn)
    finally:
        conn.close()


def manifest_of(backup: str | Path) -> dict:
    return json.loads(Path(str(backup) + ".json").read_text())


def backups_in(folder: Path) -> list[str]:
    return sorted(e for e in os.listdir(folder) if core.parse_backup_filename(e))


def write_and_crash(python: str, db: Path, rows: int) -> None:
    """Commit ``rows`` members with auto-checkpoint off and exit without closing: what an app killed
    with SIGKILL leaves -- committed rows only in the -wal, and a -shm."""
    code = ("import os, sqlite3, sys\n"
            "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
            "conn.execute('BEGIN')\n"
            "for i in range(int(sys.argv[2])):\n"
            "    conn.execute(\"INSERT INTO members (name, note) VALUES ('crash %d', 'wal')\" % i)\n"
            "conn.execute('COMMIT')\n"
            "os._exit(0)\n")
    subprocess.run([python, "-c", code, str(db), str(rows)], check=True)


@pytest.fixture
def site(tmp_path):
    """An app folder with a WAL database owned by the app user (0640), and a backup folder holding
    two backups of it: ``good`` (500 members) and ``later`` (after 100 members were deleted)."""
    app, backups = tmp_path / "app", tmp_path / "backups"
    app.mkdir()
    db = make_database(app / "gym.db", rows=500)
    os.chown(db, NOBODY, NOBODY)
    os.chmod(db, 0o640)
    good = core.snapshot(str(db), str(backups), "gym")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM visits WHERE member_id > 400")
    conn.execute("DELETE FROM members WHERE id > 400")
    conn.close()
    time.sleep(1.01 - time.time() % 1)  # the next second: "at or before the first one's time" is then the first
    later = core.snapshot(str(db), str(backups), "gym", label="pre-upgrade")
    return {"app": app, "db": db, "backups": backups, "good": good, "later": later, "tmp": tmp_path}


# --------------------------------------------------------------------------- replace


def test_replace_restores_the_chosen_backup_drops_the_old_wal_and_keeps_a_safety_backup(python, site):
    db, good = site["db"], site["good"]
    write_and_crash(python, db, 37)  # the -wal now holds 37 committed members
    assert Path(str(db) + "-wal").stat().st_size > 0 and Path(str(db) + "-shm").exists()
    before_counts = counts(db)
    assert before_counts["members"] == 437

    (result,) = run_many([{MODULE: {"path": str(db), "backup_dir": str(site["backups"]), "name": "gym",
                                    "select": good["file"], "source_host": "pi7"}, "diff": True}],
                         python, tmp_dir=site["tmp"])

    assert not result.get("failed"), result
    assert_no_traceback(result)
    assert result["changed"] is True and result["backup"] == good["file"] and result["mode"] == "replace"
    assert sorted(result["removed"]) == [str(db) + "-shm", str(db) + "-wal"]
    assert result["target_existed"] is True and result["journal_mode"] == "wal"
    assert counts(db) == good["manifest"]["tables"] == {"members": 500, "visits": 500}
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    st = db.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o640), "owner and mode kept"
    leftovers = [e for e in os.listdir(site["app"]) if e.startswith(core.TMP_PREFIX)]
    assert leftovers == []
    # The database as it was, rows of the -wal included, is the safety backup.
    safety = result["safety_backup"]
    assert safety and Path(safety).parent == site["backups"]
    assert manifest_of(safety)["label"] == "pre-restore" and manifest_of(safety)["verified"] is True
    assert manifest_of(safety)["tables"] == before_counts
    # named like every other backup of the host: its inventory name, not the system's host name
    assert manifest_of(safety)["source"]["host"] == "pi7"
    assert "safety backup %s" % safety in result["msg"]
    assert result["seconds"] >= 0 and result["duration_seconds"] >= result["seconds"]
    assert result["diff"]["before_header"] == str(db) and result["diff"]["after_header"] == good["backup"]
    assert "members: 500 rows" in result["diff"]["after"] and "gym.db-wal" in result["diff"]["before"]


def test_a_missing_database_is_created_owned_like_its_folder(site):
    new_app = site["tmp"] / "newapp"
    new_app.mkdir()
    os.chown(new_app, NOBODY, NOBODY)
    target = new_app / "gym.db"
    live_new, created = run_many([
        {MODULE: {"path": str(target), "backup": site["good"]["backup"], "mode": "live"}},
        {MODULE: {"path": str(target), "backup": site["good"]["backup"]}},
    ], tmp_dir=site["tmp"])
    assert live_new.get("failed") and "a live restore needs the database" in live_new["msg"], live_new
    assert not created.get("failed"), created
    assert created["target_existed"] is False and created["safety_backup"] is None
    assert "no database before" in created["msg"]
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o600)
    # the -wal/-shm that the restore's own check created hold the newest rows too: as private
    assert created["journal_mode"] == "wal"
    for side in ("-wal", "-shm"):
        if os.path.exists(str(target) + side):
            side_st = os.stat(str(target) + side)
            assert (side_st.st_uid, side_st.st_gid, stat.S_IMODE(side_st.st_mode)) == (NOBODY, NOBODY, 0o600), side
    assert os.path.exists(str(target) + "-shm"), "the check opened the WAL database"
    assert counts(target) == site["good"]["manifest"]["tables"]
    assert backups_in(site["backups"]) == sorted([site["good"]["file"], site["later"]["file"]])


# --------------------------------------------------------------------------- held by a process, live


def test_replace_is_refused_while_a_process_holds_the_database_and_live_works(site):
    db, good = site["db"], site["good"]
    app = sqlite3.connect(db, isolation_level=None)  # the app: this process, with the database open
    try:
        app.execute("INSERT INTO members (name) VALUES ('while held')")
        before = core.sha256_file(str(db)), counts(db)
        listed = backups_in(site["backups"])

        checked, refused, live = run_many([
            {MODULE: {"path": str(db), "backup": good["backup"]}, "check_mode": True},
            {MODULE: {"path": str(db), "backup": good["backup"]}},
            {MODULE: {"path": str(db), "backup": good["backup"], "mode": "live"}},
        ], tmp_dir=site["tmp"])

        # check mode reports the holder and a warning, and does not fail
        assert not checked.get("failed"), checked
        assert any(h.startswith("%d (" % os.getpid()) for h in checked["held_by"]), checked
        assert any("would be refused" in w for w in checked.get("warnings", [])), checked
        # replace refuses, naming this process; nothing changed
        assert refused.get("failed") is True and refused["kind"] == "locked", refused
        assert "refusing to replace %s: it is open in %d (" % (db, os.getpid()) in refused["msg"], refused["msg"]
        assert refused["changed"] is False
        # it removed nothing, and says so (the -wal and -shm are still there)
        assert refused["removed"] == [], refused["removed"]
        assert os.path.exists(str(db) + "-wal") and os.path.exists(str(db) + "-shm")
        assert_no_traceback(refused)
        # live restores under the open connection, which then sees the backup
        assert not live.get("failed"), live
        assert live["mode"] == "live" and live["removed"] == [] and live["changed"] is True
        assert app.execute("SELECT count(*) FROM members").fetchone()[0] == 500
        app.execute("INSERT INTO members (name) VALUES ('after the live restore')")  # the app goes on writing
    finally:
        app.close()
    assert counts(db) == {"members": 501, "visits": 500}
    # Between the refusal and the live restore nothing else happened: one safety backup, the live one's.
    new = sorted(set(backups_in(site["backups"])) - set(listed))
    assert [Path(live["safety_backup"]).name] == new
    assert manifest_of(live["safety_backup"])["tables"] == before[1]


def test_live_restore_while_the_app_keeps_writing(tmp_path):
    """The app commits during and right after the copy: the restore succeeds, the app goes on from the
    backup's state (the check afterwards cannot hold a live database to the manifest's row counts)."""
    db = tmp_path / "gym.db"
    create_demo_db(db, members=100, size_mb=64)  # big enough that the app often commits during the check
    writer = start_writer(db, rate=50)
    try:
        writer.wait_ready()
        backup = core.snapshot(str(db), str(tmp_path / "backups"), "gym")
        taken = backup["manifest"]["tables"]["app_events"]
        writer.wait_committed(taken + 10)
        (result,) = run_many([{MODULE: {"path": str(db), "backup": backup["backup"], "mode": "live"}}],
                             tmp_dir=tmp_path)
        after = writer.wait_committed(taken + 5)
        final = writer.stop()
    finally:
        if writer.running():
            writer.stop()
    assert not result.get("failed"), result
    assert final["errors"] == 0, final
    ok, events, detail = check_invariant(db)
    assert ok, detail
    assert events == final["committed"] and events < taken + final["commits"], (events, taken, final)
    assert after["committed"] >= taken + 5


# --------------------------------------------------------------------------- check mode, selection


def test_check_mode_returns_the_plan_and_writes_nothing(python, site):
    db = site["db"]
    write_and_crash(python, db, 5)
    state = {"app": tree_state(site["app"]), "backups": tree_state(site["backups"])}
    staged = site["tmp"] / "staging" / site["later"]["file"]  # not copied here yet: the playbook's check mode

    plan, diffed, unstaged = run_many([
        {MODULE: {"path": str(db), "backup_dir": str(site["backups"]), "name": "gym", "select": "latest"},
         "check_mode": True},
        {MODULE: {"path": str(db), "backup_dir": str(site["backups"]), "name": "gym", "mode": "live"},
         "check_mode": True, "diff": True},
        {MODULE: {"path": str(db), "backup": str(staged), "manifest": site["later"]["manifest"],
                  "safety_dir": str(site["backups"])}, "check_mode": True},
    ], python, tmp_dir=site["tmp"])

    assert tree_state(site["app"]) == state["app"] and tree_state(site["backups"]) == state["backups"]
    for result in (plan, diffed, unstaged):
        assert not result.get("failed"), result
        assert result["changed"] is True and result["backup"] == site["later"]["file"]
        assert result["msg"].startswith("would restore %s onto %s" % (site["later"]["file"], db))
        assert "seconds" not in result and result["safety_backup"] is None
    assert sorted(plan["removed"]) == [str(db) + "-shm", str(db) + "-wal"] and plan["held_by"] == []
    assert plan["checks"]["checksum"] == "ok" and plan["label"] == "pre-upgrade"
    assert diffed["removed"] == [] and diffed["mode"] == "live"
    assert diffed["diff"]["before_header"] == str(db) and "label pre-upgrade" in diffed["diff"]["after"]
    assert "checks" not in unstaged and unstaged["backup_path"] == str(staged)


def test_selection_by_latest_time_or_name_and_a_corrupt_backup_refused(site):
    good, later = site["good"], site["later"]
    corrupt = site["tmp"] / "corrupt"
    shutil.copytree(site["backups"], corrupt)
    data = bytearray((corrupt / later["file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / later["file"]).write_bytes(bytes(data))
    state = {"backups": tree_state(site["backups"]), "corrupt": tree_state(corrupt), "app": tree_state(site["app"])}
    stamp = core.parse_backup_filename(good["file"])["created"].strftime("%Y%m%d_%H%M%S")
    args = {"state": "selected", "path": "/srv/app/gym.db", "backup_dir": str(site["backups"]), "name": "gym"}

    taken = core.parse_backup_filename(good["file"])["created"]
    iso_plus_one = taken.astimezone(dt.timezone(dt.timedelta(hours=1))).isoformat()
    latest, by_time, by_time_digits, by_iso, by_iso_zone, by_name, broken, restore_broken = run_many([
        {MODULE: args},
        {MODULE: dict(args, select=stamp)},
        {MODULE: dict(args, select=stamp.replace("_", ""))},
        {MODULE: dict(args, select=taken.strftime("%Y-%m-%dT%H:%M:%S"))},  # ISO 8601, no zone: UTC
        {MODULE: dict(args, select=iso_plus_one)},  # the same instant in UTC+1
        {MODULE: dict(args, select=good["file"])},
        {MODULE: dict(args, backup_dir=str(corrupt))},
        {MODULE: {"path": str(site["db"]), "backup_dir": str(corrupt), "name": "gym"}},
    ], tmp_dir=site["tmp"])

    assert {"backups": tree_state(site["backups"]), "corrupt": tree_state(corrupt),
            "app": tree_state(site["app"])} == state, "nothing may change, not even by the refused restore"
    assert latest["backup"] == later["file"] and latest["label"] == "pre-upgrade" and latest["changed"] is False
    assert latest["sha256"] == later["manifest"]["sha256"] and latest["manifest"] == later["manifest"]
    assert [b["file"] for b in latest["available"]] == [later["file"], good["file"]]
    assert "label pre-upgrade" in latest["available"][0]["summary"]
    assert by_time["backup"] == by_time_digits["backup"] == by_name["backup"] == good["file"]
    assert by_iso["backup"] == by_iso_zone["backup"] == good["file"], (by_iso, by_iso_zone)
    assert broken.get("failed") and broken["kind"] == "corrupt", broken
    assert "refusing to restore %s" % later["file"] in broken["msg"] and "checksum" in broken["msg"]
    assert_no_traceback(broken)
    assert restore_broken.get("failed") and restore_broken["kind"] == "corrupt", restore_broken
    assert "refusing to restore %s" % later["file"] in restore_broken["msg"] and restore_broken["changed"] is False


# --------------------------------------------------------------------------- bad input


BAD_INPUT = [
    ("relative-path", {"path": "gym.db", "backup_dir": "{bk}", "name": "gym"}, "must be an absolute path",
     "bad_input"),
    ("relative-backup-dir", {"path": "{db}", "backup_dir": "bk", "name": "gym"}, "must be an absolute path",
     "bad_input"),
    ("missing-backup", {"path": "{db}", "backup": "{bk}/gym_backup_20000101_000000.db"}, "does not exist",
     "bad_input"),
    ("not-a-backup-name", {"path": "{db}", "backup": "{db}"}, "is not named like a backup", "bad_input"),
    ("bad-select", {"path": "{db}", "backup_dir": "{bk}", "name": "gym", "select": "yesterday"},
     "is neither 'latest', a time, YYYYMMDD_HHMMSS or ISO 8601", "bad_input"),
    ("select-before-every-backup", {"path": "{db}", "backup_dir": "{bk}", "name": "gym", "select": "20000101_000000"},
     "no verified backup was taken at or before 20000101_000000", "bad_input"),
    ("select-unknown-file", {"path": "{db}", "backup_dir": "{bk}", "name": "gym",
                             "select": "gym_backup_20000101_000000.db"}, "there is no backup named", "bad_input"),
    ("select-path", {"path": "{db}", "backup_dir": "{bk}", "name": "gym", "select": "../gym_backup_20000101_000000.db"},
     "is neither", "bad_input"),
    ("missing-backup-dir", {"path": "{db}", "backup_dir": "{bk}/nowhere", "name": "gym"}, "does not exist",
     "bad_input"),
    ("bad-name", {"path": "{db}", "backup_dir": "{bk}", "name": "../gym"}, "is not allowed", "bad_input"),
    ("backup-and-backup-dir", {"path": "{db}", "backup": "{good}", "backup_dir": "{bk}", "name": "gym"},
     "mutually exclusive", None),
    ("backup-dir-without-name", {"path": "{db}", "backup_dir": "{bk}"}, "missing parameter(s) required by "
     "'backup_dir': name", None),
    ("nothing-to-restore", {"path": "{db}"}, "one of the following is required: backup, backup_dir", None),
    ("bad-mode", {"path": "{db}", "backup": "{good}", "mode": "overwrite"}, "value of mode must be one of", None),
    ("bad-expected-sha256", {"path": "{db}", "backup": "{good}", "expected_sha256": "abc"}, "64 hexadecimal digits",
     "bad_input"),
    ("other-expected-sha256", {"path": "{db}", "backup": "{good}", "expected_sha256": "0" * 64},
     "but first hop says 000000000000", "corrupt"),
    ("negative-busy-timeout", {"path": "{db}", "backup": "{good}", "busy_timeout_ms": -1}, "must be 0 or more",
     "bad_input"),
    ("target-is-a-directory", {"path": "{d}", "backup": "{good}"}, "is not a regular file", "bad_input"),
    ("target-folder-missing", {"path": "{d}/nowhere/gym.db", "backup": "{good}"}, "the folder of", "bad_input"),
    ("target-not-a-database", {"path": "{d}/notes.txt", "backup": "{good}"}, "not an SQLite 3 database",
     "bad_input"),
    ("unknown-owner", {"path": "{d}/new.db", "backup": "{good}", "owner": "no-such-user-here"},
     "does not exist on this host", "bad_input"),
]


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Every case in one playbook, each in its own copy of an app folder and a backup folder."""
    root = tmp_path_factory.mktemp("restore-bad-input")
    template = root / "template"
    (template / "app").mkdir(parents=True)
    make_database(template / "app" / "gym.db", rows=50)
    (template / "app" / "notes.txt").write_text("not a database\n" * 20)
    good = core.snapshot(str(template / "app" / "gym.db"), str(template / "backups"), "gym")["file"]

    def placeholders(folder: Path) -> dict[str, str]:
        return {"db": str(folder / "app" / "gym.db"), "bk": str(folder / "backups"),
                "good": str(folder / "backups" / good), "d": str(folder / "app")}

    return run_cases_in_copies(template, root, [(case_id, MODULE, args) for case_id, args, _msg, _kind in BAD_INPUT],
                               placeholders)


@pytest.mark.parametrize(("case_id", "message", "kind"), [(c[0], c[2], c[3]) for c in BAD_INPUT],
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_fails_clearly_and_changes_nothing(bad_input_runs, case_id, message, kind):
    assert_refused_unchanged(*bad_input_runs[case_id], message, kind)


# --------------------------------------------------------------------------- documentation


def test_ansible_doc_renders_every_option():
    proc = subprocess.run([str(BIN / "ansible-doc"), "-M", "library", MODULE], cwd=REPO, env=ansible_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    for section in ("> MODULE %s" % MODULE, "OPTIONS", "NOTES", "EXAMPLES", "RETURN VALUES", "check_mode"):
        assert section in text, section
    for option in documented_options(MODULE):
        assert re.search(r"^[-= ]+%s\s" % re.escape(option), text, re.MULTILINE), option


def test_documented_options_are_the_argument_spec(tmp_path):
    (result,) = run_cases([(MODULE, {"path": "/x.db", "backup": "/x_backup_20000101_000000.db", "no_such": 1})],
                          tmp_dir=tmp_path)
    supported = re.search(r"Supported parameters include: ([^.]*)\.", result["msg"])
    assert supported, result["msg"]
    assert set(supported.group(1).replace(" ", "").split(",")) == set(documented_options(MODULE))

