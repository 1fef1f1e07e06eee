"""The nights after a fault: a flipped bit, an unverified backup or a corrupt archive copy may
neither lose the last good backup nor stop every later pull (issue: the nights after, items 1-3).

Core level, on real SQLite files: retention checks the floor's bytes before deleting anything;
the host's export plan never bases a delta on an unverified backup or on an archive copy that
is not verified and intact; the archive's prepare step checks a delta's base and falls back to
the whole file; the import keeps unverified backups as evidence and repairs a corrupt copy.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import core, make_app_db


def add_rows(db: Path, rows: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for _ in range(rows):
            conn.execute("INSERT INTO app_events (seq, at, payload) "
                         "SELECT coalesce(max(seq), 0) + 1, 0, randomblob(200) FROM app_events")
        conn.execute("COMMIT")
    finally:
        conn.close()


def take(db: Path, folder: Path, new_rows: int = 0) -> dict[str, Any]:
    """A verified backup, named after the time it is taken (later ones sort newer), once the app
    has written ``new_rows`` more rows (a later night's backup)."""
    if new_rows:
        add_rows(db, new_rows)
    snap = core.snapshot(str(db), str(folder), "app")
    assert snap["verified"], snap
    return snap


def flip_bit(path: Path | str, offset: int = 5000) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def manifest_of(path: Path | str) -> dict[str, Any]:
    return json.loads(Path(str(path) + ".json").read_text())


KEEP_LAST_1 = {"keep_last": 1}


# ----------------------------------------------------------------------------------- item 1


def test_a_flipped_bit_in_the_newest_backup_never_lets_retention_delete_the_last_good_one(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=50)
    folder = tmp_path / "archive"
    good = take(db, folder)
    newest = take(db, folder, new_rows=5)
    flip_bit(newest["backup"])

    pruned = core.apply_retention(str(folder), "app", KEEP_LAST_1)

    assert pruned["deleted"] == [], pruned
    assert [f["file"] for f in pruned["flagged"]] == [newest["file"]]
    assert "sha256 of the file is" in pruned["flagged"][0]["why"]
    assert os.path.exists(good["backup"])
    flagged = manifest_of(newest["backup"])
    assert flagged["verified"] is False and flagged["flagged"]["reason"] == core.FLAG_CHECKSUM
    # The flagged backup is kept as evidence while it is newer than the newest verified one; the
    # good one is the floor now, and stays the floor on the next prune (no second sha256 of it needed).
    again = core.apply_retention(str(folder), "app", KEEP_LAST_1)
    assert again["deleted"] == [] and again["flagged"] == []
    latest = core.choose_backup(core.list_backups(str(folder), "app")["backups"])
    assert latest["file"] == good["file"]


def test_check_mode_says_it_would_flag_and_changes_nothing(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=50)
    folder = tmp_path / "archive"
    take(db, folder)
    newest = take(db, folder)
    flip_bit(newest["backup"])
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    pruned = core.apply_retention(str(folder), "app", KEEP_LAST_1, check_mode=True)

    assert pruned["deleted"] == [] and [f["file"] for f in pruned["flagged"]] == [newest["file"]]
    assert "would flag" in pruned["msg"] and not pruned["changed"]
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_a_good_floor_costs_one_checksum_and_a_trusted_floor_none(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_app_db(tmp_path / "app.db", rows=20)
    folder = tmp_path / "host"
    for _ in range(3):
        newest = take(db, folder)
    hashed: list[str] = []
    real = core.sha256_file
    monkeypatch.setattr(core, "sha256_file", lambda path, *a: hashed.append(os.path.basename(path)) or real(path, *a))

    pruned = core.apply_retention(str(folder), "app", KEEP_LAST_1)
    assert len(pruned["deleted"]) == 2 and hashed == [newest["file"]]

    take(db, folder)
    hashed.clear()
    trusted = core.list_backups(str(folder), "app")["backups"][0]["file"]
    pruned = core.apply_retention(str(folder), "app", KEEP_LAST_1,
                                  trusted=[trusted])
    assert len(pruned["deleted"]) == 1 and hashed == []


# ----------------------------------------------------------------------------------- items 2, 3


def have_of(folder: Path) -> list[dict[str, Any]]:
    return core.archived_backups(str(folder))["have"]


def test_an_unverified_host_backup_is_sent_whole_and_never_becomes_a_base(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=200)
    host = tmp_path / "host"
    archive = tmp_path / "archive"
    archived = take(db, host)
    os.makedirs(archive)
    for suffix in ("", ".sha256", ".json"):
        os.link(archived["backup"] + suffix, archive / (archived["file"] + suffix))
    # What a restore keeps of a corrupt database: a backup flagged unverified, then the nights go on.
    safety = take(db, host)
    core.flag_unverified(safety["backup"], core.FLAG_CHECK, "the source failed its check")
    later = take(db, host, new_rows=3)

    plan = core.plan_export(str(host), "app", have_of(archive))

    by_file = {t["file"]: t for t in plan["transfers"]}
    assert by_file[safety["file"]]["mode"] == "full"
    assert by_file[later["file"]]["mode"] == "delta" and by_file[later["file"]]["base"] == archived["file"]


def test_a_delta_is_never_based_on_an_archive_copy_that_is_unverified_or_not_intact(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=200)
    host = tmp_path / "host"
    first = take(db, host)
    second = take(db, host, new_rows=3)
    third = take(db, host, new_rows=3)
    have = [{"file": first["file"], "sha256": first["manifest"]["sha256"], "verified": True, "intact": True},
            {"file": second["file"], "sha256": second["manifest"]["sha256"], "verified": False, "intact": False}]

    plan = core.plan_export(str(host), "app", have)

    # The archive's corrupt copy of the second is sent again (against the first), the third against it.
    assert [(t["file"], t["mode"], t["base"]) for t in plan["transfers"]] == [
        (second["file"], "delta", first["file"]), (third["file"], "delta", second["file"])]
    disputed = [dict(have[0]), dict(have[1], intact=True)]  # unverified in the archive, bytes intact
    plan = core.plan_export(str(host), "app", disputed)
    assert [(t["file"], t["base"]) for t in plan["transfers"]] == [(third["file"], first["file"])]


def staged_pull(tmp_path: Path, corrupt_base: bool, stage_whole: bool = True) -> dict[str, Any]:
    """A host with backups A, B; an archive holding A (bit flipped when ``corrupt_base``); B planned."""
    tmp_path.mkdir(exist_ok=True)
    db = make_app_db(tmp_path / "app.db", rows=300)
    host = tmp_path / "host"
    first = take(db, host)
    archive = tmp_path / "archive"
    db_dir = archive / "pi1" / "app"
    os.makedirs(db_dir)
    for suffix in ("", ".sha256", ".json"):
        with open(first["backup"] + suffix, "rb") as src, open(db_dir / (first["file"] + suffix), "wb") as dst:
            dst.write(src.read())
    if corrupt_base:
        flip_bit(db_dir / first["file"])
    second = take(db, host, new_rows=3)
    staging = tmp_path / "staging"
    staging.mkdir()
    plan = core.plan_export(str(host), "app", have_of(db_dir), staging_dir=str(staging))
    (transfer,) = plan["transfers"]
    assert transfer["mode"] == "delta" and transfer["base"] == first["file"]
    assert transfer["full_fetch_path"] == str(staging / second["file"])
    if not stage_whole:
        del transfer["full_fetch_path"]
    checked = core.check_transfers(plan["transfers"], ["app"])
    return {"host_dir": archive / "pi1", "db_dir": db_dir, "first": first, "second": second, "checked": checked}


def test_a_corrupt_base_in_the_archive_is_flagged_and_the_backup_sent_whole_instead(tmp_path: Path) -> None:
    pull = staged_pull(tmp_path, corrupt_base=True)

    settled = core.settle_bases(str(pull["host_dir"]), pull["checked"])

    (transfer,) = settled["transfers"]
    assert transfer["mode"] == "full" and transfer["base"] is None
    assert transfer["fetch_path"].endswith(pull["second"]["file"]) and transfer["bytes"] == transfer["size_bytes"]
    assert "is corrupt in the archive" in transfer["fallback"]
    assert [f["file"] for f in settled["flagged"]] == [pull["first"]["file"]]
    assert manifest_of(pull["db_dir"] / pull["first"]["file"])["verified"] is False
    # The whole file imports and becomes the archive's newest verified backup.
    incoming = pull["db_dir"] / ".sqlite-backup-tmp.incoming.x"
    with open(transfer["fetch_path"], "rb") as src, open(incoming, "wb") as dst:
        dst.write(src.read())
    result = core.import_backup(str(incoming), transfer["manifest"], str(pull["db_dir"]), source_host="pi1")
    assert result["verified"] and result["changed"]
    assert [h["file"] for h in have_of(pull["db_dir"]) if h["verified"]] == [pull["second"]["file"]]


def test_a_good_base_is_kept_and_without_a_whole_copy_a_bad_one_drops_only_its_delta(tmp_path: Path) -> None:
    good = staged_pull(tmp_path / "good", corrupt_base=False)
    settled = core.settle_bases(str(good["host_dir"]), good["checked"])
    assert [t["mode"] for t in settled["transfers"]] == ["delta"] and not settled["flagged"]
    assert "full_fetch_path" not in settled["transfers"][0]

    bad = staged_pull(tmp_path / "bad", corrupt_base=True, stage_whole=False)
    settled = core.settle_bases(str(bad["host_dir"]), bad["checked"], check_mode=True)
    assert settled["transfers"] == [] and len(settled["dropped"]) == 1
    assert "the next run sends it whole" in settled["dropped"][0]["msg"]
    assert manifest_of(bad["db_dir"] / bad["first"]["file"])["verified"] is True  # check mode flags nothing


def import_copy(backup: dict[str, Any], db_dir: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    incoming = db_dir / (".sqlite-backup-tmp.incoming." + backup["file"])
    with open(backup["backup"], "rb") as src, open(incoming, "wb") as dst:
        dst.write(src.read())
    return core.import_backup(str(incoming), manifest or backup["manifest"], str(db_dir), source_host="pi1")


def test_the_archive_keeps_an_unverified_backup_as_evidence_flagged_unverified(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=50)
    snap = take(db, tmp_path / "host")
    core.flag_unverified(snap["backup"], core.FLAG_CHECK, "the source failed its check")
    db_dir = tmp_path / "archive"
    db_dir.mkdir()

    result = import_copy(snap, db_dir, manifest_of(snap["backup"]))

    assert result["changed"] and result["verified"] is False and not result["disputed"]
    assert "evidence" in result["msg"]
    (listed,) = core.list_backups(str(db_dir))["backups"]
    assert listed["verified"] is False
    with pytest.raises(core.BackupError):
        core.choose_backup([listed])


def test_a_backup_the_archive_check_disputes_is_kept_flagged_and_not_offered_again(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=50)
    snap = take(db, tmp_path / "host")
    lying = dict(snap["manifest"], tables=dict(snap["manifest"]["tables"], app_events=999))
    db_dir = tmp_path / "archive"
    db_dir.mkdir()

    result = import_copy(snap, db_dir, lying)

    assert result["disputed"] and result["verified"] is False and "FAILS the archive's" in result["msg"]
    stored = manifest_of(db_dir / snap["file"])
    assert stored["verified"] is False and stored["flagged"]["reason"] == core.FLAG_CHECK
    assert core.plan_export(str(tmp_path / "host"), "app", have_of(db_dir))["transfers"] == []


def test_a_corrupt_archive_copy_is_replaced_by_the_hosts_good_bytes(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=50)
    snap = take(db, tmp_path / "host")
    db_dir = tmp_path / "archive"
    db_dir.mkdir()
    import_copy(snap, db_dir)
    flip_bit(db_dir / snap["file"])
    (listed,) = core.list_backups(str(db_dir))["backups"]
    core.flag_unverified(listed["path"], core.FLAG_CHECKSUM, core.checksum_problem(listed))
    (sent,) = core.plan_export(str(tmp_path / "host"), "app", have_of(db_dir))["transfers"]
    assert sent["file"] == snap["file"] and sent["mode"] == "full"

    result = import_copy(snap, db_dir)

    assert result["repaired"] and result["verified"] and "replaces the archive's corrupt copy" in result["msg"]
    assert core.verify_backup(str(db_dir / snap["file"]))["ok"]


# ----------------------------------------------------------------------------------- item 4


def redate(backup: dict[str, Any], days: int) -> str:
    """Make ``backup`` look as if a host whose clock ran ``days`` ahead had taken it (name, manifest,
    .sha256); returns its new path."""
    old = Path(backup["backup"])
    manifest = manifest_of(old)
    created = core.parse_iso_utc(manifest["created"]) + dt.timedelta(days=days)
    new = old.with_name(core.backup_filename("app", created))
    manifest.update(file=new.name, created=core.iso_utc(created))
    os.rename(old, new)
    Path(str(new) + ".json").write_text(json.dumps(manifest))
    Path(str(new) + ".sha256").write_text("%s  %s\n" % (manifest["sha256"], new.name))
    for suffix in (".json", ".sha256"):
        os.unlink(str(old) + suffix)
    return str(new)


def test_a_backup_dated_after_now_is_never_latest_and_is_named(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    folder = tmp_path / "host"
    ahead = redate(take(db, folder), days=30)  # taken while the clock was 30 days ahead
    last = take(db, folder, new_rows=40)  # taken last, once the clock was put right
    backups = core.list_backups(str(folder), "app")["backups"]
    assert backups[0]["path"] == ahead  # by date, the ahead one looks newest

    assert core.choose_backup(backups)["file"] == last["file"]
    stamp = core.parse_iso_utc(manifest_of(ahead)["created"]).strftime("%Y%m%d_%H%M%S")
    assert core.choose_backup(backups, stamp)["file"] == last["file"]
    assert core.choose_backup(backups, os.path.basename(ahead))["path"] == ahead  # by name: yes
    warning = core.future_warning(core.dated_in_future(backups))
    assert os.path.basename(ahead) in warning and "clock" in warning
    # The export sends it first, as the oldest: with max_backups=1 the one taken last is sent.
    plan = core.plan_export(str(folder), "app", [], max_backups=1)
    assert [t["file"] for t in plan["transfers"]] == [last["file"]]
    assert plan["dated_in_future"] == [os.path.basename(ahead)]


# ----------------------------------------------------------------------------------- item 5


@pytest.mark.parametrize("crafted", [
    lambda m: json.dumps(dict(m, created="0001-01-01T00:00:00+01:00")),
    lambda m: json.dumps(dict(m, created="9999-12-31T23:59:59-01:00")),
    lambda m: "[" * 100000 + "]" * 100000,
    lambda m: json.dumps(dict(m, flagged="yes")),
], ids=["year-1", "year-9999", "nested-100000", "flagged-not-a-mapping"])
def test_one_crafted_manifest_is_an_invalid_entry_and_the_backups_go_on(tmp_path: Path, crafted: Any) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    folder = tmp_path / "host"
    first = take(db, folder)
    Path(first["backup"] + ".json").write_text(crafted(first["manifest"]))

    listing = core.list_backups(str(folder), "app")
    assert [i["file"] for i in listing["invalid"]] == [first["file"]] and listing["backups"] == []
    later = take(db, folder)  # the next backup is taken, pruned and listed as usual
    pruned = core.apply_retention(str(folder), "app", {"keep_last": 1}, trusted=[later["file"]])
    assert pruned["kept"] == [later["file"]] and pruned["invalid"] == [first["file"]]


@pytest.mark.parametrize("created", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1999-12-31T23:59:59Z"])
def test_a_lying_hosts_manifest_with_an_impossible_date_is_refused_not_a_crash(tmp_path: Path, created: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    manifest = dict(take(db, tmp_path / "host")["manifest"], created=created)
    with pytest.raises(core.BackupError, match="created time missing or malformed") as refused:
        core.vet_host_manifest(manifest)
    assert refused.value.kind == core.KIND_CORRUPT
