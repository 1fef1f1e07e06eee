"""The core's performance changes, checked for correctness (speed is never asserted here).

* the backup API copy runs in steps inside one held read transaction: it never restarts and
  still gives a consistent snapshot under a flat-out writer; in WAL mode each step is flushed;
* snapshot() fsyncs and hashes the copy in a thread while SQLite checks it, and reads the
  committed sidecars back;
* verify_backup() hashes in a thread while SQLite checks the file: same checks, same order;
* make_delta() compares blocks of pages first and can take the checksums from manifests.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sqlite3
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import backup_invariant, committed, core, make_app_db, stop_writer

PAGE = 4096


def sha256_of(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_stepped_copy_under_a_flat_out_writer_is_consistent_and_never_restarts(
        tmp_path: Path, start_writer: Any, monkeypatch: pytest.MonkeyPatch, journal_mode: str) -> None:
    db = make_app_db(tmp_path / "app.db", journal_mode=journal_mode, rows=3000, payload_bytes=300)
    monkeypatch.setattr(core, "COPY_STEP_BYTES", 2 * PAGE)  # many steps, many chances to restart
    monkeypatch.setattr(core, "FLUSH_MIN_BYTES", 2 * PAGE)  # and a flush after every step (WAL)
    monkeypatch.setattr(core, "FLUSH_MAX_BYTES", 2 * PAGE)
    syncs: list[int] = []
    real_sync = core.StepFlusher.__init__

    def counting_init(self: Any, path: str, flush: bool = True, step_bytes: int = 0, activity: Any = None) -> None:
        real_sync(self, path, flush, step_bytes, activity)
        original = self._sync
        self._sync = lambda fd: (syncs.append(fd), original(fd))

    monkeypatch.setattr(core.StepFlusher, "__init__", counting_init)
    writer = start_writer(db, rate=0, busy_timeout_ms=20000)
    for attempt in range(3):
        before = committed(writer)
        copy_path = tmp_path / ("copy%d.db" % attempt)
        syncs.clear()
        copy = core.copy_database(str(db), str(copy_path), "backup_api", 20000, os.stat(db))
        conn = sqlite3.connect(copy_path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
        # one callback per step of two pages: a restart would start counting again
        assert copy["steps"] == math.ceil(pages / 2), copy
        assert len(syncs) == (copy["steps"] - 1 if journal_mode == "wal" else 0)
        ok, n, detail = backup_invariant(copy_path)
        assert ok, detail
        assert n >= before
    stop_writer(writer)


def test_flush_budget_follows_the_disk(tmp_path: Path) -> None:
    """A fast disk gets few big flushes, a slow one small ones, within the bounds."""
    target_file = tmp_path / "copy.db"
    target_file.write_bytes(b"x" * PAGE)
    fast = core.StepFlusher(str(target_file), step_bytes=1 << 20)
    fast._sync = lambda fd: None
    fast(0, 10, 20)  # 1 MiB pending reaches the initial budget: flushed; a fast disk earns the biggest budget
    assert (fast.flushes, fast.budget) == (1, core.FLUSH_MAX_BYTES)
    for _ in range(63):
        fast(0, 10, 20)
    assert fast.flushes == 1  # 63 MiB pending, under the 64 MiB budget
    fast(0, 10, 20)
    assert fast.flushes == 2
    fast(0, 0, 20)  # the last step never flushes: the caller fsyncs
    assert fast.flushes == 2
    fast.close()

    slow = core.StepFlusher(str(target_file), step_bytes=1 << 20)
    slow._sync = lambda fd: time.sleep(0.2)  # 5 MiB/s: an SD card
    slow(0, 10, 20)
    assert (slow.flushes, slow.budget) == (1, core.FLUSH_MIN_BYTES)
    slow.close()

    rollback = core.StepFlusher(str(target_file), flush=False, step_bytes=1 << 20)
    for _ in range(100):
        rollback(0, 10, 20)
    rollback.close()
    assert rollback.flushes == 0


def test_a_failed_flush_fails_the_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_app_db(tmp_path / "app.db", rows=2000, payload_bytes=300)
    monkeypatch.setattr(core, "COPY_STEP_BYTES", 4 * PAGE)
    monkeypatch.setattr(core, "FLUSH_MIN_BYTES", 4 * PAGE)
    monkeypatch.setattr(core, "FLUSH_MAX_BYTES", 4 * PAGE)

    def broken_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    real_init = core.StepFlusher.__init__

    def init(self: Any, path: str, flush: bool = True, step_bytes: int = 0, activity: Any = None) -> None:
        real_init(self, path, flush, step_bytes, activity)
        self._sync = broken_sync

    monkeypatch.setattr(core.StepFlusher, "__init__", init)
    with pytest.raises(core.BackupError, match="Input/output error") as failed:
        core.snapshot(str(db), str(tmp_path / "backups"), "app")
    assert failed.value.kind == core.KIND_IO
    assert [f for f in os.listdir(tmp_path / "backups") if not f.startswith(".sqlite-backup.lock")] == []


@pytest.mark.parametrize("method", ["pinned_copy", "backup_api"])
def test_snapshot_fsyncs_and_hashes_in_a_thread_and_records_the_right_checksum(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=500)
    threads: list[str] = []
    real_hash, real_fsync = core.sha256_file, core.fsync_path
    real_run = core.TrailingHash._run

    def spy_hash(path: str, *args: Any) -> str:
        threads.append("sha256_file " + threading.current_thread().name)
        return real_hash(path, *args)

    def spy_fsync(path: str, *args: Any, **kwargs: Any) -> None:
        if os.path.basename(path).startswith(core.TMP_PREFIX):
            threads.append("fsync " + threading.current_thread().name)
        real_fsync(path, *args, **kwargs)

    def spy_run(self: Any) -> Any:
        threads.append("trailing " + threading.current_thread().name)
        return real_run(self)

    monkeypatch.setattr(core, "sha256_file", spy_hash)
    monkeypatch.setattr(core, "fsync_path", spy_fsync)
    monkeypatch.setattr(core.TrailingHash, "_run", spy_run)
    result = core.snapshot(str(db), str(tmp_path / "backups"), "app", method=method)
    assert result["manifest"]["method"] == method
    # The pinned copy is hashed as it is written, the backup API's copy once final; never twice.
    hashing = "trailing" if method == "pinned_copy" else "sha256_file"
    assert [t.split()[0] for t in threads if t.split()[0] != "fsync"] == [hashing], threads
    assert threads and all(not t.endswith("MainThread") for t in threads), threads
    assert any(t.startswith("fsync") for t in threads), threads
    assert result["manifest"]["sha256"] == sha256_of(result["backup"])
    assert core.read_sha256_sidecar(result["backup"]) == result["manifest"]["sha256"]
    assert core.verify_backup(result["backup"])["ok"]


def test_a_pinned_copy_written_to_after_its_hash_is_hashed_again(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_app_db(tmp_path / "app.db", rows=500)
    real = core.inspect_copy

    def inspect_then_write(path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        checked = real(path, *args, **kwargs)
        time.sleep(0.05)  # past the file system's clock tick: the write shows in the file's times
        with open(path, "r+b") as handle:  # a byte of the last page's unused end changes
            handle.seek(-1, os.SEEK_END)
            handle.write(b"\x01" if handle.read(1) != b"\x01" else b"\x02")
        return checked

    monkeypatch.setattr(core, "inspect_copy", inspect_then_write)
    result = core.snapshot(str(db), str(tmp_path / "backups"), "app")
    assert result["manifest"]["method"] == "pinned_copy"
    assert result["manifest"]["sha256"] == sha256_of(result["backup"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature")
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_wal_snapshot_yields_the_cpu_and_a_rollback_one_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal_mode: str) -> None:
    db = make_app_db(tmp_path / "app.db", journal_mode=journal_mode, rows=100)
    seen: list[tuple[str, int]] = []
    real = core.copy_database

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append((threading.current_thread().name,
                     os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "copy_database", spy)
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    result = core.snapshot(str(db), str(tmp_path / "backups"), "app")
    assert result["verified"] and core.verify_backup(result["backup"])["ok"]
    ((thread, nice),) = seen
    if journal_mode == "wal":
        assert thread != threading.current_thread().name
        assert nice == min(19, caller + core.BACKUP_NICE)
    else:  # the app's writers wait for our shared lock: no slower copy
        assert (thread, nice) == (threading.current_thread().name, caller)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller


def test_run_at_priority_passes_errors_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise core.BackupError("no", core.KIND_IO)

    with pytest.raises(core.BackupError, match="no"):
        core.run_at_priority(5, boom)
    assert core.run_at_priority(0, lambda: 42) == 42


def test_snapshot_of_an_unreadable_copy_still_hashes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the switch to DELETE fails with a DatabaseError no thread starts: hashed in line."""
    db = make_app_db(tmp_path / "app.db", rows=10)

    def broken(tmp: str, integrity: str, on_final: Any = None, read_only: bool = False) -> dict[str, Any]:
        return {"integrity_problems": ["copy cannot be read: test"], "foreign_key_problems": [], "tables": {},
                "page_size": None, "page_count": None, "user_version": None, "application_id": None}

    monkeypatch.setattr(core, "inspect_copy", broken)
    result = core.snapshot(str(db), str(tmp_path / "backups"), "app")
    assert result["verified"] is False
    assert result["manifest"]["sha256"] == sha256_of(result["backup"])


