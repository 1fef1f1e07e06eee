"""restore.yml, run exactly as docs/scenarios.md tells an operator to run it, on real SSH hosts.

Every scenario of docs/scenarios.md is a test here, with the documented commands: backups are
first made with ``backup.yml`` (``pre_upgrade.yml`` for the failed upgrade), then
``ansible-playbook restore.yml -e restore_hosts=... -e restore_database=gym ...`` runs from the
repository root with its ``ansible.cfg`` and host key checking on. Each test builds a fresh
fleet (``make_fleet``): a host is a network namespace with its own sshd and private mounts of
/srv/app (the app and its database), /var/backups/sqlite, /opt/sqlite-backup, /etc/cron.d ...;
the archive lives in the test's temporary folder on the controller.

The app is ``tools/app_writer.py`` started *inside* the host's namespaces (a real process
holding the database and its -wal). Test hosts have no systemd, so the app's service is a
tiny control script (``appctl.py``, written into the host's /srv/app): ``stop`` ends the
app by the pid it recorded (after checking that pid is still that app), ``start`` launches
it again detached. restore.yml runs it through ``restore_stop_command`` /
``restore_start_command`` (argv lists, no shell).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from app_writer import check_invariant, writer_command
from fleet import DEFAULT_MOUNTS, Host
from integration_helpers import (
    BACKUP_DIR,
    BACKUP_NAME,
    DB_NAME,
    DB_PATH,
    REPO,
    PlaybookRun,
    Site,
    backups_in,
    corrupt_table_pages,
    flip_byte,
    header_journal_mode,
    integrity_check,
    manifest_of,
    sha256_of,
    table_counts,
    tree_state,
    user_version,
)

pytestmark = pytest.mark.integration

SCENARIOS_DOC = REPO / "docs" / "scenarios.md"
STAGING_DIR = BACKUP_DIR + "/.sqlite-restore"
APP_DIR = "/srv/app"
APPCTL = APP_DIR + "/appctl.py"
APP_STATUS = APP_DIR + "/app-status.json"
APP_READY = APP_DIR + "/app.ready"
APP_PIDFILE = APP_DIR + "/app.pid"
NOBODY = 65534  # the "app user" owning the app's folder on a new Pi

# The app's service, for hosts without systemd: stop by recorded pid, start detached.
APPCTL_SOURCE = r'''"""Start or stop the app (tools/app_writer.py) like a service manager would."""
import json
import os
import signal
import subprocess
import sys
import time

CONFIG = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "appctl.json")))


def app_pid():
    """The recorded pid, when that process is still alive and still our app."""
    try:
        pid = int(open(CONFIG["pidfile"]).read())
        with open("/proc/%d/stat" % pid) as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().split(b"\0")
    except (OSError, ValueError):
        return None
    if state == "Z" or CONFIG["db"].encode() not in argv or not any(a.endswith(b"app_writer.py") for a in argv):
        return None
    return pid


def stop(hard):
    pid = app_pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
        deadline = time.monotonic() + 20
        while app_pid() == pid:
            if time.monotonic() > deadline:
                sys.exit("app %d did not stop" % pid)
            time.sleep(0.02)
    if os.path.exists(CONFIG["pidfile"]):
        os.unlink(CONFIG["pidfile"])
    print("stopped %s%s" % (pid, " (SIGKILL)" if hard else ""))


def start():
    if app_pid() is not None:
        sys.exit("the app is already running")
    if os.path.exists(CONFIG["ready"]):
        os.unlink(CONFIG["ready"])
    with open(CONFIG["log"], "ab") as log:
        proc = subprocess.Popen(CONFIG["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    with open(CONFIG["pidfile"], "w") as handle:
        handle.write("%d\n" % proc.pid)
    deadline = time.monotonic() + 20
    while not os.path.exists(CONFIG["ready"]):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit("the app did not start (exit %s), see %s" % (proc.poll(), CONFIG["log"]))
        time.sleep(0.02)
    print("started %d" % proc.pid)


if sys.argv[1:2] == ["stop"]:
    stop("--kill" in sys.argv)
elif sys.argv[1:] == ["start"]:
    start()
else:
    sys.exit("usage: appctl.py start | stop [--kill]")
'''


# ------------------------------------------------------------------------- helpers


def restored_line(run: PlaybookRun, host: str) -> str:
    """The playbook's one line per host: 'pi1 gym: restored ...' (or 'would restore')."""
    found = re.findall(rf'"msg": "({re.escape(host)} {DB_NAME}: (?:restored|would restore) [^"]*)"', run.stdout)
    assert len(found) == 1, f"no single summary line for {host}:{run.explain()}"
    return found[0]


