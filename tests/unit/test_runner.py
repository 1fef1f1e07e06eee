"""The on-host runner, run as real processes.

``runner/sqlite_backup_runner.py`` runs from a temporary copy of the installed layout (the
core (the package ``sqlite_fleet/``) beside the runner and a ``config.json``), under every host Python
present: the system one and the Pi-like 3.9. (The controller's scheduled runs: test_cli_units.py
and tests/integration/test_cli.py.) No fleet, no mocks: real files,
real SQLite databases, real flocks held by this process or by other processes.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "module_utils"))
import sqlite_fleet as core  # noqa: E402
from core_parts import core_files, core_sha256_of, install_core  # noqa: E402
from prometheus_text import parse_prometheus  # noqa: E402
from unit_helpers import create_demo_db  # noqa: E402

RUNNER = REPO_ROOT / "runner" / "sqlite_backup_runner.py"
HOST_PYTHONS = [p for p in ("/usr/bin/python3", "/root/.pyenv/versions/3.9.18/bin/python3") if os.access(p, os.X_OK)]
UTC = dt.timezone.utc
ONE_MIB = 1 << 20
EXIT_CODES_TEXT = ("exit codes: 0 ok, 1 unexpected error, 2 bad input or config, 3 locked, 4 not enough space, "
                   "5 corrupt or unverified, 6 I/O error, 7 backup folder not mounted")


# --------------------------------------------------------------------------- prometheus




# --------------------------------------------------------------------------- the installed layout


@dataclass
class Layout:
    """A runner installed as provision.yml installs it, in a temporary folder."""

    python: str
    root: Path

    @property
    def opt(self) -> Path:
        return self.root / "opt" / "sqlite-backup"

    @property
    def config_path(self) -> Path:
        return self.opt / "config.json"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def prom(self) -> Path:
        return self.metrics / "sqlite_backup.prom"

    @property
    def log(self) -> Path:
        return self.root / "log" / "backup.log"

    def db(self, name: str = "gym") -> Path:
        return self.root / "app" / (name + ".db")

    def config(self, databases: Sequence[str | dict[str, Any]] = ("gym",), **overrides: Any) -> dict[str, Any]:
        """The config provision.yml writes; databases given by name live in app/<name>.db."""
        config: dict[str, Any] = {
            "host": "testpi",
            "backup_dir": str(self.backups),
            "databases": [{"name": db, "path": str(self.db(db))} if isinstance(db, str) else db
                          for db in databases],
            "method": "backup_api",
            "integrity": "quick",
            "checkpoint": "none",
            "busy_timeout_ms": 2000,
            "lock_timeout": 5,
            "owner": "",
            "group": "",
            "retention": {"keep_last": 3, "keep_days": 7, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 3,
                          "keep_label_days": {"pre-upgrade": 30}},
            "timezone": "UTC",
            "log_file": str(self.log),
            "metrics_dir": str(self.metrics),
            "require_mount": False,
            "mount_point": "",
            "healthchecks_url": "",
        }
        config.update(overrides)
        return config

    def write_config(self, config: dict[str, Any] | None = None, **overrides: Any) -> Path:
        self.config_path.write_text(json.dumps(config if config is not None else self.config(**overrides)))
        self.config_path.chmod(0o600)
        return self.config_path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The runner as cron runs it: its own Python, the installed path, no PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        return subprocess.run([self.python, str(self.opt / "sqlite_backup_runner.py"), *args],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=self.root)

    def run_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        proc = self.run("--json", *args)
        assert proc.stdout.lstrip().startswith("{"), (proc.stdout, proc.stderr)
        report = json.loads(proc.stdout)
        assert report["exit_code"] == proc.returncode and report["ok"] == (proc.returncode == 0), report
        return proc.returncode, report

    def backups_of(self, name: str = "gym") -> list[str]:
        """Finished backup files, oldest first."""
        return sorted(entry for entry in os.listdir(self.backups)
                      if core.parse_backup_filename(entry) and core.parse_backup_filename(entry)["name"] == name)

    def samples(self) -> dict[tuple[str, str, str], float]:
        return parse_prometheus(self.prom.read_text())


@pytest.fixture(params=HOST_PYTHONS, ids=lambda path: "py" + path.split("/versions/")[-1].split("/")[0]
                if "/versions/" in path else "system")
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    installed = Layout(request.param, tmp_path)
    installed.opt.mkdir(parents=True)
    install_core(installed.opt)
    shutil.copy2(RUNNER, installed.opt / "sqlite_backup_runner.py")
    installed.db().parent.mkdir()
    create_demo_db(installed.db(), members=30)
    installed.write_config()
    return installed


def make_old_backup(monkeypatch: pytest.MonkeyPatch, layout: Layout, days_ago: float, name: str = "gym") -> str:
    """A finished backup whose name and manifest say it was taken days_ago (core in-process)."""
    moment = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=days_ago)
    with monkeypatch.context() as patch:
        patch.setattr(core, "utcnow", lambda: moment)
        taken = core.snapshot(str(layout.db(name)), str(layout.backups), name, source_host="testpi")
    return taken["file"]


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


class Flocks:
    """Exclusive flocks held by this test process (as another run would hold them)."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def take(self, path: Path) -> None:
        handle = open(path, "a")  # noqa: SIM115 - held until release()
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.handles.append(handle)

    def release(self) -> None:
        while self.handles:
            self.handles.pop().close()


