"""The fleet playbooks, run exactly as a user runs them, against real SSH hosts.

Every test runs ``ansible-playbook -i <inventory> <playbook>.yml`` from the repository root
with the repository's ``ansible.cfg`` and host key checking on (the fleet's known_hosts),
against the session's three-host fleet (``fleet3``: pi1 runs Python 3.9). Each host's
database lives in its private ``/srv/app``; backups go to its private ``/var/backups/sqlite``;
the archive and the working copies go to the test's own temporary folder on the controller.
An app-like writer (``tools/app_writer.py``) runs *inside* a host's namespaces, as the app
would, while the playbooks back its database up.

Tests that change a host (its files, its link) put it back: the ``site`` fixture empties the
hosts' private folders before each test and brings every link back up afterwards. To keep the
file's runtime modest, the stats test and the second-backup test share one backed-up fleet
(``backed_up``): the first only reads it (and checks that it changed nothing), the second
only adds a backup to it. Each playbook run's command and output are kept in the test's
temporary folder (``runNN-<playbook>.log``) and shown when an assertion fails.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from app_writer import check_invariant
from demo_db import create_demo_db
from fleet import DEFAULT_MOUNTS, Fleet, Host
from integration_helpers import (
    BACKUP_DIR,
    DB_NAME,
    DB_PATH,
    HOST_DIRS,
    MIB,
    REPO,
    Site,
    backups_in,
    changed_pages,
    integrity_check,
    manifest_of,
    private_tree_problems,
    reset_host,
    rows_by_host,
    run_records,
    sha256_of,
    sha256sum_check,
    summary_lines,
    table_counts,
    tree_state,
)

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------- helpers


def change_photo_blobs(db: Path, fraction: float, seed: int = 11) -> tuple[int, int]:
    """Give ``fraction`` of the photos fresh random bytes of the same size; (rows changed, bytes)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        photos = conn.execute("SELECT id, length(data) FROM photos ORDER BY id").fetchall()
        chosen = rng.sample(photos, max(1, round(len(photos) * fraction)))
        conn.execute("BEGIN IMMEDIATE")
        for photo_id, size in chosen:
            conn.execute("UPDATE photos SET data = ? WHERE id = ?", (rng.randbytes(size), photo_id))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return len(chosen), sum(size for _, size in chosen)


# ------------------------------------------------------------------------- the site


_resets = 0  # how often reset_fleet() emptied fleet3's hosts in this session


def reset_fleet(fleet: Fleet) -> None:
    global _resets
    _resets += 1
    for host in fleet:
        reset_host(host)


@pytest.fixture
def site(fleet3: Fleet, tmp_path: Path) -> Iterator[Site]:
    """fleet3 with its hosts' private folders emptied, and this test's controller folders."""
    reset_fleet(fleet3)
    current = Site(fleet3, tmp_path)
    yield current
    for handle in current.writers:
        if handle.running():
            handle.stop()
    for host in fleet3:
        host.link_up()


# ------------------------------------------------------------------------- 1


def test_backup_while_the_app_writes_archives_consistent_verified_backups(site: Site) -> None:
    site.create_databases()
    inventory = site.inventory()
    writers = {host.name: site.start_writer(host, rate=40, no_autocheckpoint=host.name != "pi3")
               for host in site.hosts}
    time.sleep(0.5)
    committed_before = {name: writer.status()["committed"] for name, writer in writers.items()}

    run = site.run("backup.yml", inventory=inventory)

    still_running = {name: writer.running() for name, writer in writers.items()}
    finals = {name: writer.stop() for name, writer in writers.items()}
    assert run.rc == 0, run.explain()
    for name, final in finals.items():
        assert still_running[name], f"{name}: the writer died during the run: {final}"
        assert final["returncode"] == 0 and final["errors"] == 0, f"{name}: {final}"
        assert final["committed"] > committed_before[name], f"{name}: the writer stalled: {final}"

    lines = summary_lines(run)
    assert len(lines) == len(site.hosts), lines
    (record,) = run_records(site.archive, "backup")
    assert record["outcome"] == "ok" and record["via"] == "ansible-playbook", record
    rows = rows_by_host(record)
    assert sorted(rows) == [host.name for host in site.hosts]

    for host in site.hosts:
        row = rows[host.name]
        [line] = [line for line in lines if line.startswith(f"{host.name} {DB_NAME}: ")]
        assert row["ok"] and row["backup"] in line and "verified on host and in archive" in line, (row, line)
        folder = site.archive_folder(host.name)
        assert backups_in(folder) == [row["backup"]], f"{host.name}: {sorted(os.listdir(folder))}"
        assert row["archived"] == [row["backup"]]
        backup = folder / row["backup"]
        assert integrity_check(backup) == ["ok"], host.name
        ok, n, detail = check_invariant(backup, immutable=True)
        assert ok, f"{host.name}: {detail}"
        assert n >= committed_before[host.name], (
            f"{host.name}: the backup holds {n} events, {committed_before[host.name]} were committed before the run")
        manifest = manifest_of(backup)
        assert manifest["label"] is None and manifest["verified"] is True
        assert manifest["tables"]["app_events"] == n and manifest["source"]["host"] == host.name
        assert sha256_of(backup) == manifest["sha256"]
        assert not list(folder.glob("*-wal")) and not list(folder.glob("*-shm")), "a backup was opened writable"

        for checked in (folder, site.host_backup_folder(host)):
            sums = sha256sum_check(checked)
            assert sums.returncode == 0, f"{checked}:\n{sums.stdout}{sums.stderr}"
            assert f"{row['backup']}: OK" in sums.stdout
        host_folder = site.host_backup_folder(host)
        assert backups_in(host_folder) == [row["backup"]]
        assert sha256_of(host_folder / row["backup"]) == manifest["sha256"]
        leftovers = [entry.name for entry in host_folder.iterdir()
                     if entry.name.startswith((".sqlite-export", ".sqlite-backup-tmp"))]
        assert not leftovers, f"{host.name}: staging or temporary files left: {leftovers}"
        assert private_tree_problems(host_folder) == []
    assert private_tree_problems(site.archive) == []


