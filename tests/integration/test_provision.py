"""provision.yml on real SSH hosts: the on-host runner, its config and cron entries, and the
controller's schedule (cron file or LaunchAgents), run as a user runs it:
``ansible-playbook -i <inventory> provision.yml`` from the repository root.

The hosts are the session's three-host fleet (``fleet3``); everything this module changes on
them is put back at the end. The runner's failure modes (missing database, full disk,
corrupt backup, missing backup disk) run on a fleet of their own (``make_fleet(1)``), since
they mount file systems inside the host. The controller's jobs never touch this machine's
crontab: every run passes ``sqlite_schedule_cron_file`` and ``sqlite_schedule_log_dir``
pointing into a temporary folder.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shlex
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from core_parts import core_files, core_sha256_of, install_core
from demo_db import create_demo_db
from fleet import DEFAULT_MOUNTS, Fleet, Host
from integration_helpers import (
    BACKUP_DIR,
    MIB,
    REPO,
    PlaybookRun,
    Site,
    backups_in,
    flip_byte,
    sha256_of,
    tree_state,
)
from prometheus_text import parse_prometheus

pytestmark = pytest.mark.integration

RUNNER = REPO / "runner" / "sqlite_backup_runner.py"
CLI = REPO / ".venv" / "bin" / "sqlite-fleet"

RUNNER_DIR = "/opt/sqlite-backup"
CRON_FILE = "/etc/cron.d/sqlite-backup"
PROM_FILE = "/var/lib/node_exporter/textfile_collector/sqlite_backup.prom"
CRON_LOG = "/var/log/sqlite-backup/cron.log"
GYM = {"name": "gym", "path": "/srv/app/gym.db"}
SHOP = {"name": "shop", "path": "/srv/app/shop.db"}
CONTROLLER_JOBS = {  # name: (minute, hour, weekday, sqlite-fleet command), the sqlite_schedule defaults
    "backup": ("30", "4", "*", "backup"),
    "sync": ("0", "9", "*", "sync"),
    "restore-drill": ("0", "5", "0", "drill"),
}
LABEL_PREFIX = "io.github.sqlite-fleet-backup"


# --------------------------------------------------------------------------- helpers


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass
class CronEntry:
    minute: str
    hour: str
    day: str
    month: str
    weekday: str
    user: str
    command: str


def cron_entries(text: str) -> list[CronEntry]:
    """The job lines of a cron.d-format file (comments and VAR=value lines skipped)."""
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, "not a cron.d job line: %r" % line
        entries.append(CronEntry(*fields))
    return entries


def play_recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP of an ansible-playbook run: {host: {ok: n, changed: n, ...}}."""
    assert "PLAY RECAP" in stdout, stdout[-3000:]
    recap: dict[str, dict[str, int]] = {}
    for line in stdout.split("PLAY RECAP", 1)[1].splitlines()[1:]:
        match = re.match(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", line)
        if match:
            recap[match[1]] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match[2])}
    return recap


def host_trees(fleet: Fleet) -> dict[str, dict[str, tuple[Any, ...]]]:
    return {"%s:%s" % (host.name, mount): tree_state(host.path(mount)) for host in fleet for mount in DEFAULT_MOUNTS}


# --------------------------------------------------------------------------- provisioned fleet


