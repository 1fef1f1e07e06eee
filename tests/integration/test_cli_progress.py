"""The pull's progress as an operator sees it: ``sqlite-fleet backup`` (the installed entry point,
real ansible-runner) pulls an 8 MiB database of incompressible data from a real SSH host whose
link is shaped to about 2 MB/s, so the transfer takes seconds.

On a terminal (a real pty) a status line is redrawn in place while the file comes in; with
``--progress`` into a pipe, "pulling ...: N%" lines; into a pipe without it (cron), nothing but the
steps' absence and the summary. The fetch's progress file is checked against the run record.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fleet import Fleet
from integration_helpers import DB_NAME, MIB, Site, run_records

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from sqlite_fleet_cli.pull_progress import CLEAR_LINE  # noqa: E402

pytestmark = pytest.mark.integration

CLI = REPO / ".venv" / "bin" / "sqlite-fleet"
TIMEOUT = 300


def cli_env(runs_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(SQLITE_FLEET_RUNS_DIR=str(runs_dir), COLUMNS="200")
    return env


def run_in_pty(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run with stdout on a pseudo-terminal (so isatty() is true); everything it wrote there."""
    master, slave = pty.openpty()
    process = subprocess.Popen(argv, stdout=slave, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               cwd=cwd)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        code = process.wait(timeout=TIMEOUT)
    finally:
        reader.join(timeout=30)
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def test_a_long_pull_shows_its_progress_on_a_terminal_as_lines_when_asked_and_nothing_in_cron(
        make_fleet: Callable[..., Fleet], tmp_path: Path) -> None:
    if not CLI.exists():
        pytest.fail("%s is missing: make setup installs the CLI (pip install -e .)" % CLI)
    fleet = make_fleet(1)
    (host,) = fleet.hosts
    site = Site(fleet, tmp_path)
    site.create_database(host, members=100, size_mb=8, seed=4)  # incompressible photos: ssh -C cannot help
    inventory = str(site.inventory())
    runs_dir, cwd = tmp_path / "runs", tmp_path / "elsewhere"
    cwd.mkdir()
    env = cli_env(runs_dir)
    host.shape(rate="16mbit", burst="64kb", latency="200ms")  # about 2 MB/s from the host: some 4 s
    try:
        code, shown = run_in_pty([str(CLI), "backup", "-i", inventory], env, cwd)
        assert code == 0, shown
        (record,) = run_records(site.archive, "backup")
        db = record["hosts"][host.name]["databases"][DB_NAME]
        assert db["pulled"][0]["mode"] == "full" and db["bytes_sent"] > 7 * MIB, db
        status = [part for part in shown.split(CLEAR_LINE) if part.startswith("pulling: %s %s " % (host.name, DB_NAME))]
        assert status, "no progress was drawn:\n%r" % shown[-3000:]
        print("drawn on the terminal: %d status lines, e.g. %r" % (len(status), status[len(status) // 2]))
        assert any("%% of %s" % "8." in part for part in status), status  # "45% of 8.1 MiB"
        assert "%s %s: verified in the archive: %s" % (host.name, DB_NAME, db["backup"]) in shown
        (progress,) = (runs_dir / record["run_id"] / "progress").iterdir()
        assert progress.name == "%s--%s.json" % (host.name, DB_NAME)
        last = json.loads(progress.read_text())
        assert last["file"] == db["backup"] and last["bytes"] == last["total"] == db["bytes_sent"], last

        shutil.rmtree(site.archive / host.name)  # the next pull is a whole file again
        asked = subprocess.run([str(CLI), "backup", "-i", inventory, "--progress"], env=env, cwd=cwd,
                               capture_output=True, text=True, timeout=TIMEOUT)
        assert asked.returncode == 0, asked.stdout + asked.stderr
        pulling = [line for line in asked.stdout.splitlines()
                   if line.startswith("%s %s: pulling %s_backup_" % (host.name, DB_NAME, DB_NAME))]
        print("lines with --progress:", *pulling, sep="\n  ")
        assert pulling and all("% (" in line and " of 8." in line and ": 0% (" not in line for line in pulling), \
            asked.stdout
        assert CLEAR_LINE not in asked.stdout

        shutil.rmtree(site.archive / host.name)
        cron = subprocess.run([str(CLI), "backup", "-i", inventory], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=TIMEOUT)
    finally:
        host.unshape()
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert "pulling" not in cron.stdout and "snapshot taken" not in cron.stdout, cron.stdout
    started = run_records(site.archive, "backup")[-1]["started"]  # "2026-12-06T17:01:58Z"
    assert "backup: ok; 1 ok in " in cron.stdout and ", started %s %s UTC (exit 0)" % (
        started[:10], started[11:19]) in cron.stdout, cron.stdout
    newest = sorted(runs_dir.iterdir())[-1]
    assert not (newest / "progress").exists(), "a quiet run asked the fetch for progress files"