# ------------------------------------------------------------------------- 2


def test_second_backup_sends_a_small_page_delta(site: Site) -> None:
    host = site.fleet["pi1"]
    size_mb = 96
    started = time.monotonic()
    facts = create_demo_db(host.path(DB_PATH), members=200, size_mb=size_mb, seed=5)
    created_seconds = time.monotonic() - started
    db_bytes = host.path(DB_PATH).stat().st_size
    assert db_bytes >= (size_mb - 1) * MIB, facts
    inventory = site.inventory(hosts=[host])

    first = site.run("backup.yml", inventory=inventory)
    assert first.rc == 0, first.explain()
    (first_record,) = run_records(site.archive, "backup")
    first_row = rows_by_host(first_record)[host.name]
    assert first_row["transfers"] == [f"{first_row['backup']} (full)"], first_row
    assert first_row["transferred_bytes"] == db_bytes

    rows_changed, blob_bytes = change_photo_blobs(host.path(DB_PATH), fraction=0.01)
    rx_before, tx_before = host.link_bytes()
    second = site.run("backup.yml", inventory=inventory)
    rx_after, tx_after = host.link_bytes()
    assert second.rc == 0, second.explain()

    records = run_records(site.archive, "backup")
    assert len(records) == 2
    second_row = rows_by_host(records[-1])[host.name]
    assert second_row["transfers"] == [f"{second_row['backup']} (delta)"], second_row
    folder = site.archive_folder(host.name)
    assert backups_in(folder) == sorted([first_row["backup"], second_row["backup"]])
    new_backup = folder / second_row["backup"]
    assert sha256_of(new_backup) == manifest_of(new_backup)["sha256"]
    assert sha256sum_check(folder).returncode == 0
    pages = changed_pages(folder / first_row["backup"], new_backup)

    reported = second_row["transferred_bytes"]
    on_link = (rx_after - rx_before) + (tx_after - tx_before)
    print(f"delta: DB {db_bytes / MIB:.1f} MiB (created in {created_seconds:.1f} s); {rows_changed} photos "
          f"({blob_bytes / MIB:.2f} MiB of blobs) rewritten -> {pages} of {db_bytes // 4096} pages differ; "
          f"reported transfer {reported} B ({reported / db_bytes:.2%}); link rx {rx_after - rx_before} B + "
          f"tx {tx_after - tx_before} B = {on_link} B ({on_link / db_bytes:.2%}); "
          f"runs {first.seconds:.1f} s (full) and {second.seconds:.1f} s (delta)")
    assert reported < 0.025 * db_bytes
    assert on_link < 0.06 * db_bytes
    # the photos' new bytes are random, and so is their XOR with the old ones: they travel whole
    assert reported >= blob_bytes, "the delta cannot be smaller than the incompressible bytes that changed"


# ------------------------------------------------------------------------- 3


