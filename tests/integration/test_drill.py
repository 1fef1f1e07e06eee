"""Restore drills, run as a user runs them: ``ansible-playbook restore_drill.yml`` from the root.

1. On the session's three-host fleet: backup.yml pulls real backups into an archive in tmp;
   restore_drill.yml (check mode first) drills them, appends the drill log and writes the reports;
   then one archived backup gets a flipped byte and restore_drill.yml exits non-zero, naming it.
2. The HTML report in a real headless browser (Debian's chromium): a screenshot, decoded here
   in pure Python, shows the failed status in red above the stale (amber) and ok (green) ones,
   and the DOM chromium builds holds the status texts in that order.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import amber, decode_png, first_row_with, green, red, require_chromium, run_chromium
from fleet import Fleet

REPO = Path(__file__).resolve().parents[2]
for extra in (REPO, REPO / "tools", REPO / "module_utils"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import sqlite_fleet as core  # noqa: E402
from demo_db import create_demo_db  # noqa: E402

from sqlite_fleet_cli.report_page import write_report  # noqa: E402

pytestmark = pytest.mark.integration

ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
ANSIBLE_CFG = REPO / "ansible.cfg"
DB_NAME = "gym"
DB_PATH = "/srv/app/gym.db"
MEMBERS = 60
# The hosts' private folders these tests use; emptied before and after.
HOST_DIRS = ("/srv/app", "/var/backups/sqlite")
PROBES = {DB_NAME: [{"name": "members exist", "sql": "SELECT count(*) FROM members", "expect": "== %d" % MEMBERS},
                    {"name": "lockers", "sql": "SELECT count(*) FROM lockers", "expect": "> 0"}]}
SUMMARY_TASK = "sqlite_drill : Show one line per host and database"


# ------------------------------------------------------------------------- helpers


@dataclass
class PlaybookRun:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float

    def explain(self) -> str:
        return (f"\n$ {' '.join(self.argv)}\nexit {self.rc} after {self.seconds:.1f} s\n"
                f"--- stdout\n{self.stdout[-12000:]}\n--- stderr\n{self.stderr[-4000:]}")


def run_playbook(playbook: str, inventory: Path, env: Mapping[str, str], *args: str) -> PlaybookRun:
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), playbook, *args]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env={**env, "ANSIBLE_CONFIG": str(ANSIBLE_CFG), "ANSIBLE_NOCOLOR": "1"},
                          capture_output=True, text=True, timeout=300, check=False)
    run = PlaybookRun(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    print(f"{playbook} {' '.join(args)}: exit {run.rc} in {run.seconds:.1f} s")
    return run


def summary_lines(stdout: str) -> list[str]:
    """The lines the drill play printed (its debug task's msg)."""
    start = stdout.find(f"TASK [{SUMMARY_TASK}]")
    assert start >= 0, f"no summary in the output:\n{stdout[-6000:]}"
    lines = stdout[start:].splitlines()
    first = lines.index("ok: [localhost] => {")
    body = ["{"]
    for line in lines[first + 1:]:
        body.append(line)
        if line == "}":
            break
    return json.loads("\n".join(body))["msg"]


def drill_log(archive: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (archive / "drills" / "drill-log.jsonl").read_text().splitlines()]


def report_rows(html: str) -> list[tuple[str, str]]:
    """(host, status) of the report's table rows, in page order."""
    return re.findall(r'<tr class="entry [^"]*" data-host="([^"]*)" data-database="[^"]*" data-status="([^"]*)"',
                      html)


def empty_host_dirs(fleet: Fleet) -> None:
    for host in fleet:
        for folder in HOST_DIRS:
            for entry in host.path(folder).iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    subprocess.run(["rm", "-rf", "--one-file-system", str(entry)], check=True)
                else:
                    entry.unlink()


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def age_backup(backup: Path, days: float) -> Path:
    """Make an archived backup look ``days`` old, as if pulled then: new name, manifest and checksum file
    (the bytes of the database do not change)."""
    manifest = json.loads(backup.with_name(backup.name + ".json").read_text())
    created = core.utcnow() - dt.timedelta(days=days)
    renamed = backup.with_name(core.backup_filename(manifest["name"], created))
    manifest.update(file=renamed.name, created=core.iso_utc(created))
    os.rename(backup, renamed)
    renamed.with_name(renamed.name + ".sha256").write_text("%s  %s\n" % (manifest["sha256"], renamed.name))
    renamed.with_name(renamed.name + ".json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for sidecar in core.sidecar_paths(str(backup)):
        os.unlink(sidecar)
    return renamed


# ------------------------------------------------------------------------- fixtures


@pytest.fixture
def fleet_hosts(fleet3: Fleet) -> Iterator[Fleet]:
    """fleet3 with its hosts' app and backup folders emptied before and after (the fleet is shared)."""
    for host in fleet3:
        host.link_up()
    empty_host_dirs(fleet3)
    yield fleet3
    empty_host_dirs(fleet3)


# ------------------------------------------------------------------------- 1


def test_restore_drill_after_backup_then_a_corrupted_archive_file_fails(fleet_hosts: Fleet, tmp_path: Path) -> None:
    fleet = fleet_hosts
    archive = tmp_path / "archive"
    for index, host in enumerate(fleet):
        create_demo_db(host.path(DB_PATH), members=MEMBERS, seed=index + 1)
    inventory = fleet.write_inventory(
        tmp_path / "hosts.yml",
        host_vars={host.name: {"sqlite_backup_databases": [{"name": DB_NAME, "path": DB_PATH}]} for host in fleet},
        group_vars={"sqlite_archive_dir": str(archive), "sqlite_drill_probes": PROBES})
    env = fleet.env()
    names = [host.name for host in fleet]

    backup = run_playbook("backup.yml", inventory, env)
    assert backup.rc == 0, backup.explain()

    checked = run_playbook("restore_drill.yml", inventory, env, "--check")
    assert checked.rc == 0, checked.explain()
    assert not (archive / "drills").exists() and not (archive / ".drill-scratch").exists()
    assert [line for line in summary_lines(checked.stdout) if "would drill gym_backup_" in line], checked.stdout

    drilled = run_playbook("restore_drill.yml", inventory, env)
    assert drilled.rc == 0, drilled.explain()
    lines = summary_lines(drilled.stdout)
    for name in names:
        [line] = [line for line in lines if line.startswith(f"{name} {DB_NAME}: ")]
        assert ": OK - drilled gym_backup_" in line and "2/2 probes ok" in line, line
    assert lines[-1] == "report: %s" % (archive / "drills" / "drill-report.html")
    log = drill_log(archive)
    assert sorted(entry["host"] for entry in log) == names
    for entry in log:
        assert entry["ok"] is True and entry["status"] == "ok" and entry["problems"] == [], entry
        assert [(p["name"], p["value"], p["ok"]) for p in entry["probes"]][0] == ("members exist", MEMBERS, True)
        assert entry["restore_seconds"] is not None and entry["age_seconds"] < 3600
    html = (archive / "drills" / "drill-report.html").read_text()
    assert sorted(report_rows(html)) == [(name, "ok") for name in names]
    assert (archive / "drills" / "drill-report.md").read_text().startswith("# Restore drill: OK")

    victim_host = names[1]
    [victim] = sorted((archive / victim_host / DB_NAME).glob("gym_backup_*.db"))
    flip_byte(victim)
    failed = run_playbook("restore_drill.yml", inventory, env)
    assert failed.rc != 0, failed.explain()
    assert f"restore drill FAILED for {victim_host}/{DB_NAME}: {victim.name}: checksum" in failed.stdout, \
        failed.explain()
    lines = summary_lines(failed.stdout)  # printed although the drill failed
    assert lines[0].startswith(f"{victim_host} {DB_NAME}: FAILED - {victim.name}: checksum"), lines
    assert all(": OK - " in line for line in lines[1:len(names)]), lines
    log = drill_log(archive)
    assert len(log) == 2 * len(names) and all(entry["ok"] for entry in log[:len(names)])
    assert [(entry["host"], entry["ok"]) for entry in log[len(names):]][0] == (victim_host, False)
    html = (archive / "drills" / "drill-report.html").read_text()
    assert report_rows(html)[0] == (victim_host, "fail") and victim.name in html
    assert victim.name in (archive / "drills" / "drill-report.md").read_text()


# ------------------------------------------------------------------------- 2


def test_the_report_in_a_real_headless_browser(tmp_path: Path) -> None:
    require_chromium()
    # A real archive: alpha healthy, bravo's newest backup corrupted, charlie last pulled 5 days ago.
    archive = tmp_path / "archive"
    for index, host in enumerate(("alpha", "bravo", "charlie")):
        db = tmp_path / f"{host}.db"
        create_demo_db(db, members=MEMBERS, seed=index + 1)
        for _ in range(3):
            snap = core.snapshot(str(db), str(archive / host / DB_NAME), DB_NAME, source_host=host)
            conn = sqlite3.connect(db)  # the app keeps growing: a size trend to draw
            conn.execute("INSERT INTO photos (member_id, taken_at, data) VALUES (1, 'now', randomblob(30000))")
            conn.commit()
            conn.close()
        if host == "bravo":
            flip_byte(Path(snap["backup"]))
        if host == "charlie":
            for index, backup in enumerate(sorted((archive / host / DB_NAME).glob("*.db"))):
                age_backup(backup, days=5.002 - index * 0.001)
    # Hosts of the inventory; the drill play runs on the controller and never contacts them.
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {"sqlite_hosts": {
        "hosts": {host: {"ansible_connection": "local"} for host in ("alpha", "bravo", "charlie")},
        "vars": {"sqlite_archive_dir": str(archive), "sqlite_drill_probes": PROBES}}}}}))

    run = run_playbook("restore_drill.yml", inventory, dict(os.environ))
    assert run.rc != 0, run.explain()
    report = archive / "drills" / "drill-report.html"
    assert report_rows(report.read_text()) == [("bravo", "fail"), ("charlie", "stale"), ("alpha", "ok")]

    shot = tmp_path / "shot.png"
    taken = run_chromium([f"--screenshot={shot}", "--window-size=1280,900", report.as_uri()], tmp_path / "profile")
    assert shot.is_file(), f"no screenshot (exit {taken.returncode}):\n{taken.stderr[-3000:]}"
    assert shot.stat().st_size > 20_000, "the screenshot is nearly empty"
    width, height, rows = decode_png(shot)
    assert (width, height) == (1280, 900)
    # The status badges' column, below the banner (which is red too when a drill failed).
    badges = range(40, 120)
    below_banner = rows[130:]
    first_red = first_row_with(below_banner, badges, red)
    first_amber = first_row_with(below_banner, badges, amber)
    first_green = first_row_with(below_banner, badges, green)
    assert first_red is not None and first_amber is not None and first_green is not None, \
        (first_red, first_amber, first_green)
    assert first_red < first_amber < first_green, "problems first: failed, then stale, then ok"
    assert first_row_with(rows[:80], range(0, width), red, min_pixels=1000) is not None, "the banner is red"

    dom = run_chromium(["--dump-dom", report.as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    text = dom.stdout
    assert "Restore drill: <span class=\"overall\">FAILED</span>" in text
    statuses = re.findall(r'<span class="status status-(\w+)">(\w+)</span>', text)
    assert statuses == [("fail", "FAILED"), ("stale", "STALE"), ("ok", "OK")]
    assert "not reached for 5 days" in text and "charlie" in text
    assert "<script" not in text.lower()

    # The drill report and the fleet's history page link to each other, relative, inside the archive.
    drill_page = report.read_text()
    assert '<a href="../fleet-report.html">' in drill_page and "not written yet" in drill_page
    fleet_page = Path(write_report(str(archive)))
    assert fleet_page == (report.parent / "../fleet-report.html").resolve()
    assert '<a class="drill-report" href="drills/drill-report.html">' in fleet_page.read_text()
