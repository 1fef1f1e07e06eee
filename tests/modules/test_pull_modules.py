"""One module run per database on the host: sqlite_backup's retention and export options, the
sqlite_fetch action (no module on the host), sqlite_archive's import of a whole pull, and what
backup.yml sends to a host. All through Ansible itself, on real SQLite files."""

from __future__ import annotations

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
from pathlib import Path

import pytest
from module_test_helpers import (  # tests/modules/conftest.py
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
RETENTION_KEYS = {"changed", "deleted", "kept", "decisions", "removed_unfinished", "invalid", "msg"}
TRANSFER_KEYS = {"file", "name", "manifest", "size_bytes", "base", "mode", "fetch_path", "bytes"}
INCOMING = ".sqlite-backup-tmp.incoming."


def backups_in(folder: Path) -> list[str]:
    return sorted(entry for entry in os.listdir(folder) if core.parse_backup_filename(entry))


def staging_in(folder: Path) -> list[str]:
    return sorted(entry for entry in os.listdir(folder) if entry.startswith(core.EXPORT_PREFIX))


def have_of(folder: Path, *files: str) -> list[dict]:
    return [{"file": f, "sha256": json.loads((folder / (f + ".json")).read_text())["sha256"]} for f in files]


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
    assert {k: v for k, v in transfer.items() if k != "fetch_path"} == \
        {k: v for k, v in alone["transfers"][0].items() if k != "fetch_path"}
    staging = Path(taken["staging_dir"])
    assert staging.parent == bk and staging.name.startswith(core.EXPORT_PREFIX)
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    assert Path(transfer["fetch_path"]).parent == staging
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
                                          "export": {"have": [], "fetch_user": "nobody"}},
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
    chowned), nobody's is hard-linked. fetch_user=daemon cannot enter the folder: refused clearly."""
    nobody, daemon = pwd.getpwuid(NOBODY).pw_name, pwd.getpwuid(DAEMON).pw_name
    root = Path(tempfile.mkdtemp(prefix="fetch-user-", dir="/tmp"))  # pytest's tmp is 0700: nobody must enter
    try:
        root.chmod(0o755)
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
        refused, staged, exported = run_many([
            {"sqlite_backup": dict(args, export={"have": [], "fetch_user": daemon})},
            {"sqlite_backup": dict(args, export={"have": [], "delta": False, "fetch_user": nobody})},
            {"sqlite_export": {"backup_dir": str(bk), "name": "gym", "delta": False, "fetch_user": str(NOBODY),
                               "have": [{"file": foreign, "sha256": "x"}]}},
        ], python, tmp_dir=root)

        assert_clean_failure(refused)
        assert refused["kind"] == "bad_input" and refused["changed"] is True  # the backup itself was taken
        assert "fetch_user %s cannot enter %s (mode 0700, owner uid %d)" % (daemon, bk, NOBODY) in refused["msg"]
        assert (bk / refused["file"]).exists()

        assert not staged.get("failed"), staged
        staging = Path(staged["staging_dir"])
        st = staging.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)
        files = {t["file"]: Path(t["fetch_path"]) for t in staged["transfers"]}
        assert set(files) == {foreign, refused["file"], staged["file"]}
        copy = files[foreign].stat()
        assert (copy.st_uid, stat.S_IMODE(copy.st_mode), copy.st_nlink) == (NOBODY, 0o600, 1)
        assert copy.st_ino != foreign_before.st_ino
        assert core.sha256_file(str(files[foreign])) == core.sha256_file(str(bk / foreign))
        after = os.stat(bk / foreign)
        assert (after.st_uid, after.st_nlink, after.st_ino) == (DAEMON, 1, foreign_before.st_ino)
        linked = files[staged["file"]].stat()
        assert linked.st_ino == (bk / staged["file"]).stat().st_ino and linked.st_uid == NOBODY

        assert not exported.get("failed"), exported
        assert Path(exported["staging_dir"]).stat().st_uid == NOBODY
        assert {Path(t["fetch_path"]).stat().st_uid for t in exported["transfers"]} == {NOBODY}
    finally:
        shutil.rmtree(root, ignore_errors=True)


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


@pytest.mark.parametrize(("staging_dirs", "fetch_path", "message"), [
    (["{bk}"], None, "is not a staging folder"),
    (["/etc"], None, "is not a staging folder"),
    (["{bk}/other"], None, "is not a staging folder"),
    (["{bk}/.sqlite-export."], None, "is not a staging folder"),
    (["{staging}/.."], None, "is not a staging folder"),
    (["{staging}/sub"], None, "is not a staging folder"),
    (["relative/.sqlite-export.x"], None, "must be an absolute path"),
    ([], "{staging}/{file}", "it is not in a staging folder of this run"),
    (["{staging}"], "/etc/passwd", "it is not in a staging folder of this run"),
    (["{staging}"], "{staging}/../{file}", "it is not in a staging folder of this run"),
], ids=["backup-dir", "etc", "other-folder", "bare-prefix", "dotdot", "nested", "relative", "no-staging",
        "etc-passwd", "fetch-dotdot"])
def test_fetch_refuses_paths_outside_the_staging_folders_and_does_nothing(two_backups, tmp_path, staging_dirs,
                                                                         fetch_path, message):
    bk = two_backups["bk"]
    staging, transfers = stage(bk)
    fill = {"bk": str(bk), "staging": str(staging), "file": transfers[0]["file"]}
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


def test_fetch_plugin_knows_the_cores_staging_prefix():
    text = (REPO / "action_plugins" / "sqlite_fetch.py").read_text()
    assert 'EXPORT_PREFIX = "%s"' % core.EXPORT_PREFIX in text


# --------------------------------------------------------------------------- sqlite_archive: a whole pull


def test_a_pull_in_four_steps_imports_every_transfer_then_prunes_the_archive(two_backups, tmp_path):
    """list -> backup with export -> prepare -> fetch -> import with retention, as the roles chain them."""
    db, bk = two_backups["db"], two_backups["bk"]
    archive = tmp_path / "archive"
    common = {"archive_dir": str(archive), "host": "pi1"}
    listed, taken, prepared, fetched, imported = run_many([
        {"sqlite_archive": dict(common, name="gym"), "register": "listed"},
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
    host (the backup, which also prunes and stages); the fetch runs one rm -rf and no module."""
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
        # list (one per database), prepare, import + prune; the report
        assert controller == Counter(sqlite_archive=4, sqlite_report=1), modules
        (removal,) = commands
        assert removal.count(core.EXPORT_PREFIX) == 2
        assert "slurp" not in output and "AnsiballZ_stat" not in output
        for name in ("gym", "ledger"):
            assert re.search(r"pi-local %s: \S+, .* verified on host and in archive" % name, output), output[-3000:]
    assert staging_in(tmp_path / "bk") == []