def test_sync_installs_working_copies_and_keeps_the_previous_one(site: Site) -> None:
    site.create_databases()
    inventory = site.inventory()
    for host in site.hosts:
        site.start_writer(host, rate=40)

    first = site.run("sync.yml", inventory=inventory)
    assert first.rc == 0, first.explain()
    second = site.run("sync.yml", inventory=inventory)
    assert second.rc == 0, second.explain()

    first_record, second_record = run_records(site.archive, "sync")
    first_rows, second_rows = rows_by_host(first_record), rows_by_host(second_record)
    lines = summary_lines(second)
    for host in site.hosts:
        copy = site.working / host.name / f"{DB_NAME}.db"
        first_manifest = manifest_of(site.archive_folder(host.name) / first_rows[host.name]["backup"])
        manifest = manifest_of(site.archive_folder(host.name) / second_rows[host.name]["backup"])
        assert second_rows[host.name]["working_copy"] == str(copy)
        assert any(line.startswith(f"{host.name} {DB_NAME}: ") and f"working copy {copy}" in line for line in lines)
        assert copy.is_file()
        assert sha256_of(copy) == manifest["sha256"]
        assert manifest["sha256"] != first_manifest["sha256"], "the writer ran: the two snapshots must differ"
        assert table_counts(copy) == manifest["tables"]
        assert check_invariant(copy, immutable=True)[0]

        previous = sorted(copy.parent.glob(f"{DB_NAME}.db.prev-*"))
        assert len(previous) == 1, sorted(os.listdir(copy.parent))
        assert sha256_of(previous[0]) == first_manifest["sha256"]
        assert table_counts(previous[0]) == first_manifest["tables"]
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700


# ------------------------------------------------------------------------- 4


UPGRADE_PLAYBOOK = """---
# An operator's upgrade playbook: the pre-upgrade backups first, then the upgrade itself.
- name: Pre-upgrade backups
  ansible.builtin.import_playbook: {pre_upgrade}

- name: Upgrade
  hosts: sqlite_hosts
  gather_facts: false
  tasks:
    - name: Upgrade the app (leaves a marker)
      ansible.builtin.copy:
        content: upgraded
        dest: {marker}
        mode: "0600"
"""
UPGRADE_MARKER = "/srv/app/UPGRADED"


def test_pre_upgrade_fails_when_a_host_is_unreachable(site: Site) -> None:
    site.create_databases()
    inventory = site.inventory()
    down = site.fleet["pi3"]
    site.fleet.close_control_masters()
    down.link_down()
    try:
        run = site.run("pre_upgrade.yml", inventory=inventory)
    finally:
        down.link_up()

    assert run.rc != 0, run.explain()
    assert re.search(r"^fatal: \[pi3\]: UNREACHABLE!", run.stdout, re.M), run.explain()
    assert [line for line in summary_lines(run) if line.startswith("pi3: UNREACHABLE - ")], summary_lines(run)
    assert "no pre-upgrade backup on: pi3: stop before upgrading" in run.output
    assert backups_in(site.host_backup_folder(down)) == []
    for host in site.hosts[:2]:
        (backup,) = backups_in(site.host_backup_folder(host))
        manifest = manifest_of(site.host_backup_folder(host) / backup)
        assert manifest["label"] == "pre-upgrade", manifest
        assert manifest["integrity"]["check"] == "full" and manifest["verified"] is True
        assert backups_in(site.archive_folder(host.name)) == [backup], "the emergency backup was not pulled"
        assert manifest_of(site.archive_folder(host.name) / backup)["label"] == "pre-upgrade"
    (record,) = run_records(site.archive, "pre-upgrade")
    assert record["outcome"] == "failed" and record["hosts"]["pi3"]["outcome"] == "unreachable", record
    assert [h for h, row in record["hosts"].items() if row["outcome"] == "ok"] == ["pi1", "pi2"], record
    assert record["message"] == "no pre-upgrade backup on: pi3: stop before upgrading"


def test_pre_upgrade_imported_first_stops_the_upgrade_everywhere(site: Site) -> None:
    """The use pre_upgrade.yml is written for: a failing host means no upgrade task runs at all."""
    site.create_databases()
    inventory = site.inventory(databases={"pi2": [{"name": DB_NAME, "path": "/srv/app/missing.db"}]})
    upgrade = site.tmp / "upgrade.yml"
    upgrade.write_text(UPGRADE_PLAYBOOK.format(pre_upgrade=REPO / "pre_upgrade.yml", marker=UPGRADE_MARKER))

    run = site.run(str(upgrade), inventory=inventory)

    assert run.rc != 0, run.explain()
    assert "no pre-upgrade backup on: pi2: stop before upgrading" in run.output, run.explain()
    assert "TASK [Upgrade the app (leaves a marker)]" not in run.stdout, run.explain()
    for host in site.hosts:
        assert not host.path(UPGRADE_MARKER).exists(), f"{host.name} was upgraded"
    for name in ("pi1", "pi3"):
        (backup,) = backups_in(site.archive_folder(name))
        assert manifest_of(site.archive_folder(name) / backup)["label"] == "pre-upgrade"


