"""The core's names and input checks on real SQLite files: backup file names, names and labels, bad
input to a snapshot.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlite_fleet as core
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_helpers import UTC, make_app_db

# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("seq", [0, 1, 2, 17])
@pytest.mark.parametrize("name", ["gym", "gym-controller", "app.v2", "my_app_backup", "A1"])
def test_backup_filename_round_trip(name: str, seq: int) -> None:
    created = dt.datetime(2026, 11, 22, 3, 4, 5, 678901, tzinfo=UTC)
    filename = core.backup_filename(name, created, seq)
    assert filename == "%s_backup_20261122_030405%s.db" % (name, "_%d" % seq if seq else "")
    parsed = core.parse_backup_filename(filename)
    assert parsed == {"name": name, "created": created.replace(microsecond=0), "seq": seq}


def test_backup_filename_is_utc_whatever_the_zone() -> None:
    berlin = dt.timezone(dt.timedelta(hours=2))
    created = dt.datetime(2026, 7, 1, 1, 30, 0, tzinfo=berlin)  # 2026-06-30 23:30 UTC
    filename = core.backup_filename("gym", created)
    assert filename == "gym_backup_20260630_233000.db"
    assert core.parse_backup_filename(filename)["created"] == created


@settings(max_examples=200, deadline=None)
@given(
    name=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,40}\Z").filter(lambda n: ".." not in n),
    seconds=st.integers(0, 4_000_000_000),
    seq=st.integers(0, 999_999),
)
def test_backup_filename_round_trip_property(name: str, seconds: int, seq: int) -> None:
    created = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=seconds)
    filename = core.backup_filename(core.validate_name(name), created, seq)
    assert core.parse_backup_filename(filename) == {"name": name, "created": created, "seq": seq}


@pytest.mark.parametrize("filename", [
    "gym_backup_20261122_030405.db.json",
    "gym_backup_20261122_030405.db.sha256",
    "gym_backup_20261122_0304.db",
    "gym_backup_20261340_030405.db",  # month 13
    "gym_backup_20261122_250000.db",  # hour 25
    "gym_backup_20261122_030405_0.db",  # suffixes start at 1
    "gym_backup_20261122_030405_x.db",
    "_backup_20261122_030405.db",
    ".gym_backup_20261122_030405.db",
    "gym_20261122_030405.db",
    "gym.db",
    "gym_backup_20261122_030405.db\n",  # "$" alone would accept a trailing newline
])
def test_parse_backup_filename_refuses_other_names(filename: str) -> None:
    assert core.parse_backup_filename(filename) is None


@pytest.mark.parametrize("bad", [
    "", "a/b", "/gym", "gym/", "..", "a..b", "../gym", ".gym", "-gym", "_gym", "gym db", "gym\n",
    "gym;rm", "gym$", "gym*", "gÿm", "gym\x00", "a" * 101, None, 7, b"gym",
])
def test_validate_name_refuses(bad: object) -> None:
    with pytest.raises(core.BackupError) as info:
        core.validate_name(bad)
    assert info.value.kind == core.KIND_BAD_INPUT


@pytest.mark.parametrize("good", ["gym", "gym-controller", "app.v2", "a_b", "A" * 100, "0"])
def test_validate_name_accepts(good: str) -> None:
    assert core.validate_name(good) == good


@pytest.mark.parametrize("bad", ["a/b", "..", "../x", ".x", "pre upgrade", "x" * 65, "ü", "a;b", "pre\n", 3])
def test_validate_label_refuses(bad: object) -> None:
    with pytest.raises(core.BackupError) as info:
        core.validate_label(bad)
    assert info.value.kind == core.KIND_BAD_INPUT


def test_validate_label_accepts_and_empty_means_none() -> None:
    assert core.validate_label("pre-upgrade") == "pre-upgrade"
    assert core.validate_label("") is None
    assert core.validate_label(None) is None


@pytest.mark.parametrize("kwargs", [
    {"name": "../evil"}, {"name": "a/b"}, {"name": ""}, {"label": "../x"}, {"label": "a b"},
    {"method": "cp"}, {"integrity": "none"}, {"busy_timeout_ms": -1},
])
def test_snapshot_bad_input_changes_nothing(tmp_path: Path, backup_dir: Path, kwargs: dict) -> None:
    db = make_app_db(tmp_path / "app.db", rows=3)
    args = {"name": "app", **kwargs}
    with pytest.raises(core.BackupError) as info:
        core.snapshot(str(db), str(backup_dir), **args)
    assert info.value.kind == core.KIND_BAD_INPUT
    assert not backup_dir.exists()


def test_snapshot_refuses_what_is_not_a_database(tmp_path: Path, backup_dir: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "text.db").write_text("hello, not a database\n" * 10)
    (tmp_path / "folder.db").mkdir()
    for target, why in [(tmp_path / "missing.db", "does not exist"), (tmp_path / "empty.db", "empty"),
                        (tmp_path / "text.db", "not an SQLite"), (tmp_path / "folder.db", "directory")]:
        with pytest.raises(core.BackupError, match=why) as info:
            core.snapshot(str(target), str(backup_dir), "app")
        assert info.value.kind == core.KIND_BAD_INPUT
    with pytest.raises(core.BackupError, match="absolute"):
        core.snapshot("app.db", str(backup_dir), "app")
    assert not backup_dir.exists()


def test_snapshot_check_mode_writes_nothing(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=3)
    result = core.snapshot(str(db), str(backup_dir), "app", check_mode=True)
    assert result["changed"] is True
    assert core.parse_backup_filename(result["file"])["name"] == "app"
    assert not backup_dir.exists()
