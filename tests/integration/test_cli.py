"""The controller's CLI, ``sqlite-fleet``, run as an operator runs it: the installed entry point of the
project's virtualenv, from another working directory, through ansible-runner for real.

Most cases need no SSH: the hosts are "local" hosts (``ansible_connection: local``, as in the demo
inventory), each with its own database, backup folder and archive under the test's temporary
folder; an unreachable host is one whose SSH port on 127.0.0.1 refuses connections. The host key
case runs against a real SSH host of the session's fleet (``fleet3``). Every case checks the
summary the CLI printed and the run record it wrote (docs/cli.md) against what happened on disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
from demo_db import create_demo_db  # noqa: E402

pytestmark = pytest.mark.integration

CLI = REPO / ".venv" / "bin" / "sqlite-fleet"
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
SECRET = "hunter2-do-not-log-7f3a"
TIMEOUT = 300


@dataclass
class Run:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return "\n$ %s\nexit %d\n--- stdout\n%s\n--- stderr\n%s" % (" ".join(self.argv), self.rc, self.stdout[-8000:],
                                                                   self.stderr[-4000:])


class Site:
    """Local hosts h1, h2 (and an unreachable one on demand), their files under tmp."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.archive = tmp / "archive"
        self.runs_dir = tmp / "runs"  # the CLI's var/runs for this test (SQLITE_FLEET_RUNS_DIR)
        self.cwd = tmp / "elsewhere"
        self.cwd.mkdir()
        for name in ("h1", "h2"):
            create_demo_db(self.db(name), members=40, seed=len(name) + int(name[1]))

    def db(self, host: str) -> Path:
        return self.tmp / host / "app" / "gym.db"

    def backups(self, host: str) -> Path:
        return self.tmp / host / "backups"

    def inventory(self, name: str = "hosts.yml", hosts: tuple[str, ...] = ("h1", "h2"), unreachable: bool = False,
                  databases: dict[str, str] | None = None, controller: bool = False) -> Path:
        members: dict[str, Any] = {}
        for host in hosts:
            members[host] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                             "sqlite_backup_dir": str(self.backups(host)),
                             "sqlite_backup_databases": [{"name": "gym", "path": (databases or {}).get(
                                 host, str(self.db(host)))}]}
        if unreachable:
            members["h9"] = {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_user": "nobody",
                             "ansible_ssh_common_args": "-o ConnectTimeout=3", "sqlite_backup_databases": [
                                 {"name": "gym", "path": "/srv/app/gym.db"}]}
        body: dict[str, Any] = {"children": {"sqlite_hosts": {"hosts": members}},
                                "vars": {"sqlite_archive_dir": str(self.archive),
                                         "sqlite_sync_dir": str(self.tmp / "wc"),
                                         "sqlite_drill_max_age_hours": 36}}
        if controller:
            body["hosts"] = {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
        path = self.tmp / name
        path.write_text(json.dumps({"all": body}, indent=2))
        return path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env["SQLITE_FLEET_RUNS_DIR"] = str(self.runs_dir)
        return env

    def cli(self, *args: str, cwd: Path | None = None) -> Run:
        argv = [str(CLI), *args]
        done = subprocess.run(argv, cwd=cwd or self.cwd, env=self.env(), capture_output=True, text=True,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        return Run(argv, done.returncode, done.stdout, done.stderr)

    def playbook(self, *args: str) -> Run:
        argv = [str(ANSIBLE_PLAYBOOK), *args]
        env = {**self.env(), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        return Run(argv, done.returncode, done.stdout, done.stderr)

    def records(self) -> list[dict[str, Any]]:
        folder = self.archive / "runs"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def record(self) -> dict[str, Any]:
        return self.records()[-1]

    def plant_record(self, run_id: str) -> Path:
        """A record left by a run long ago, in the private runs folder a pull makes."""
        runs = self.archive / "runs"
        runs.mkdir(mode=0o700, parents=True)
        self.archive.chmod(0o700)
        path = runs / ("%s.json" % run_id)
        path.write_text("{}\n")
        return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("gym_backup_*.db")) if folder.is_dir() else []


@pytest.fixture
def site(tmp_path: Path) -> Site:
    if not CLI.exists():
        pytest.fail("%s is missing: make setup installs the CLI (pip install -e .)" % CLI)
    return Site(tmp_path)


# ------------------------------------------------------------------------- a good run, from another directory


def test_backup_from_another_directory_shows_progress_and_writes_one_record(site: Site) -> None:
    ancient = site.plant_record("20200101T000000Z-0a0b0c")
    run = site.cli("backup", "-i", str(site.inventory()), "--progress")

    assert run.rc == 0, run.explain()
    assert not ancient.exists() and "removed 1 run record(s) older than 400 days" in run.stdout, run.explain()
    records = site.records()
    assert len(records) == 1, "the callback plugin wrote a second record: %s" % records
    record = records[0]
    assert record["format_version"] == 2 and record["via"] == "cli" and record["command"] == "backup"
    assert record["outcome"] == "ok" and record["exit_code"] == 0 and record["message"] is None
    assert record["playbook"] == "backup.yml" and record["inventory"] == str(site.inventory())
    assert record["argv"] == ["sqlite-fleet", "backup", "-i", str(site.inventory()), "--progress"]
    assert record["duration_seconds"] > 0 and record["started"] <= record["ended"]
    assert sorted(record["hosts"]) == ["h1", "h2"]
    for host in ("h1", "h2"):
        row = record["hosts"][host]
        assert row["outcome"] == "ok" and row["sqlite_version"], row
        db = row["databases"]["gym"]
        (made,) = names(site.backups(host))
        assert names(site.archive / host / "gym") == [made]
        assert db["outcome"] == "ok" and db["backup"] == made and db["archived"] == [made], db
        assert db["verified_on_host"] is True and db["verified_in_archive"] is True
        assert db["size_bytes"] == (site.backups(host) / made).stat().st_size
        assert db["bytes_sent"] == db["size_bytes"] and db["pulled"] == [
            {"file": made, "mode": "full", "bytes": db["size_bytes"]}]
        assert db["newest_verified_on_host"] == db["newest_verified_in_archive"] == made
        assert db["deleted_on_host"] == [] and db["deleted_in_archive"] == []
        out = run.stdout
        assert "%s gym: snapshot taken: %s" % (host, made) in out
        assert "%s gym: pulled: " % host in out and "%s gym: verified in the archive: %s" % (host, made) in out
        assert "%s gym: %s, " % (host, made) in out and "verified on host and in archive" in out
    assert "backup: ok; 2 ok in " in run.stdout and "(exit 0)" in run.stdout
    # the private data dir of ansible-runner, kept under var/runs/<run_id>/, with the record beside
    data_dir = site.runs_dir / record["run_id"]
    assert (data_dir / ("%s.json" % record["run_id"])).is_file()
    (command,) = data_dir.glob("artifacts/*/command")
    env = json.loads(command.read_text())["env"]
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True", "ansible-runner turned host key checking off"
    assert env["ANSIBLE_CONFIG"] == str(REPO / "ansible.cfg")
    assert list(data_dir.glob("artifacts/*/job_events/*.json"))

    # a second run: retention deletes nothing yet, the new backup is a delta; artifacts pruned by count
    again = site.cli("backup", "-i", str(site.inventory()), "--quiet", "--keep-runs", "1")
    assert again.rc == 0, again.explain()
    assert "snapshot taken" not in again.stdout, "--quiet shows only the summary"
    second = site.record()
    assert second["run_id"] != record["run_id"]
    assert [p.name for p in site.runs_dir.iterdir()] == [second["run_id"]]
    assert second["hosts"]["h1"]["databases"]["gym"]["pulled"][0]["mode"] == "delta"


# ------------------------------------------------------------------------- failures: bad input, a typo, unreachable


def test_bad_variable_is_one_line_exit_2_and_secrets_stay_out(site: Site) -> None:
    run = site.cli("backup", "-i", str(site.inventory()), "-e", "sqlite_backup_keep_last=many",
                   "-e", "offsite_password=%s" % SECRET, "-e", '{"ping_url": "https://x.invalid/%s"}' % SECRET)

    assert run.rc == 2, run.explain()
    record = site.record()
    assert record["outcome"] == "bad_input" and record["exit_code"] == 2
    for host in ("h1", "h2"):
        row = record["hosts"][host]
        assert row["outcome"] == "failed" and row["message"].startswith("bad variable: argument 'sqlite_backup_"), row
        assert row["databases"]["gym"]["outcome"] == "failed"
        assert names(site.backups(host)) == [], "a backup was taken despite the bad variable"
    assert record["argv"][-4:] == ["-e", "<redacted>", "-e", "<redacted>"]
    assert "sqlite_backup_keep_last=many" in record["argv"]
    assert "h1 gym: FAILED - bad variable: argument 'sqlite_backup_keep_last' is of type str" in run.stdout
    assert "backup: BAD_INPUT" in run.stdout
    for root in (site.archive, site.runs_dir):
        for path in root.rglob("*"):
            if path.is_file():
                assert SECRET not in path.read_text(errors="replace"), "the secret reached %s" % path
    (stdout,) = site.runs_dir.glob("*/artifacts/*/stdout")
    text = stdout.read_text()
    assert "argument_spec_data" not in text and text.count("bad variable: argument 'sqlite_backup_keep_last'") == 2


def test_a_typo_in_a_database_path_fails_that_host_only(site: Site) -> None:
    missing = str(site.tmp / "h2" / "app" / "gmy.db")
    run = site.cli("backup", "-i", str(site.inventory(databases={"h2": missing})))

    assert run.rc == 1, run.explain()
    record = site.record()
    assert record["outcome"] == "failed" and record["exit_code"] == 1
    assert record["hosts"]["h1"]["outcome"] == "ok" and names(site.archive / "h1" / "gym")
    h2 = record["hosts"]["h2"]
    assert h2["outcome"] == "failed" and "%s does not exist" % missing in h2["databases"]["gym"]["message"]
    assert h2["databases"]["gym"]["backup"] is None and names(site.backups("h2")) == []
    assert "h2 gym: FAILED - " in run.stdout and "does not exist" in run.stdout


def test_an_unreachable_host_exits_3_and_the_others_finish(site: Site) -> None:
    run = site.cli("backup", "-i", str(site.inventory(hosts=("h1",), unreachable=True)))

    assert run.rc == 3, run.explain()
    record = site.record()
    assert record["outcome"] == "unreachable"
    assert record["hosts"]["h1"]["outcome"] == "ok" and names(site.archive / "h1" / "gym")
    h9 = record["hosts"]["h9"]
    assert h9["outcome"] == "unreachable" and h9["message"], h9
    assert "h9: UNREACHABLE - " in run.stdout


def test_plain_ansible_playbook_failing_host_gets_summary_and_record(site: Site) -> None:
    missing = str(site.tmp / "nowhere.db")
    ancient = site.plant_record("20200101T000000Z-0a0b0c")
    run = site.playbook("-i", str(site.inventory(hosts=("h1",), databases={"h1": missing})), "backup.yml")

    assert run.rc == 2, run.explain()  # Ansible's own code for a failed host
    assert not ancient.exists() and "removed 1 run record(s) older than 400 days" in run.stdout, run.explain()
    assert "SUMMARY" in run.stdout and "h1 gym: FAILED - " in run.stdout, run.explain()
    (record,) = site.records()
    assert record["via"] == "ansible-playbook" and record["argv"][0] == "ansible-playbook"
    assert record["outcome"] == "failed" and record["exit_code"] == 1
    assert "does not exist" in record["hosts"]["h1"]["databases"]["gym"]["message"]
    assert "TASK [Fail this host" not in run.stdout, "the failure is reported once"


def test_plain_ansible_playbook_from_another_directory_gets_the_guards_message(site: Site) -> None:
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(site.inventory(hosts=("h1",))), str(REPO / "backup.yml")]
    done = subprocess.run(argv, cwd=site.cwd, env=site.env(), capture_output=True, text=True, timeout=TIMEOUT)
    run = Run(argv, done.returncode, done.stdout, done.stderr)

    assert run.rc == 2, run.explain()
    assert "No host to work on: no ansible.cfg was loaded (run from the repository root, set ANSIBLE_CONFIG to " \
           "its ansible.cfg, or use sqlite-fleet)" in run.stdout + run.stderr, run.explain()
    assert "was not found" not in run.stdout + run.stderr, run.explain()  # Ansible's raw "the role ... was not found"
    assert names(site.backups("h1")) == [] and not site.archive.exists()


# ------------------------------------------------------------------------- --limit and check mode


def test_limit_keeps_the_guard_and_the_summary(site: Site) -> None:
    inventory = site.inventory()
    plain = site.playbook("-i", str(inventory), "backup.yml", "--limit", "h1")
    assert plain.rc == 0, plain.explain()
    assert "TASK [Refuse to run without ansible.cfg" in plain.stdout, "the guard was skipped"
    assert "h1 gym: gym_backup_" in plain.stdout and "h2: skipped - not in --limit" in plain.stdout
    assert site.record()["via"] == "ansible-playbook" and site.record()["limit"] == "h1"

    run = site.cli("backup", "-i", str(inventory), "--limit", "h2")
    assert run.rc == 0, run.explain()
    record = site.record()
    assert record["limit"] == "h2" and record["hosts"]["h1"]["outcome"] == "skipped"
    assert record["hosts"]["h1"]["message"] == "not in --limit" and record["hosts"]["h2"]["outcome"] == "ok"
    assert len(names(site.backups("h1"))) == 1 and len(names(site.backups("h2"))) == 1

    nobody = site.cli("backup", "-i", str(site.inventory("c.yml", controller=True)), "--limit", "localhost")
    assert nobody.rc == 2, nobody.explain()
    assert "--limit localhost leaves no host of sqlite_hosts" in site.record()["message"]


def test_check_mode_says_would_and_changes_nothing(site: Site) -> None:
    inventory = site.inventory(hosts=("h1",))
    assert site.cli("backup", "-i", str(inventory)).rc == 0
    before = {p: p.stat().st_mtime_ns for root in (site.backups("h1"), site.archive / "h1") for p in root.rglob("*")}

    run = site.cli("backup", "-i", str(inventory), "--check", "--diff", "--json")

    assert run.rc == 0, run.explain()
    after = {p: p.stat().st_mtime_ns for root in (site.backups("h1"), site.archive / "h1") for p in root.rglob("*")}
    assert after == before, "check mode changed files"
    record = json.loads(run.stdout)  # --json: the record, alone, on stdout
    assert record == site.record()
    db = record["hosts"]["h1"]["databases"]["gym"]
    assert record["check_mode"] is True and db["outcome"] == "would"
    assert db["backup"] is None and db["bytes_sent"] is None and db["verified_in_archive"] is None
    assert db["would"]["backup"].startswith("gym_backup_") and db["would"]["deleted_on_host"] == []
    line = next(line for line in run.stderr.splitlines() if line.startswith("h1 gym: "))
    assert line.startswith("h1 gym: would take gym_backup_") and "nothing was changed" in line
    assert "sent" not in line and "verified" not in line
    (stdout,) = site.runs_dir.glob("%s/artifacts/*/stdout" % record["run_id"])
    diff = stdout.read_text()
    assert "--- before: %s (gym backups)" % site.backups("h1") in diff and "+%s" % db["would"]["backup"] in diff


# ------------------------------------------------------------------------- restore, drill, stats


def test_restore_drill_and_stats_runs_are_recorded(site: Site) -> None:
    inventory = str(site.inventory(hosts=("h1",)))
    assert site.cli("backup", "-i", inventory).rc == 0
    (backup,) = names(site.backups("h1"))

    restored = site.cli("restore", "-i", inventory, "-e", "restore_hosts=h1", "-e", "restore_database=gym")
    assert restored.rc == 0, restored.explain()
    restore = site.record()["hosts"]["h1"]["databases"]["gym"]["restore"]
    assert restore["restored"] == backup and restore["mode"] == "replace" and restore["safety_backup"]
    assert (site.backups("h1") / restore["safety_backup"]).is_file()
    assert "h1 gym: restored %s onto %s (replace), safety backup " % (backup, site.db("h1")) in restored.stdout

    refused = site.cli("restore", "-i", inventory)
    assert refused.rc == 2 and "restoring is never implicit" in site.record()["message"], refused.explain()

    drilled = site.cli("drill", "-i", inventory)
    assert drilled.rc == 0, drilled.explain()
    drill = site.record()["hosts"]["h1"]["databases"]["gym"]["drill"]
    assert drill["ok"] is True and drill["backup"] == backup and drill["rto_seconds"] > 0
    assert "h1 gym: drill passed: %s" % backup in drilled.stdout

    stats = site.cli("stats", "-i", inventory, "--json")
    assert stats.rc == 0, stats.explain()
    record = json.loads(stats.stdout)
    figures = record["hosts"]["h1"]["databases"]["gym"]["stats"]
    assert figures["database"]["size_bytes"] == site.db("h1").stat().st_size
    assert figures["host_backups"]["count"] == 2 and figures["archive_backups"]["count"] == 1
    assert record["command"] == "stats" and record["outcome"] == "ok"

    plain = site.playbook("-i", inventory, "stats.yml", "-e", "sqlite_stats_format=json")
    assert plain.rc == 0, plain.explain()
    rows = json.loads((site.archive / "stats.json").read_text())
    assert [(r["host"], r["database"], r["host_backups"]) for r in rows] == [("h1", "gym", 2)]


def test_pre_upgrade_and_sync_runs_are_recorded_with_their_label_and_working_copy(site: Site) -> None:
    inventory = str(site.inventory(hosts=("h1",)))

    upgrade = site.cli("pre-upgrade", "-i", inventory)
    assert upgrade.rc == 0, upgrade.explain()
    record = site.record()
    db = record["hosts"]["h1"]["databases"]["gym"]
    (made,) = names(site.backups("h1"))
    assert record["command"] == "pre-upgrade" and record["playbook"] == "pre_upgrade.yml"
    assert db["label"] == "pre-upgrade" and db["backup"] == made and db["verified_in_archive"] is True, db
    assert "h1 gym: %s [pre-upgrade], " % made in upgrade.stdout, upgrade.explain()

    synced = site.cli("sync", "-i", inventory)
    assert synced.rc == 0, synced.explain()
    record = site.record()
    db = record["hosts"]["h1"]["databases"]["gym"]
    copy = site.tmp / "wc" / "h1" / "gym.db"
    assert record["command"] == "sync" and db["outcome"] == "ok" and db["working_copy"] == str(copy), db
    assert copy.is_file() and "working copy %s" % copy in synced.stdout, synced.explain()
    assert len(names(site.backups("h1"))) == 2 and db["label"] is None


def test_retention_deletions_are_named_in_the_record_and_counted_in_the_summary(site: Site) -> None:
    inventory = str(site.inventory(hosts=("h1",)))
    keep = ["-e", "sqlite_backup_keep_last=1", "-e", "sqlite_backup_keep_days=0", "-e", "sqlite_backup_keep_daily=0",
            "-e", "sqlite_backup_keep_weekly=0", "-e", "sqlite_backup_keep_monthly=0",
            "-e", "sqlite_archive_keep_last=1", "-e", "sqlite_archive_keep_days=0", "-e", "sqlite_archive_keep_daily=0",
            "-e", "sqlite_archive_keep_weekly=0", "-e", "sqlite_archive_keep_monthly=0"]
    assert site.cli("backup", "-i", inventory).rc == 0
    (first,) = names(site.backups("h1"))
    time.sleep(1.1)  # backup names carry the second

    run = site.cli("backup", "-i", inventory, *keep)

    assert run.rc == 0, run.explain()
    db = site.record()["hosts"]["h1"]["databases"]["gym"]
    (second,) = names(site.backups("h1"))
    assert second != first and names(site.archive / "h1" / "gym") == [second]
    assert db["deleted_on_host"] == [first] and db["deleted_in_archive"] == [first], db
    assert "deleted 1 on host, 1 in archive" in run.stdout, run.explain()


# ------------------------------------------------------------------------- interrupted, scheduled, locked


def test_an_interrupted_run_exits_130_with_a_record(site: Site) -> None:
    create_demo_db(site.db("h1"), members=40, size_mb=48, seed=3, force=True)
    argv = [str(CLI), "backup", "-i", str(site.inventory(hosts=("h1",)))]
    process = subprocess.Popen(argv, cwd=site.cwd, env=site.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not list(site.runs_dir.glob("*/artifacts/*/job_events/*.json")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, stdout + stderr
    record = site.record()
    assert record["outcome"] == "interrupted" and record["exit_code"] == 130
    assert "backup: INTERRUPTED" in stdout


def test_the_installed_cron_line_runs_the_cli(site: Site) -> None:
    inventory = site.inventory("provisioned.yml", hosts=("h1",), controller=True)
    cron_file, logs = site.tmp / "controller.cron", site.tmp / "log"
    provisioned = site.cli("provision", "-i", str(inventory), "--limit", "localhost",
                           "-e", "sqlite_schedule_cron_file=%s" % cron_file, "-e", "sqlite_schedule_log_dir=%s" % logs)
    assert provisioned.rc == 0, provisioned.explain()
    assert site.record()["command"] == "provision" and site.record()["outcome"] == "ok"
    lines = [line for line in cron_file.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 3, lines
    (backup_line,) = [line for line in lines if " backup " in line]
    command = backup_line.split(None, 6)[6]
    program, *arguments = command.split()[:5]  # (a worktree's .venv may be a link to another checkout's)
    assert os.path.realpath(program) == os.path.realpath(CLI), command
    assert arguments == ["backup", "-i", str(inventory), "--log"], command

    ran = subprocess.run(["sh", "-c", command], cwd="/", env=site.env(), capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert ran.returncode == 0, (command, ran.stdout, ran.stderr, (logs / "backup.log").read_text())
    record = site.record()
    assert record["command"] == "backup" and record["via"] == "cli" and record["outcome"] == "ok"
    assert "--log" in record["argv"] and names(site.archive / "h1" / "gym")
    log = (logs / "backup.log").read_text()
    assert "h1 gym: snapshot taken: " in log and "backup finished with exit code 0" in log
    assert "record: %s" % (site.archive / "runs" / (record["run_id"] + ".json")) in log

    with open(str(logs / "backup.log") + ".lock", "a") as held:  # a run still going: the next one skips
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = subprocess.run(["sh", "-c", command], cwd="/", env=site.env(), capture_output=True, timeout=60)
    assert busy.returncode == 75
    assert "skipped: the previous run still holds" in (logs / "backup.log").read_text()
    assert len(site.records()) == 2


# ----------------------------------------------------- the fleet: host keys (the pull's progress: test_cli_progress.py)


def test_an_unknown_host_key_is_refused(fleet3: Any, site: Site) -> None:
    host = fleet3["pi1"]
    empty = site.tmp / "known_hosts"
    empty.write_text("")
    variables = fleet3.host_vars(host)
    variables["ansible_ssh_common_args"] = "-o UserKnownHostsFile=%s -o GlobalKnownHostsFile=/dev/null" % empty
    variables["sqlite_backup_databases"] = [{"name": "gym", "path": "/srv/app/gym.db"}]
    inventory = site.tmp / "pi.yml"
    inventory.write_text(json.dumps({"all": {"children": {"sqlite_hosts": {"hosts": {"pi1": variables}}},
                                             "vars": {"sqlite_archive_dir": str(site.archive)}}}))
    run = site.cli("stats", "-i", str(inventory))
    assert run.rc == 3, run.explain()
    row = site.record()["hosts"]["pi1"]
    assert row["outcome"] == "unreachable", row
    assert "Host key verification failed" in row["message"] or "requested strict checking" in row["message"], row
    assert empty.read_text() == "", "the host's key was accepted and written"

