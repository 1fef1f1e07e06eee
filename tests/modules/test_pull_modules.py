"""One module run per database on the host: sqlite_backup's retention and export options, the
sqlite_fetch action (no module on the host), sqlite_archive's import of a whole pull, and what
backup.yml sends to a host. All through Ansible itself, on real SQLite files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from module_test_helpers import (
    BIN,
    REPO,
    SYSTEM_PYTHON,
    ansible_env,
    core,
    make_database,
    run_many,
    run_module,
    tree_state,
)

NOBODY = 65534
DAEMON = 1
RETENTION_KEYS = {"changed", "deleted", "kept", "decisions", "removed_unfinished", "invalid", "flagged", "msg"}
TRANSFER_KEYS = {"file", "name", "manifest", "size_bytes", "base", "mode", "fetch_path", "bytes"}
INCOMING = ".sqlite-backup-tmp.incoming."


def backups_in(folder: Path) -> list[str]:
    return sorted(entry for entry in os.listdir(folder) if core.parse_backup_filename(entry))


def staging_in(folder: Path) -> list[str]:
    return sorted(entry for entry in os.listdir(folder) if entry.startswith(core.EXPORT_PREFIX))


def have_of(folder: Path, *files: str) -> list[dict]:
    return [{"file": f, "sha256": json.loads((folder / (f + ".json")).read_text())["sha256"]} for f in files]


@contextlib.contextmanager
def open_root(prefix: str) -> Iterator[Path]:
    """A folder in /tmp that every user may enter (pytest's tmp is 0700: nobody must enter), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def assert_clean_failure(result) -> None:
    assert result.get("failed") is True, result
    assert "Traceback" not in result.output and "MODULE FAILURE" not in str(result.get("msg")), result


@pytest.fixture
def two_backups(tmp_path):
    """A live database in app/ and two finished backups of it in bk/."""
    app = tmp_path / "app"
    app.mkdir()
    db = make_database(app / "gym.db", rows=300)
    first = core.snapshot(str(db), str(tmp_path / "bk"), "gym")["file"]
    second = core.snapshot(str(db), str(tmp_path / "bk"), "gym")["file"]
    return {"db": db, "bk": tmp_path / "bk", "older": first, "newer": second}


# --------------------------------------------------------------------------- sqlite_backup retention + export


def test_one_backup_run_snapshots_prunes_and_stages_as_retention_and_export_do(python, two_backups, tmp_path):
    db, bk, older, newer = two_backups["db"], two_backups["bk"], two_backups["older"], two_backups["newer"]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE members SET note = 'changed' WHERE id <= 3")
    conn.commit()
    conn.close()
    policy = {"keep_last": 2, "keep_label_days": {"pre-upgrade": "30"}, "timezone": "UTC"}
    taken, alone, retention = run_many([
        {"sqlite_backup": {"path": str(db), "name": "gym", "backup_dir": str(bk), "retention": policy,
                           "export": {"have": have_of(bk, older, newer)}}},
        # the standalone modules on the folder as the backup left it, for comparison
        {"sqlite_export": {"backup_dir": str(bk), "name": "gym", "have": have_of(bk, newer)}},
        {"sqlite_retention": dict(policy, backup_dir=str(bk), name="gym"), "check_mode": True},
    ], python, tmp_dir=tmp_path)
    for result in (taken, alone, retention):
        assert not result.get("failed"), result
    new = taken["file"]
    assert taken["changed"] is True and taken["verified"] is True
    # pruned after the snapshot, exactly as sqlite_retention does
    assert set(taken["retention"]) == RETENTION_KEYS and set(retention) >= RETENTION_KEYS
    assert taken["retention"]["deleted"] == [older] and taken["retention"]["kept"] == [new, newer]
    assert retention["deleted"] == [] and retention["kept"] == [new, newer]
    assert backups_in(bk) == sorted([newer, new])
    # then staged what the archive lacks, as sqlite_export does: the new backup as a delta against
    # the newest one both sides hold (the pruned one is gone from the host)
    (transfer,) = taken["transfers"]
    assert TRANSFER_KEYS <= set(transfer) and set(transfer) == set(alone["transfers"][0])
    assert transfer["file"] == new and transfer["mode"] == "delta" and transfer["base"] == newer
    assert transfer["bytes"] < transfer["size_bytes"]
    staged_paths = ("fetch_path", "full_fetch_path")
    assert {k: v for k, v in transfer.items() if k not in staged_paths} == \
        {k: v for k, v in alone["transfers"][0].items() if k not in staged_paths}
    staging = Path(taken["staging_dir"])
    assert staging.parent == bk and staging.name.startswith(core.EXPORT_PREFIX)
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    assert Path(transfer["fetch_path"]).parent == staging
    # beside the delta, the whole file (a hard link) for the controller to fall back to
    assert Path(transfer["full_fetch_path"]).parent == staging
    assert os.path.samefile(transfer["full_fetch_path"], bk / new)
    assert stat.S_IMODE(os.stat(transfer["fetch_path"]).st_mode) == 0o600
    assert taken["export"]["conflicts"] == [] and taken["export"]["host_backups"] == 2
    assert "deleted 1 of 3 backups of gym" in taken["msg"] and "1 backup(s) of gym to send" in taken["msg"]
    for folder in (taken["staging_dir"], alone["staging_dir"]):
        core.remove_staging_dir(str(bk), folder)


def test_check_mode_reports_the_prune_and_the_pull_and_writes_nothing(python, two_backups, tmp_path):
    db, bk, older, newer = two_backups["db"], two_backups["bk"], two_backups["older"], two_backups["newer"]
    before = tree_state(bk)
    result = run_module("sqlite_backup", {"path": str(db), "name": "gym", "backup_dir": str(bk),
                                          "retention": {"keep_last": 1},
                                          # nobody could not reach pytest's 0700 tmp: check mode would refuse
                                          # as the real run would (see the fetch_user tests below)
                                          "export": {"have": [], "fetch_user": "root"}},
                        check=True, python=python)
    assert not result.get("failed"), result
    assert tree_state(bk) == before
    assert result["changed"] is True and result["manifest"] is None
    assert result["retention"]["deleted"] == [older] and result["retention"]["kept"] == [newer]
    assert [t["file"] for t in result["transfers"]] == [older, newer]
    assert all(t["fetch_path"] is None for t in result["transfers"]) and result["staging_dir"] is None


def test_fetch_user_owns_the_staging_and_gets_a_copy_of_what_it_could_not_read(python):
    """Backups owned by the app user (nobody); one older backup owned by someone else (daemon).
    fetch_user=nobody: the staging belongs to it, the daemon's backup is copied (not linked, not
    chowned), nobody's is hard-linked. fetch_user=daemon cannot enter the folder: its staging goes
    beside it, where its own backup is hard-linked (same filesystem) and nobody's copied."""
    nobody, daemon = pwd.getpwuid(NOBODY).pw_name, pwd.getpwuid(DAEMON).pw_name
    with open_root("fetch-user-") as root:
        app = root / "app"
        app.mkdir(mode=0o755)
        db = make_database(app / "gym.db", rows=200)
        for path in app.iterdir():
            os.chown(path, NOBODY, NOBODY)
        bk = root / "bk"
        foreign = core.snapshot(str(db), str(bk), "gym")["file"]
        os.chown(bk / foreign, DAEMON, DAEMON)
        foreign_before = os.stat(bk / foreign)
        args = {"path": str(db), "name": "gym", "backup_dir": str(bk)}
        beside, staged, exported = run_many([
            {"sqlite_backup": dict(args, export={"have": [], "delta": False, "fetch_user": daemon})},
            {"sqlite_backup": dict(args, export={"have": [], "delta": False, "fetch_user": nobody})},
            {"sqlite_export": {"backup_dir": str(bk), "name": "gym", "delta": False, "fetch_user": str(NOBODY),
                               "have": [{"file": foreign, "sha256": "x"}]}},
        ], python, tmp_dir=root)

        assert not beside.get("failed"), beside
        home = root / (core.STAGING_HOME_PREFIX + "bk")
        assert Path(beside["staging_dir"]).parent == home
        assert (home.stat().st_uid, stat.S_IMODE(home.stat().st_mode)) == (0, 0o711)
        assert Path(beside["staging_dir"]).stat().st_uid == DAEMON
        files = {t["file"]: Path(t["fetch_path"]) for t in beside["transfers"]}
        assert set(files) == {foreign, beside["file"]}
        assert files[foreign].stat().st_ino == foreign_before.st_ino  # the daemon's own: linked
        copy = files[beside["file"]].stat()
        assert (copy.st_uid, stat.S_IMODE(copy.st_mode), copy.st_nlink) == (DAEMON, 0o600, 1)
        assert (bk / beside["file"]).stat().st_uid == NOBODY

        assert not staged.get("failed"), staged
        staging = Path(staged["staging_dir"])
        st = staging.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)
        files = {t["file"]: Path(t["fetch_path"]) for t in staged["transfers"]}
        assert set(files) == {foreign, beside["file"], staged["file"]}
        copy = files[foreign].stat()
        assert (copy.st_uid, stat.S_IMODE(copy.st_mode), copy.st_nlink) == (NOBODY, 0o600, 1)
        assert copy.st_ino != foreign_before.st_ino
        assert core.sha256_file(str(files[foreign])) == core.sha256_file(str(bk / foreign))
        after = os.stat(bk / foreign)
        assert (after.st_uid, after.st_nlink, after.st_ino) == (DAEMON, 2, foreign_before.st_ino)  # + daemon's link
        linked = files[staged["file"]].stat()
        assert linked.st_ino == (bk / staged["file"]).stat().st_ino and linked.st_uid == NOBODY

        assert not exported.get("failed"), exported
        assert Path(exported["staging_dir"]).stat().st_uid == NOBODY
        assert {Path(t["fetch_path"]).stat().st_uid for t in exported["transfers"]} == {NOBODY}
        assert core.remove_staging_dir(str(bk), beside["staging_dir"]) and not home.exists()