def documented_commands() -> str:
    return SCENARIOS_DOC.read_text()


def assert_documented(command: str) -> None:
    """The test runs what the operator's guide says, word for word."""
    assert command in documented_commands(), f"docs/scenarios.md does not show: {command}"


# ------------------------------------------------------------------------- the site


class RestoreSite(Site):
    """One fresh fleet, this test's archive, and the operator's commands; and the app."""

    def backup_while_the_app_writes(self, host: Host, inventory: Path) -> tuple[App, int, str, dict[str, Any]]:
        """The app started on host, backup.yml run while it writes, then 20 commits more, which only the
        -wal holds (a restore takes them back): (app, its pid, the archived backup, its manifest)."""
        app = App(host, self.tmp)
        pid = app.start()
        app.wait_committed(20)
        self.backup(inventory)
        (backup,) = backups_in(self.archive_folder(host.name))
        manifest = manifest_of(self.archive_folder(host.name) / backup)
        app.wait_committed(manifest["tables"]["app_events"] + 20)
        return app, pid, backup, manifest


@pytest.fixture
def site(make_fleet: Any, tmp_path: Path) -> Iterator[Any]:
    """site(n) -> a Site on a fresh n-host fleet (torn down after the test)."""
    def factory(n: int = 1) -> RestoreSite:
        return RestoreSite(make_fleet(n), tmp_path)
    yield factory