# ------------------------------------------------------------------------- 5 and 8: a shared, backed-up fleet


@dataclass
class BackedUp:
    site: Site
    resets: int


_backed_up: BackedUp | None = None


def _backed_up_is_intact(shared: BackedUp | None) -> bool:
    if shared is None or shared.resets != _resets:
        return False
    return all(host.path(DB_PATH).is_file()
               and backups_in(shared.site.host_backup_folder(host))
               and backups_in(shared.site.archive_folder(host.name)) for host in shared.site.hosts)


@pytest.fixture
def backed_up(fleet3: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """fleet3 with a database per host (no writer), backed up and pulled by backup.yml.

    Shared by tests that only read this state (stats.yml, which changes nothing) or only add
    to it (another backup.yml without writes); rebuilt when a test emptied the hosts since.
    """
    global _backed_up
    if not _backed_up_is_intact(_backed_up):
        reset_fleet(fleet3)
        shared = Site(fleet3, tmp_path_factory.mktemp("backed-up"))
        shared.create_databases()
        first = shared.run("backup.yml", inventory=shared.inventory())
        assert first.rc == 0, first.explain()
        _backed_up = BackedUp(shared, _resets)
    for host in fleet3:
        host.link_up()
    return _backed_up.site


def test_stats_changes_nothing_and_prints_a_table_or_json(backed_up: Site) -> None:
    site = backed_up
    inventory = site.inventory()
    roots = {f"{host.name}:{folder}": host.path(folder) for host in site.hosts for folder in HOST_DIRS}
    roots["archive"] = site.archive

    def snapshot() -> dict[str, dict[str, tuple[Any, ...]]]:
        states = {name: tree_state(root) for name, root in roots.items()}
        # what a run adds beside the backups: its run record, and with format json the stats file
        states["archive"] = {path: state for path, state in states["archive"].items()
                             if path not in (".", "runs", "stats.json") and not path.startswith("runs/")}
        for host in site.hosts:
            # Any reader of a live WAL database, the app's own included, may rewrite SQLite's
            # shared-memory index (-shm) with the same bytes: its mtime is not compared.
            app = states[f"{host.name}:/srv/app"]
            shm = f"{Path(DB_PATH).name}-shm"
            if shm in app:
                app[shm] = app[shm][:-1]
        return states

    before = snapshot()
    table_run, json_run = site.run_many(
        (("stats.yml",), {"inventory": inventory}),
        (("stats.yml", "-e", "sqlite_stats_format=json"), {"inventory": inventory}),
    )
    after = snapshot()

    assert table_run.rc == 0, table_run.explain()
    assert json_run.rc == 0, json_run.explain()
    for name in roots:
        assert after[name] == before[name], f"stats.yml changed {name}"
    for run in (table_run, json_run):
        for host in site.hosts:
            assert re.search(rf"^{host.name}\s*: ok=\d+\s+changed=0\s", run.stdout, re.M), run.explain()

    table = summary_lines(table_run)
    assert table[0].split()[:3] == ["host", "db", "size"], table
    assert [line.split()[:2] for line in table[1:]] == [[host.name, DB_NAME] for host in site.hosts], table

    rows = json.loads((site.archive / "stats.json").read_text())
    assert [(row["host"], row["database"]) for row in rows] == [(host.name, DB_NAME) for host in site.hosts]
    for row in rows:
        host = site.fleet[row["host"]]
        assert row["ok"], row
        assert row["host_backups"] == len(backups_in(site.host_backup_folder(host))) > 0, row
        assert row["archive_backups"] == len(backups_in(site.archive_folder(host.name))) > 0, row
        assert row["db_size_bytes"] == host.path(DB_PATH).stat().st_size
        assert row["journal_mode"] == "wal", row
        assert row["tables"] == table_counts(host.path(DB_PATH)), row


def test_second_backup_without_writes_pulls_only_the_new_backup(backed_up: Site) -> None:
    site = backed_up
    previous_record = run_records(site.archive, "backup")[-1]
    archived_before = {host.name: backups_in(site.archive_folder(host.name)) for host in site.hosts}
    states_before = {name: tree_state(site.archive_folder(name)) for name in archived_before}

    run = site.run("backup.yml", inventory=site.inventory())

    assert run.rc == 0, run.explain()
    record = run_records(site.archive, "backup")[-1]
    assert record != previous_record
    rows, previous_rows = rows_by_host(record), rows_by_host(previous_record)
    for host in site.hosts:
        old, new = previous_rows[host.name]["backup"], rows[host.name]["backup"]
        assert archived_before[host.name][-1] == old and new != old
        assert rows[host.name]["transfers"] == [f"{new} (delta)"], rows[host.name]
        assert rows[host.name]["archived"] == [new]
        assert rows[host.name]["transferred_bytes"] < 4 * 4096, rows[host.name]
        folder = site.archive_folder(host.name)
        assert backups_in(folder) == sorted([*archived_before[host.name], new])
        state = tree_state(folder)
        for backup in archived_before[host.name]:
            for suffix in ("", ".sha256", ".json"):
                assert state[backup + suffix] == states_before[host.name][backup + suffix], (
                    f"{host.name}: {backup}{suffix} was sent or written again")
        assert sha256sum_check(folder).returncode == 0


# ------------------------------------------------------------------------- 6


def test_a_failing_host_does_not_stop_the_others(site: Site) -> None:
    site.create_databases()
    missing = "/srv/app/missing.db"
    inventory = site.inventory(databases={"pi2": [{"name": DB_NAME, "path": missing}]})

    run = site.run("backup.yml", inventory=inventory)

    assert run.rc != 0, run.explain()
    for name in ("pi1", "pi3"):
        folder = site.archive_folder(name)
        assert len(backups_in(folder)) == 1, f"{name}: {run.explain()}"
        assert sha256sum_check(folder).returncode == 0
    assert backups_in(site.archive_folder("pi2")) == []
    lines = summary_lines(run)
    assert len(lines) == 3, lines
    [pi2_line] = [line for line in lines if line.startswith("pi2 ")]
    assert "FAILED" in pi2_line and f"database {missing} does not exist" in pi2_line, pi2_line
    assert "TASK [Fail this host" not in run.stdout, "the failure is reported by its own task only"
    (record,) = run_records(site.archive, "backup")
    assert record["outcome"] == "failed" and record["exit_code"] == 1
    assert {host: row["outcome"] for host, row in record["hosts"].items()} == {"pi1": "ok", "pi2": "failed",
                                                                              "pi3": "ok"}


# ------------------------------------------------------------------------- 7


def test_guard_fails_without_hosts_or_without_the_repository_config(site: Site) -> None:
    site.create_databases()
    no_hosts = "the inventory has no host in group sqlite_hosts"
    no_cfg = "no ansible.cfg was loaded"
    # Without the repository's ansible.cfg, Ansible still finds the roles and modules through
    # playbooks/{roles,library,...} (links to the repository's folders): the guard says what is wrong.
    elsewhere = site.inventory("elsewhere.yml", group="other_hosts")
    empty_group = site.tmp / "empty_group.yml"
    empty_group.write_text(json.dumps({"all": {"children": {"sqlite_hosts": {"hosts": {}}}}}))
    inventory = site.inventory()
    empty_cfg = site.tmp / "empty.cfg"
    empty_cfg.write_text("")
    no_cfg_env = {key: value for key, value in site.env().items() if key != "ANSIBLE_CONFIG"}
    empty_cfg_env = {**no_cfg_env, "ANSIBLE_CONFIG": str(empty_cfg)}
    other_cwd = site.tmp / "elsewhere"
    other_cwd.mkdir()

    def entry(playbook: str) -> str:
        return str(REPO / playbook)

    cases: list[tuple[str, tuple[str, ...], dict[str, Any], str]] = [
        *((f"{playbook}: hosts outside sqlite_hosts", (playbook,), {"inventory": elsewhere}, no_hosts)
          for playbook in ("backup.yml", "sync.yml", "stats.yml", "pre_upgrade.yml")),
        ("backup.yml: empty sqlite_hosts", ("backup.yml",), {"inventory": empty_group}, no_hosts),
        ("backup.yml: ANSIBLE_CONFIG=<empty file>, no -i", ("backup.yml",),
         {"inventory": None, "env": empty_cfg_env}, no_hosts),
        ("stats.yml: ANSIBLE_CONFIG=<empty file>, no -i", ("stats.yml",),
         {"inventory": None, "env": empty_cfg_env}, no_hosts),
        # As from a cron job: ansible-playbook -i <inventory> <repo>/backup.yml, from $HOME.
        ("backup.yml: another cwd, no ansible.cfg, -i", (entry("backup.yml"),),
         {"inventory": inventory, "env": no_cfg_env, "cwd": other_cwd}, no_cfg),
        ("stats.yml: another cwd, no ansible.cfg, -i", (entry("stats.yml"),),
         {"inventory": inventory, "env": no_cfg_env, "cwd": other_cwd}, no_cfg),
    ]
    runs = site.run_many(*((args, keywords) for _, args, keywords, _ in cases))

    for (what, _, _, reason), run in zip(cases, runs):
        assert run.rc != 0, f"{what}: {run.explain()}"
        assert reason in run.output, f"{what}: {run.explain()}"
    for host in site.hosts:
        assert backups_in(site.host_backup_folder(host)) == [], f"{host.name} was backed up"
    assert not site.archive.exists()


# ------------------------------------------------------------------------- 8

LOGIN_USER, LOGIN_UID = "pi", 4242
MODULE_FILE = re.compile(r"^Using module file (?P<path>\S+)$", re.MULTILINE)
# The modules a backup-and-pull runs (the controller lists, checks and imports; the host backs up and stages).
# One task per database: the module on the host; the listing, the check, the import and the prune of
# the archive run inside the sqlite_backup action plugin, with no local module run.
PULL_MODULES = ["sqlite_backup.py"]


def add_sudo_login_user(host: Host, etc: Path) -> None:
    """A login user ``pi`` with passwordless sudo, on this host only: private copies of /etc/passwd,
    /etc/group, /etc/shadow and /etc/sudoers.d bind-mounted in its mount namespace (what sshd and
    sudo there read); the controller's own files stay as they are."""
    etc.mkdir()
    home = host.path("/srv/app/home-pi")
    home.mkdir()
    os.chown(home, LOGIN_UID, LOGIN_UID)
    files = {
        "passwd": f"{LOGIN_USER}:x:{LOGIN_UID}:{LOGIN_UID}:pi:/srv/app/home-pi:/bin/sh\n",
        "group": f"{LOGIN_USER}:x:{LOGIN_UID}:\n",
        "shadow": f"{LOGIN_USER}:*:19000:0:99999:7:::\n",  # no password, not locked: key login only
    }
    for name, line in files.items():
        copy = etc / name
        copy.write_text(Path("/etc", name).read_text() + line)
        copy.chmod(0o640 if name == "shadow" else 0o644)
        host.run(["mount", "--bind", str(copy), f"/etc/{name}"], check=True)
    sudoers = etc / "sudoers.d"
    sudoers.mkdir(mode=0o755)
    (sudoers / LOGIN_USER).write_text(f"{LOGIN_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    (sudoers / LOGIN_USER).chmod(0o440)
    host.run(["mount", "--bind", str(sudoers), "/etc/sudoers.d"], check=True)
    # sshd reads the (shared) authorized keys file as the user logging in: let pi reach it.
    for folder in (host.fleet.workdir, host.fleet.client_key.parent):
        folder.chmod(0o711)
    host.fleet.client_key.with_suffix(".pub").chmod(0o644)
    login = subprocess.run([part if part != "root" else LOGIN_USER for part in host.ssh_argv(["id", "-u"])],
                           capture_output=True, text=True, timeout=60)
    assert login.stdout.strip() == str(LOGIN_UID), login.stderr


@pytest.mark.skipif(not os.path.exists("/usr/bin/sudo"), reason="sudo is not installed (tools/setup-system.sh test)")
def test_a_login_user_with_become_fetches_over_sftp_without_slurp(make_fleet, tmp_path: Path) -> None:
    """The real-world set-up (inventory/example): ansible_user pi + become. The backup's module runs
    as root via sudo; the staged files belong to pi, who fetches them over sftp - no slurp (the
    whole file in the Pi's memory, base64), no stat module. Without fetch_user, pi cannot read them:
    the run fails clearly and still removes the staging folder. Then the app and its backups belong to
    root (GPIO): pi cannot enter the 0700 backup folder, so the staging goes beside it (in
    /var/backups, private to the host here) and the pull still works, the folders' permissions kept."""
    # /var/backups itself private to the host (not only /var/backups/sqlite): the staging goes beside
    fleet = make_fleet(1, mounts=tuple(str(Path(m).parent) if m == BACKUP_DIR else m for m in DEFAULT_MOUNTS))
    (host,) = fleet.hosts
    add_sudo_login_user(host, tmp_path / "etc")
    site = Site(fleet, tmp_path)
    host.path("/srv/app").chmod(0o755)
    create_demo_db(host.path(DB_PATH), members=60, size_mb=2, seed=3)
    for path in host.path("/srv/app").glob("gym.db*"):
        os.chown(path, LOGIN_UID, LOGIN_UID)  # the app's database belongs to the login user, as in /home/pi
    inventory = tmp_path / "hosts.yml"
    host_vars = {**fleet.host_vars(host), "ansible_user": LOGIN_USER, "ansible_become": True,
                 "sqlite_backup_databases": [{"name": DB_NAME, "path": DB_PATH}]}
    inventory.write_text(json.dumps({"all": {"children": {"sqlite_hosts": {
        "hosts": {host.name: host_vars}, "vars": {"sqlite_archive_dir": str(site.archive)}}}}}))
    folder = host.path(BACKUP_DIR)

    runs = [site.run("backup.yml", "-vvv", inventory=inventory)]
    change_photo_blobs(host.path(DB_PATH), fraction=0.05)
    runs.append(site.run("backup.yml", "-vvv", inventory=inventory))
    for run in runs:
        assert run.rc == 0, run.explain()
        modules = sorted({Path(m["path"]).name for m in MODULE_FILE.finditer(run.stdout)})
        assert modules == PULL_MODULES, modules
        assert len(MODULE_FILE.findall(run.stdout)) == 1, "one module run for the host's one database"
        assert re.search(r"SSH: EXEC sftp .*User=\W*pi\W", run.stdout), "no sftp as pi"
        assert re.search(rf"FETCH {re.escape(BACKUP_DIR)}/\.sqlite-export\.\S+/gym_backup_", run.stdout)
        assert re.search(r"sudo -H -S -n\s+-u root /bin/sh -c .*rm -rf -- ", run.stdout), "no rm -rf with sudo"
    records = run_records(site.archive, "backup")
    rows = [rows_by_host(record)[host.name] for record in records]
    assert [row["transfers"] for row in rows] == [[f"{rows[0]['backup']} (full)"], [f"{rows[1]['backup']} (delta)"]]
    assert all(row["ok"] and row["backup"] in row["archived"] for row in rows), rows
    archived = backups_in(site.archive_folder(host.name))
    assert archived == sorted(row["backup"] for row in rows)
    assert sha256sum_check(site.archive_folder(host.name)).returncode == 0
    entries = sorted(os.listdir(folder))
    assert not [e for e in entries if e.startswith(".sqlite-export.")], entries
    for entry in entries:  # the backups keep their owner, the database's: nothing was handed over
        assert (folder / entry).stat().st_uid == LOGIN_UID, entry

    # Without fetch_user the staged files are root's: pi cannot fetch them. Clear failure, staging gone.
    refused = site.run("backup.yml", "-e", "sqlite_archive_fetch_user=", inventory=inventory)
    assert refused.rc != 0, refused.explain()
    (line,) = [line for line in summary_lines(refused) if line.startswith(f"{host.name} ")]
    assert "fetching /var/backups/sqlite/.sqlite-export." in line, line
    assert "the login user must be able to read the staged files" in line, line  # sftp only: no scp retry
    assert "sqlite_archive_fetch_user" in line, line
    assert not [e for e in os.listdir(folder) if e.startswith(".sqlite-export.")], os.listdir(folder)
    assert not [e for e in os.listdir(site.archive_folder(host.name)) if e.startswith(".sqlite-backup-tmp")]

    # The database (and so the backup folder) belongs to root, as for an app using GPIO: pi cannot enter
    # /var/backups/sqlite (0700), so the backup's root run stages beside it, in a 0711 folder of root in
    # /var/backups, copies for pi; the pull works without any setting and leaves no staging folder.
    for path in host.path("/srv/app").glob("gym.db*"):
        os.chown(path, 0, 0)
    parent = host.path(str(Path(BACKUP_DIR).parent))
    parent_before = parent.stat()
    pending = sorted(set(backups_in(folder)) - set(backups_in(site.archive_folder(host.name))))
    assert len(pending) == 1, pending  # taken by the refused run, not pulled
    as_root = [site.run("backup.yml", "-vvv", inventory=inventory)]
    change_photo_blobs(host.path(DB_PATH), fraction=0.05)
    as_root.append(site.run("backup.yml", "-vvv", "-e", "sqlite_archive_delta=false", inventory=inventory))
    beside = f"{Path(BACKUP_DIR).parent}/.sqlite-fleet-staging-{Path(BACKUP_DIR).name}"
    for run in as_root:
        assert run.rc == 0, run.explain()
        modules = sorted({Path(m["path"]).name for m in MODULE_FILE.finditer(run.stdout)})
        assert modules == PULL_MODULES, modules
        assert "slurp" not in run.stdout
        assert re.search(r"SSH: EXEC sftp .*User=\W*pi\W", run.stdout), "no sftp as pi"
        assert re.search(rf"FETCH {re.escape(beside)}/\.sqlite-export\.\S+/gym_backup_", run.stdout)
        assert not re.search(rf"FETCH {re.escape(BACKUP_DIR)}/", run.stdout)
        assert re.search(rf"sudo -H -S -n\s+-u root /bin/sh -c .*rm -rf -- .*rmdir -- {re.escape(beside)}", run.stdout)
    rows = [rows_by_host(record)[host.name] for record in run_records(site.archive, "backup")[-2:]]
    assert rows[0]["transfers"] == [f"{pending[0]} (delta)", f"{rows[0]['backup']} (delta)"], rows
    assert rows[1]["transfers"] == [f"{rows[1]['backup']} (full)"], rows
    assert all(row["ok"] and row["backup"] in row["archived"] for row in rows), rows
    assert backups_in(site.archive_folder(host.name)) == backups_in(folder)
    assert sha256sum_check(site.archive_folder(host.name)).returncode == 0
    assert os.listdir(parent) == [Path(BACKUP_DIR).name]  # nothing left beside
    after = parent.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (parent_before.st_uid, parent_before.st_gid,
                                                           parent_before.st_mode)
    assert (folder.stat().st_uid, stat.S_IMODE(folder.stat().st_mode)) == (0, 0o700)
    assert not [e for e in os.listdir(folder) if e.startswith(".sqlite-export.")], os.listdir(folder)
    for backup in (rows[0]["backup"], rows[1]["backup"]):
        assert (folder / backup).stat().st_uid == 0  # the new backups are root's; nothing handed over
    assert private_tree_problems(folder) == []
    print(f"become: runs {runs[0].seconds:.1f} s (full) and {runs[1].seconds:.1f} s (delta) as {LOGIN_USER} + sudo; "
          f"refused run: {line[:300]}; app and backups root's: {as_root[0].seconds:.1f} s (deltas), "
          f"{as_root[1].seconds:.1f} s (full copy), staged beside in {beside}")


def test_the_one_task_pull_and_the_separate_tasks_build_the_same_archive(site: Site) -> None:
    """sqlite_pull_in_one_task (the action plugin, the default) and the separate tasks (false) take
    turns on one host: each imports deltas against what the other imported, the archive ends up with
    the host's very files (bytes, .sha256 and manifests), and both runs' records say the same things."""
    host = site.fleet["pi2"]
    create_demo_db(host.path(DB_PATH), members=120, size_mb=2, seed=9)
    inventory = site.inventory(hosts=[host])
    runs = []
    for turn, one_task in enumerate((False, True, False, True)):
        if turn:
            change_photo_blobs(host.path(DB_PATH), fraction=0.05, seed=turn)
        run = site.run("backup.yml", "-e", "sqlite_pull_in_one_task=%s" % one_task, inventory=inventory)
        assert run.rc == 0, run.explain()
        runs.append(run)
    def task_output(stdout: str, task: str) -> str:
        start = stdout.index("TASK [%s" % task)
        return stdout[start:stdout.find("TASK [", start + 6)]

    import_task = "sqlite_archive : Import the pulled backups"
    assert "changed: [%s -> localhost]" % host.name in task_output(runs[0].stdout, import_task)
    # the one task pulled and imported: the separate tasks (behind one include) did not run at all
    separate = "Pull with the separate tasks, or install working copies, on the controller"
    assert "pull_and_install.yml for %s" % host.name in task_output(runs[0].stdout, separate)
    for run in (runs[1], runs[3]):
        assert "skipping: [%s]" % host.name in task_output(run.stdout, separate), "the separate tasks were included"
        for task in ("List what the archive holds", "Check the offered transfers", "Fetch the prepared files",
                     "Import the pulled backups"):
            assert "TASK [sqlite_archive : %s" % task not in run.stdout, "the one-task run ran: " + task

    rows = [rows_by_host(record)[host.name] for record in run_records(site.archive, "backup")]
    assert len(rows) == 4
    assert [row["transfers"] for row in rows] == [[f"{rows[0]['backup']} (full)"]] + [
        [f"{row['backup']} (delta)"] for row in rows[1:]], rows
    for row in rows:
        assert row["ok"] and row["backup"] in row["archived"], row
        assert row["transferred_bytes"] > 0, row
    assert {key for key in rows[0]} == {key for key in rows[1]}, "both paths fill the same record fields"

    archive, on_host = site.archive_folder(host.name), site.host_backup_folder(host)
    assert backups_in(archive) == sorted(row["backup"] for row in rows)
    for name in backups_in(archive):
        for suffix in ("", ".sha256"):
            assert (archive / (name + suffix)).read_bytes() == (on_host / (name + suffix)).read_bytes(), name + suffix
        assert manifest_of(archive / name) == manifest_of(on_host / name)
    assert sha256sum_check(archive).returncode == 0
    assert not [e for e in os.listdir(host.path(BACKUP_DIR)) if e.startswith(".sqlite-export.")]