def as_user(uid: int, *argv: str) -> subprocess.CompletedProcess:
    """``argv`` run as ``uid``: stdout as bytes, stderr as text."""
    done = subprocess.run(list(argv), user=uid, capture_output=True, timeout=60)
    done.stderr = done.stderr.decode(errors="replace")
    return done


def test_a_root_backup_folder_stages_beside_it_for_a_fetch_user_that_cannot_enter_it(python, tmp_path):
    """The app and its backups belong to root (GPIO), Ansible logs in as another user (nobody) with
    become: that user cannot enter the 0700 backup folder, so the staging goes beside it, in a 0711
    folder of root, the backup folder untouched; the staged files are copies readable by that user
    only. Check mode writes nothing; a staging folder there over a day old goes with a later run; the
    fetch removes the staging and, once empty, the folder beside. When the fetch user cannot reach the
    parent folder either: refused clearly (naming the role variables), nothing staged anywhere."""
    nobody = pwd.getpwuid(NOBODY).pw_name
    with open_root("fetch-beside-") as root:
        app = root / "app"
        app.mkdir(mode=0o755)
        db = make_database(app / "gym.db", rows=300)
        bk, home = root / "bk", root / (core.STAGING_HOME_PREFIX + "bk")
        older = core.snapshot(str(db), str(bk), "gym")["file"]
        assert (bk.stat().st_uid, stat.S_IMODE(bk.stat().st_mode)) == (0, 0o700)
        backup = {"path": str(db), "name": "gym", "backup_dir": str(bk),
                  "export": {"have": [], "fetch_user": nobody}}
        export = {"backup_dir": str(bk), "name": "gym", "fetch_user": nobody, "delta": False}
        before = tree_state(root)
        (planned, planned_export) = run_many([
            {"sqlite_backup": backup, "check_mode": True},
            {"sqlite_export": export, "check_mode": True},
        ], python, tmp_dir=tmp_path)
        assert not planned.get("failed") and not planned_export.get("failed"), (planned, planned_export)
        assert planned["staging_dir"] is None and [t["file"] for t in planned["transfers"]] == [older]
        assert tree_state(root) == before  # check mode: nothing written, not even the folder beside

        stale = Path(core.new_staging_dir(str(bk), nobody))
        assert stale.parent == home
        (stale / "gym_backup_20200101_000000.db").write_bytes(b"left by a cut run")
        two_days_ago = os.stat(stale).st_mtime - 2 * 86400
        os.utime(stale, (two_days_ago, two_days_ago))
        bk_before = tree_state(bk)
        taken, exported = run_many([{"sqlite_backup": backup}, {"sqlite_export": export}], python, tmp_dir=tmp_path)
        assert not taken.get("failed") and not exported.get("failed"), (taken, exported)

        # beside the backup folder, which is as it was (plus the new backup): nothing staged in it
        assert sorted(os.listdir(root)) == sorted(["app", "bk", home.name])
        assert stat.S_IMODE(root.stat().st_mode) == 0o755 and not stale.exists()
        assert (bk.stat().st_uid, stat.S_IMODE(bk.stat().st_mode)) == (0, 0o700)
        bk_after = tree_state(bk)
        assert {k: bk_after[k] for k in bk_before if k != "."} == {k: v for k, v in bk_before.items() if k != "."}
        assert staging_in(bk) == [] and backups_in(bk) == sorted([older, taken["file"]])
        assert (home.stat().st_uid, stat.S_IMODE(home.stat().st_mode)) == (0, 0o711)
        assert sorted(os.listdir(home)) == sorted(Path(r["staging_dir"]).name for r in (taken, exported))
        for result in (taken, exported):
            staging = Path(result["staging_dir"])
            assert staging.parent == home
            assert (staging.stat().st_uid, stat.S_IMODE(staging.stat().st_mode)) == (NOBODY, 0o700)
        # full copies (the backups are root's), deltas written there; all the fetch user's, 0600, its alone
        assert [t["mode"] for t in taken["transfers"]] == ["full", "delta"]
        assert [t["mode"] for t in exported["transfers"]] == ["full", "full"]
        staged = [Path(t["fetch_path"]) for t in taken["transfers"] + exported["transfers"]]
        for path, transfer in zip(staged, taken["transfers"] + exported["transfers"]):
            st = path.stat()
            assert path.parent.parent == home
            assert (st.st_uid, stat.S_IMODE(st.st_mode), st.st_nlink) == (NOBODY, 0o600, 1), path
            assert st.st_ino != (bk / transfer["file"]).stat().st_ino
            assert (bk / transfer["file"]).stat().st_nlink == 1
            if transfer["mode"] == "full":
                assert core.sha256_file(str(path)) == transfer["manifest"]["sha256"]
        read = as_user(NOBODY, "cat", str(staged[0]))
        assert read.returncode == 0 and hashlib.sha256(read.stdout).hexdigest() == core.sha256_file(str(staged[0]))
        for argv in (["cat", str(staged[0])], ["ls", str(staged[0].parent)], ["ls", str(home)]):
            denied = as_user(DAEMON, *argv)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, (argv, denied)
        assert as_user(NOBODY, "ls", str(home)).returncode != 0  # 0711: passed through, not listed
        assert as_user(NOBODY, "ls", str(bk)).returncode != 0

        for not_ours in (home, root / "app", home / core.EXPORT_PREFIX, root / (core.EXPORT_PREFIX + "x")):
            with pytest.raises(core.BackupError, match="is not a staging folder of"):
                core.remove_staging_dir(str(bk), str(not_ours))
        # the fetch accepts the staging beside (and only there), removes it and the emptied folder
        dest = root / "archive" / "pi1"
        (dest / "gym").mkdir(parents=True)
        fetched, removed = run_many([
            {"sqlite_fetch": {"transfers": taken["transfers"], "dest": str(dest), "backup_dir": str(bk) + "/",
                              "staging_dirs": [taken["staging_dir"]]}},
            {"sqlite_export": {"backup_dir": str(bk), "state": "absent", "staging_dir": exported["staging_dir"]}},
        ], python, tmp_dir=tmp_path)
        assert not fetched.get("failed") and not removed.get("failed"), (fetched, removed)
        assert fetched["removed"] == [taken["staging_dir"]] and removed["changed"] is True
        assert core.sha256_file(str(dest / "gym" / (INCOMING + older))) == taken["transfers"][0]["manifest"]["sha256"]
        assert sorted(os.listdir(root)) == ["app", "archive", "bk"]

        # the fetch user cannot reach the parent folder either: refused, with the way out
        root.chmod(0o700)
        before = tree_state(bk)
        refused, refused_check, refused_export = run_many([
            {"sqlite_backup": backup},
            {"sqlite_backup": backup, "check_mode": True},
            {"sqlite_export": export},
        ], python, tmp_dir=tmp_path)
        for result in (refused, refused_check, refused_export):
            assert_clean_failure(result)
            assert result["kind"] == "bad_input"
            assert "fetch_user %s cannot enter %s (mode 0700, owner uid 0)" % (nobody, root) in result["msg"]
            assert "sqlite_backup_owner" in result["msg"] and "sqlite_archive_fetch_user" in result["msg"]
        assert refused["changed"] is True  # the backup itself was taken
        assert "staging the backups of gym for the pull failed" in refused["msg"]
        assert sorted(os.listdir(root)) == ["app", "archive", "bk"] and staging_in(bk) == []
        assert set(tree_state(bk)) - set(before) == {refused["file"], refused["file"] + ".sha256",
                                                      refused["file"] + ".json"}