def test_check_sidecars_refuses_a_checksum_the_sidecars_do_not_record(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    result = core.snapshot(str(db), str(tmp_path / "backups"), "app")
    core.check_sidecars(result["backup"], result["manifest"]["sha256"])
    with pytest.raises(core.BackupError, match="do not record"):
        core.check_sidecars(result["backup"], "0" * 64)


def test_verify_backup_keeps_its_checks_and_their_order(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=200)
    backup = core.snapshot(str(db), str(tmp_path / "backups"), "app")["backup"]
    good = core.verify_backup(backup, integrity="full")
    assert good["ok"] and good["sha256"] == sha256_of(backup)
    assert list(good["checks"]) == ["manifest", "checksum", "integrity", "foreign_keys", "row_counts"]

    data = bytearray(Path(backup).read_bytes())
    data[-10] ^= 0xFF  # a flipped byte in the last page: the checksum says so
    os.chmod(backup, 0o600)
    Path(backup).write_bytes(bytes(data))
    bad = core.verify_backup(backup, integrity="quick", expected_sha256="a" * 64)
    assert not bad["ok"]
    assert bad["problems"][0].startswith("checksum: sha256 of the file is %s" % sha256_of(backup)[:12])
    assert "first hop says aaaaaaaaaaaa" in bad["checks"]["checksum"]


def random_pages(rng: random.Random, count: int) -> bytes:
    header = bytearray(rng.randbytes(PAGE))
    header[:16] = core.SQLITE_HEADER
    header[16:18] = PAGE.to_bytes(2, "big")
    return bytes(header) + rng.randbytes(PAGE * (count - 1))


@pytest.mark.parametrize("block_pages", [1, 3, 16, 1000])
def test_make_delta_by_blocks_sends_exactly_the_changed_pages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_pages: int) -> None:
    monkeypatch.setattr(core, "DELTA_BLOCK_BYTES", block_pages * PAGE)
    rng = random.Random(block_pages)
    base_bytes = random_pages(rng, 50)
    target = bytearray(base_bytes + rng.randbytes(PAGE * 3))  # the database grew by 3 pages
    changed = {0, 2, 3, 15, 16, 17, 31, 49, 50, 51, 52}
    for page in changed - {50, 51, 52}:
        target[page * PAGE + 100] ^= 0x5A
    base, new, delta, rebuilt = (tmp_path / n for n in ("base.db", "new.db", "d.delta", "out.db"))
    base.write_bytes(base_bytes)
    new.write_bytes(bytes(target))

    stats = core.make_delta(str(base), str(new), str(delta), base_sha256=sha256_of(base),
                            target_sha256=sha256_of(new))
    assert stats["pages_total"] == 53
    assert stats["pages_changed"] == len(changed)
    core.apply_delta(str(base), str(delta), str(rebuilt))
    assert sha256_of(rebuilt) == sha256_of(new)

    # the same delta, checksums computed here rather than taken from manifests
    delta2 = tmp_path / "d2.delta"
    core.make_delta(str(base), str(new), str(delta2))
    assert delta2.read_bytes() == delta.read_bytes()


