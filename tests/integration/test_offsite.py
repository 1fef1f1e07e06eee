"""The offsite copy with real parts: backup.yml sends the archive to a restic repository in a local
folder and on a test host over SFTP (the fleet's sshd); a second run sends only new data; the
password never shows in the run's output, its record or the process list; a link cut mid-upload
fails fast with one line and the archive untouched; restore and drill from the offsite copy."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_fleet as core
import sqlite_offsite as offsite
from fleet import Fleet, Host
from integration_helpers import (
    DB_NAME,
    DB_PATH,
    HOST_DIRS,
    REPO,
    Site,
    backups_in,
    integrity_check,
    reset_host,
    reset_site,
    rows_by_host,
    run_records,
    summary_lines,
    table_counts,
    tree_state,
)

from sqlite_fleet_cli.fleet_status import collect_status

PASSWORD = "offsite-integration-pw-3c9a1e"
REPO_DIR = "/srv/app/restic-repo"  # on the repository host, a private folder

if shutil.which("restic") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("restic is not installed (tools/setup-system.sh test installs it)")
    pytest.skip("restic is not installed", allow_module_level=True)


@pytest.fixture
def site(fleet3: Fleet, tmp_path: Path) -> Iterator[Site]:
    """fleet3 with its hosts reset before and after (the fleet is shared)."""
    yield from reset_site(fleet3, tmp_path)


def password_file(tmp: Path) -> Path:
    path = tmp / "offsite.pass"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def sftp_command(fleet: Fleet, host: Host) -> str:
    """restic's sftp.command for a repository on ``host``: the fleet's key and known_hosts, and
    keep-alives so that a cut link ends the upload within seconds."""
    return "sftp.command=" + shlex.join([
        "ssh", "-F", "/dev/null", "-i", str(fleet.client_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={fleet.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=1",
        "-o", "ServerAliveCountMax=3", f"root@{host.address}", "-s", "sftp"])


def offsite_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if '"msg": "offsite: ' in line]
    assert lines, stdout[-4000:]
    return json.loads("{" + lines[-1].strip() + "}")["msg"]


def bytes_added(stdout: str) -> int:
    match = re.search(r"\((\d+) bytes of new data\)", offsite_line(stdout))
    assert match, offsite_line(stdout)
    return int(match.group(1))


def restic_snapshots(env: dict[str, str]) -> list[dict]:
    return offsite.list_snapshots(env)


def grow(db: Path, rows: int = 1) -> None:
    import sqlite3
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS offsite_probe (x BLOB)")
    for _ in range(rows):
        conn.execute("INSERT INTO offsite_probe VALUES (randomblob(4000))")
    conn.commit()
    conn.close()


def test_backup_sends_to_a_local_repository_and_the_second_run_only_new_data(site: Site) -> None:
    """The password from Ansible Vault: never in the output, the records, the site's files or ``ps``."""
    host = site.fleet["pi1"]
    db = site.create_database(host, members=1000)
    grow(db, 900)  # about 4 MB of incompressible pages
    repo = site.tmp / "offsite-repo"
    vault_pass = site.tmp / "vault.pass"
    vault_pass.write_text("vault-key-for-the-test\n")
    vault_pass.chmod(0o600)
    env = dict(site.env(), ANSIBLE_VAULT_PASSWORD_FILE=str(vault_pass))
    encrypted = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-vault"), "encrypt_string", PASSWORD,
                                "--name", "sqlite_offsite_password"], env=env, capture_output=True, text=True,
                               check=True).stdout
    (site.tmp / "group_vars").mkdir()
    (site.tmp / "group_vars" / "sqlite_hosts.yml").write_text("---\n" + encrypted)
    inventory = site.inventory(hosts=[host], group_vars={
        "sqlite_offsite_repository": str(repo), "sqlite_offsite_init": True,
        "sqlite_offsite_check_read_data_subset": "100%"})
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            out = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout
            seen.extend(line for line in out.splitlines() if "restic" in line)
            if PASSWORD in out:
                seen.append("PASSWORD SEEN: " + out)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        first = site.run("backup.yml", inventory=inventory, env=env)
    finally:
        done.set()
        watcher.join()
    assert first.rc == 0, first.explain()
    assert any("restic" in line and " backup " in line for line in seen), "ps never saw restic upload"
    assert not [line for line in seen if PASSWORD in line]
    grow(db, 3)
    second = site.run("backup.yml", inventory=inventory, env=env)
    assert second.rc == 0, second.explain()
    for run in (first, second):
        assert PASSWORD not in run.stdout + run.stderr
    for path in site.tmp.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000 and "offsite-repo" not in path.parts:
            assert PASSWORD.encode() not in path.read_bytes(), path

    snapshots = restic_snapshots(offsite.restic_env(str(repo), password=PASSWORD))
    assert len(snapshots) == 2
    assert {"host:pi1", "db:pi1/%s" % DB_NAME} <= set(snapshots[-1]["tags"])
    first_bytes, second_bytes = bytes_added(first.stdout), bytes_added(second.stdout)
    newest = site.archive_folder("pi1") / backups_in(site.archive_folder("pi1"))[-1]
    print("offsite: first run %d bytes, second run %d bytes (its new backup is %d bytes)"
          % (first_bytes, second_bytes, newest.stat().st_size))
    assert first_bytes > 3_500_000
    assert second_bytes < newest.stat().st_size / 2
    assert "check passed, read 100% of the data" in offsite_line(second.stdout)
    for record in run_records(site.archive, "backup"):
        assert PASSWORD not in json.dumps(record)
    # the record's offsite section and the newest backup offsite, which status reads from the records
    record = run_records(site.archive, "backup")[-1]
    assert record["offsite"]["outcome"] == "ok" and record["offsite"]["bytes_added"] == second_bytes
    assert snapshots[-1]["id"].startswith(record["offsite"]["snapshot_id"]) and record["offsite"]["files_sent"] >= 3
    assert "offsite: sent %d files" % record["offsite"]["files_sent"] in "\n".join(summary_lines(second))
    row = collect_status(str(site.archive)).rows[0]
    assert (row["host"], row["offsite"]["newest"]) == ("pi1", newest.name)
    assert row["offsite"]["snapshot_id"] == record["offsite"]["snapshot_id"] and row["offsite"]["age_seconds"] < 600

    # check mode: what the policy would forget (the newest snapshot of pi1/gym is spared), nothing forgotten
    planned = site.run("backup.yml", "--check", "-e", "sqlite_offsite_keep_last=1", inventory=inventory, env=env)
    assert planned.rc == 0, planned.explain()
    assert "would forget %s" % snapshots[0]["short_id"] in offsite_line(planned.stdout)
    assert [s["id"] for s in restic_snapshots(offsite.restic_env(str(repo), password=PASSWORD))] == \
        [s["id"] for s in snapshots]


