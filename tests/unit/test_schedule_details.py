"""The on-host schedule's details (issue 12): the cron minute spread over a group, taking a host
off the schedule, and a demo provisioning that writes nothing of the system's.

These run ``ansible-playbook`` on this machine with local connections only (no SSH): the spread
renders the runner role's real defaults for 20 and 60 hosts; the others run ``provision.yml`` on a
copy of the demo inventory in a temporary repository folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
RUNNER_DEFAULTS = REPO / "roles" / "sqlite_runner" / "defaults" / "main.yml"
ENV = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


def rendered_minutes(tmp_path: Path, hosts: list[str], extra: dict[str, list[str]] | None = None) -> dict[str, int]:
    """``sqlite_runner_cron_minute`` of each host, rendered from the role's defaults (as group_vars)."""
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    shutil.copy(RUNNER_DEFAULTS, inventory / "group_vars" / "all.yml")
    groups = {"sqlite_hosts": {"hosts": {h: {"ansible_connection": "local"} for h in hosts}}}
    for group, members in (extra or {}).items():
        groups[group] = {"hosts": {h: {"ansible_connection": "local"} for h in members}}
    (inventory / "hosts.json").write_text(json.dumps({"all": {"children": groups}}))
    out = tmp_path / "minutes.json"
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.copy": {
            "dest": str(out),
            "content": "{{ dict(groups.all | zip(groups.all | map('extract', hostvars, 'sqlite_runner_cron_minute')"
                       " | map('int'))) | to_json }}"}}]}]))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory / "hosts.json"), str(playbook)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("count", [20, 60])
def test_the_hosts_of_a_group_get_distinct_minutes_evenly_over_the_hour(tmp_path: Path, count: int) -> None:
    hosts = ["pi%d" % i for i in range(1, count + 1)]
    minutes = rendered_minutes(tmp_path, hosts)
    assert sorted(minutes) == sorted(hosts)
    assert all(0 <= m <= 59 for m in minutes.values())
    assert len(set(minutes.values())) == count, "collisions: %s" % minutes
    # evenly: sorted by name, each host starts 60/count minutes (rounded down) after the one before
    ordered = [minutes[h] for h in sorted(hosts)]
    gaps = {b - a for a, b in zip(ordered, ordered[1:])}
    assert gaps <= {60 // count, -(-60 // count)}, gaps


def test_the_spread_is_deterministic_and_a_host_outside_the_group_still_gets_a_minute(tmp_path: Path) -> None:
    hosts = ["pi%d" % i for i in range(1, 21)]
    first = rendered_minutes(tmp_path / "a", hosts, {"others": ["nas"]})
    again = rendered_minutes(tmp_path / "b", list(reversed(hosts)), {"others": ["nas"]})
    assert first == again
    assert 0 <= first["nas"] <= 59


def demo_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A repository folder holding a copy of the demo inventory (its paths follow the inventory)."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "inventory" / "demo", root / "inventory" / "demo")
    return root, root / "inventory" / "demo" / "hosts.yml"


def provision(inventory: Path, *args: str) -> str:
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "provision.yml", *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def system_state() -> dict[str, object]:
    """What provision.yml used to write on the controller itself."""
    crontab = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    return {
        "cron.d": sorted((p.name, p.stat().st_mtime_ns) for p in Path("/etc/cron.d").iterdir()),
        "crontab": (crontab.returncode, crontab.stdout),
        "opt": os.path.lexists("/opt/sqlite-backup") and os.stat("/opt/sqlite-backup").st_mtime_ns,
        "log": os.path.lexists("/var/log/sqlite-backup") and os.stat("/var/log/sqlite-backup").st_mtime_ns,
    }


@pytest.mark.skipif(shutil.which("crontab") is None, reason="needs crontab to compare the user's crontab")
def test_provisioning_the_demo_writes_only_inside_the_repository(tmp_path: Path) -> None:
    root, inventory = demo_copy(tmp_path)
    before = system_state()
    provision(inventory)
    assert system_state() == before
    runner_cron = (root / "var" / "cron.d" / "sqlite-backup").read_text()
    assert str(root / "var" / "opt" / "sqlite-backup" / "sqlite_backup_runner.py") in runner_cron
    assert str(root / "var" / "log" / "sqlite-backup" / "cron.log") in runner_cron
    controller = (root / "var" / "cron.d" / "sqlite-fleet-controller").read_text()
    assert "backup -i %s --log %s" % (inventory, root / "var" / "log" / "backup.log") in controller
    config = json.loads((root / "var" / "opt" / "sqlite-backup" / "config.json").read_text())
    assert config["retention"]["keep_hourly"] == 0 and config["retention"]["keep_yearly"] == 0


def test_state_absent_takes_a_host_off_the_schedule_and_keeps_its_runner(tmp_path: Path) -> None:
    root, inventory = demo_copy(tmp_path)
    provision(inventory)
    cron_file = root / "var" / "cron.d" / "sqlite-backup"
    assert " backup --db gym " in cron_file.read_text()
    # even with no databases left (check-config would refuse those), the host leaves the schedule
    provision(inventory, "-e", json.dumps({"sqlite_runner_state": "absent", "sqlite_backup_databases": []}))
    assert not cron_file.exists()
    assert (root / "var" / "opt" / "sqlite-backup" / "config.json").exists()
    provision(inventory)  # and comes back
    assert " backup --db gym " in cron_file.read_text()
