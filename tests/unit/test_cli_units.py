"""Parts of the controller's CLI that need no playbook run: the fold of events into rows, the
record's redaction and exit codes, a scheduled run's lock and log, the old wrapper's arguments,
usage errors. The CLI's real runs are in tests/integration/test_cli.py."""

from __future__ import annotations

import datetime as dt
import fcntl
import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sqlite_fleet_cli import record as records  # noqa: E402
from sqlite_fleet_cli.events import Fold  # noqa: E402
from sqlite_fleet_cli.schedule import EX_TEMPFAIL, ScheduledLog  # noqa: E402


def event(kind: str, host: str, action: str, res: dict, **data) -> dict:
    return {"event": kind, "event_data": {"host": host, "task_action": action, "res": res, **data}}


GUARD = event("runner_on_ok", "localhost", "set_fact", {"ansible_facts": {"sqlite_fleet_run": {
    "command": "backup", "hosts": ["pi1", "pi2", "pi3"], "targets": ["pi1", "pi2"], "limit": "pi1,pi2",
    "runs_dir": "/srv/archive/runs"}}}, play_pattern="localhost:sqlite_hosts")


def test_fold_rows_outcomes_and_exit_code() -> None:
    fold = Fold("backup")
    fold.feed(GUARD)
    steps = fold.feed(event("runner_item_on_ok", "pi1", "sqlite_backup", {
        "item": {"name": "gym"}, "file": "gym_backup_20261206_031501.db", "size_bytes": 4096,
        "duration_seconds": 0.5, "verified": True,
        "manifest": {"created": "2026-12-06T03:15:01Z", "label": None, "sqlite_version": "3.40.1"},
        "retention": {"deleted": ["gym_backup_20261101_031501.db"], "decisions": [
            {"file": "gym_backup_20261206_031501.db", "keep": True, "verified": True}]}}))
    assert steps == [("pi1", "gym", "snapshot taken: gym_backup_20261206_031501.db, 4.0 KiB in 0.50 s"),
                     ("pi1", "gym", "pruned on the host: 1 deleted")]
    fold.feed(event("runner_item_on_failed", "pi2", "sqlite_backup", {
        "item": {"name": "gym"}, "msg": "database /srv/app/gym.db does not exist\nmore"}))
    fold.feed({"event": "playbook_on_stats", "event_data": {"processed": {"pi1": 1, "pi2": 1}, "failures": {"pi2": 1}}})
    fold.finish()
    assert fold.hosts["pi1"]["databases"]["gym"]["deleted_on_host"] == ["gym_backup_20261101_031501.db"]
    assert fold.hosts["pi1"]["databases"]["gym"]["newest_verified_on_host"] == "gym_backup_20261206_031501.db"
    assert fold.hosts["pi2"]["databases"]["gym"]["message"] == "database /srv/app/gym.db does not exist"
    assert fold.hosts["pi3"] == {"outcome": "skipped", "message": "not in --limit", "sqlite_version": None,
                                 "databases": {}}
    assert records.outcome_of(fold, 2) == "failed" and records.EXIT_CODES["failed"] == 1


def test_unreachable_and_guard_failures() -> None:
    fold = Fold("backup")
    fold.feed(GUARD)
    fold.feed(event("runner_on_unreachable", "pi2", "sqlite_backup", {"msg": "ssh: connect: refused"}))
    fold.feed({"event": "playbook_on_stats", "event_data": {"processed": {"pi1": 1}, "dark": {"pi2": 1}}})
    fold.finish()
    assert records.outcome_of(fold, 4) == "unreachable"

    refused = Fold("backup")
    refused.feed(GUARD)
    refused.feed(event("runner_on_failed", "pi1", "assert", {"msg": "No host to work on: ..."},
                       play_pattern="localhost:sqlite_hosts"))
    refused.finish()
    assert refused.message == "No host to work on: ..." and records.outcome_of(refused, 2) == "bad_input"
    assert refused.hosts["pi1"]["outcome"] == "skipped", "the guard's host is not a failed host"


def test_secret_extra_vars_are_redacted() -> None:
    argv = ["sqlite-fleet", "backup", "-e", "sqlite_backup_keep_last=3", "-e", "offsite_password=x",
            "--extra-vars={\"ping_url\": \"https://h/t\"}", "-eapi_token=y", "-e", "@vars.yml"]
    assert records.redact_argv(argv) == ["sqlite-fleet", "backup", "-e", "sqlite_backup_keep_last=3", "-e",
                                         "<redacted>", "--extra-vars=<redacted>", "-e<redacted>", "-e", "@vars.yml"]


