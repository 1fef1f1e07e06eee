"""The pinned copy: the file's bytes copied inside one read transaction, with that
snapshot's newest WAL pages laid over them, must be exactly the snapshot the backup API
copies in the same transaction, while a writer commits and checkpoints beside it."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "module_utils"))
import sqlite_fleet as core  # noqa: E402
from unit_helpers import backup_invariant, committed, make_app_db, stop_writer  # noqa: E402

# Header bytes that differ on purpose: the pinned copy sets the file format (18-19: rollback
# journal), the in-header page count (28-31) and the number it is valid for (92-95); the
# backup API sets its copy's schema cookie (40-43) to the one its target had plus one, and
# its commit bumps the change counter (24-27) and writes its library version (96-99).
REWRITTEN = {18, 19} | set(range(24, 32)) | set(range(40, 44)) | set(range(92, 100))


def wal_db(path: Path, page_size: int, rows: int) -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size=%d" % page_size)
    assert conn.execute("PRAGMA journal_mode=wal").fetchone()[0] == "wal"
    conn.close()
    return make_app_db(path, "wal", rows=rows, payload_bytes=200)


def differing_pages(pinned: bytes, reference: bytes, page_size: int) -> list[int]:
    pages = []
    for offset in range(0, max(len(pinned), len(reference)), page_size):
        a, b = pinned[offset:offset + page_size], reference[offset:offset + page_size]
        if offset == 0 and len(a) == len(b):
            a = bytes(x for i, x in enumerate(a) if i not in REWRITTEN)
            b = bytes(x for i, x in enumerate(b) if i not in REWRITTEN)
        if a != b:
            pages.append(offset // page_size + 1)
    return pages


def checkpoint_blocked_elsewhere(db: Path) -> bool:
    """Does a TRUNCATE checkpoint from another process find a reader in its way?"""
    script = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=0);"
              "print(c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "1"


@pytest.mark.parametrize("page_size,autocheckpoint", [(4096, True), (4096, False), (512, True), (65536, True)],
                         ids=["4k-autocheckpoint", "4k-no-autocheckpoint", "512-autocheckpoint",
                              "64k-autocheckpoint"])
def test_pinned_copy_is_the_backup_api_copy_of_the_same_snapshot(tmp_path: Path, start_writer: Any,
                                                                  page_size: int, autocheckpoint: bool) -> None:
    db = wal_db(tmp_path / "app.db", page_size, rows=3000)
    writer = start_writer(db, rate=0, journal_mode="wal", no_autocheckpoint=not autocheckpoint,
                          busy_timeout_ms=20000, payload_bytes=300)
    writer.wait_committed(100)
    pinned = overlaid = backfilled = 0
    for attempt in range(12):
        pinned_path, reference_path = tmp_path / ("p%d.db" % attempt), tmp_path / ("r%d.db" % attempt)
        held: list[int] = []
        source = core.open_readonly(str(db), busy_timeout_ms=20000)
        try:
            index = core.begin_pinned_read(source, str(db), held)
            if index is None:
                continue
            pinned += 1
            overlaid += index["n_backfill"] < index["mx_frame"]
            backfilled += index["n_backfill"] > 0
            digest = core.pinned_file_copy(source, str(db), str(pinned_path), index, held, hash_copy=True)
            # Our read lock must still be there after the copy opened and read the files:
            # another process cannot checkpoint past it.
            assert checkpoint_blocked_elsewhere(db), "the read lock was dropped during the copy"
            target = sqlite3.connect(reference_path)
            source.backup(target)  # same transaction, same snapshot
            target.close()
        finally:
            source.close()
            for fd in held:
                os.close(fd)
        assert differing_pages(pinned_path.read_bytes(), reference_path.read_bytes(), page_size) == []
        # Hashed as it was written (WAL pages laid over, header made rollback): the final bytes' sha256.
        assert digest == hashlib.sha256(pinned_path.read_bytes()).hexdigest()
        ok, _, detail = backup_invariant(pinned_path)
        assert ok, detail
    stop_writer(writer)
    assert pinned >= 10, "the snapshot was pinned in only %d of 12 tries" % pinned
    assert overlaid >= 1  # WAL frames were laid over the file's bytes
    assert backfilled >= 1  # ... also with part of the WAL checkpointed (by the blocked checkpoints here)


def test_snapshot_records_the_method_that_ran_and_falls_back_when_it_cannot_pin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_writer: Any) -> None:
    db = make_app_db(tmp_path / "app.db", "wal", rows=500)
    writer = start_writer(db, rate=0, journal_mode="wal", no_autocheckpoint=True, busy_timeout_ms=20000)
    writer.wait_committed(50)
    first = core.snapshot(str(db), str(tmp_path / "b"), "app")
    assert first["manifest"]["method"] == "pinned_copy" and first["verified"]

    # A wal-index header that is never the same twice (a writer committing between every
    # two reads): the pinned copy gives up and the backup API copies in its stead.
    calls = []
    real = core.read_wal_index

    def moving(fd: int) -> Any:
        calls.append(fd)
        found = real(fd)
        return None if found is None else (found[0] + bytes([len(calls) % 256]), found[1])

    monkeypatch.setattr(core, "read_wal_index", moving)
    before = committed(writer)
    second = core.snapshot(str(db), str(tmp_path / "b"), "app")
    assert len(calls) == 2 * core.PIN_ATTEMPTS
    assert second["manifest"]["method"] == "backup_api" and second["verified"]
    ok, rows, detail = backup_invariant(second["backup"])
    assert ok and rows >= before, detail
    stop_writer(writer)


def test_pinned_copy_of_a_rollback_journal_db_copies_the_locked_file(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", "delete", rows=400)
    result = core.snapshot(str(db), str(tmp_path / "b"), "app")
    assert result["manifest"]["method"] == "pinned_copy"
    assert result["manifest"]["source"]["journal_mode"] == "delete"
    body = Path(result["backup"]).read_bytes()
    assert body[18:20] == b"\x01\x01"
    assert differing_pages(body, db.read_bytes(), 4096) == []


def test_pinned_copy_of_a_wal_db_with_an_empty_wal(tmp_path: Path) -> None:
    """No -wal or -shm yet (the app's last connection closed): the snapshot is the file."""
    db = make_app_db(tmp_path / "app.db", "wal", rows=300)
    assert not os.path.exists(str(db) + "-wal")
    result = core.snapshot(str(db), str(tmp_path / "b"), "app")
    assert result["manifest"]["method"] == "pinned_copy" and result["verified"]
    assert differing_pages(Path(result["backup"]).read_bytes(), db.read_bytes(), 4096) == []


def test_pinned_copy_reads_and_writes_when_the_kernel_cannot_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  start_writer: Any) -> None:
    """copy_file_range fails across file systems on some kernels (EXDEV): the copy goes on
    through user space, with the same result."""
    def cross_device(*args: Any) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", cross_device, raising=False)
    db = make_app_db(tmp_path / "app.db", "wal", rows=2000)
    writer = start_writer(db, rate=0, journal_mode="wal", no_autocheckpoint=True, busy_timeout_ms=20000)
    writer.wait_committed(100)
    before = committed(writer)
    result = core.snapshot(str(db), str(tmp_path / "b"), "app", integrity="full")
    stop_writer(writer)
    assert result["manifest"]["method"] == "pinned_copy" and result["verified"]
    ok, rows, detail = backup_invariant(result["backup"])
    assert ok and rows >= before, detail


def test_a_wal_that_does_not_add_up_mid_copy_falls_back_to_the_backup_api(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_writer: Any) -> None:
    db = make_app_db(tmp_path / "app.db", "wal", rows=1000)
    writer = start_writer(db, rate=0, journal_mode="wal", no_autocheckpoint=True, busy_timeout_ms=20000)
    writer.wait_committed(50)

    def mismatch(*args: Any) -> dict[int, int]:
        raise core.SnapshotNotPinned("the WAL header does not match the wal-index")

    monkeypatch.setattr(core, "snapshot_wal_frames", mismatch)
    before = committed(writer)
    result = core.snapshot(str(db), str(tmp_path / "b"), "app")
    stop_writer(writer)
    assert result["manifest"]["method"] == "backup_api" and result["verified"]
    ok, rows, detail = backup_invariant(result["backup"])
    assert ok and rows >= before, detail
    assert sorted(os.listdir(tmp_path / "b")) == sorted(
        [result["file"], result["file"] + ".sha256", result["file"] + ".json", ".sqlite-backup.lock"])