@pytest.fixture
def flocks() -> Iterator[Flocks]:
    held = Flocks()
    yield held
    held.release()


# --------------------------------------------------------------------------- help and outputs


def test_help_lists_commands_and_exit_codes(layout: Layout) -> None:
    shown = layout.run("--help")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert EXIT_CODES_TEXT in text
    for command in ("backup", "verify", "prune", "stats", "check-config", "--stats-only", "--json"):
        assert command in text
    assert layout.run("backup", "--help").returncode == 0
    assert "--keep-days" in layout.run("backup", "--help").stdout

    version = layout.run("--version")
    assert version.returncode == 0 and core.CORE_VERSION in version.stdout

    bare = layout.run()
    assert bare.returncode == 2 and "exit codes" in bare.stderr


def test_backup_verify_stats_and_check_config(layout: Layout) -> None:
    checked = layout.run("check-config")
    assert checked.returncode == 0, checked.stderr
    assert "check-config gym ok: %s -> %s" % (layout.db(), layout.backups) in checked.stdout

    taken = layout.run("backup")
    assert taken.returncode == 0, taken.stderr
    (backup,) = layout.backups_of()
    assert re.match(r"^backup gym ok: gym_backup_\d{8}_\d{6}\.db taken and verified "
                    r"\(\d+(\.\d)? [KM]iB in \d+\.\d s\)$", taken.stdout.strip()), taken.stdout
    assert backup in taken.stdout
    for suffix in ("", ".sha256", ".json"):
        assert stat.S_IMODE((layout.backups / (backup + suffix)).stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.backups.stat().st_mode) == 0o700
    manifest = json.loads((layout.backups / (backup + ".json")).read_text())
    assert manifest["verified"] is True and manifest["source"]["host"] == "testpi"
    assert manifest["runner"] == {"version": core.CORE_VERSION, "made_by": "on-host runner"}
    assert manifest["tool"]["core_sha256"] == core_sha256_of(core_files())
    assert manifest["tables"]["members"] == 30

    verified = layout.run("verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == "verify gym ok: %s ok" % backup

    stats = layout.run("stats")
    assert stats.returncode == 0, stats.stderr
    assert re.match(r"^gym: 1 backups, \d+ bytes, newest %s \(\d+ s old\), oldest %s; database \d+ bytes, "
                    r"WAL \d+ bytes, wal mode, 6 tables$" % (re.escape(backup), re.escape(backup)),
                    stats.stdout.strip()), stats.stdout
    stats_only = layout.run("--stats-only")
    assert stats_only.returncode == 0
    assert re.sub(r"\(\d+ s old\)", "", stats_only.stdout) == re.sub(r"\(\d+ s old\)", "", stats.stdout)

    lines = layout.log.read_text().splitlines()
    # the file named once, then what happened to it
    assert any(re.search(r"backup gym ok: %s taken and verified \(" % re.escape(backup), line) for line in lines)
    assert not any("%s backup %s" % (backup, backup) in line for line in lines), lines
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line) for line in lines)