def test_make_delta_of_a_shrunk_database(tmp_path: Path) -> None:
    rng = random.Random(5)
    base_bytes = random_pages(rng, 40)
    target = bytearray(base_bytes[: PAGE * 30])
    target[5 * PAGE] ^= 1
    base, new, delta, rebuilt = (tmp_path / n for n in ("base.db", "new.db", "d.delta", "out.db"))
    base.write_bytes(base_bytes)
    new.write_bytes(bytes(target))
    stats = core.make_delta(str(base), str(new), str(delta))
    assert (stats["pages_total"], stats["pages_changed"]) == (30, 1)
    core.apply_delta(str(base), str(delta), str(rebuilt))
    assert rebuilt.read_bytes() == bytes(target)


def test_a_delta_of_small_changes_to_incompressible_pages_is_small(tmp_path: Path) -> None:
    """The XOR against the base page leaves zeros around a changed row: the delta is tiny
    even though the pages' data is random."""
    rng = random.Random(11)
    base_bytes = random_pages(rng, 400)
    target = bytearray(base_bytes)
    for page in range(0, 400, 10):  # 40 pages, 120 new random bytes in each (a row rewritten)
        target[page * PAGE + 1000:page * PAGE + 1120] = rng.randbytes(120)
    base, new, delta, rebuilt = (tmp_path / n for n in ("base.db", "new.db", "d.delta", "out.db"))
    base.write_bytes(base_bytes)
    new.write_bytes(bytes(target))
    stats = core.make_delta(str(base), str(new), str(delta))
    assert stats["pages_changed"] == 40
    # 40 pages sent whole would be 160 KiB; the changed bytes themselves are 4.7 KiB
    assert stats["delta_bytes"] < 40 * 120 + 2000, stats
    core.apply_delta(str(base), str(delta), str(rebuilt))
    assert rebuilt.read_bytes() == bytes(target)


