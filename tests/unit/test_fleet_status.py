"""``sqlite-fleet status`` over a scripted two-week history on real files (tests/fleet_history.py).

The inventory is read by Ansible's own inventory code; the archive holds real backups imported
by the core; the drills ran for real. Exit codes are those of the run record contract (docs/cli.md):
0 fresh and drilled, 4 stale or never backed up, 5 last drill failed, 2 bad input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import fleet_history  # noqa: E402  (puts the repository root and module_utils on sys.path)
from fleet_history import DB, HOSTILE_DB, HOSTILE_HOST, HOSTILE_MESSAGE, History, build_history  # noqa: E402

from sqlite_fleet_cli.fleet_inventory import parse_duration  # noqa: E402
from sqlite_fleet_cli.fleet_status import collect_status  # noqa: E402
from sqlite_fleet_cli.status import main_status, printable  # noqa: E402

core = fleet_history.core

REPO = fleet_history.REPO


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return build_history(tmp_path_factory.mktemp("history"))


def status_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main_status(["--json", "--no-metrics", *argv])
    return code, json.loads(capsys.readouterr().out)


def rows_by_host(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["host"]: row for row in document["databases"]}


# --------------------------------------------------------------------------- exit codes


def test_exit_code_4_when_a_host_is_stale_or_never_backed_up(history: History, capsys) -> None:
    assert main_status(["-i", str(history.inventory), "--no-metrics"]) == 4
    out = capsys.readouterr().out
    assert "STALE" in out and "NEVER" in out and "charlie" in out and "delta" in out


def test_exit_code_5_when_the_last_drill_failed_and_nothing_is_stale(history: History, capsys) -> None:
    assert main_status(["-i", str(history.inventory_of("alpha", "bravo")), "--no-metrics"]) == 5
    assert "DRILL FAILED" in capsys.readouterr().out


def test_exit_code_0_when_fresh_and_drilled(history: History, capsys) -> None:
    assert main_status(["-i", str(history.inventory_of("alpha")), "--no-metrics"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("1 database: 1 ok; threshold 36 h; archive ")
    # hosts of the archive and the records that this inventory does not name are shown, not counted
    assert "not in the inventory (not counted): " in out and "charlie" in out


def test_the_threshold_decides(history: History, capsys) -> None:
    alpha_bravo_charlie = str(history.inventory_of("alpha", "bravo", "charlie"))
    # charlie's newest verified backup is 4 days and an hour old: fresh under a 5-day threshold
    assert main_status(["-i", alpha_bravo_charlie, "--no-metrics", "--max-age", "5d"]) == 5
    assert main_status(["-i", alpha_bravo_charlie, "--no-metrics", "--max-age", "96h"]) == 4
    # alpha's is an hour old
    assert main_status(["-i", str(history.inventory_of("alpha")), "--no-metrics", "--max-age", "30m"]) == 4
    assert "limit 30 min" in capsys.readouterr().out


# --------------------------------------------------------------------------- what it says


def test_json_tells_each_database_its_newest_backups_runs_and_drills(history: History, capsys) -> None:
    code, document = status_json(capsys, "-i", str(history.inventory))
    assert code == document["exit_code"] == 4
    assert document["counts"] == {"never": 2, "stale": 1, "drill_failed": 1, "run_failed": 0, "ok": 1}
    assert [row["state"] for row in document["databases"]] == ["never", "never", "stale", "drill_failed", "ok"]
    rows = rows_by_host(document)
    last_day = history.runs[-1]

    alpha = rows["alpha"]
    newest = last_day["hosts"]["alpha"]["databases"][DB]
    assert alpha["archive"]["newest_verified"] == newest["backup"] == alpha["on_host"]["newest_verified"]
    assert 3500 < alpha["archive"]["age_seconds"] < 3900 and alpha["stale"] is False
    assert alpha["archive"]["verified_backups"] == 14
    # the last run is the last real backup run, not the --check run of day 12
    assert alpha["last_run"]["run_id"] == last_day["run_id"] and alpha["last_run"]["outcome"] == "ok"
    assert alpha["last_drill"]["outcome"] == "passed" and alpha["last_drill"]["rto_seconds"] > 0
    # offsite: the last run's upload failed, so the newest offsite backup is the day before's, from its record
    before = history.runs[-2]["hosts"]["alpha"]["databases"][DB]
    assert alpha["offsite"]["newest"] == before["backup"] and core.parse_iso_utc(alpha["offsite"]["created"]) == \
        core.parse_iso_utc(before["created"])
    assert alpha["offsite"]["snapshot_id"] == "snap%04d" % (fleet_history.DAYS - 2)
    assert alpha["offsite"]["run_id"] == history.runs[-2]["run_id"]
    assert 86400 + 3500 < alpha["offsite"]["age_seconds"] < 86400 + 3900
    assert rows["charlie"]["offsite"] is None  # never sent offsite: none, not a guess

    charlie = rows["charlie"]
    assert charlie["state"] == "stale" and charlie["stale"] is True
    assert 4 * 86400 < charlie["archive"]["age_seconds"] < 4 * 86400 + 7200
    assert charlie["last_run"]["outcome"] == "unreachable" and "No route to host" in charlie["last_run"]["message"]
    # the newest verified backup on the host comes from the last record that saw the host (day 9)
    assert charlie["on_host"]["newest_verified"] == charlie["archive"]["newest_verified"]
    assert charlie["on_host"]["run_id"] == history.runs[fleet_history.CHARLIE_LAST_DAY]["run_id"]
    assert charlie["problems"][0].startswith("newest verified backup is 4.0 d old (limit 36 h)")

    bravo = rows["bravo"]
    assert bravo["state"] == "drill_failed" and bravo["stale"] is False
    assert bravo["last_drill"]["outcome"] == "failed" and bravo["last_drill"]["backup"] == history.flipped.name
    assert any("checksum" in p for p in bravo["last_drill"]["problems"])

    delta = rows["delta"]
    assert delta["state"] == "never" and delta["archive"]["newest_verified"] is None and delta["on_host"] is None
    assert delta["last_run"]["outcome"] == "unreachable" and delta["last_drill"] is None

    hostile = rows[HOSTILE_HOST]
    assert hostile["database"] == HOSTILE_DB and hostile["state"] == "never"
    assert hostile["last_run"]["message"] == HOSTILE_MESSAGE
    # the run that failed before any host (bad input) is the fleet's, and older than the last run
    assert document["last_run"]["run_id"] == last_day["run_id"]
    assert any("20991231T000000Z-broken.json" in item for item in document["unreadable"])
    assert any("drill-log.jsonl: 1 line not readable" in item for item in document["unreadable"])


def test_hosts_whose_sqlite_carries_the_wal_reset_bug_are_named(history: History, capsys) -> None:
    _, document = status_json(capsys, "-i", str(history.inventory))
    named = {entry["host"]: entry["affected"] for entry in document["wal_reset_bug"]}
    # bravo backs up with Python's sqlite3 3.46.1; alpha's app (inventory) links 3.45.1;
    # charlie's 3.44.6 is a fixed backport; delta never reported a version
    assert named == {"bravo": ["Python sqlite3 3.46.1"], "alpha": ["app SQLite 3.45.1"]}
    rows = rows_by_host(document)
    assert rows["charlie"]["sqlite"] == {"python": "3.44.6", "app": None, "wal_reset_bug": False}
    assert rows["delta"]["sqlite"]["wal_reset_bug"] is None
    main_status(["-i", str(history.inventory), "--no-metrics"])
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WAL-reset bug")]
    assert "bravo: Python sqlite3 3.46.1" in line and "alpha: app SQLite 3.45.1" in line and "charlie" not in line


def test_status_runs_as_a_module_and_writes_its_metrics(history: History, tmp_path: Path) -> None:
    metrics = tmp_path / "fleet.prom"
    proc = subprocess.run([sys.executable, "-m", "sqlite_fleet_cli.status", "-i", str(history.inventory), "--json",
                           "--metrics-file", str(metrics)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 4, proc.stderr
    document = json.loads(proc.stdout)
    assert document["metrics_file"] == str(metrics) and document["metrics_error"] is None
    assert metrics.stat().st_mode & 0o777 == 0o644
    assert 'sqlite_fleet_stale{host="charlie",database="gym"} 1\n' in metrics.read_text()


def test_a_missing_archive_means_never_backed_up(tmp_path: Path, capsys) -> None:
    inventory = tmp_path / "hosts.yml"
    fleet_history.write_inventory(inventory, tmp_path / "no-archive-yet", ["alpha"])
    assert main_status(["-i", str(inventory)]) == 4
    captured = capsys.readouterr()
    assert "NEVER" in captured.out and "metrics not written" in captured.err
    assert not (tmp_path / "no-archive-yet").exists(), "status created the archive"


def test_records_with_missing_keys_are_read_for_what_they_hold(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    fleet_history.write_record(archive, {"format_version": 2, "run_id": "20261201T030000Z-aaaaaa",
                                         "started": "2026-12-01T03:00:00Z", "command": "backup",
                                         "hosts": {"pi1": {"outcome": "failed"}, "pi2": "junk", "pi3": {
                                             "outcome": "ok", "databases": {"gym": {"size_bytes": "big",
                                                                                    "seconds": -1}}}}})
    fleet_history.write_record(archive, {"format_version": 2, "run_id": "no start"})
    fleet_history.write_record(archive, {"format_version": 7, "started": "2026-12-01T03:00:00Z"}, "future.json")
    fleet_history.write_record(archive, ["not", "a", "record"], "list.json")
    fleet_history.write_record(archive, {"format_version": 2, "run_id": "20261202T030000Z-bbbbbb",
                                         "started": "2026-12-02T03:00:00Z", "command": "backup", "hosts": {
                                             "pi3": {"outcome": "ok", "databases": {"gym": {
                                                 "bytes_sent": 10 ** 400, "seconds": float("nan")}}}}})
    (archive / "runs" / "deep.json").write_text("[" * 100000 + "]" * 100000)
    status = collect_status(str(archive))
    assert sorted((row["host"], row["database"], row["state"]) for row in status.rows) == [("pi3", "gym", "never")]
    assert status.rows[0]["last_run"]["outcome"] == "ok" and status.rows[0]["last_run"]["bytes_sent"] is None
    assert len(status.unreadable) == 4, status.unreadable
    assert sum("not a run record this version reads" in u for u in status.unreadable) == 3
    assert "runs/deep.json: RecursionError" in status.unreadable


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("problem", ["no inventory", "no sqlite_hosts", "bad max-age", "bad app version",
                                     "not a folder", "two archives"])
def test_bad_input_is_one_clear_line_and_exit_2(problem: str, history: History, tmp_path: Path, capsys) -> None:
    metrics = tmp_path / "metrics.prom"
    argv = ["-i", str(history.inventory), "--metrics-file", str(metrics)]
    if problem == "no inventory":
        argv[1] = str(tmp_path / "missing.yml")
    elif problem == "no sqlite_hosts":
        (tmp_path / "empty.yml").write_text("all:\n  hosts:\n    web1: {}\n")
        argv[1] = str(tmp_path / "empty.yml")
    elif problem == "bad max-age":
        argv += ["--max-age", "soon"]
    elif problem in ("bad app version", "two archives"):
        inventory = json.loads(history.inventory.read_text())
        host_vars = inventory["all"]["children"]["sqlite_hosts"]["hosts"]["alpha"]
        if problem == "bad app version":
            host_vars["sqlite_app_sqlite_version"] = "latest"
        else:
            host_vars["sqlite_archive_dir"] = str(tmp_path / "elsewhere")
        (tmp_path / "bad.yml").write_text(json.dumps(inventory))
        argv[1] = str(tmp_path / "bad.yml")
    else:
        argv += ["--archive-dir", str(history.inventory)]
    assert main_status(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.err.startswith("sqlite-fleet status: ") and "Traceback" not in captured.err
    assert not metrics.exists()


def test_durations_and_terminal_text() -> None:
    assert [parse_duration(text) for text in ("36h", "90m", "2d", "1w", "3600s", "1.5h", "36")] == \
        [129600, 5400, 172800, 604800, 3600, 5400, 129600]
    for bad in ("", "0h", "-1h", "36x", "h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert printable("pi\x1b[31m1\nx") == "pi\\x1b[31m1\\x0ax" and printable(None) == "-"
    assert os.linesep not in printable("a" + os.linesep)


def test_the_table_shows_the_newest_offsite_backup_and_its_age(history: History, capsys) -> None:
    main_status(["--no-metrics", "-i", str(history.inventory)])
    lines = capsys.readouterr().out.splitlines()
    assert "NEWEST OFFSITE (AGE)" in lines[0]
    alpha = next(line for line in lines if line.split()[1:2] == ["alpha"])
    assert "(1.0 d)" in alpha  # the day before's snapshot: the last upload failed
    charlie = next(line for line in lines if line.split()[1:2] == ["charlie"])
    assert "(" not in charlie.split("charlie", 1)[1].split("unreachable")[0]