SMALL_PARENT = ('mount -t tmpfs -o size=4m,mode=0755 tmpfs "$1" && mkdir -m 0700 "$1/bk" '
                '&& mount -t tmpfs -o size=64m,mode=0700 tmpfs "$1/bk" && shift && exec "$@"')


def test_staging_beside_needs_room_for_the_copies_and_copies_across_filesystems():
    """The folder beside the backups is on another, small filesystem (a 4 MiB tmpfs holding the backup
    folder's own 64 MiB tmpfs, in a private mount namespace): the copies for the fetch user do not fit,
    so the staging is refused clearly after the backup, and nothing is left beside. With room, a backup
    the fetch user owns is copied too (no hard link across filesystems), then fetched and all removed."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a private tmpfs")
    nobody = pwd.getpwuid(NOBODY).pw_name
    with open_root("fetch-small-") as root:
        app, parent = root / "app", root / "p"
        app.mkdir(mode=0o755)
        parent.mkdir()
        db = make_database(app / "gym.db", rows=300)
        bk, archive = parent / "bk", root / "archive"
        (archive / "pi1" / "gym").mkdir(parents=True)
        backup = {"path": str(db), "name": "gym", "backup_dir": str(bk),
                  "export": {"have": [], "delta": False, "fetch_user": nobody}}
        tasks = [
            {"sqlite_backup": backup, "register": "first"},
            {"ansible.builtin.command": {"argv": ["ls", "-A", str(parent)]}},
            {"ansible.builtin.command": {"argv": ["mount", "-o", "remount,size=64m", str(parent)]}},
            {"ansible.builtin.file": {"path": "{{ first.backup }}", "owner": str(NOBODY)}},
            {"sqlite_backup": backup, "register": "second"},
            {"ansible.builtin.command": {"argv": "{{ ['stat', '-c', '%u %a %h %i'] + [first.backup] + "
                                                 "second.transfers | map(attribute='fetch_path') | list }}"}},
            {"sqlite_fetch": {"transfers": "{{ second.transfers }}", "dest": str(archive / "pi1"),
                              "backup_dir": str(bk), "staging_dirs": ["{{ second.staging_dir }}"]}},
            {"ansible.builtin.command": {"argv": ["ls", "-A", str(parent)]}},
        ]
        playbook = root / "play.json"
        playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False,
                                         "tasks": [dict(task, ignore_errors=True) for task in tasks]}]))
        proc = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", SMALL_PARENT, "sh", str(parent),
             str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
             "-e", "ansible_python_interpreter=%s" % SYSTEM_PYTHON, str(playbook)],
            cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 and "mount" in proc.stderr and "{" not in proc.stdout:
            pytest.skip("cannot mount a tmpfs here: %s" % proc.stderr.strip())
        report = json.loads(proc.stdout[proc.stdout.index("{"):])
        first, listed, _, _, second, stats, fetched, left = (
            task["hosts"]["localhost"] for task in report["plays"][0]["tasks"])

        assert first["failed"] is True and first["kind"] == "no_space" and first["changed"] is True, first
        assert "staging the backups of gym for the pull failed: not enough free space in %s/%s/%s" % (
            parent, core.STAGING_HOME_PREFIX + "bk", core.EXPORT_PREFIX) in first["msg"]
        assert "for a copy of %s for uid %d to fetch" % (first["file"], NOBODY) in first["msg"]
        assert listed["stdout"].split() == ["bk"]  # nothing left beside

        assert not second.get("failed"), second
        assert Path(second["staging_dir"]).parent == parent / (core.STAGING_HOME_PREFIX + "bk")
        assert [t["file"] for t in second["transfers"]] == [first["file"], second["file"]]
        original, *copies = [line.split() for line in stats["stdout_lines"]]
        assert original[:3] == [str(NOBODY), "600", "1"]  # nobody's own backup: copied, not linked
        assert [copy[:3] for copy in copies] == [[str(NOBODY), "600", "1"]] * 2
        assert copies[0][3] != original[3]
        assert not fetched.get("failed"), fetched
        for transfer in second["transfers"]:
            assert core.sha256_file(str(archive / "pi1" / "gym" / (INCOMING + transfer["file"]))) == \
                transfer["manifest"]["sha256"]
        assert left["stdout"].split() == ["bk"]
        assert os.listdir(parent) == []  # the tmpfs was private to the run


def test_a_backup_that_stages_removes_staging_folders_over_a_day_old(two_backups, tmp_path):
    """What a run that lost its host left (it could not remove its staging) goes with a later run."""
    db, bk = two_backups["db"], two_backups["bk"]
    stale, recent = Path(core.new_staging_dir(str(bk))), Path(core.new_staging_dir(str(bk)))
    (stale / "gym_backup_20200101_000000.db").write_bytes(b"left by a cut run")
    two_days_ago = os.stat(stale).st_mtime - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    (taken,) = run_many([{"sqlite_backup": {"path": str(db), "name": "gym", "backup_dir": str(bk),
                                            "export": {"have": []}}}], SYSTEM_PYTHON, tmp_dir=tmp_path)
    assert not taken.get("failed"), taken
    assert staging_in(bk) == sorted([recent.name, Path(taken["staging_dir"]).name])
    for folder in (recent, taken["staging_dir"]):
        core.remove_staging_dir(str(bk), str(folder))


# --------------------------------------------------------------------------- sqlite_fetch (action plugin)


def stage(bk: Path) -> tuple[Path, list[dict]]:
    staging = core.new_staging_dir(str(bk))
    return Path(staging), core.plan_export(str(bk), "gym", [], staging_dir=staging, delta=False)["transfers"]


def test_fetch_copies_the_staged_files_then_removes_the_staging(two_backups, tmp_path):
    bk = two_backups["bk"]
    staging, transfers = stage(bk)
    empty = Path(core.new_staging_dir(str(bk)))
    dest = tmp_path / "archive" / "pi1"
    (dest / "gym").mkdir(parents=True)
    args = {"transfers": transfers, "dest": str(dest), "backup_dir": str(bk),
            "staging_dirs": [str(staging), str(empty) + "/"]}
    planned, fetched, again = run_many([
        {"sqlite_fetch": args, "check_mode": True},
        {"sqlite_fetch": args},
        {"sqlite_fetch": dict(args, transfers=[])},  # the always: cleanup, after the staging went
    ], SYSTEM_PYTHON, tmp_dir=tmp_path)
    total = sum(t["bytes"] for t in transfers)
    assert not planned.get("failed") and planned["changed"] is True, planned
    assert planned["bytes"] == 0 and planned["removed"] == [] and len(planned["fetched"]) == 2
    assert not fetched.get("failed"), fetched
    assert fetched["bytes"] == total and len(fetched["fetched"]) == 2
    assert sorted(fetched["removed"]) == sorted([str(staging), str(empty)])
    assert not staging.exists() and not empty.exists() and staging_in(bk) == []
    for transfer in transfers:
        incoming = dest / "gym" / (INCOMING + transfer["file"])
        assert core.sha256_file(str(incoming)) == transfer["manifest"]["sha256"]
    assert not again.get("failed"), again  # rm -rf of what is already gone
    assert backups_in(bk) == sorted([two_backups["older"], two_backups["newer"]])


def test_a_failed_fetch_still_removes_the_staging_and_leaves_no_partial_file(two_backups, tmp_path):
    bk = two_backups["bk"]
    staging, transfers = stage(bk)
    os.unlink(transfers[1]["fetch_path"])  # the second file vanished from the host
    dest = tmp_path / "archive" / "pi1"
    (dest / "gym").mkdir(parents=True)
    (result,) = run_many([{"sqlite_fetch": {"transfers": transfers, "dest": str(dest), "backup_dir": str(bk),
                                            "staging_dirs": [str(staging)]}}], SYSTEM_PYTHON, tmp_dir=tmp_path)
    assert_clean_failure(result)
    assert "fetching %s from the host failed" % transfers[1]["fetch_path"] in result["msg"]
    assert not staging.exists() and result["removed"] == [str(staging)]
    assert [e["file"] for e in result["fetched"]] == [transfers[0]["file"]]
    assert sorted(os.listdir(dest / "gym")) == [INCOMING + transfers[0]["file"]]


# One staging folder the module refuses as a staging folder, by test id ({names} filled in by the test).
NOT_STAGING_FOLDERS = {
    "backup-dir": "{bk}",
    "etc": "/etc",
    "other-folder": "{bk}/other",
    "bare-prefix": "{bk}/.sqlite-export.",
    "dotdot": "{staging}/..",
    "nested": "{staging}/sub",
    "beside-bare": "{parent}/.sqlite-export.x",
    "home": "{home}",
    "home-bare-prefix": "{home}/.sqlite-export.",
    "home-nested": "{home}/.sqlite-export.x/sub",
    "other-home": "{parent}/.sqlite-fleet-staging-other/.sqlite-export.x",
    "home-dotdot": "{home}/../bk/../.sqlite-export.x",
}
# A transfer's fetch_path outside the staging folders given (staging_dirs, fetch_path), by test id.
FETCH_PATHS_OUTSIDE = {
    "no-staging": ([], "{staging}/{file}"),
    "etc-passwd": (["{staging}"], "/etc/passwd"),
    "fetch-dotdot": (["{staging}"], "{staging}/../{file}"),
    "fetch-other-beside": (["{staging}"], "{home}/.sqlite-export.x/{file}"),
}


@pytest.mark.parametrize(("staging_dirs", "fetch_path", "message"), [
    *(pytest.param([folder], None, "is not a staging folder", id=name) for name, folder in NOT_STAGING_FOLDERS.items()),
    pytest.param(["relative/.sqlite-export.x"], None, "must be an absolute path", id="relative"),
    *(pytest.param(folders, fetch_path, "it is not in a staging folder of this run", id=name)
      for name, (folders, fetch_path) in FETCH_PATHS_OUTSIDE.items()),
])
def test_fetch_refuses_paths_outside_the_staging_folders_and_does_nothing(two_backups, tmp_path, staging_dirs,
                                                                         fetch_path, message):
    bk = two_backups["bk"]
    staging, transfers = stage(bk)
    fill = {"bk": str(bk), "staging": str(staging), "file": transfers[0]["file"], "parent": str(bk.parent),
            "home": str(bk.parent / (core.STAGING_HOME_PREFIX + bk.name))}
    if fetch_path is not None:
        transfers[0]["fetch_path"] = fetch_path.format(**fill)
    dest = tmp_path / "archive" / "pi1"
    (dest / "gym").mkdir(parents=True)
    before = tree_state(bk), tree_state(tmp_path / "archive")
    (result,) = run_many([{"sqlite_fetch": {
        "transfers": transfers, "dest": str(dest), "backup_dir": str(bk),
        "staging_dirs": [path.format(**fill) for path in staging_dirs]}}], SYSTEM_PYTHON, tmp_dir=tmp_path)
    assert_clean_failure(result)
    assert message in result["msg"], result["msg"]
    assert "refusing" in result["msg"] or "absolute" in result["msg"]
    assert (tree_state(bk), tree_state(tmp_path / "archive")) == before


def test_fetch_plugin_takes_the_staging_prefixes_from_the_core():
    """On the controller, as Ansible loads it: the plugin's prefixes are the repository core's own objects."""
    probe = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sqlite_fetch_action", "action_plugins/sqlite_fetch.py")
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
core = sys.modules["ansible.module_utils.sqlite_fleet"]
print(json.dumps({"same": plugin.EXPORT_PREFIX is core.EXPORT_PREFIX
                  and plugin.STAGING_HOME_PREFIX is core.STAGING_HOME_PREFIX, "core": core.__file__}))
"""
    proc = subprocess.run([str(BIN / "python"), "-c", probe], cwd=REPO, env=ansible_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["same"] is True
    assert Path(found["core"]).resolve().is_relative_to((REPO / "module_utils").resolve())
    source = (REPO / "action_plugins" / "sqlite_fetch.py").read_text()
    assert core.EXPORT_PREFIX not in source and core.STAGING_HOME_PREFIX not in source  # no mirrored copy


def test_backup_plugin_loads_under_a_strategy_that_puts_a_mixin_in_front_of_every_action_class():
    """As Mitogen's strategies load actions (bench/results/mitogen.md): every class the action loader hands
    out, sqlite_fetch's to our plugin included, comes back as type(name, (mixin, class)). sqlite_backup must
    still get such a subclass with one consistent MRO, its pull from sqlite_fetch's plain class."""
    probe = """
import json
from ansible.plugins import loader
from ansible.plugins.action import ActionBase
loader.init_plugin_loader()
class Mixin(ActionBase):  # Mitogen's ActionModuleMixin is an ActionBase too
    pass
plain = loader.action_loader.get_with_context
def adorned(name, *args, **kwargs):
    found = plain(name, class_only=True, collection_list=kwargs.get("collection_list"))
    klass = type(str(name), (Mixin, found.object), {}) if found.object else None
    return loader.get_with_context_result(klass, found.plugin_load_context)
loader.action_loader.get_with_context = adorned
try:
    klass = loader.action_loader.get("sqlite_backup", class_only=True)
except TypeError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"mro": [k.__name__ for k in klass.__mro__], "pull": hasattr(klass, "pull")}))
"""
    proc = subprocess.run([str(BIN / "python"), "-c", probe], cwd=REPO, env=ansible_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert "error" not in found, found
    assert found["mro"][:3] == ["sqlite_backup", "Mixin", "ActionModule"] and found["pull"] is True
    assert found["mro"].count("Mixin") == 1


# --------------------------------------------------------------------------- sqlite_archive: a whole pull


def test_a_pull_in_four_steps_imports_every_transfer_then_prunes_the_archive(two_backups, tmp_path):
    """info -> backup with export -> prepare -> fetch -> import with retention, as the roles chain them."""
    db, bk = two_backups["db"], two_backups["bk"]
    archive = tmp_path / "archive"
    common = {"archive_dir": str(archive), "host": "pi1"}
    listed, taken, prepared, fetched, imported = run_many([
        {"sqlite_archive_info": dict(common, name="gym"), "register": "listed"},
        {"sqlite_backup": {"path": str(db), "name": "gym", "backup_dir": str(bk), "retention": {"keep_last": 5},
                           "export": {"have": "{{ listed.have }}"}}, "register": "taken"},
        {"sqlite_archive": dict(common, state="prepare", transfers="{{ taken.transfers }}", databases=["gym"]),
         "register": "prepared"},
        {"sqlite_fetch": {"transfers": "{{ prepared.transfers }}", "dest": str(archive / "pi1"),
                          "backup_dir": str(bk), "staging_dirs": ["{{ taken.staging_dir }}"]}},
        {"sqlite_archive": dict(common, state="import", transfers="{{ prepared.transfers }}", databases=["gym"],
                                retention={"keep_last": 2})},
    ], SYSTEM_PYTHON, tmp_dir=tmp_path)
    for result in (listed, taken, prepared, fetched, imported):
        assert not result.get("failed"), result
    assert listed["have"] == [] and listed["changed"] is False and prepared["changed"] is True
    host_backups = backups_in(bk)
    assert [t["file"] for t in taken["transfers"]] == host_backups
    assert [t["mode"] for t in taken["transfers"]] == ["full", "delta", "delta"]
    assert fetched["bytes"] == sum(t["bytes"] for t in taken["transfers"]) and staging_in(bk) == []
    assert [(e["file"], e["changed"], e["failed"]) for e in imported["imported"]] == \
        [(f, True, False) for f in host_backups]
    (pruned,) = imported["pruned"]
    assert pruned["name"] == "gym" and pruned["deleted"] == host_backups[:1]
    folder = archive / "pi1" / "gym"
    assert backups_in(folder) == host_backups[1:]
    assert [e for e in os.listdir(folder) if e.startswith(core.TMP_PREFIX)] == []
    for backup in host_backups[1:]:
        assert core.verify_backup(str(folder / backup), integrity="quick")["ok"]
        assert core.sha256_file(str(folder / backup)) == core.sha256_file(str(bk / backup))


def test_archive_import_refuses_a_bad_retention_before_importing(two_backups, tmp_path):
    bk = two_backups["bk"]
    staging, transfers = stage(bk)
    folder = tmp_path / "archive" / "pi1" / "gym"
    folder.mkdir(parents=True)
    for transfer in transfers:
        shutil.copyfile(transfer["fetch_path"], folder / (INCOMING + transfer["file"]))
    before = tree_state(tmp_path / "archive")
    result = run_module("sqlite_archive", {"archive_dir": str(tmp_path / "archive"), "host": "pi1", "state": "import",
                                           "transfers": transfers, "databases": ["gym"],
                                           "retention": {"keep_last": 0}})
    assert_clean_failure(result)
    assert result["kind"] == "bad_input" and "keeps nothing" in result["msg"]
    assert tree_state(tmp_path / "archive") == before
    core.remove_staging_dir(str(bk), str(staging))


# --------------------------------------------------------------------------- what backup.yml sends to a host

EXEC_RE = re.compile(r"^<(?P<host>[^>]+)> EXEC (?P<command>.*)$", re.MULTILINE)
MODULE_RE = re.compile(r"AnsiballZ_(?P<module>\w+)\.py")


def test_backup_yml_sends_one_module_per_database_to_the_host(tmp_path):
    """backup.yml on a host reached by the local connection, -vvv: every module run and every
    command Ansible executes is logged with the host it ran for. Per database, one module on the
    host (the backup, which also prunes and stages); its task (the sqlite_backup action plugin) then
    fetches, runs one rm -rf, and lists, imports and prunes the archive in-process: no module on the
    controller."""
    app = tmp_path / "app"
    app.mkdir()
    databases = [{"name": name, "path": str(make_database(app / ("%s.db" % name), rows=100))}
                 for name in ("gym", "ledger")]
    inventory = tmp_path / "hosts.json"
    inventory.write_text(json.dumps({"all": {"children": {"sqlite_hosts": {"hosts": {"pi-local": {
        "ansible_connection": "local", "ansible_python_interpreter": SYSTEM_PYTHON,
        "sqlite_backup_databases": databases, "sqlite_backup_dir": str(tmp_path / "bk"),
        "sqlite_archive_dir": str(tmp_path / "archive")}}}}}}))
    env = dict(ansible_env(), ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_PIPELINING="0")
    runs = []
    for _ in range(2):  # the first pull sends whole files, the second deltas
        proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "-vvv", "backup.yml"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
        runs.append(proc.stdout)
    for output in runs:
        modules: dict[str, Counter] = {}
        commands = []
        for match in EXEC_RE.finditer(output):
            module = MODULE_RE.search(match["command"])
            if module and "&& sleep 0" in match["command"] and "chmod" not in match["command"]:
                modules.setdefault(match["host"], Counter())[module["module"]] += 1
            elif match["host"] == "pi-local" and "rm -rf -- " in match["command"]:
                commands.append(match["command"])
        assert modules["pi-local"] == Counter(sqlite_backup=2), modules
        controller = modules.get("localhost", Counter()) + modules.get("127.0.0.1", Counter())
        # the listing, the check, the import and the prune run inside the backup's task, in-process
        assert controller == Counter(), modules
        assert len(commands) == 2, commands  # one removal per database's task
        assert all(removal.count(core.EXPORT_PREFIX) == 1 for removal in commands), commands
        assert "slurp" not in output and "AnsiballZ_stat" not in output
        for name in ("gym", "ledger"):
            assert re.search(r"pi-local %s: \S+, .* verified on host and in archive" % name, output), output[-3000:]
    assert staging_in(tmp_path / "bk") == []
