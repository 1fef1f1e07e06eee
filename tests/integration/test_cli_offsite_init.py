"""``sqlite-fleet offsite init``, run as an operator runs it (the installed entry point, from another
directory, through ansible-runner for real) against a restic repository in a local folder with the
real restic: it creates the repository once, says so, and a second run finds it and changes
nothing; no repository configured, a wrong password: one line each, nothing created; the
password never shows in the output, the run record or the artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.test_cli import CLI, SECRET, Run, Site

pytestmark = pytest.mark.integration


def offsite_inventory(site: Site, settings: dict[str, str]) -> Path:
    path = site.inventory("offsite.json")
    body = json.loads(path.read_text())
    body["all"]["vars"].update(settings)
    path.write_text(json.dumps(body, indent=2))
    return path


def password_file(folder: Path, name: str, password: str) -> Path:
    path = folder / name
    path.write_text(password)
    path.chmod(0o600)
    return path


def everything_written(site: Site) -> str:
    """The run records and the CLI's run folders (artifacts), as one text."""
    texts = []
    for folder in (site.archive / "runs", site.runs_dir):
        if folder.is_dir():
            texts += [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]
    return "\n".join(texts)


def repository_state(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def offsite_lines(run: Run) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith("offsite")]


def restic_cli_site(tmp_path: Path) -> Site:
    """A CLI site (tests/integration/test_cli.py) for the offsite tests: the CLI and restic required."""
    if not CLI.exists():
        pytest.fail("%s is missing: make setup installs the CLI (pip install -e .)" % CLI)
    if shutil.which("restic") is None:
        pytest.fail("restic is not installed: tools/setup-system.sh installs it")
    return Site(tmp_path)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return restic_cli_site(tmp_path)


def test_offsite_init_creates_the_repository_once_and_is_idempotent(site: Site) -> None:
    repo = site.tmp / "offsite-repo"
    pw = password_file(site.tmp, "offsite.pw", SECRET)
    inventory = offsite_inventory(site, {"sqlite_offsite_repository": str(repo),
                                         "sqlite_offsite_password_file": str(pw)})

    planned = site.cli("offsite", "init", "-i", str(inventory), "--check")
    assert planned.rc == 0, planned.explain()
    assert "offsite: would create the offsite repository" in offsite_lines(planned), planned.explain()
    assert not repo.exists()

    created = site.cli("offsite", "init", "-i", str(inventory))
    assert created.rc == 0, created.explain()
    assert "offsite: created the offsite repository" in offsite_lines(created), created.explain()
    assert (repo / "config").is_file()
    record = site.record()
    assert record["command"] == "offsite" and record["argv"][1:3] == ["offsite", "init"]
    assert record["exit_code"] == 0 and record["offsite"]["outcome"] == "ok", record
    before = repository_state(repo)

    again = site.cli("offsite", "init", "-i", str(inventory))
    assert again.rc == 0, again.explain()
    assert "offsite: the offsite repository exists" in offsite_lines(again), again.explain()
    assert repository_state(repo) == before  # the existing repository is left as it is

    for run in (planned, created, again):
        assert SECRET not in run.stdout + run.stderr
    assert SECRET not in everything_written(site)


def test_offsite_init_refuses_without_a_repository_and_with_a_wrong_password(site: Site) -> None:
    unset = site.cli("offsite", "init", "-i", str(offsite_inventory(site, {})))
    assert unset.rc == 2, unset.explain()
    assert "no offsite repository configured: set sqlite_offsite_repository" in unset.stdout, unset.explain()

    repo = site.tmp / "offsite-repo"
    right = password_file(site.tmp, "right.pw", SECRET)
    created = site.cli("offsite", "init", "-i", str(offsite_inventory(site, {
        "sqlite_offsite_repository": str(repo), "sqlite_offsite_password_file": str(right)})))
    assert created.rc == 0, created.explain()
    before = repository_state(repo)

    wrong_password = "not-the-password-" + SECRET[::-1]
    wrong = password_file(site.tmp, "wrong.pw", wrong_password)
    refused = site.cli("offsite", "init", "-i", str(offsite_inventory(site, {
        "sqlite_offsite_repository": str(repo), "sqlite_offsite_password_file": str(wrong)})))
    assert refused.rc == 1, refused.explain()
    assert offsite_lines(refused)[0] == ("offsite FAILED: offsite repository check failed: wrong password for the "
                                         "offsite repository %s" % repo), refused.explain()
    assert site.record()["offsite"]["outcome"] == "failed"
    assert repository_state(repo) == before  # nothing created over it
    for run in (unset, created, refused):
        assert SECRET not in run.stdout + run.stderr and wrong_password not in run.stdout + run.stderr
    written = everything_written(site)
    assert SECRET not in written and wrong_password not in written