def test_wrong_password_and_missing_repository_fail_with_one_line_archive_untouched(site: Site) -> None:
    host = site.fleet["pi1"]
    site.create_database(host)
    pw = password_file(site.tmp)
    repo = site.tmp / "offsite-repo"
    base = {"sqlite_offsite_repository": str(repo), "sqlite_offsite_password_file": str(pw)}
    planned = site.run("backup.yml", "--check", "-e", "sqlite_offsite_init=true",
                       inventory=site.inventory(hosts=[host], group_vars=base))
    assert planned.rc == 0, planned.explain()
    assert "would send 0 verified backup(s)" in offsite_line(planned.stdout)  # check mode pulls nothing
    assert not repo.exists()
    missing = site.run("backup.yml", inventory=site.inventory(hosts=[host], group_vars=base))
    assert missing.rc != 0
    assert "no restic repository at %s" % repo in missing.stdout
    assert not repo.exists()
    archived = tree_state(site.archive_folder("pi1"))
    assert len(backups_in(site.archive_folder("pi1"))) == 1

    offsite.init_repository(offsite.restic_env(str(repo), password="another-password"))
    wrong = site.run("backup.yml", inventory=site.inventory(hosts=[host], group_vars=base))
    assert wrong.rc != 0 and "wrong password for the offsite repository" in wrong.stdout
    assert PASSWORD not in wrong.stdout
    # the offsite copy failed, not the host: its backup was taken and archived; the run says failed
    record = run_records(site.archive, "backup")[-1]
    assert record["hosts"]["pi1"]["outcome"] == "ok" and rows_by_host(record)["pi1"]["ok"], record
    assert rows_by_host(record)["pi1"]["verified_in_archive"]
    assert record["outcome"] == "failed" and record["exit_code"] == 1
    assert record["offsite"]["outcome"] == "failed" and record["offsite"]["snapshot_id"] is None
    assert "wrong password for the offsite repository" in record["offsite"]["message"]
    lines = summary_lines(wrong)
    assert [line for line in lines if line.startswith("offsite FAILED: offsite upload failed: wrong password")], lines
    assert "(exit 1)" in wrong.stdout and " - offsite FAILED" not in wrong.stdout  # said once, in its own line
    assert [line for line in lines if line.startswith("pi1 %s: " % DB_NAME) and "FAILED" not in line], lines
    assert len(backups_in(site.archive_folder("pi1"))) == 2
    now = tree_state(site.archive_folder("pi1"))
    assert all(now[name] == state for name, state in archived.items() if not stat.S_ISDIR(state[0]))
    # before an upgrade the same: the emergency backup is taken and archived, the run fails for the offsite copy
    upgrade = site.run("pre_upgrade.yml", inventory=site.inventory(hosts=[host], group_vars=base))
    assert upgrade.rc != 0 and "no pre-upgrade backup on" not in upgrade.stdout
    record = run_records(site.archive, "pre-upgrade")[-1]
    assert record["hosts"]["pi1"]["outcome"] == "ok" and record["offsite"]["outcome"] == "failed", record
    assert record["exit_code"] == 1 and len(backups_in(site.archive_folder("pi1"))) == 3


