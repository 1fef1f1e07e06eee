"""The backup folder's catalog on real SQLite files: unfinished files left by interrupted runs, pending
markers, broken manifests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlite_fleet as core
from unit_helpers import make_app_db

# --------------------------------------------------------------------------- leftovers


def plant_leftovers(backup_dir: Path, template: Path) -> dict[str, Path]:
    """What interrupted runs leave, plus a foreign file that only looks like a backup."""
    planted = {
        "tmp": backup_dir / (core.TMP_PREFIX + "app.4242.deadbeef.db"),
        "tmp_journal": backup_dir / (core.TMP_PREFIX + "app.4242.deadbeef.db-journal"),
        "tmp_manifest": backup_dir / (core.TMP_PREFIX + "app_backup_20250101_000000.db.json.0badf00d"),
        "pending_db": backup_dir / "app_backup_20250101_000000.db",
        "pending_sha": backup_dir / "app_backup_20250101_000000.db.sha256",
        "pending_marker": backup_dir / ".app_backup_20250101_000000.db.pending",
        "orphan_manifest": backup_dir / "app_backup_20240101_000000.db.json",
        "orphan_sha": backup_dir / "app_backup_20240101_000000.db.sha256",
    }
    for path in planted.values():
        path.write_bytes(b"left over\n")
    shutil.copyfile(template, planted["pending_db"])
    # the sidecars a prune leaves when interrupted after removing the .db: written by this tool
    planted["orphan_manifest"].write_text(json.dumps({"file": planted["orphan_manifest"].name[:-5],
                                                      "tool": {"name": core.TOOL_NAME}}))
    planted["orphan_sha"].write_text("%s  %s\n" % ("0" * 64, planted["orphan_sha"].name[:-7]))
    foreign = {
        "foreign_db": backup_dir / "app_backup_20250102_000000.db",  # no manifest, no marker
        "notes": backup_dir / "notes.txt",
        "other_db": backup_dir / "other.db",
        # named like our sidecar of a removed backup, but not written by this tool
        "foreign_orphan_json": backup_dir / "app_backup_20230101_000000.db.json",
    }
    shutil.copyfile(template, foreign["foreign_db"])
    foreign["notes"].write_text("keep me\n")
    foreign["other_db"].write_text("keep me too\n")
    foreign["foreign_orphan_json"].write_text('{"note": "mine"}\n')
    return {**{"leftover:" + k: v for k, v in planted.items()}, **{"foreign:" + k: v for k, v in foreign.items()}}


@pytest.mark.parametrize("how", ["snapshot", "prune"])
def test_unfinished_leftovers_are_removed_foreign_files_stay(tmp_path: Path, backup_dir: Path, how: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    first = core.snapshot(str(db), str(backup_dir), "app")
    files = plant_leftovers(backup_dir, db)
    foreign = {k: v for k, v in files.items() if k.startswith("foreign:")}
    leftovers = {k: v for k, v in files.items() if k.startswith("leftover:")}
    foreign_content = {k: v.read_bytes() for k, v in foreign.items()}

    listing = core.list_backups(str(backup_dir), "app")
    assert [b["file"] for b in listing["backups"]] == [first["file"]]
    assert [i["file"] for i in listing["invalid"]] == [foreign["foreign:foreign_db"].name]
    assert {u["file"] for u in listing["unfinished"]} == {p.name for p in leftovers.values()} - {
        leftovers["leftover:pending_sha"].name}  # removed along with its pending .db

    if how == "snapshot":
        result = core.snapshot(str(db), str(backup_dir), "app")
        expected_files = {first["file"], result["file"]}
    else:
        check = core.apply_retention(str(backup_dir), "app", {"keep_last": 5}, check_mode=True)
        assert sorted(check["removed_unfinished"]) == sorted(p.name for p in leftovers.values())
        assert all(p.exists() for p in leftovers.values())  # check mode removes nothing
        result = core.apply_retention(str(backup_dir), "app", {"keep_last": 5})
        assert result["changed"] is True and result["deleted"] == []
        assert result["invalid"] == [foreign["foreign:foreign_db"].name]
        expected_files = {first["file"]}
    assert sorted(result["removed_unfinished"]) == sorted(p.name for p in leftovers.values())
    assert not [p for p in leftovers.values() if p.exists()]
    for key, path in foreign.items():
        assert path.read_bytes() == foreign_content[key], key
    listing = core.list_backups(str(backup_dir), "app")
    assert {b["file"] for b in listing["backups"]} == expected_files
    assert listing["unfinished"] == []
    assert [i["file"] for i in listing["invalid"]] == [foreign["foreign:foreign_db"].name]


def test_pending_marker_of_a_committed_backup_only_loses_the_marker(tmp_path: Path, backup_dir: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    first = core.snapshot(str(db), str(backup_dir), "app")
    marker = backup_dir / ("." + first["file"] + core.PENDING_SUFFIX)
    marker.write_bytes(b"")
    assert core.remove_unfinished(str(backup_dir), "app") == [marker.name]
    assert core.verify_backup(first["backup"])["ok"]


@pytest.mark.parametrize("breakage", ["not json", "wrong file", "wrong format", "no sha", "not an object",
                                      "bad label", "too big", "a folder"])
def test_db_with_broken_manifest_is_invalid_not_a_backup(tmp_path: Path, backup_dir: Path, breakage: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    good = core.snapshot(str(db), str(backup_dir), "app")
    broken = backup_dir / "app_backup_20250101_000000.db"
    shutil.copyfile(good["backup"], broken)
    manifest = dict(good["manifest"], file=broken.name)
    manifest_path = Path(str(broken) + ".json")
    if breakage == "not json":
        manifest_path.write_text("{not json")
    elif breakage == "a folder":
        manifest_path.mkdir()
    else:
        if breakage == "wrong file":
            manifest["file"] = good["file"]
        elif breakage == "wrong format":
            manifest["format_version"] = 99
        elif breakage == "no sha":
            del manifest["sha256"]
        elif breakage == "bad label":
            manifest["label"] = "../x"
        elif breakage == "too big":
            manifest["padding"] = "x" * (core.MANIFEST_MAX_BYTES + 1)
        text = json.dumps(["not", "an", "object"] if breakage == "not an object" else manifest)
        manifest_path.write_text(text)
    listing = core.list_backups(str(backup_dir), "app")
    assert [b["file"] for b in listing["backups"]] == [good["file"]]
    assert [i["file"] for i in listing["invalid"]] == [broken.name]
    stats = core.folder_stats(str(backup_dir), "app")
    assert stats["count"] == 1 and stats["invalid"] == [broken.name]
    assert core.verify_backup(str(broken))["ok"] is False
    # retention never deletes it, and no later run removes it (it has no pending marker)
    core.apply_retention(str(backup_dir), "app", {"keep_last": 1})
    core.snapshot(str(db), str(backup_dir), "app")
    assert broken.exists() and manifest_path.exists()
