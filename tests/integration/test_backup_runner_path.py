"""backup.yml's one-task backup through the on-host runner (issue 15), on real SSH hosts.

A host whose runner (roles/sqlite_runner's layout in /opt/sqlite-backup) has the controller's core
runs the host side through ``sqlite_backup_runner.py task``, with no module payload; a host with
an outdated runner (another core) or none runs the sqlite_backup module, as before. The task's
result says which ran (``host_side``); ``-v`` prints it. Each host's private folders are emptied
before and after each test (its runner folder too).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from core_parts import install_core
from fleet import Fleet, Host
from integration_helpers import (
    BACKUP_DIR,
    REPO,
    Site,
    backups_in,
    integrity_check,
    manifest_of,
    reset_site,
    sha256_of,
    tree_state,
)

pytestmark = pytest.mark.integration

RUNNER_DIR = "/opt/sqlite-backup"
# the snapshot task's result line (the verify task's skipped line repeats it as its item)
HOST_SIDE = re.compile(r'^(?:ok|changed|failed): \[(\w+)\] => \(item=\w+\) => \{.*?"host_side": "(\w+)"', re.M)


@pytest.fixture
def site(fleet3: Fleet, tmp_path: Path) -> Iterator[Site]:
    yield from reset_site(fleet3, tmp_path)


def install_runner(host: Host, outdated: bool = False) -> None:
    """The runner and the core as roles/sqlite_runner installs them; ``outdated``: one part differs."""
    folder = host.path(RUNNER_DIR)
    install_core(folder)
    shutil.copy2(REPO / "runner" / "sqlite_backup_runner.py", folder / "sqlite_backup_runner.py")
    if outdated:
        with open(folder / "sqlite_fleet" / "present.py", "a") as part:
            part.write("\n# an older release\n")


def host_sides(output: str) -> list[str]:
    return [side for _, side in HOST_SIDE.findall(output)]


def test_hosts_take_the_runner_path_only_with_the_controllers_core(site: Site) -> None:
    pi1, pi2 = site.fleet["pi1"], site.fleet["pi2"]
    site.create_databases()
    install_runner(pi1)
    install_runner(pi2, outdated=True)  # pi3: no runner
    inventory = site.inventory()
    run = site.run("backup.yml", "-v", inventory=inventory)
    assert run.rc == 0, run.explain()
    assert sorted(HOST_SIDE.findall(run.stdout)) == [("pi1", "runner"), ("pi2", "module"), ("pi3", "module")], \
        run.explain()
    assert "the runner refused (outdated)" in run.stdout and "no runner reply" in run.stdout
    for host in site.hosts:  # every host backed up, pulled, verified
        archived = backups_in(site.archive_folder(host.name))
        assert len(archived) == 1, (host.name, archived)
        backup = site.archive_folder(host.name) / archived[0]
        assert integrity_check(backup) == ["ok"]
        assert manifest_of(backup)["sha256"] == sha256_of(backup)
        assert backups_in(site.host_backup_folder(host)) == archived


def test_the_runner_path_archives_what_the_module_path_archives(site: Site) -> None:
    host = site.fleet["pi1"]
    site.create_database(host)
    install_runner(host)
    inventory = site.inventory(hosts=[host])
    by_module = site.run("backup.yml", "-v", "-e", "sqlite_backup_use_runner=false", inventory=inventory)
    assert by_module.rc == 0 and host_sides(by_module.stdout) == ["module"], by_module.explain()
    by_runner = site.run("backup.yml", "-v", inventory=inventory)
    assert by_runner.rc == 0 and host_sides(by_runner.stdout) == ["runner"], by_runner.explain()
    archived = backups_in(site.archive_folder(host.name))
    assert len(archived) == 2, archived
    first, second = (site.archive_folder(host.name) / name for name in archived)
    assert sha256_of(first) == sha256_of(second)  # the same database, unchanged: the same bytes
    one, two = manifest_of(first), manifest_of(second)
    assert sorted(one) == sorted(two)
    for key in ("sha256", "size_bytes", "name", "method", "integrity", "source_host", "verified", "tables"):
        assert one.get(key) == two.get(key), key
    assert two["tool"]["core_sha256"]  # the runner hashes its whole core (a module's payload cannot)
    assert backups_in(site.host_backup_folder(host)) == archived
    again = site.run("backup.yml", "-v", inventory=inventory)  # the next no-change run: a delta or whole, same path
    assert again.rc == 0 and host_sides(again.stdout) == ["runner"], again.explain()
    assert len(backups_in(site.archive_folder(host.name))) == 3


def test_check_mode_on_the_runner_path_claims_nothing_it_did_not_do(site: Site) -> None:
    host = site.fleet["pi1"]
    site.create_database(host)
    install_runner(host)
    inventory = site.inventory(hosts=[host])
    site.backup(inventory)
    before = (tree_state(site.host_backup_folder(host)), tree_state(site.archive / host.name))
    run = site.run("backup.yml", "-v", "--check", inventory=inventory)
    assert run.rc == 0 and host_sides(run.stdout) == ["runner"], run.explain()
    assert (tree_state(site.host_backup_folder(host)), tree_state(site.archive / host.name)) == before
    result = json.loads(re.search(r"^changed: \[pi1\] => \(item=gym\) => (\{.*\})$", run.stdout, re.M).group(1))
    assert "would" in result["msg"] and result["staging_dir"] is None, result
    assert host.path(BACKUP_DIR).is_dir()