@dataclass
class ProvisionSite(Site):
    """fleet3 provisioned once for this module, the controller's files in a temporary folder."""

    cron_minutes: dict[str, str] = field(default_factory=dict)
    cron_made: dict[str, str] = field(default_factory=dict)  # host -> backup file made by its cron line

    @property
    def controller_cron(self) -> Path:
        return self.tmp / "controller" / "sqlite-fleet-backup.cron"

    @property
    def controller_logs(self) -> Path:
        return self.tmp / "controller" / "log"

    def inventory(self, name: str = "hosts.yml", controller: bool = False, **options: Any) -> Path:
        """The fleet in sqlite_hosts (Site.inventory); with controller, localhost listed too (so --limit
        can name it)."""
        path = super().inventory(name, **options)
        if controller:
            data = json.loads(path.read_text())
            data["all"]["hosts"] = {"localhost": {"ansible_connection": "local",
                                                  "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}
            path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    def playbook(self, playbook: str, *args: str, inventory: Path | None = None) -> PlaybookRun:
        """ansible-playbook from the repository root; the controller's jobs go to tmp files."""
        return self.run(playbook, "-e", "sqlite_schedule_cron_file=%s" % self.controller_cron,
                        "-e", "sqlite_schedule_log_dir=%s" % self.controller_logs, *args,
                        inventory=inventory or self.inventory())

    def run_cron_lines(self) -> dict[str, str]:
        """Run each host's installed cron command, exactly as written, inside the host (once)."""
        if self.cron_made:
            return self.cron_made
        for host in self.fleet:
            (entry,) = cron_entries(host.path(CRON_FILE).read_text())
            before = set(backups_in(host.path(BACKUP_DIR)))
            ran = host.run(["sh", "-c", entry.command], capture_output=True, text=True, timeout=300)
            assert ran.returncode == 0, (entry.command, ran.stdout, ran.stderr,
                                         host.path(CRON_LOG).read_text() if host.path(CRON_LOG).exists() else "")
            (made,) = set(backups_in(host.path(BACKUP_DIR))) - before
            self.cron_made[host.name] = made
        return self.cron_made


def expect_ok(run: PlaybookRun) -> dict[str, dict[str, int]]:
    assert run.rc == 0, run.explain()
    recap = play_recap(run.stdout)
    assert all(counts["failed"] == 0 and counts["unreachable"] == 0 for counts in recap.values()), recap
    return recap


def copy_tree(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-a", "--", "%s/." % source, str(target)], check=True)


@pytest.fixture(scope="module")
def site(fleet3: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisionSite]:
    tmp = tmp_path_factory.mktemp("provision")
    saved = tmp / "saved"
    for host in fleet3:  # what the hosts held before: put back afterwards
        for index, mount in enumerate(DEFAULT_MOUNTS):
            target = saved / host.name / str(index)
            target.mkdir(parents=True)
            copy_tree(host.path(mount), target)
    current = ProvisionSite(fleet3, tmp)
    try:
        for host in fleet3:
            host.path(CRON_FILE).unlink(missing_ok=True)
            create_demo_db(host.path(GYM["path"]), members=60, seed=int(host.name[2:]), force=True)
            # an older installation: the core as one file, and a part the package no longer has
            old = host.path(RUNNER_DIR)
            (old / "sqlite_fleet").mkdir(parents=True, exist_ok=True)
            (old / "sqlite_fleet.py").write_text("raise SystemExit('the old single-file core')\n")
            (old / "sqlite_fleet" / "gone.py").write_text("raise SystemExit('a part the core no longer has')\n")
        expect_ok(current.playbook("provision.yml"))
        for host in fleet3:
            (entry,) = cron_entries(host.path(CRON_FILE).read_text())
            current.cron_minutes[host.name] = entry.minute
        yield current
    finally:
        for host in fleet3:
            for index, mount in enumerate(DEFAULT_MOUNTS):
                host.empty(mount)
                copy_tree(saved / host.name / str(index), host.path(mount))


# --------------------------------------------------------------------------- (a)


def test_provision_installs_the_runner_config_and_cron_lines(site: ProvisionSite) -> None:
    for host in site.fleet:
        installed = host.path(RUNNER_DIR)
        assert {path.name: path.read_bytes() for path in (installed / "sqlite_fleet").glob("*.py")} == {
            path.name: path.read_bytes() for path in core_files()}
        assert not (installed / "sqlite_fleet.py").exists(), "the old single-file core was left behind"
        assert (installed / "sqlite_backup_runner.py").read_bytes() == RUNNER.read_bytes()
        assert mode_of(installed / "sqlite_backup_runner.py") == 0o755
        assert mode_of(installed / "config.json") == 0o600
        config = json.loads((installed / "config.json").read_text())
        assert config["host"] == host.name and config["backup_dir"] == BACKUP_DIR
        assert config["databases"] == [GYM]
        assert config["metrics_dir"] == os.path.dirname(PROM_FILE)
        assert config["lock_timeout"] == 600
        assert mode_of(host.path(BACKUP_DIR)) == 0o700

        cron_file = host.path(CRON_FILE)
        assert re.match(r"^[A-Za-z0-9_-]+$", cron_file.name), "cron ignores files in cron.d with dots"
        assert mode_of(cron_file) == 0o644
        text = cron_file.read_text()
        assert text.endswith("\n"), "cron ignores a last line without a newline"
        (entry,) = cron_entries(text)
        assert (entry.hour, entry.day, entry.month, entry.weekday, entry.user) == ("3", "*", "*", "*", "root")
        assert entry.minute.isdigit() and 0 <= int(entry.minute) <= 59
        argv = shlex.split(entry.command.split(" >> ")[0])
        assert argv == [host.python, RUNNER_DIR + "/sqlite_backup_runner.py", "--config", RUNNER_DIR + "/config.json",
                        "backup", "--db", "gym", "--cleanup"]
        assert entry.command.endswith(" >> %s 2>&1" % CRON_LOG)
    assert len(set(site.cron_minutes.values())) > 1, "every host backs up in the same minute: %s" % site.cron_minutes


def test_installed_cron_line_takes_a_verified_backup_with_metrics(site: ProvisionSite) -> None:
    made = site.run_cron_lines()
    core_sha256 = core_sha256_of(core_files())
    for host in site.fleet:
        assert backups_in(host.path(BACKUP_DIR)) == [made[host.name]]
        backup = host.path(BACKUP_DIR) / made[host.name]
        manifest = json.loads(Path(str(backup) + ".json").read_text())
        assert manifest["verified"] is True and manifest["integrity"]["result"] == "ok"
        assert manifest["runner"]["made_by"] == "on-host runner"
        assert manifest["tool"]["core_sha256"] == core_sha256
        assert manifest["source"] == {**manifest["source"], "host": host.name, "path": GYM["path"]}
        assert manifest["sha256"] == sha256_of(backup)
        assert mode_of(backup) == 0o600
        assert "backup gym ok: %s" % made[host.name] in host.path(CRON_LOG).read_text()

        prom = host.path(PROM_FILE)
        assert mode_of(prom) == 0o644
        samples = parse_prometheus(prom.read_text())
        assert {h for _, h, _ in samples} == {host.name} and {db for _, _, db in samples} == {"gym"}
        assert abs(samples[("sqlite_backup_last_success_timestamp_seconds", host.name, "gym")] - time.time()) < 600
        assert samples[("sqlite_backup_last_size_bytes", host.name, "gym")] == manifest["size_bytes"]
        assert 0 <= samples[("sqlite_backup_last_duration_seconds", host.name, "gym")] < 120
        assert samples[("sqlite_backup_verified", host.name, "gym")] == 1
        assert samples[("sqlite_backup_last_run_success", host.name, "gym")] == 1


# --------------------------------------------------------------------------- (b)


def test_backup_playbook_pulls_what_the_hosts_cron_made(site: ProvisionSite) -> None:
    made = site.run_cron_lines()
    expect_ok(site.playbook("backup.yml"))
    for host in site.fleet:
        folder = site.archive / host.name / "gym"
        archived = backups_in(folder)
        assert made[host.name] in archived, archived
        assert len(archived) == 2, "the cron-made backup and the playbook's own: %s" % archived
        pulled = folder / made[host.name]
        assert sha256_of(pulled) == sha256_of(host.path(BACKUP_DIR) / made[host.name])
        manifest = json.loads(Path(str(pulled) + ".json").read_text())
        assert manifest["sha256"] == sha256_of(pulled) and manifest["verified"] is True
        assert Path(str(pulled) + ".sha256").read_text().split() == [manifest["sha256"], made[host.name]]


# --------------------------------------------------------------------------- (c)


def test_provision_again_changes_nothing(site: ProvisionSite) -> None:
    recap = expect_ok(site.playbook("provision.yml"))
    assert set(recap) == {"localhost", *(host.name for host in site.fleet)}
    assert {host: counts["changed"] for host, counts in recap.items()} == dict.fromkeys(recap, 0)
    for host in site.fleet:
        (entry,) = cron_entries(host.path(CRON_FILE).read_text())
        assert entry.minute == site.cron_minutes[host.name], "the minute must stay the same per host"

    before = host_trees(site.fleet)
    controller_before = tree_state(site.controller_cron.parent)
    checked = site.playbook("provision.yml", "--check", "--diff")
    recap = expect_ok(checked)
    assert {host: counts["changed"] for host, counts in recap.items()} == dict.fromkeys(recap, 0), checked.stdout
    assert host_trees(site.fleet) == before
    assert tree_state(site.controller_cron.parent) == controller_before


# --------------------------------------------------------------------------- (d)


def test_a_removed_database_loses_its_cron_line(site: ProvisionSite) -> None:
    pi1, pi2 = site.fleet["pi1"], site.fleet["pi2"]
    pi2_cron = pi2.path(CRON_FILE).read_text()
    two = site.inventory("two-databases.yml", host_vars={"pi1": {"sqlite_backup_databases": [GYM, SHOP]}})
    expect_ok(site.playbook("provision.yml", "--limit", "pi1", inventory=two))
    entries = cron_entries(pi1.path(CRON_FILE).read_text())
    databases = [argv[argv.index("--db") + 1] for argv in (shlex.split(e.command) for e in entries)]
    assert databases == ["gym", "shop"]
    assert len({(e.minute, e.hour) for e in entries}) == 1
    assert json.loads(pi1.path(RUNNER_DIR + "/config.json").read_text())["databases"] == [GYM, SHOP]
    assert pi2.path(CRON_FILE).read_text() == pi2_cron

    expect_ok(site.playbook("provision.yml", "--limit", "pi1"))
    (entry,) = cron_entries(pi1.path(CRON_FILE).read_text())
    assert "--db gym " in entry.command and "shop" not in pi1.path(CRON_FILE).read_text()
    assert json.loads(pi1.path(RUNNER_DIR + "/config.json").read_text())["databases"] == [GYM]


def test_a_cron_file_name_with_a_dot_is_refused(site: ProvisionSite) -> None:
    pi1 = site.fleet["pi1"]
    before = tree_state(pi1.path("/etc/cron.d"))
    refused = site.playbook("provision.yml", "--limit", "pi1", "-e", "sqlite_runner_cron_file=sqlite-backup.cron")
    assert refused.rc == 2, refused.explain()
    assert "sqlite_runner_cron_file must consist of letters, digits" in refused.stdout
    assert play_recap(refused.stdout)["pi1"]["changed"] == 0
    assert tree_state(pi1.path("/etc/cron.d")) == before


# --------------------------------------------------------------------------- (e)


def test_controller_cron_entries_run_the_cli(site: ProvisionSite) -> None:
    text = site.controller_cron.read_text()
    entries = cron_entries(text)
    assert len(entries) == 3, text
    for name, (minute, hour, weekday, command) in CONTROLLER_JOBS.items():
        assert "#Ansible: sqlite-fleet-backup %s\n" % name in text
        (entry,) = [e for e in entries if shlex.split(e.command)[1] == command]
        assert (entry.minute, entry.hour, entry.day, entry.month, entry.weekday) == (minute, hour, "*", "*", weekday)
        # the inventory this provisioning ran with, absolute: cron's working directory is not the repository
        assert shlex.split(entry.command) == [str(CLI), command, "-i", str(site.inventory()),
                                              "--log", str(site.controller_logs / (name + ".log"))]
    assert site.controller_logs.is_dir() and mode_of(site.controller_logs) == 0o700
    # the entry's program starts (without running a playbook); tests/integration/test_cli.py runs a whole line
    assert subprocess.run([str(CLI), "sync", "--help"], capture_output=True, timeout=60).returncode == 0


def test_controller_launch_agents(site: ProvisionSite) -> None:
    agents = site.tmp / "LaunchAgents"
    args = ("--limit", "localhost", "-e", "sqlite_schedule_scheduler=launchd",
            "-e", "sqlite_schedule_launchagents_dir=%s" % agents, "-e", "sqlite_schedule_launchctl=false")
    inventory = site.inventory("with-controller.yml", controller=True)
    recap = expect_ok(site.playbook("provision.yml", *args, inventory=inventory))
    assert set(recap) == {"localhost"}
    plists = sorted(p.name for p in agents.iterdir())
    assert plists == sorted("%s.%s.plist" % (LABEL_PREFIX, name) for name in CONTROLLER_JOBS)
    for name, (minute, hour, weekday, command) in CONTROLLER_JOBS.items():
        path = agents / ("%s.%s.plist" % (LABEL_PREFIX, name))
        with open(path, "rb") as handle:
            agent = plistlib.load(handle)
        assert agent["Label"] == "%s.%s" % (LABEL_PREFIX, name)
        program = agent["ProgramArguments"]
        assert all(isinstance(argument, str) for argument in program)
        log = str(site.controller_logs / (name + ".log"))
        assert program == [str(CLI), command, "-i", str(inventory), "--log", log]
        expected = {"Minute": int(minute), "Hour": int(hour)}
        if weekday != "*":
            expected["Weekday"] = int(weekday)
        assert agent["StartCalendarInterval"] == expected
        assert agent["WorkingDirectory"] == str(REPO)
        assert mode_of(path) == 0o644
    sync = plistlib.loads((agents / ("%s.sync.plist" % LABEL_PREFIX)).read_bytes())
    assert sync["StartCalendarInterval"] == {"Hour": 9, "Minute": 0}
    drill = plistlib.loads((agents / ("%s.restore-drill.plist" % LABEL_PREFIX)).read_bytes())
    assert drill["StartCalendarInterval"]["Weekday"] == 0



# --------------------------------------------------------------------------- (f)


@dataclass
class OneHost:
    host: Host

    def install(self, **configs: dict[str, Any]) -> None:
        """The installed layout (as provision.yml leaves it) with one config file per name."""
        folder = self.host.path(RUNNER_DIR)
        install_core(folder)
        (folder / "sqlite_backup_runner.py").write_bytes(RUNNER.read_bytes())
        (folder / "sqlite_backup_runner.py").chmod(0o755)
        for name, overrides in configs.items():
            config = {
                "host": self.host.name, "backup_dir": BACKUP_DIR, "databases": [GYM], "lock_timeout": 10,
                "retention": {"keep_last": 3, "keep_days": 7}, "timezone": "UTC",
                "log_file": "/var/log/sqlite-backup/backup.log", "metrics_dir": os.path.dirname(PROM_FILE),
                **overrides,
            }
            (folder / (name + ".json")).write_text(json.dumps(config))
            (folder / (name + ".json")).chmod(0o600)

    def runner(self, config: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [self.host.python, RUNNER_DIR + "/sqlite_backup_runner.py", "--config",
                "%s/%s.json" % (RUNNER_DIR, config), *args]
        return self.host.run(argv, capture_output=True, text=True, timeout=300)

    def sh(self, *argv: str) -> subprocess.CompletedProcess[str]:
        done = self.host.run(list(argv), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (argv, done.stderr)
        return done

    def listing(self, folder: str) -> list[str]:
        """A folder as the host sees it (a mount inside the host hides what path() shows)."""
        return sorted(self.sh("ls", "-A", folder).stdout.split())


def test_runner_exit_codes_on_a_host(make_fleet: Callable[..., Fleet]) -> None:
    pi = OneHost(make_fleet(1)["pi1"])
    create_demo_db(pi.host.path(GYM["path"]), members=100, size_mb=3)
    live_sha256 = sha256_of(pi.host.path(GYM["path"]))
    pi.install(daily={}, missing={"databases": [{"name": "gone", "path": "/srv/app/gone.db"}]},
               usb={"backup_dir": BACKUP_DIR + "/usb", "require_mount": True})

    # a database that is not there: bad input, said plainly
    missing = pi.runner("missing", "backup")
    assert missing.returncode == 2, missing.stderr
    assert "database /srv/app/gone.db does not exist" in missing.stderr and "Traceback" not in missing.stderr

    # a full disk: refused before copying, the live database untouched, nothing half-written
    pi.sh("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", BACKUP_DIR)
    try:
        full = pi.runner("daily", "backup")
        assert full.returncode == 4, (full.stdout, full.stderr)
        assert "not enough free space in %s" % BACKUP_DIR in full.stderr
        left = pi.listing(BACKUP_DIR)
        assert not [e for e in left if e.endswith(".db") or ".sqlite-backup-tmp." in e or "pending" in e], left
        assert set(left) <= {".sqlite-backup.lock", ".sqlite-backup-metrics.json",
                             ".sqlite-backup-metrics.json.lock"}, left
    finally:
        pi.sh("umount", BACKUP_DIR)
    assert sha256_of(pi.host.path(GYM["path"])) == live_sha256
    samples = parse_prometheus(pi.host.path(PROM_FILE).read_text())
    assert samples[("sqlite_backup_last_run_success", "pi1", "gym")] == 0

    # a corrupt backup: verify says which file, exit 5
    assert pi.runner("daily", "backup").returncode == 0
    (newest,) = backups_in(pi.host.path(BACKUP_DIR))
    flip_byte(pi.host.path(BACKUP_DIR) / newest, 2 * MIB, mask=0x01)
    corrupt = pi.runner("daily", "verify")
    assert corrupt.returncode == 5, (corrupt.stdout, corrupt.stderr)
    assert "verify gym FAILED: %s" % newest in corrupt.stderr
    assert parse_prometheus(pi.host.path(PROM_FILE).read_text())[("sqlite_backup_verified", "pi1", "gym")] == 0

    # the backup disk is not mounted: refuse to write to the SD card (7); mounted: fine
    unmounted = pi.runner("usb", "backup")
    assert unmounted.returncode == 7, (unmounted.stdout, unmounted.stderr)
    assert "%s/usb is not a mount point" % BACKUP_DIR in unmounted.stderr
    assert not pi.host.path(BACKUP_DIR + "/usb").exists()
    pi.sh("mkdir", "-p", BACKUP_DIR + "/usb")
    pi.sh("mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", BACKUP_DIR + "/usb")
    try:
        mounted = pi.runner("usb", "backup")
        assert mounted.returncode == 0, mounted.stderr
        assert [e for e in pi.listing(BACKUP_DIR + "/usb") if e.endswith(".db")]
    finally:
        pi.sh("umount", BACKUP_DIR + "/usb")
    assert sha256_of(pi.host.path(GYM["path"])) == live_sha256
