"""The core's pieces that several faces share: the one commit function, the export options, the
probe rule, log rotation and the archive layout the drills walk. Real files, a real SQLite database."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "module_utils"))
import sqlite_fleet as core  # noqa: E402
from unit_helpers import make_app_db  # noqa: E402

FINAL = "gym_backup_20261122_030000.db"


def private_copy(folder: Path, rows: int = 3) -> tuple[Path, str]:
    tmp = folder / (core.TMP_PREFIX + "test.db")
    make_app_db(tmp, journal_mode="delete", rows=rows)
    return tmp, hashlib.sha256(tmp.read_bytes()).hexdigest()


def test_commit_file_writes_the_backup_its_checksum_and_its_manifest_and_leaves_no_marker(tmp_path):
    tmp, digest = private_copy(tmp_path)
    assert core.commit_file(str(tmp), str(tmp_path), FINAL, digest, {"file": FINAL, "sha256": digest}, None)
    final = tmp_path / FINAL
    assert hashlib.sha256(final.read_bytes()).hexdigest() == digest
    assert core.read_sha256_sidecar(str(final)) == digest
    assert json.loads((tmp_path / (FINAL + ".json")).read_text()) == {"file": FINAL, "sha256": digest}
    assert (tmp_path / (FINAL + ".json")).read_bytes() == core.manifest_bytes({"sha256": digest, "file": FINAL})
    assert not (tmp_path / core.pending_marker(FINAL)).exists()
    assert tmp.exists(), "the temporary name is the caller's to remove"
    for sidecar in (".sha256", ".json"):
        assert os.stat(str(final) + sidecar).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("taken", [FINAL, core.pending_marker(FINAL)])
def test_commit_file_never_overwrites_a_name_or_a_commit_under_way(tmp_path, taken):
    tmp, digest = private_copy(tmp_path)
    (tmp_path / taken).write_bytes(b"someone else's")
    before = sorted(os.listdir(tmp_path))
    assert core.commit_file(str(tmp), str(tmp_path), FINAL, digest, {"file": FINAL}, None) is False
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / taken).read_bytes() == b"someone else's"


def test_snapshot_and_archive_import_commit_through_the_same_function(tmp_path, monkeypatch):
    db = make_app_db(tmp_path / "app.db", rows=5)
    host_dir, archive_dir = tmp_path / "host", tmp_path / "archive"
    host_dir.mkdir(mode=0o700)
    archive_dir.mkdir(mode=0o700)
    calls = []
    real = core.commit_file
    monkeypatch.setattr(core, "commit_file", lambda *args: calls.append(args[2]) or real(*args))
    snap = core.snapshot(str(db), str(host_dir), "gym")
    incoming = archive_dir / (core.INCOMING_PREFIX + snap["file"])
    incoming.write_bytes(Path(snap["backup"]).read_bytes())
    imported = core.import_backup(str(incoming), snap["manifest"], str(archive_dir), source_host="pi1")
    assert calls == [snap["file"], snap["file"]]
    assert imported["verified"] is True and imported["changed"] is True
    assert core.list_backups(str(archive_dir))["backups"][0]["file"] == snap["file"]


def test_export_options_are_one_spec_and_one_check_for_both_modules():
    assert set(core.export_options()) == {"have", "delta", "max_backups", "fetch_user"}
    good = {"have": [], "delta": True, "max_backups": 0, "fetch_user": None}
    core.check_export_options(good)
    with pytest.raises(core.BackupError, match=r"^export\.max_backups must be 0 or more, got -1$"):
        core.check_export_options(dict(good, max_backups=-1), "export.")
    with pytest.raises(core.BackupError, match=r"^have must be a list of \{file, sha256\}$"):
        core.check_export_options(dict(good, have=[{"sha256": "x"}]))
    with pytest.raises(core.BackupError, match="^export.fetch_user 'no-such-user-here' does not exist"):
        core.check_export_options(dict(good, fetch_user="no-such-user-here"), "export.")
    assert core.export_summary("gym", [{"bytes": 10}, {"bytes": 5}]) == "2 backup(s) of gym to send (15 bytes)"


def test_one_select_only_rule_for_checking_and_running_probes(tmp_path):
    for sql in ("SELECT 1", "  with t as (select 1) select * from t"):
        assert core.is_select_only(sql)
    for sql in ("DELETE FROM members", "PRAGMA writable_schema=1", None, 3):
        assert not core.is_select_only(sql)
        with pytest.raises(core.BackupError, match="must be one SELECT statement"):
            core.check_probes({"gym": [{"name": "p", "sql": sql}]}, "probes")
    conn = sqlite3.connect(":memory:")
    assert core.run_probe(conn, {"name": "wipe", "sql": "DELETE FROM x"})["error"] == \
        "a probe must be one SELECT statement"
    assert core.run_probe(conn, {"sql": "SELECT 3", "expect": "== 3"})["ok"] is True


def test_rotate_log_keeps_the_newest_logs_once_the_size_is_reached(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("small\n")
    core.rotate_log(str(log), max_bytes=100, keep=2)
    assert sorted(os.listdir(tmp_path)) == ["run.log"]
    for generation in ("one", "two", "three"):
        log.write_text(generation * 50)
        core.rotate_log(str(log), max_bytes=100, keep=2)
    assert not log.exists()
    assert (tmp_path / "run.log.1").read_text() == "three" * 50
    assert (tmp_path / "run.log.2").read_text() == "two" * 50
    assert not (tmp_path / "run.log.3").exists()


def test_drill_targets_walk_the_archive_layout_and_name_what_they_ignore(tmp_path):
    for folder in ("pi1/gym", "pi1/shop", "pi2/gym", "pi1/bad name", ".drill-scratch/x", "bad host/gym"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "record.json").write_text("{}")
    (tmp_path / "empty-host").mkdir()
    (tmp_path / "empty-host" / "note.txt").write_text("")
    targets, ignored = core.drill_targets(str(tmp_path), [], {})
    assert [(h, n) for h, n, _ in targets] == [("pi1", "gym"), ("pi1", "shop"), ("pi2", "gym")]
    assert sorted(ignored) == ["bad host", "pi1/bad name"]
    targets, _ = core.drill_targets(str(tmp_path), ["pi2", "ghost"], {"pi2": ["till"]})
    assert [(h, n) for h, n, _ in targets] == [("pi2", "gym"), ("pi2", "till"), ("ghost", None)]
    assert targets[1][2] == str(tmp_path / "pi2" / "till")


def test_verify_pieces_name_the_failed_backups_and_refuse_a_bad_checksum(tmp_path):
    good = "AB" * 32
    assert core.validate_sha256("  %s\n" % good) == good.lower()
    for bad in ("ab" * 31, "zz" * 32, 64, None):
        with pytest.raises(core.BackupError, match="must be 64 hexadecimal digits"):
            core.validate_sha256(bad)
    with pytest.raises(core.BackupError, match="does not exist") as missing:
        core.backups_to_verify(str(tmp_path / "nowhere"), None, "latest")
    assert missing.value.kind == core.KIND_BAD_INPUT
    with pytest.raises(core.BackupError, match="holds no backup of gym") as empty:
        core.backups_to_verify(str(tmp_path), "gym", "all")
    assert empty.value.kind == core.KIND_CORRUPT
    gone = core.verify_listed_backup(str(tmp_path / FINAL), "quick")
    assert gone["ok"] is False and gone["file"] == FINAL and gone["problems"][0].startswith("manifest: ")
    ok = {"ok": True, "file": "a.db", "problems": []}
    assert core.verify_summary([ok]) == "1 backup verified: a.db"
    assert core.verify_summary([ok, gone]) == "1 of 2 backups FAILED verification: %s (%s)" % (
        FINAL, "; ".join(gone["problems"]))