def test_sftp_repository_link_cut_mid_upload_then_restore_and_drill_from_offsite(site: Site) -> None:
    pi1, pi3 = site.fleet["pi1"], site.fleet["pi3"]
    db = site.create_database(pi1)
    grow(db, 50)
    pw = password_file(site.tmp)
    repository = f"sftp:root@{pi3.address}:{REPO_DIR}"
    group_vars = {"sqlite_offsite_repository": repository, "sqlite_offsite_password_file": str(pw),
                  "sqlite_offsite_restic_options": [sftp_command(site.fleet, pi3)], "sqlite_offsite_init": True}
    inventory = site.inventory(hosts=[pi1], group_vars=group_vars)
    site.backup(inventory)
    assert (pi3.path(REPO_DIR) / "config").is_file()

    # the link to the repository host goes down while the next upload runs (the core's send, as the
    # role runs it; the playbook around it is the same as above)
    grow(db, 800)  # about 3 MB more: 12 s at 2 Mbit/s
    core.snapshot(str(db), str(site.archive_folder("pi1")), DB_NAME, source_host="pi1")
    env = offsite.restic_env(repository, password_file=str(pw), options=[sftp_command(site.fleet, pi3)])
    archived = tree_state(site.archive_folder("pi1"))
    # Host.shape limits what a host sends; the upload goes to pi3: limit the controller's side of its link
    subprocess.run(["tc", "qdisc", "replace", "dev", pi3.root_if, "root", "tbf", "rate", "2mbit", "burst", "16kb",
                    "latency", "500ms"], check=True)
    outcome: dict[str, object] = {}

    def upload() -> None:
        try:
            outcome["result"] = offsite.send(str(site.archive), env)
        except offsite.OffsiteError as exc:
            outcome["error"] = str(exc)
        outcome["at"] = time.time()

    uploader = threading.Thread(target=upload)
    uploader.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any(" backup " in line and "restic" in line for line in subprocess.run(
            ["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout.splitlines()):
        time.sleep(0.1)
    time.sleep(2.0)
    cut_at = time.time()
    pi3.link_down()
    uploader.join(120)
    pi3.link_up()
    subprocess.run(["tc", "qdisc", "del", "dev", pi3.root_if, "root"], check=False)
    failed_after = float(outcome["at"]) - cut_at
    print("link cut: the upload failed %.1f s after the cut: %s" % (failed_after, outcome.get("error")))
    assert "result" not in outcome, "the upload finished before the cut"
    error = str(outcome["error"])
    assert error.startswith("offsite upload failed: offsite back end sftp:") and "unreachable" in error, error
    assert "\n" not in error
    assert failed_after < 20
    assert tree_state(site.archive_folder("pi1")) == archived

    # the next run catches up: its lock is gone (stale), the new backup goes, forget and check pass
    caught_up = offsite.send(str(site.archive), env)
    assert caught_up["snapshot_id"] and caught_up["files_new"] >= 3
    offsite.forget(env, {"last": 5})
    assert offsite.check(env, "10%")["ok"]

    # the controller's archive is lost: restore from the offsite copy onto a new, empty host
    shutil.rmtree(site.archive)
    want = table_counts(db)
    reset_host(pi1, HOST_DIRS)
    restore = site.run("restore.yml", "-e", "restore_hosts=pi1", "-e", f"restore_database={DB_NAME}",
                       "-e", "restore_from=offsite", inventory=inventory)
    assert restore.rc == 0, restore.explain()
    assert "from the offsite copy" in restore.stdout
    restored = pi1.path(DB_PATH)
    assert integrity_check(restored) == ["ok"] and table_counts(restored) == want

    drill = site.run("restore_drill.yml", "-e", "drill_from=offsite", inventory=inventory)
    assert drill.rc == 0, drill.explain()
    log = [json.loads(line) for line in (site.archive / "drills" / "drill-log.jsonl").read_text().splitlines()]
    assert log and log[-1]["source"] == "offsite"
