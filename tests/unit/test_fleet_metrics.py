"""The controller's Prometheus textfile, read back by the strict reader of tests/prometheus_text.py."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import fleet_history  # noqa: E402
from fleet_history import DB, HOSTILE_DB, HOSTILE_HOST, History, build_history  # noqa: E402
from prometheus_text import parse_prometheus  # noqa: E402

from sqlite_fleet_cli.fleet_inventory import load_fleet  # noqa: E402
from sqlite_fleet_cli.metrics import METRICS, write_metrics  # noqa: E402

core = fleet_history.core
NAMES = {metric.name for metric in METRICS}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return build_history(tmp_path_factory.mktemp("history"))


def test_metrics_of_the_fleet_parse_strictly_and_say_what_status_says(history: History, tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "sqlite-fleet.prom"
    (tmp_path / "textfile").mkdir()
    fleet = load_fleet(str(history.inventory))
    assert write_metrics(str(history.archive), str(path), fleet=fleet) == str(path)
    assert path.stat().st_mode & 0o777 == 0o644
    assert os.listdir(path.parent) == ["sqlite-fleet.prom"], "a temporary file was left beside it"
    samples = parse_prometheus(path.read_text())
    assert {name for name, _, _ in samples} == NAMES

    def value(metric: str, host: str, database: str = DB) -> float | None:
        return samples.get(("sqlite_fleet_" + metric, host, database))

    last = history.runs[-1]["hosts"]["alpha"]["databases"][DB]
    assert value("archive_newest_verified_timestamp_seconds", "alpha") == \
        core.parse_backup_filename(last["backup"])["created"].timestamp()
    assert value("archive_newest_verified_size_bytes", "alpha") == last["size_bytes"]
    assert 3500 < value("archive_newest_verified_age_seconds", "alpha") < 3900
    assert value("archive_verified_backups", "alpha") == 14
    assert [value("stale", host) for host in ("alpha", "bravo", "charlie", "delta")] == [0, 0, 1, 1]
    assert value("max_age_seconds", "alpha") == 36 * 3600
    assert [value("last_run_success", host) for host in ("alpha", "bravo", "charlie", "delta")] == [1, 1, 0, 0]
    assert value("last_run_timestamp_seconds", "delta") == \
        dt.datetime.strptime(history.runs[-1]["started"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.timezone.utc).timestamp()
    assert [value("last_drill_success", host) for host in ("alpha", "bravo", "charlie")] == [1, 0, 1]
    assert value("last_drill_duration_seconds", "alpha") > 0
    assert [value("wal_reset_bug", host) for host in ("alpha", "bravo", "charlie")] == [1, 1, 0]
    # offsite: from the records (the last upload failed: the day before's snapshot is the newest offsite)
    sent = history.runs[-2]["hosts"]["alpha"]["databases"][DB]
    assert value("offsite_newest_timestamp_seconds", "alpha") == \
        core.parse_backup_filename(sent["backup"])["created"].timestamp()
    assert 86400 + 3500 < value("offsite_newest_age_seconds", "alpha") < 86400 + 3900
    assert value("offsite_newest_timestamp_seconds", "charlie") is None  # never sent: no sample
    # unknown figures have no sample at all, never a placeholder
    assert value("archive_newest_verified_timestamp_seconds", "delta") is None
    assert value("last_drill_success", "delta") is None and value("wal_reset_bug", "delta") is None
    # the hostile names are label values, escaped as the text format wants
    escaped_db = HOSTILE_DB.replace("\\", "\\\\").replace('"', '\\"')
    assert value("stale", HOSTILE_HOST, escaped_db) == 1


def test_without_an_inventory_every_host_the_archive_and_records_know_counts(history: History,
                                                                              tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    write_metrics(str(history.archive), str(path))
    samples = parse_prometheus(path.read_text())
    hosts = {host for _, host, _ in samples}
    assert hosts == {"alpha", "bravo", "charlie", HOSTILE_HOST}  # delta never had a database in a record


def test_label_values_with_backslashes_newlines_and_quotes_parse(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    odd_host, odd_db = 'pi\\1\n"x"', "db\\n"
    fleet_history.write_record(archive, {"format_version": 2, "run_id": "20261201T030000Z-aaaaaa",
                                         "command": "backup", "started": "2026-12-01T03:00:00Z",
                                         "hosts": {odd_host: {"outcome": "failed", "databases": {
                                             odd_db: {"outcome": "failed", "message": "x"}}}}})
    path = tmp_path / "m.prom"
    write_metrics(str(archive), str(path), max_age=600)
    samples = parse_prometheus(path.read_text())
    assert samples[("sqlite_fleet_stale", 'pi\\\\1\\n\\"x\\"', "db\\\\n")] == 1
    assert samples[("sqlite_fleet_max_age_seconds", 'pi\\\\1\\n\\"x\\"', "db\\\\n")] == 600
    assert samples[("sqlite_fleet_last_run_success", 'pi\\\\1\\n\\"x\\"', "db\\\\n")] == 0


def test_rewritten_atomically_and_never_into_a_missing_folder(history: History, tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text("old\n")
    inode = path.stat().st_ino
    write_metrics(str(history.archive), str(path), fleet=load_fleet(str(history.inventory)))
    assert path.stat().st_ino != inode and path.read_text().startswith("# HELP ")
    with pytest.raises(OSError):
        write_metrics(str(history.archive), str(tmp_path / "missing" / "deeper" / "m.prom"))
    assert not (tmp_path / "missing").exists()


def test_an_empty_fleet_writes_an_empty_file_that_parses(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    write_metrics(str(tmp_path), str(path))
    assert path.read_text() == ""  # nothing known: no HELP or TYPE without samples