def test_json_outputs(layout: Layout) -> None:
    code, report = layout.run_json("backup")
    assert code == 0
    (record,) = report["results"]
    assert record["ok"] is True and record["database"] == "gym" and record["command"] == "backup"
    assert record["file"] == layout.backups_of()[0]
    assert record["size_bytes"] == layout.db().stat().st_size
    assert record["duration_seconds"] >= 0 and record["seconds"] >= 0

    # --json and --config are also accepted after the command, as cron lines put them
    after = layout.run("backup", "--config", str(layout.config_path), "--json")
    assert after.returncode == 0 and json.loads(after.stdout)["results"][0]["ok"] is True
    assert len(layout.backups_of()) == 2

    code, report = layout.run_json("verify", "--all")
    assert code == 0 and [r["file"] for r in report["results"]] == layout.backups_of()[::-1]

    code, report = layout.run_json("stats")
    assert code == 0
    (record,) = report["results"]
    assert record["backups"]["count"] == 2 and record["backups"]["newest"] == layout.backups_of()[-1]
    assert record["facts"]["journal_mode"] == "wal" and record["facts"]["user_version"] == 3

    code, report = layout.run_json("--stats-only")
    assert code == 0 and report["results"][0]["backups"]["count"] == 2

    code, report = layout.run_json("prune", "--dry-run")
    assert code == 0 and report["results"][0]["deleted"] == [] and report["results"][0]["dry_run"] is True