class App:
    """The app on a host: the writer holding the database, and its control script."""

    def __init__(self, host: Host, tmp: Path) -> None:
        self.host = host
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None
        config = {
            "db": DB_PATH,
            "pidfile": APP_PIDFILE,
            "ready": APP_READY,
            "log": APP_DIR + "/app.log",
            "argv": writer_command(DB_PATH, Path(APP_STATUS), Path(APP_READY), python=host.python, rate=40,
                                   no_autocheckpoint=True, exit_with_parent=False),
        }
        host.path(APPCTL).write_text(APPCTL_SOURCE)
        host.path(APP_DIR + "/appctl.json").write_text(json.dumps(config, indent=2))

    @property
    def stop_command(self) -> list[str]:
        """SIGKILL, as a crashing app or an impatient service manager would: the -wal stays behind."""
        return [self.host.python, APPCTL, "stop", "--kill"]

    @property
    def start_command(self) -> list[str]:
        return [self.host.python, APPCTL, "start"]

    def hooks(self) -> str:
        return json.dumps({"restore_stop_command": self.stop_command, "restore_start_command": self.start_command})

    def start(self) -> int:
        """The app, started from here inside the host's namespaces (host.popen), its pid recorded."""
        argv = writer_command(DB_PATH, Path(APP_STATUS), Path(APP_READY), python=self.host.python, rate=40,
                              no_autocheckpoint=True)
        self.host.path(APP_READY).unlink(missing_ok=True)
        self.process = self.host.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=open(self.tmp / "writer-stderr.txt", "wb"))
        self.host.path(APP_PIDFILE).write_text(f"{self.process.pid}\n")
        self.wait_ready()
        cmdline = Path(f"/proc/{self.process.pid}/cmdline").read_bytes()
        assert b"app_writer.py" in cmdline, "nsenter should exec the writer, not fork it"
        return self.process.pid

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.host.path(APP_READY).exists():
            assert time.monotonic() < deadline, f"the app did not start: {self.status()}"
            time.sleep(0.02)

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.host.path(APP_STATUS).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def wait_committed(self, seq: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (status := self.status()).get("committed", 0) < seq:
            assert time.monotonic() < deadline, f"the app did not reach {seq}: {status}"
            time.sleep(0.02)
        return status

    def pid(self) -> int | None:
        try:
            return int(self.host.path(APP_PIDFILE).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.host.run([self.host.python, APPCTL, *args], capture_output=True, text=True, timeout=60)

    def stop(self) -> dict[str, Any]:
        """Stop whichever writer runs (gracefully) and return its final status."""
        done = self.ctl("stop")
        assert done.returncode == 0, done.stderr
        if self.process is not None:
            self.process.poll()  # reap the one started from here
        return self.status()


def writer_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ------------------------------------------------------------------------- (a) a new Pi


def test_a_new_pi_gets_the_dead_pis_database(site: Any) -> None:
    current = site(2)
    old, new = current.fleet["pi1"], current.fleet["pi2"]
    current.create_database(old)
    new.path(APP_DIR).chmod(0o755)
    os.chown(new.path(APP_DIR), NOBODY, NOBODY)  # the app's folder, owned by the app user
    current.backup(current.inventory(names={"pi1": "oldpi"}))
    (backup,) = backups_in(current.archive_folder("oldpi"))
    manifest = manifest_of(current.archive_folder("oldpi") / backup)

    current.fleet.remove_host(old)  # the SD card died
    inventory = current.inventory(names={"pi2": "newpi"})  # newpi replaces oldpi in sqlite_hosts
    provision = "ansible-playbook provision.yml -l newpi"
    restore = ("ansible-playbook restore.yml -e restore_hosts=newpi -e restore_database=gym "
               "-e restore_source_host=oldpi")
    assert_documented(provision)
    assert_documented(restore)

    provisioned = current.run_command(provision, inventory=inventory)
    assert provisioned.rc == 0, provisioned.explain()
    assert new.path("/etc/cron.d/sqlite-backup").is_file(), "provision.yml did not install the cron entries"
    assert not new.path(DB_PATH).exists()

    run = current.run_command(restore, inventory=inventory)

    assert run.rc == 0, run.explain()
    line = restored_line(run, "newpi")
    assert f"restored {backup}" in line and "the archive of oldpi" in line and "no database before" in line, line
    db = new.path(DB_PATH)
    assert integrity_check(db) == ["ok"]
    assert table_counts(db) == manifest["tables"]
    assert header_journal_mode(db) == manifest["source"]["journal_mode"] == "wal"
    st = db.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o600), "the app could not open it"
    assert not new.path(STAGING_DIR).exists(), "the staging folder was left on the host"
    assert backups_in(new.path(BACKUP_DIR)) == [], "there was nothing to keep a safety backup of"


# ------------------------------------------------------------------------- (b) corrupt


def test_b_a_corrupt_database_gets_the_latest_good_backup(site: Any) -> None:
    current = site(1)
    host, db, inventory = current.one_host()
    current.backup(inventory)
    (backup,) = backups_in(current.archive_folder("pi1"))
    manifest = manifest_of(current.archive_folder("pi1") / backup)
    corrupt_table_pages(db)
    assert integrity_check(db) != ["ok"]
    command = "ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym"
    assert_documented(command)

    run = current.run_command(command, inventory=inventory)

    assert run.rc == 0, run.explain()
    assert f"restored {backup}" in restored_line(run, "pi1")
    assert integrity_check(db) == ["ok"]
    assert table_counts(db) == manifest["tables"]
    # The corrupt database is kept, as a safety backup flagged unverified: never chosen as "latest".
    safety = [name for name in backups_in(host.path(BACKUP_DIR)) if name != backup]
    assert len(safety) == 1, backups_in(host.path(BACKUP_DIR))
    assert f"safety backup {safety[0]}" in restored_line(run, "pi1")
    kept = manifest_of(host.path(BACKUP_DIR) / safety[0])
    assert kept["label"] == "pre-restore" and kept["verified"] is False, kept
    assert kept["source"]["host"] == "pi1", "the inventory name, like every other backup of the host"


# ------------------------------------------------------------------------- (c) deleted rows


def test_c_rows_deleted_by_mistake_come_back_from_an_older_backup(site: Any) -> None:
    current = site(1)
    host, db, inventory = current.one_host()
    current.backup(inventory)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        deleted = conn.execute("DELETE FROM access_log WHERE door = 'pool'").rowcount
    finally:
        conn.close()
    assert deleted > 0
    time.sleep(1.1)  # the next backup's name must carry a later second than the first's
    current.backup(inventory)
    good, after = backups_in(current.archive_folder("pi1"))
    good_manifest = manifest_of(current.archive_folder("pi1") / good)
    assert manifest_of(current.archive_folder("pi1") / after)["tables"]["access_log"] == (
        good_manifest["tables"]["access_log"] - deleted)
    # "the state just before the second backup": a time, not a file name
    stamp = BACKUP_NAME.match(after).group(1)
    just_before = time.strftime("%Y%m%d_%H%M%S", time.gmtime(
        time.mktime(time.strptime(stamp, "%Y%m%d_%H%M%S")) - time.timezone - 1))
    assert BACKUP_NAME.match(good).group(1) <= just_before < stamp
    assert_documented("ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym "
                      "-e restore_backup=YYYYMMDD_HHMMSS")

    run = current.run_command("ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym "
                              f"-e restore_backup={just_before}", inventory=inventory)

    assert run.rc == 0, run.explain()
    assert f"restored {good}" in restored_line(run, "pi1")
    assert table_counts(db) == good_manifest["tables"], "the deleted rows are not back"
    assert integrity_check(db) == ["ok"]


# ------------------------------------------------------------------------- (d) failed upgrade


def test_d_a_failed_upgrade_is_rolled_back_to_the_pre_upgrade_backup(site: Any) -> None:
    """Find the pre-upgrade backup (manifests' label, check mode's list), preview, restore it by name."""
    current = site(1)
    host, db, inventory = current.one_host()
    current.backup(inventory, "pre_upgrade.yml")
    conn = sqlite3.connect(db, isolation_level=None)
    try:  # the upgrade: a migration that went wrong halfway, and the app ran on with it
        conn.executescript("ALTER TABLE members ADD COLUMN card TEXT; CREATE TABLE badges (id INTEGER PRIMARY KEY);"
                           "PRAGMA user_version = 4; DELETE FROM rentals;")
    finally:
        conn.close()
    time.sleep(1.1)
    current.backup(inventory)  # the nightly backup after the upgrade is now the latest
    folder = current.archive_folder("pi1")
    assert len(backups_in(folder)) == 2

    # Find it as the guide says: the manifests' label ...
    assert_documented("grep -l '\"label\": \"pre-upgrade\"' ~/sqlite-archive/pi1/gym/*.json")
    find = f"grep -l '\"label\": \"pre-upgrade\"' {folder}/*.json"
    found = subprocess.run(["bash", "-c", find], capture_output=True, text=True, check=True).stdout.split()
    assert len(found) == 1
    pre_upgrade = Path(found[0]).name.removesuffix(".json")
    manifest = manifest_of(folder / pre_upgrade)
    assert manifest["label"] == "pre-upgrade" and manifest["user_version"] == 3

    # ... or check mode's list, which also shows the plan; it changes nothing anywhere, runs no hook.
    roots = {f"pi1:{mount}": host.path(mount) for mount in DEFAULT_MOUNTS}
    roots["archive"] = current.archive
    before = {name: tree_state(root) for name, root in roots.items()}
    marker = APP_DIR + "/hook-ran"
    hooks = json.dumps({"restore_stop_command": ["touch", marker], "restore_start_command": ["touch", marker]})
    preview = "ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym --check --diff"
    assert_documented(preview)
    checked = current.run_command(preview, "-e", hooks, inventory=inventory)
    assert checked.rc == 0, checked.explain()
    after = {name: tree_state(root) for name, root in roots.items()}
    # ... but for its run record: every run, check mode too, leaves one in <archive>/runs/
    records = {rel for rel in after["archive"] if rel.startswith("runs/")} - set(before["archive"])
    assert len(records) == 1, records
    for rel in [*records, "runs"]:
        after["archive"].pop(rel)
        before["archive"].pop(rel, None)
    for name in roots:
        assert after[name] == before[name], f"check mode changed {name}"
    latest = backups_in(folder)[-1]
    line = restored_line(checked, "pi1")
    assert line.startswith(f"pi1 gym: would restore {latest} (") and f"onto {DB_PATH} (replace)" in line, line
    assert f"{pre_upgrade}  taken " in checked.stdout and "label pre-upgrade" in checked.stdout, checked.explain()
    assert f"--- before: {DB_PATH}" in checked.stdout and f"+++ after: {STAGING_DIR}/{latest}" in checked.stdout

    command = "ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym -e restore_backup="
    assert_documented(command + "gym_backup_")
    run = current.run_command(command + pre_upgrade, inventory=inventory)

    assert run.rc == 0, run.explain()
    assert f"restored {pre_upgrade} [pre-upgrade]" in restored_line(run, "pi1")
    assert user_version(db) == 3
    assert table_counts(db) == manifest["tables"] and "badges" not in table_counts(db)
    assert integrity_check(db) == ["ok"]


# ------------------------------------------------------------------------- the app running


def test_restore_under_a_running_app_stopped_and_started_by_the_hooks(site: Any) -> None:
    current = site(1)
    host, db, inventory = current.one_host()
    app, first_pid, backup, manifest = current.backup_while_the_app_writes(host, inventory)
    backup_events = manifest["tables"]["app_events"]
    assert host.path(DB_PATH + "-wal").stat().st_size > 0

    run = current.run_command("ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym",
                              "-e", app.hooks(), inventory=inventory)

    assert run.rc == 0, run.explain()
    line = restored_line(run, "pi1")
    assert f"restored {backup}" in line, line
    assert "removed the old gym.db-wal, gym.db-shm" in line, line  # they were never replayed into the new file
    assert re.search(r"; restore [\d.]+ s, app stopped for [\d.]+ s$", line), line
    assert not writer_alive(first_pid), "the stop hook did not stop the app"
    assert app.process is not None and app.process.wait(timeout=10) == -signal.SIGKILL
    second_pid = app.pid()
    assert second_pid and second_pid != first_pid and writer_alive(second_pid), "the start hook did not run"
    restarted = app.wait_committed(backup_events + 10)  # the new app goes on from the backup's counter
    final = app.stop()

    assert final["errors"] == 0 and final["commits"] > 0, final
    ok, events, detail = check_invariant(db)
    assert ok, detail
    assert events == backup_events + final["commits"] == final["committed"], (events, backup_events, final)
    assert restarted["committed"] > backup_events
    counts = table_counts(db)
    assert {t: n for t, n in counts.items() if not t.startswith("app_")} == {
        t: n for t, n in manifest["tables"].items() if not t.startswith("app_")}
    assert integrity_check(db) == ["ok"]
    # Nothing was lost: the safety backup holds every row the killed app had committed.
    (safety,) = [name for name in backups_in(host.path(BACKUP_DIR)) if name != backup]
    saved = manifest_of(host.path(BACKUP_DIR) / safety)
    assert saved["label"] == "pre-restore" and saved["verified"] is True
    assert saved["source"]["host"] == "pi1"
    assert saved["tables"]["app_events"] >= backup_events + 20


def test_replace_is_refused_while_the_app_holds_the_database_and_live_mode_works(site: Any) -> None:
    current = site(1)
    host, db, inventory = current.one_host()
    app, pid, backup, manifest = current.backup_while_the_app_writes(host, inventory)
    backup_events = manifest["tables"]["app_events"]

    refused = current.run_command("ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym",
                                  inventory=inventory)

    assert refused.rc != 0, refused.explain()
    assert f"refusing to replace {DB_PATH}: it is open in {pid} (" in refused.output, refused.explain()
    assert writer_alive(pid), "the app was stopped although no hook was given"
    before_live = app.wait_committed(backup_events + 30)
    assert backups_in(host.path(BACKUP_DIR)) == [backup], "nothing may happen on a refused restore"
    assert not host.path(STAGING_DIR).exists()

    # The same with the app running, in live mode, from the host's own backup folder (no copy).
    command = ("ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym "
               "-e restore_mode=live")
    assert_documented(command)
    live = current.run_command(command, "-e", "restore_from=host", inventory=inventory)

    assert live.rc == 0, live.explain()
    assert f"restored {backup}" in restored_line(live, "pi1") and "(live)" in restored_line(live, "pi1")
    assert "Copy the backup" not in live.stdout or "skipping: [pi1]" in live.stdout
    assert writer_alive(pid), "a live restore must not stop the app"
    # The app has seen the restore once its row count (from the database) trails its own count of
    # commits; a status written before the restore says nothing about the restored database.
    deadline = time.monotonic() + 30
    while not ((final_seen := app.status()).get("committed", 0) >= backup_events + 10
               and final_seen["committed"] < final_seen.get("commits", 0)):
        assert time.monotonic() < deadline, f"the app did not go on from the restored backup: {final_seen}"
        time.sleep(0.02)
    assert app.process is not None
    app.process.send_signal(signal.SIGTERM)
    assert app.process.wait(timeout=15) == 0
    final = app.status()
    assert final["errors"] == 0, final  # its writes waited for the restore, none failed
    ok, events, detail = check_invariant(db)
    assert ok, detail
    assert events == final["committed"] >= final_seen["committed"] > backup_events
    # the rows written between the backup and the restore are gone: the app went on from the backup
    assert events < final["commits"] and before_live["committed"] > backup_events
    assert integrity_check(db) == ["ok"]
    (safety,) = [name for name in backups_in(host.path(BACKUP_DIR)) if name != backup]
    assert manifest_of(host.path(BACKUP_DIR) / safety)["tables"]["app_events"] >= before_live["committed"]


# ------------------------------------------------------------------------- refusals


def test_a_corrupt_chosen_backup_is_refused_before_anything_is_touched(site: Any) -> None:
    current = site(1)
    host, db, inventory = current.one_host()
    current.backup(inventory)
    (backup,) = backups_in(current.archive_folder("pi1"))
    archived = current.archive_folder("pi1") / backup
    flip_byte(archived)
    before = sha256_of(db)
    host_before = tree_state(host.path(BACKUP_DIR))
    marker = APP_DIR + "/stop-hook-ran"
    hooks = json.dumps({"restore_stop_command": ["touch", marker], "restore_start_command": ["true"]})

    run = current.run_command("ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym", "-e", hooks,
                              inventory=inventory)

    assert run.rc != 0, run.explain()
    assert f"refusing to restore {backup}" in run.output and "failed verification" in run.output, run.explain()
    assert "checksum" in run.output
    assert sha256_of(db) == before, "the original database was touched"
    assert not host.path(marker).exists(), "the app was stopped for a backup that was never going to be restored"
    assert tree_state(host.path(BACKUP_DIR)) == host_before, "no staging, no safety backup"


def test_restore_is_never_implicit(site: Any) -> None:
    current = site(1)
    current.create_database(current.fleet["pi1"])
    inventory = current.inventory()
    cases = {
        "nothing": ("ansible-playbook restore.yml", ["restore_hosts", "restore_database", "never implicit"]),
        "no database": ("ansible-playbook restore.yml -e restore_hosts=pi1", ["restore_database"]),
        "no hosts": ("ansible-playbook restore.yml -e restore_database=gym", ["restore_hosts"]),
        "unknown host": ("ansible-playbook restore.yml -e restore_hosts=pi9 -e restore_database=gym",
                         ["restore_hosts=pi9 matches no inventory host"]),
        "unknown database": ("ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=shop",
                             ["database shop is not in its sqlite_backup_databases (gym)"]),
        "bad settings": ("ansible-playbook restore.yml -e restore_hosts=pi1 -e restore_database=gym "
                         "-e restore_mode=overwrite -e restore_source_host=../../etc",
                         ["restore_mode replace or live", "restore_source_host is an inventory host name"]),
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = dict(zip(cases, pool.map(lambda case: current.run_command(case[0], inventory=inventory),
                                        cases.values())))
    for case, (_, expected) in cases.items():
        run = runs[case]
        assert run.rc != 0, f"{case}:{run.explain()}"
        assert "Nothing restored" in run.stdout, f"{case}:{run.explain()}"
        for text in expected:
            assert text in run.stdout, f"{case}: {text!r} not said:{run.explain()}"
        assert "Traceback" not in run.output
    assert current.fleet["pi1"].path(DB_PATH).is_file()
    assert backups_in(current.fleet["pi1"].path(BACKUP_DIR)) == []
