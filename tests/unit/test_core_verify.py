"""Verifying finished backups on real SQLite files: every kind of damage is caught."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sqlite_fleet as core
from unit_helpers import make_app_db

# --------------------------------------------------------------------------- verify


@pytest.fixture
def good_backup(tmp_path: Path, backup_dir: Path) -> Path:
    db = tmp_path / "app.db"
    make_app_db(db, rows=300, payload_bytes=200)
    backup = Path(core.snapshot(str(db), str(backup_dir), "app")["backup"])
    assert core.verify_backup(str(backup))["ok"]
    return backup


def failed_checks(backup: Path) -> dict[str, str]:
    result = core.verify_backup(str(backup))
    assert result["ok"] is False
    assert result["problems"]
    return {k: v for k, v in result["checks"].items() if v != "ok"}


def test_verify_catches_a_flipped_byte(good_backup: Path) -> None:
    data = bytearray(good_backup.read_bytes())
    data[len(data) // 2] ^= 0x01
    good_backup.write_bytes(bytes(data))
    failed = failed_checks(good_backup)
    assert "checksum" in failed and "checksum file says" in failed["checksum"] and "manifest says" in failed["checksum"]


def test_verify_catches_a_truncated_file(good_backup: Path) -> None:
    size = good_backup.stat().st_size
    with open(good_backup, "r+b") as handle:
        handle.truncate(size - 4096)
    failed = failed_checks(good_backup)
    assert {"checksum", "size"} <= set(failed)


def test_verify_catches_a_missing_manifest(good_backup: Path) -> None:
    Path(str(good_backup) + ".json").unlink()
    failed = failed_checks(good_backup)
    assert "no manifest" in failed["manifest"]


def test_verify_catches_edited_row_counts(good_backup: Path) -> None:
    manifest_path = Path(str(good_backup) + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["app_events"] += 1
    manifest_path.write_text(json.dumps(manifest))
    failed = failed_checks(good_backup)
    assert set(failed) == {"row_counts"}
    assert "app_events has 300 rows, manifest says 301" in failed["row_counts"]


def test_verify_catches_an_edited_manifest_checksum(good_backup: Path) -> None:
    manifest_path = Path(str(good_backup) + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    failed = failed_checks(good_backup)
    assert set(failed) == {"checksum"} and "manifest says 000000000000" in failed["checksum"]


def test_verify_catches_a_missing_or_wrong_checksum_file(good_backup: Path) -> None:
    sidecar = Path(str(good_backup) + ".sha256")
    sidecar.unlink()
    assert set(failed_checks(good_backup)) == {"checksum_file"}
    sidecar.write_text("%s  %s\n" % ("1" * 64, good_backup.name))
    assert set(failed_checks(good_backup)) == {"checksum"}
    sidecar.write_text("%s  %s\n" % (core.sha256_file(str(good_backup)), "other_backup_20250101_000000.db"))
    assert set(failed_checks(good_backup)) == {"checksum_file"}


def test_verify_catches_a_wrong_first_hop_checksum(good_backup: Path) -> None:
    result = core.verify_backup(str(good_backup), expected_sha256="2" * 64)
    assert result["ok"] is False and "first hop says 222222222222" in result["checks"]["checksum"]


def test_sha256sum_c_accepts_the_sidecar(good_backup: Path) -> None:
    sidecar = good_backup.name + ".sha256"
    ok = subprocess.run(["sha256sum", "-c", sidecar], cwd=good_backup.parent, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "%s: OK" % good_backup.name
    data = bytearray(good_backup.read_bytes())
    data[200] ^= 0xFF
    good_backup.write_bytes(bytes(data))
    bad = subprocess.run(["sha256sum", "-c", sidecar], cwd=good_backup.parent, capture_output=True, text=True)
    assert bad.returncode != 0 and "FAILED" in bad.stdout