def test_cleanup_keep_days_and_keep_count(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    old = [make_old_backup(monkeypatch, layout, days) for days in (10, 9, 8)]

    code, report = layout.run_json("backup", "--cleanup", "--keep-days", "7", "--keep-count", "2")
    assert code == 0, report
    (record,) = report["results"]
    # younger than 7 days: only the new one; the 2 newest: the new one and the 8-day-old one
    assert sorted(record["deleted"]) == sorted(old[:2])
    assert layout.backups_of() == sorted([old[2], record["file"]])
    for gone in old[:2]:
        assert not any(entry.startswith(gone) for entry in os.listdir(layout.backups))

    code, report = layout.run_json("prune", "--keep-count", "1", "--dry-run")
    assert code == 0 and report["results"][0]["deleted"] == [old[2]]
    assert old[2] in layout.backups_of(), "--dry-run deleted something"

    pruned = layout.run("prune", "--keep-count", "1")
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 1 of 2 backups of gym" in pruned.stdout
    assert layout.backups_of() == [record["file"]]


def test_cleanup_follows_the_config_and_per_database_overrides(layout: Layout,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    old = [make_old_backup(monkeypatch, layout, days) for days in (40, 20, 2)]
    # the host's policy keeps all three (keep_days 30 keeps two, keep_monthly 2 the 40-day-old one)...
    layout.write_config(retention={"keep_days": 30, "keep_monthly": 3})
    code, report = layout.run_json("backup", "--cleanup")
    assert code == 0 and report["results"][0]["deleted"] == []
    # ...but the inventory's per-item override (as the sqlite_backup role reads it) wins
    config = layout.config(retention={"keep_days": 30, "keep_monthly": 3})
    config["databases"][0].update(keep_days="1", keep_monthly=0)
    layout.write_config(config)
    assert layout.run("check-config").returncode == 0
    code, report = layout.run_json("prune")
    assert code == 0
    assert sorted(report["results"][0]["deleted"]) == sorted(old)


# --------------------------------------------------------------------------- exit codes


BAD_CONFIGS = {
    "missing file": (None, "does not exist (run provision.yml)"),
    "invalid JSON": ("{not json", "is not valid JSON"),
    "not an object": ("[]", "must hold a JSON object"),
    "no databases": ({"databases": []}, "lists no databases"),
    "database without path": ({"databases": [{"name": "gym"}]}, "needs a name and a path"),
    "relative database path": ({"databases": [{"name": "gym", "path": "app/gym.db"}]}, "must be an absolute path"),
    "relative backup_dir": ({"backup_dir": "backups"}, "backup_dir must be an absolute path"),
    "bad name": ({"databases": [{"name": "../gym", "path": "/srv/app/gym.db"}]}, "is not allowed"),
    "negative lock_timeout": ({"lock_timeout": -1}, "lock_timeout"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_with_a_clear_message(layout: Layout, case: str) -> None:
    content, message = BAD_CONFIGS[case]
    if content is None:
        layout.config_path.unlink()
    elif isinstance(content, str):
        layout.config_path.write_text(content)
    else:
        layout.write_config(**content)
    for command in (["backup"], ["check-config"], ["--stats-only"]):
        proc = layout.run(*command)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not layout.backups.exists(), "a refused config must change nothing"
    assert not layout.metrics.exists()


def test_retention_that_keeps_nothing_fails_check_config(layout: Layout) -> None:
    layout.write_config(retention={"keep_last": 0, "keep_days": 0})
    proc = layout.run("check-config")
    assert proc.returncode == 2 and "retention of gym" in proc.stderr and "keeps nothing" in proc.stderr


def test_bad_arguments_exit_2(layout: Layout) -> None:
    unknown = layout.run("backup", "--db", "nope")
    assert unknown.returncode == 2
    assert "no database named 'nope' in the config (known: gym)" in unknown.stderr
    assert not layout.backups.exists()
    assert layout.run("stats", "--db", "nope").returncode == 2
    assert layout.run("verify", "--db", "nope").returncode == 2

    for argv in (["backup", "--cleanup", "--keep-days", "-1"], ["prune", "--keep-count", "-3"],
                 ["prune", "--keep-days", "week"], ["backup", "--checkpoint", "SOMETIMES"], ["restore", "--backup"]):
        proc = layout.run(*argv)
        assert proc.returncode == 2, argv
        assert "usage: sqlite-backup" in proc.stderr and "Traceback" not in proc.stderr
    assert "must be 0 or more, got -1" in layout.run("backup", "--cleanup", "--keep-days", "-1").stderr
    assert not layout.backups.exists()


def test_missing_database_exits_2_before_the_folder_exists(layout: Layout) -> None:
    layout.db().unlink()
    proc = layout.run("backup")
    assert proc.returncode == 2, proc.stderr
    assert "database %s does not exist" % layout.db() in proc.stderr
    assert "unexpected" not in proc.stderr
    samples = layout.samples()
    assert samples[("sqlite_backup_last_run_success", "testpi", "gym")] == 0
    assert ("sqlite_backup_last_success_timestamp_seconds", "testpi", "gym") not in samples
    stats = layout.run("stats")
    assert stats.returncode == 2 and "FAILED: database %s does not exist" % layout.db() in stats.stderr


def test_locked_folder_exits_3_after_lock_timeout(layout: Layout, flocks: Flocks) -> None:
    layout.backups.mkdir(mode=0o700)
    flocks.take(layout.backups / core.LOCK_FILE)
    layout.write_config(lock_timeout=1)
    started = time.monotonic()
    proc = layout.run("backup")
    waited = time.monotonic() - started
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "is locked by another run for more than 1 s" in proc.stderr
    assert waited < 30
    assert layout.backups_of() == []
    assert layout.samples()[("sqlite_backup_last_run_success", "testpi", "gym")] == 0
    assert layout.run("prune").returncode == 3


def test_lock_timeout_defaults_to_a_wait(layout: Layout, flocks: Flocks) -> None:
    """Without the key the runner waits (the core's 600 s): still running after a while."""
    config = layout.config()
    del config["lock_timeout"]
    layout.write_config(config)
    layout.backups.mkdir(mode=0o700)
    flocks.take(layout.backups / core.LOCK_FILE)
    proc = subprocess.Popen([layout.python, str(layout.opt / "sqlite_backup_runner.py"), "backup"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
    finally:
        proc.kill()
        proc.wait()


def test_not_a_mount_point_exits_7(layout: Layout) -> None:
    layout.write_config(require_mount=True)
    proc = layout.run("backup")
    assert proc.returncode == 7, proc.stderr
    assert "%s is not a mount point" % layout.backups in proc.stderr
    assert not layout.backups.exists(), "nothing may be written when the disk is missing"
    layout.write_config(require_mount=True, mount_point="/")
    assert layout.run("backup").returncode == 0


def test_corrupt_backup_fails_verify_with_5(layout: Layout) -> None:
    assert layout.run("backup").returncode == 0
    time.sleep(1.05)  # a second backup in a later second: the newest is unambiguous
    assert layout.run("backup").returncode == 0
    older, newest = layout.backups_of()
    flip_byte(layout.backups / newest, 3 * 4096 + 100)

    proc = layout.run("verify")
    assert proc.returncode == 5
    assert "verify gym FAILED: %s" % newest in proc.stderr
    assert layout.samples()[("sqlite_backup_verified", "testpi", "gym")] == 0

    # a file named like a backup without a manifest is reported by --all, and the
    # verified metric still speaks of the newest backup (corrupt), not of the older one
    (layout.backups / "gym_backup_20200101_000000.db").write_bytes(b"SQLite format 3\x00" + bytes(4080))
    code, report = layout.run_json("verify", "--all")
    assert code == 5
    outcome = {r["file"]: r["ok"] for r in report["results"]}
    assert outcome == {newest: False, older: True, "gym_backup_20200101_000000.db": False}
    assert layout.samples()[("sqlite_backup_verified", "testpi", "gym")] == 0

    assert layout.run("verify", "--db", "gym", "--all").returncode == 5
    (layout.backups / "gym_backup_20200101_000000.db").unlink()
    flip_byte(layout.backups / newest, 3 * 4096 + 100)  # flipped back
    assert layout.run("verify", "--all").returncode == 0
    assert layout.samples()[("sqlite_backup_verified", "testpi", "gym")] == 1


def test_verify_without_backups_exits_2(layout: Layout) -> None:
    proc = layout.run("verify")
    assert proc.returncode == 2 and "no backup of gym in %s" % layout.backups in proc.stderr


# --------------------------------------------------------------------------- metrics and log


def test_metrics_merge_databases_and_drop_removed_ones(layout: Layout) -> None:
    create_demo_db(layout.db("shop"), members=5, seed=2)
    layout.write_config(databases=("gym", "shop"))
    assert layout.run("backup", "--db", "gym").returncode == 0
    assert layout.run("backup", "--db", "shop").returncode == 0

    assert stat.S_IMODE(layout.prom.stat().st_mode) == 0o644
    samples = layout.samples()
    for db in ("gym", "shop"):
        size = json.loads((layout.backups / (layout.backups_of(db)[0] + ".json")).read_text())["size_bytes"]
        assert samples[("sqlite_backup_last_size_bytes", "testpi", db)] == size
        assert samples[("sqlite_backup_verified", "testpi", db)] == 1
        assert samples[("sqlite_backup_last_run_success", "testpi", db)] == 1
        assert samples[("sqlite_backup_count", "testpi", db)] == 1
        assert abs(samples[("sqlite_backup_last_success_timestamp_seconds", "testpi", db)] - time.time()) < 120
        assert 0 <= samples[("sqlite_backup_last_duration_seconds", "testpi", db)] < 60
    assert os.listdir(layout.metrics) == ["sqlite_backup.prom"], "temporary files left beside the metrics"

    layout.write_config(databases=("gym",))
    assert layout.run("backup").returncode == 0
    samples = layout.samples()
    assert {db for _, _, db in samples} == {"gym"}
    assert samples[("sqlite_backup_count", "testpi", "gym")] == 2


def test_metrics_update_waits_for_a_concurrent_one(layout: Layout, flocks: Flocks) -> None:
    """Two cron lines (one per database) fire in the same minute: their read-merge-write of
    the metrics is serialised, so neither overwrites the other's figures."""
    create_demo_db(layout.db("shop"), members=5, seed=2)
    layout.write_config(databases=("gym", "shop"))
    assert layout.run("backup", "--db", "shop").returncode == 0
    flocks.take(layout.backups / ".sqlite-backup-metrics.json.lock")
    proc = subprocess.Popen([layout.python, str(layout.opt / "sqlite_backup_runner.py"), "backup", "--db", "gym"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(entry.endswith(".db.json") for entry in os.listdir(layout.backups) if "gym" in entry):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        # the backup is committed; its metrics wait for the lock
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        assert {db for _, _, db in layout.samples()} == {"shop"}
    finally:
        flocks.release()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert {db for _, _, db in layout.samples()} == {"gym", "shop"}


def test_metrics_failure_never_fails_the_backup(layout: Layout) -> None:
    layout.metrics.write_text("a file where the folder should be")
    proc = layout.run("backup")
    assert proc.returncode == 0, proc.stderr
    assert "metrics not updated" in proc.stderr
    assert len(layout.backups_of()) == 1


def test_metrics_disabled_writes_no_file(layout: Layout) -> None:
    layout.write_config(metrics_dir="")
    assert layout.run("backup").returncode == 0
    assert not layout.metrics.exists()


def test_log_is_size_capped(layout: Layout) -> None:
    layout.log.parent.mkdir()
    layout.log.write_bytes(b"x" * (ONE_MIB + 1))
    for index in (1, 2, 3):
        Path("%s.%d" % (layout.log, index)).write_text("old %d\n" % index)

    assert layout.run("check-config").returncode == 0

    rotated = Path(str(layout.log) + ".1")
    assert rotated.stat().st_size == ONE_MIB + 1
    assert Path(str(layout.log) + ".2").read_text() == "old 1\n"
    assert Path(str(layout.log) + ".3").read_text() == "old 2\n"
    assert not Path(str(layout.log) + ".4").exists()
    assert layout.log.stat().st_size < 1000 and "check-config gym ok" in layout.log.read_text()

    assert layout.run("check-config").returncode == 0  # below the cap: appended, not rotated
    assert layout.log.read_text().count("check-config gym ok") == 2
    assert rotated.stat().st_size == ONE_MIB + 1


# --------------------------------------------------------------------------- restore, backup --dry-run


def test_backup_dry_run_checks_and_writes_nothing(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    old = [make_old_backup(monkeypatch, layout, days) for days in (10, 9)]
    before = sorted(os.listdir(layout.backups))
    log_before = layout.log.read_text() if layout.log.exists() else ""
    code, report = layout.run_json("backup", "--dry-run", "--cleanup", "--keep-days", "7", "--keep-count", "1")
    assert code == 0, report
    (record,) = report["results"]
    assert record["dry_run"] is True and record["msg"].startswith("would snapshot %s" % layout.db())
    assert record["deleted"] == old[:1], record  # the prune as it stands now: the 9-day-old one kept
    assert sorted(os.listdir(layout.backups)) == before, "a dry run wrote or deleted something"
    assert not layout.prom.exists(), "a dry run wrote metrics"
    assert "would snapshot" in layout.log.read_text()[len(log_before):]
    # a missing database is found by the dry run as by the real one
    layout.write_config(databases=[{"name": "gym", "path": str(layout.root / "nowhere.db")}])
    missing = layout.run("backup", "--dry-run")
    assert missing.returncode == 2 and "nowhere.db" in missing.stderr


def members_in(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM members").fetchone()[0]
    finally:
        conn.close()


def test_restore_from_the_hosts_own_backups(layout: Layout) -> None:
    db = layout.db()
    assert layout.run("backup").returncode == 0
    (first,) = layout.backups_of()
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM members")
    conn.commit()
    conn.close()
    os.chmod(db, 0o640)

    code, planned = layout.run_json("restore", "--dry-run")
    assert code == 0, planned
    assert planned["results"][0]["msg"].startswith("would restore %s onto %s" % (first, db))
    assert layout.backups_of() == [first]
    assert members_in(db) == 0

    taken = core.parse_backup_filename(first)["created"]
    code, report = layout.run_json("restore", "--backup", taken.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert code == 0, report
    (record,) = report["results"]
    assert record["file"] == first and record["target"] == str(db)
    assert members_in(db) == 30
    assert stat.S_IMODE(db.stat().st_mode) == 0o640, "the database keeps its mode"
    safety = [f for f in layout.backups_of() if f != first]
    assert len(safety) == 1 and record["safety_backup"].endswith(safety[0])
    manifest = json.loads((layout.backups / (safety[0] + ".json")).read_text())
    assert manifest["label"] == "pre-restore" and manifest["source"]["host"] == "testpi"
    assert "restore gym ok: restored %s onto %s" % (first, db) in layout.log.read_text()

    # refused while the app holds the database: nothing changes, exit 3
    app = sqlite3.connect(db)
    app.execute("SELECT count(*) FROM members").fetchone()
    try:
        held = layout.run("restore", "--backup", first)
    finally:
        app.close()
    assert held.returncode == 3 and "it is open in" in held.stderr, held.stderr
    assert len(layout.backups_of()) == 2

    # bad selections: a clear line, exit 2
    for selector, message in (("yesterday", "ISO 8601"), ("2000-01-01T00:00:00", "no verified backup was taken")):
        bad = layout.run("restore", "--backup", selector)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


def test_restore_creates_a_missing_database_private(layout: Layout) -> None:
    assert layout.run("backup").returncode == 0
    db = layout.db()
    for path in (db, Path(str(db) + "-wal"), Path(str(db) + "-shm")):
        path.unlink(missing_ok=True)
    code, report = layout.run_json("restore")
    assert code == 0, report
    assert report["results"][0]["safety_backup"] is None
    for side in ("", "-wal", "-shm"):
        if os.path.exists(str(db) + side):
            assert stat.S_IMODE(os.stat(str(db) + side).st_mode) == 0o600, side
    assert members_in(db) == 30


def test_cleanup_keeps_hourly_and_yearly_backups_of_the_config(layout: Layout,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # a sub-daily schedule: backups 2.5, 5 and 7.5 hours ago; keep the newest of each of the last 3 hours
    # that have one (the new backup's hour and the two before with a backup)
    old = [make_old_backup(monkeypatch, layout, hours / 24) for hours in (7.5, 5, 2.5)]
    yearly = make_old_backup(monkeypatch, layout, 400)  # last year's: kept by keep_yearly
    layout.write_config(retention={"keep_last": 1, "keep_hourly": 3, "keep_yearly": 2, "keep_label_days": {}},
                        timezone="UTC")
    assert layout.run("check-config").returncode == 0
    code, report = layout.run_json("backup", "--cleanup")
    assert code == 0, report
    (record,) = report["results"]
    assert record["deleted"] == [old[0]], record
    assert layout.backups_of() == sorted([yearly, old[1], old[2], record["file"]])
    # a bad value is refused before anything is taken
    layout.write_config(retention={"keep_hourly": -1, "keep_last": 1})
    refused = layout.run("backup", "--cleanup")
    assert refused.returncode == 2 and "keep_hourly must be a non-negative integer" in refused.stderr
    assert len(layout.backups_of()) == 4


# --------------------------------------------------------------------------- task (the controller's one-task backup)


def task_request(layout: Layout, check_mode: bool = False, **overrides: Any) -> str:
    """The sqlite_backup module's options with their defaults, as the action plugin sends them."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    from sqlite_fleet.backup_task import backup_options

    raw = dict(path=str(layout.db()), name="gym", backup_dir=str(layout.backups), source_host="testpi",
               retention=dict(keep_last=2), export=dict(have=[]), **overrides)
    checked = ArgumentSpecValidator(backup_options()).validate(raw)
    assert not checked.error_messages, checked.error_messages
    return json.dumps(dict(params=checked.validated_parameters, check_mode=check_mode, diff=True))


def run_task(layout: Layout, expect_core: str, request: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([layout.python, str(layout.opt / "sqlite_backup_runner.py"), "task", "--expect-core",
                           expect_core], input=request, capture_output=True, text=True, timeout=120, env=env)
    return proc.returncode, json.loads(proc.stdout)


def test_task_runs_the_modules_function_with_its_options_from_stdin(layout: Layout) -> None:
    ours = core_sha256_of((layout.opt / "sqlite_fleet").glob("*.py"))
    assert ours == core.core_sha256()
    code, reply = run_task(layout, ours, task_request(layout))
    assert code == 0 and reply["failure"] is None, reply
    result = reply["result"]
    assert result["verified"] is True and result["changed"] is True
    assert layout.backups_of() == [result["file"]]
    assert [t["file"] for t in result["transfers"]] == [result["file"]] and result["staging_dir"]
    assert result["diff"]["after"] == result["file"] + "\n"
    assert json.loads((layout.backups / (result["file"] + ".json")).read_text())["tool"]["core_sha256"] == ours
    assert not layout.log.exists()  # no config read, no log line: the controller reports it


def test_task_check_mode_claims_and_writes_nothing(layout: Layout) -> None:
    code, reply = run_task(layout, core.core_sha256(), task_request(layout, check_mode=True))
    assert code == 0 and reply["failure"] is None, reply
    assert reply["result"]["changed"] is True and "would" in reply["result"]["msg"]
    assert not layout.backups.exists() or layout.backups_of() == []
    assert reply["result"]["staging_dir"] is None


def test_task_fails_as_the_module_does_on_bad_input(layout: Layout) -> None:
    code, reply = run_task(layout, core.core_sha256(), task_request(layout, lock_timeout=-1))
    assert code == 0 and reply["failure"]["kind"] == "bad_input", reply
    assert reply["failure"]["msg"].endswith("nothing was backed up") and reply["result"] == {"changed": False}
    assert not layout.backups.exists()


def test_task_refuses_another_core_and_does_nothing(layout: Layout) -> None:
    code, reply = run_task(layout, "0" * 64, task_request(layout))
    assert code == 8 and reply["refused"] == "outdated" and reply["core_sha256"] == core.core_sha256(), reply
    assert not layout.backups.exists()
    code, reply = run_task(layout, core.core_sha256(), "not json")
    assert code == 8 and reply["refused"] == "bad request", reply
    result, why = core.read_task_reply(code, json.dumps(reply))
    assert result is None and "refused" in why
    assert core.read_task_reply(2, "")[0] is None  # no runner there: python cannot open the file
