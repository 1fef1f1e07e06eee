"""SQLite facts and checkpoints on real databases."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import sqlite_fleet as core
from unit_helpers import main_file_only_count, make_app_db, wal_holding_connection

# --------------------------------------------------------------------------- facts


def test_database_facts_on_a_wal_db(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10, user_version=3)
    holder = wal_holding_connection(db, rows=7)
    try:
        facts = core.database_facts(str(db))
        assert facts["journal_mode"] == "wal"
        assert facts["wal_bytes"] == os.path.getsize(str(db) + "-wal") > 0
        assert facts["tables"] == {"app_counter": 1, "app_events": 17}
        assert facts["table_count"] == 2
        assert facts["user_version"] == 3
        assert facts["page_size"] == 4096 and facts["page_count"] >= 3
        assert facts["size_bytes"] == db.stat().st_size
        assert facts["owner_uid"] == db.stat().st_uid
        assert facts["sqlite_version"] == sqlite3.sqlite_version
        assert facts["wal_reset_bug"] == core.has_wal_reset_bug()
        assert core.database_facts(str(db), count_rows=False)["tables"] == {"app_counter": None, "app_events": None}
    finally:
        holder.close()


def test_database_facts_on_a_closed_wal_db_creates_no_side_files(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    assert sorted(os.listdir(tmp_path)) == ["app.db"]
    facts = core.database_facts(str(db))
    assert facts["journal_mode"] == "wal" and facts["wal_bytes"] == 0
    assert facts["tables"] == {"app_counter": 1, "app_events": 10}
    assert sorted(os.listdir(tmp_path)) == ["app.db"]


def test_database_facts_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(core.BackupError) as info:
        core.database_facts(str(tmp_path / "nope.db"))
    assert info.value.kind == core.KIND_BAD_INPUT


def test_checkpoint_on_a_wal_db(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    holder = wal_holding_connection(db, rows=20)
    try:
        dry = core.checkpoint(str(db), "PASSIVE", check_mode=True)
        assert dry["changed"] is True and dry["checkpointed"] is None
        assert main_file_only_count(db, tmp_path / "s1") == 10  # check mode did nothing
        result = core.checkpoint(str(db), "passive")
        assert result["journal_mode"] == "wal" and result["skipped"] is False
        assert result["busy"] == 0 and result["log"] == result["checkpointed"] > 0
        assert result["changed"] is True
        assert result["warning"] == core.wal_reset_warning()
        assert main_file_only_count(db, tmp_path / "s2") == 30  # now in the main file
        truncate = core.checkpoint(str(db), "TRUNCATE")
        assert truncate["busy"] == 0
        assert os.path.getsize(str(db) + "-wal") == 0
    finally:
        holder.close()


def test_checkpoint_on_a_rollback_journal_db(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", journal_mode="delete", rows=10)
    result = core.checkpoint(str(db), "FULL")
    assert result["skipped"] is True and result["changed"] is False and result["journal_mode"] == "delete"
    assert sorted(os.listdir(tmp_path)) == ["app.db"]
    with pytest.raises(core.BackupError) as info:
        core.checkpoint(str(db), "EVERYTHING")
    assert info.value.kind == core.KIND_BAD_INPUT


@pytest.mark.parametrize(("version", "buggy"), [
    ("3.7.0", True), ("3.31.1", True), ("3.40.1", True), ("3.44.5", True), ("3.44.6", False),
    ("3.45.0", True), ("3.50.6", True), ("3.50.7", False), ("3.51.0", True), ("3.51.2", True),
    ("3.51.3", False), ("3.52.0", False), ("3.6.23", False),
])
def test_has_wal_reset_bug(version: str, buggy: bool) -> None:
    assert core.has_wal_reset_bug(version) is buggy
    assert (core.wal_reset_warning(version) is not None) is buggy
