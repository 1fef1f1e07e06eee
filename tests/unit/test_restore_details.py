"""Restore details of issue 12 at the core: a time to restore to given as ISO 8601 as well as
``YYYYMMDD_HHMMSS`` (UTC when no zone is given), and a clear refusal of anything else."""

from __future__ import annotations

import datetime as dt

import pytest
from unit_helpers import core

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def backups() -> list[dict]:
    """Three verified backups, newest first (as list_backups orders them)."""
    times = [dt.datetime(2026, 12, 4, 22, 0, 0, 250000, tzinfo=UTC), dt.datetime(2026, 12, 4, 21, 51, 30, tzinfo=UTC),
             dt.datetime(2026, 12, 4, 20, 0, 0, tzinfo=UTC)]
    return [{"file": core.backup_filename("gym", t), "created": t, "verified": True, "label": None} for t in times]


@pytest.mark.parametrize("selector, taken", [
    ("20261204_215130", "215130"),
    ("2026-12-04T21:51:30Z", "215130"),
    ("2026-12-04T21:51:30z", "215130"),
    ("2026-12-04T21:51:30", "215130"),            # no zone: UTC
    ("2026-12-04 21:51:30", "215130"),
    ("2026-12-04T21:51", "200000"),               # 21:51:00 is before the 21:51:30 backup
    ("2026-12-04T22:51:30+01:00", "215130"),      # the same instant in UTC+1
    ("2026-12-04T16:51:30-05:00", "215130"),
    ("2026-12-04T23:00:00.5+01:00", "220000"),    # 22:00:00.5 UTC: the 22:00:00.25 backup, by its second
    ("2026-12-04T21:59:59Z", "215130"),
])
def test_a_time_is_accepted_as_a_stamp_or_iso_8601_and_means_utc_without_a_zone(selector: str, taken: str) -> None:
    chosen = core.choose_backup(backups(), selector, now=NOW)
    assert chosen["file"].endswith("_20261204_%s.db" % taken), chosen["file"]


@pytest.mark.parametrize("selector, message", [
    ("2026-12-04T19:00:00Z", "taken at or before 2026-12-04T19:00:00Z (2026-12-04 19:00:00 UTC)"),
    ("2026-12-04T20:30:00+01:00", "(2026-12-04 19:30:00 UTC)"),
    ("2026-13-04T21:51:30Z", "is not a valid time"),
    ("20261304_215130", "is not a valid time"),
    ("yesterday", "or ISO 8601 like 2026-12-04T21:51:30Z"),
    ("04.12.2026 21:51", "(UTC when no zone is given)"),
])
def test_what_is_no_time_or_too_early_is_refused_saying_which_zone_is_meant(selector: str, message: str) -> None:
    with pytest.raises(core.BackupError) as refused:
        core.choose_backup(backups(), selector, now=NOW)
    assert message in str(refused.value)
    assert refused.value.kind == core.KIND_BAD_INPUT


def test_a_yaml_datetime_turned_into_a_string_is_a_time() -> None:
    # restore.yml passes `restore_backup | string`: YAML reads an unquoted ISO time as a datetime
    selector = str(dt.datetime(2026, 12, 4, 21, 51, 30, tzinfo=UTC))
    assert core.parse_restore_time(selector) == dt.datetime(2026, 12, 4, 21, 51, 30, tzinfo=UTC)
    assert core.parse_restore_time("gym_backup_20261204_215130.db") is None


def test_the_previous_hops_checksum_is_checked_by_the_core_before_anything_changes(tmp_path) -> None:
    from unit_helpers import make_app_db
    db = make_app_db(tmp_path / "app.db", rows=5)
    taken = core.snapshot(str(db), str(tmp_path / "bk"), "app")
    before = db.read_bytes()
    with pytest.raises(core.BackupError) as refused:
        core.restore_backup(taken["backup"], str(db), safety_dir=str(tmp_path / "bk"), expected_sha256="0" * 64)
    assert refused.value.kind == core.KIND_CORRUPT and "first hop says 000000000000" in str(refused.value)
    assert db.read_bytes() == before and len(core.list_backups(str(tmp_path / "bk"))["backups"]) == 1
    done = core.restore_backup(taken["backup"], str(db), safety_dir=str(tmp_path / "bk"),
                               expected_sha256=taken["manifest"]["sha256"], source_host="pi3")
    assert done["changed"] and core.read_manifest(done["safety_backup"])["source"]["host"] == "pi3"


def test_a_database_the_restore_creates_and_its_side_files_are_private_under_umask_022(tmp_path) -> None:
    import os
    import stat

    from unit_helpers import make_app_db
    db = make_app_db(tmp_path / "app.db", rows=5, journal_mode="wal")
    taken = core.snapshot(str(db), str(tmp_path / "bk"), "app")
    target = tmp_path / "new" / "app.db"
    target.parent.mkdir()
    old = os.umask(0o022)
    try:
        core.restore_backup(taken["backup"], str(target), new_owner=(os.getuid(), os.getgid()))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in target.parent.iterdir()}
    assert modes["app.db"] == 0o600 and "app.db-shm" in modes, modes
    assert set(modes.values()) == {0o600}, modes