def hostile_delta(path: Path, base: Path, records: bytes, *, pages: int = 10, tail: bytes = b"",
                  compressed: bytes | None = None) -> None:
    header = json.dumps({"base_sha256": sha256_of(base), "target_sha256": "0" * 64,
                         "target_size": pages * PAGE, "page_size": PAGE}).encode()
    body = compressed if compressed is not None else zlib.compress(records)
    path.write_bytes(core.DELTA_MAGIC + len(header).to_bytes(4, "big") + header + body + tail)


def record(page_no: int) -> bytes:
    return page_no.to_bytes(4, "big") + b"\x01" * PAGE


@pytest.mark.parametrize("case,records,options,message", [
    ("out-of-order", record(3) + record(2), {}, "out of order"),
    ("repeated", record(3) + record(3), {}, "out of order"),
    ("beyond-the-file", record(10), {}, "beyond the file's 10 pages"),
    ("half-a-record", record(1)[:100], {}, "bytes after its last page"),
    ("trailing-bytes", record(1), {"tail": b"junk"}, "bytes after its last page"),
    ("truncated-stream", b"", {"compressed": zlib.compress(record(1) + record(2))[:-8]}, "truncated"),
    ("not-zlib", b"", {"compressed": b"\x00" * 64}, "corrupt"),
    ("bomb", b"", {"compressed": zlib.compress(b"\0" * (64 * (PAGE + 4)), 9)}, "out of order"),
])
def test_a_hostile_delta_is_refused_and_leaves_nothing_half_written(
        tmp_path: Path, case: str, records: bytes, options: dict[str, Any], message: str) -> None:
    base = tmp_path / "base.db"
    base.write_bytes(random_pages(random.Random(3), 10))
    delta = tmp_path / "d.delta"
    hostile_delta(delta, base, records, **options)
    with pytest.raises(core.BackupError, match=message) as refused:
        core.apply_delta(str(base), str(delta), str(tmp_path / "out.db"))
    assert refused.value.kind == core.KIND_CORRUPT
    assert not (tmp_path / "out.db").exists()


def test_the_flusher_pauses_after_a_flush_only_while_the_app_commits(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "FLUSH_MAX_BYTES", 1 << 20)
    path = tmp_path / "copy"
    path.write_bytes(os.urandom(4 << 20))
    commits = iter(range(100))
    busy = core.StepFlusher(str(path), step_bytes=1 << 20, activity=lambda: next(commits))
    idle = core.StepFlusher(str(path), step_bytes=1 << 20, activity=lambda: b"the same header")
    for flusher in (busy, idle):
        for remaining in (3, 2, 1, 0):
            path.write_bytes(os.urandom(4 << 20))  # something to flush each time
            flusher(0, remaining << 20, 4 << 20)
        flusher.close()
    assert busy.flushes == idle.flushes == 3
    assert busy.yielded_seconds > 0
    assert idle.yielded_seconds == 0