def test_scheduled_log_is_locked_and_rotated(tmp_path: Path) -> None:
    log = tmp_path / "log" / "backup.log"
    log.parent.mkdir()
    log.write_text("y" * 2000 + "\n")
    with ScheduledLog(str(log), max_bytes=1000) as first:
        assert not first.busy
        first.write("a line")
        with ScheduledLog(str(log), max_bytes=1000) as second:
            assert second.busy
        assert not (tmp_path / "log" / "backup.log.2").exists(), "a skipped run rotated the running job's log"
    assert (tmp_path / "log" / "backup.log.1").read_text() == "y" * 2000 + "\n"
    text = log.read_text()
    assert "started (pid" in text and "Z a line" in text and "skipped: the previous run still holds" in text
    with open(str(log) + ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the runs above


def test_old_wrapper_lines_run_the_cli() -> None:
    loader = importlib.machinery.SourceFileLoader("wrapper", str(REPO / "bin" / "sqlite-fleet-run"))
    wrapper = importlib.util.module_from_spec(importlib.util.spec_from_loader("wrapper", loader))
    loader.exec_module(wrapper)
    assert wrapper.translate(["--log", "/x/backup.log", "backup.yml", "-i", "inv"]) == [
        "backup", "-i", "inv", "--log", "/x/backup.log"]
    assert wrapper.translate(["restore_drill.yml"]) == ["drill", "--log", str(REPO / "var/log/restore_drill.log")]
    assert EX_TEMPFAIL == 75


@pytest.mark.parametrize(("argv", "says"), [
    (["bogus"], "invalid choice: 'bogus'"),
    (["backup", "-i", "/no/such/inventory"], "inventory /no/such/inventory does not exist"),
    (["backup", "--keep-runs", "0"], "--keep-runs must be 1 or more"),
])
def test_usage_errors_are_one_line_exit_2(argv: list[str], says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "sqlite_fleet_cli", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_run_line_says_when_the_run_started_and_who_failed() -> None:
    from sqlite_fleet_cli.summary import run_line

    record = {"command": "backup", "check_mode": False, "outcome": "failed", "exit_code": 1, "duration_seconds": 7.14,
              "started": "2026-12-06T03:15:00Z", "message": None,
              "hosts": {"pi1": {"outcome": "ok"}, "pi2": {"outcome": "failed"}}}
    assert run_line(record) == "backup: FAILED; 1 failed (pi2), 1 ok in 7.1 s, started 2026-12-06 03:15:00 UTC (exit 1)"
    assert run_line({**record, "started": None}).endswith("in 7.1 s (exit 1)")


def test_a_failed_offsite_copy_fails_the_run_not_the_hosts() -> None:
    """The offsite role's report (a set_fact on the first host, run_once) and its verdict play, which
    under --limit runs on the first host, pi1: its row stays ok, the record's offsite section says why."""
    from sqlite_fleet_cli.summary import summary_lines

    def run(report: dict, verdict: bool, failures: dict) -> Fold:
        fold = Fold("backup")
        fold.feed(GUARD)
        fold.feed(event("runner_item_on_ok", "pi1", "sqlite_backup", {
            "item": {"name": "gym"}, "file": "gym_backup_20261206_031501.db", "size_bytes": 4096,
            "duration_seconds": 0.5, "verified": True, "manifest": {"created": "2026-12-06T03:15:01Z"}}))
        fold.feed(event("runner_on_ok", "pi1", "set_fact", {"ansible_facts": {"sqlite_offsite_report": report}},
                        play_pattern="sqlite_hosts"))
        if verdict:
            fold.feed(event("runner_on_failed", "pi1", "fail", {"msg": "offsite FAILED: " + str(report["message"])},
                            task="sqlite_offsite : Fail the run when the offsite copy failed",
                            play_pattern="localhost:sqlite_hosts"))
        fold.feed({"event": "playbook_on_stats", "event_data": {"processed": {"pi1": 1, "pi2": 1},
                                                                "failures": failures}})
        fold.finish()
        return fold

    failed = run({"outcome": "failed", "snapshot_id": "", "bytes_added": "", "files_sent": "", "backups": "",
                  "newest": {}, "message": "offsite upload failed: wrong password for the offsite repository /r"},
                 True, {"pi1": 1})
    assert failed.hosts["pi1"]["outcome"] == "ok" and failed.hosts["pi1"]["databases"]["gym"]["outcome"] == "ok"
    assert failed.hosts["pi1"]["databases"]["gym"]["offsite"] is None
    assert failed.offsite == {"outcome": "failed", "snapshot_id": None, "bytes_added": None, "files_sent": None,
                              "backups": None, "message": "offsite upload failed: wrong password for the offsite "
                                                          "repository /r"}
    assert failed.message is None and records.outcome_of(failed, 2) == "failed"
    record = records.build_record(failed, run_id="r", command="backup", playbook="backup.yml", argv=[], via="cli",
                                  inventory=None, limit="pi1", check_mode=False, started=_now(), ended=_now(),
                                  outcome=records.outcome_of(failed, 2))
    lines = summary_lines(record)
    assert "offsite FAILED: offsite upload failed: wrong password for the offsite repository /r" in lines
    assert lines[-1].startswith("backup: FAILED; 2 ok, 1 skipped") and lines[-1].endswith("(exit 1)")

    # another failure of pi1 that the events did not show (stats count 2, the verdict 1): pi1 failed
    assert run(failed.offsite, True, {"pi1": 2}).hosts["pi1"]["outcome"] == "failed"

    sent = run({"outcome": "ok", "snapshot_id": "4f2a9c1e77", "bytes_added": 61440, "files_sent": "6",
                "backups": 2, "message": None, "newest": {"pi1": {"gym": {
                    "file": "gym_backup_20261206_031501.db", "created": "2026-12-06T03:15:01Z"}}}}, False, {})
    assert records.outcome_of(sent, 0) == "ok" and sent.offsite["files_sent"] == 6
    assert sent.hosts["pi1"]["databases"]["gym"]["offsite"] == {
        "file": "gym_backup_20261206_031501.db", "created": "2026-12-06T03:15:01Z", "snapshot_id": "4f2a9c1e77"}
    from sqlite_fleet_cli.events import offsite_line
    assert offsite_line(sent.offsite) == "offsite: sent 6 files, 60.0 KiB added, snapshot 4f2a9c1e"


def _now():
    import datetime as dt

    return dt.datetime(2026, 12, 6, 3, 15, tzinfo=dt.timezone.utc)


def guard_naming(runs_dir: Path, keep_days: object) -> Fold:
    fold = Fold("backup")
    fold.feed(event("runner_on_ok", "localhost", "set_fact", {"ansible_facts": {"sqlite_fleet_run": {
        "command": "backup", "hosts": ["pi1"], "targets": ["pi1"], "runs_dir": str(runs_dir),
        "runs_keep_days": keep_days}}}, play_pattern="localhost:sqlite_hosts"))
    return fold


def test_run_records_older_than_the_days_kept_go_and_the_newest_stays(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o700)
    now = dt.datetime(2026, 12, 6, 3, 15, tzinfo=dt.timezone.utc)
    old, recent = "20251101T031500Z-0a0b0c.json", "20261130T031500Z-1a1b1c.json"
    for name in (old, recent, "20241231T000000Z-notes.json", "README.txt"):
        (runs / name).write_text("{}\n")
    record = {"run_id": "20261206T031500Z-2a2b2c", "check_mode": True}
    written = runs / "20261206T031500Z-2a2b2c.json"
    assert records.file_record(record, guard_naming(runs, "30"), now)[1] == ["record: %s" % written]
    assert (runs / old).is_file(), "a check-mode run removed a record"
    record = {"run_id": "20261206T031500Z-2a2b2c", "check_mode": False}
    path, lines = records.file_record(record, guard_naming(runs, "30"), now)
    assert path == str(runs / "20261206T031500Z-2a2b2c.json")
    assert lines == ["record: %s" % path, "removed 1 run record(s) older than 30 days from %s" % runs]
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        [recent, "20241231T000000Z-notes.json", "README.txt", "20261206T031500Z-2a2b2c.json"])
    # the newest record always stays, however old; 0 keeps them all
    assert records.prune_records(str(runs), 1, now + dt.timedelta(days=3650)) == sorted(
        [recent])
    assert records.prune_records(str(runs), 0, now + dt.timedelta(days=3650)) == []
    assert (runs / "20261206T031500Z-2a2b2c.json").is_file()


@pytest.mark.parametrize("value", ["-3", "ten", True, None, "1.5"])
def test_a_bad_number_of_days_keeps_every_record_and_says_so(tmp_path: Path, value: object) -> None:
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o700)
    (runs / "20200101T000000Z-0a0b0c.json").write_text("{}\n")
    path, lines = records.file_record({"run_id": "20261206T031500Z-2a2b2c"}, guard_naming(runs, value),
                                      dt.datetime(2026, 12, 6, tzinfo=dt.timezone.utc))
    assert lines[1] == ("run records are all kept: sqlite_archive_run_keep_days must be a whole number of days, "
                        "0 or more (got %r)" % (value,)) and len(lines) == 2
    assert (runs / "20200101T000000Z-0a0b0c.json").is_file() and Path(path).is_file()
