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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_fleet as core
from browser import amber, decode_png, first_row_with, green, red, require_chromium, run_chromium
from demo_db import create_demo_db
from fleet import Fleet
from integration_helpers import (
    DB_NAME,
    PlaybookRun,
    Site,
    debug_result,
    flip_byte,
    playbook_env,
    reset_site,
    run_playbook,
)

from sqlite_fleet_cli.report_page import write_report

pytestmark = pytest.mark.integration

MEMBERS = 60
# The hosts' private folders these tests use; emptied before and after.
HOST_DIRS = ("/srv/app", "/var/backups/sqlite")
PROBES = {DB_NAME: [{"name": "members exist", "sql": "SELECT count(*) FROM members", "expect": "== %d" % MEMBERS},
                    {"name": "lockers", "sql": "SELECT count(*) FROM lockers", "expect": "> 0"}]}
SUMMARY_TASK = "sqlite_drill : Show one line per host and database"


# ------------------------------------------------------------------------- helpers


def drill_summary(run: PlaybookRun) -> list[str]:
    """The lines the drill play printed (its debug task's msg)."""
    return debug_result(run.stdout, SUMMARY_TASK)["msg"]


def drill_log(archive: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (archive / "drills" / "drill-log.jsonl").read_text().splitlines()]


def report_rows(html: str) -> list[tuple[str, str]]:
    """(host, status) of the report's table rows, in page order."""
    return re.findall(r'<tr class="entry [^"]*" data-host="([^"]*)" data-database="[^"]*" data-status="([^"]*)"',
                      html)


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
def site(fleet3: Fleet, tmp_path: Path) -> Iterator[Site]:
    """fleet3 with its hosts reset before and after (the fleet is shared)."""
    yield from reset_site(fleet3, tmp_path)


# ------------------------------------------------------------------------- 1


def test_restore_drill_after_backup_then_a_corrupted_archive_file_fails(site: Site) -> None:
    fleet, archive = site.fleet, site.archive
    site.create_databases(members=MEMBERS)
    inventory = site.inventory(group_vars={"sqlite_drill_probes": PROBES})
    names = [host.name for host in fleet]

    backup = site.run("backup.yml", inventory=inventory)
    assert backup.rc == 0, backup.explain()

    checked = site.run("restore_drill.yml", "--check", inventory=inventory)
    assert checked.rc == 0, checked.explain()
    assert not (archive / "drills").exists() and not (archive / ".drill-scratch").exists()
    assert [line for line in drill_summary(checked) if "would drill gym_backup_" in line], checked.stdout

    drilled = site.run("restore_drill.yml", inventory=inventory)
    assert drilled.rc == 0, drilled.explain()
    lines = drill_summary(drilled)
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
    failed = site.run("restore_drill.yml", inventory=inventory)
    assert failed.rc != 0, failed.explain()
    assert f"restore drill FAILED for {victim_host}/{DB_NAME}: {victim.name}: checksum" in failed.stdout, \
        failed.explain()
    lines = drill_summary(failed)  # printed although the drill failed
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

    run = run_playbook("restore_drill.yml", inventory=inventory, env=playbook_env(os.environ))
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
