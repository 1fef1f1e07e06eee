# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pinned copy: the database file's bytes copied in the kernel while a read transaction pins the
WAL, with that snapshot's WAL pages laid over them.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any

from .files import COPY_STEP_BYTES, Background, copy_file_bytes, open_held
from .inputs import SQLITE_HEADER
from .sqlitedb import pragma_value

#
# A read transaction pins a snapshot. In rollback-journal mode its shared lock keeps every
# writer out of the database file, so the file's bytes ARE the snapshot. In WAL mode the
# snapshot is the database file plus the WAL's frames up to the reader's end mark
# (mxFrame): while we hold the read lock, a checkpoint copies no frame past our mark into
# the file, and the WAL is not restarted over frames we may need. So the snapshot can be
# rebuilt from the file's bytes (copied inside the kernel, as fast as cp) and, laid over
# them, the newest frame of every page among the frames not yet checkpointed when the
# read began. The end mark comes from the wal-index header in -shm (walformat.html):
# read it just before and just after the read transaction starts; when both reads are
# the same (its change counter included), no commit came in between and that header is
# our snapshot's. Otherwise try again; after a few tries fall back to the backup API.

WAL_INDEX_HEADER = struct.Struct("=IIIBBHII8s8s8s")  # one copy of the wal-index header
WAL_INDEX_VERSION = 3007000
WAL_NBACKFILL_OFFSET = 96  # after the two header copies: nBackfill, the frames checkpointed
WAL_HEADER_BYTES = 32
WAL_FRAME_HEADER_BYTES = 24
WAL_MAGIC = (0x377F0682, 0x377F0683)
PIN_ATTEMPTS = 25


class SnapshotNotPinned(Exception):
    """The pinned copy cannot tell exactly what the snapshot holds: use the backup API."""


def read_wal_index(shm_fd: int) -> tuple[bytes, dict[str, Any]] | None:
    """The wal-index header (raw bytes, fields) and nBackfill; None while it is being changed."""
    raw = os.pread(shm_fd, WAL_NBACKFILL_OFFSET + 4, 0)
    size = WAL_INDEX_HEADER.size
    if len(raw) < WAL_NBACKFILL_OFFSET + 4 or raw[:size] != raw[size:2 * size]:
        return None
    version, _unused, change, is_init, _big_end, page_size, mx_frame, n_page, _fck, salt, _ck = \
        WAL_INDEX_HEADER.unpack(raw[:size])
    if version != WAL_INDEX_VERSION or not is_init:
        return None
    n_backfill = struct.unpack("=I", raw[WAL_NBACKFILL_OFFSET:WAL_NBACKFILL_OFFSET + 4])[0]
    return raw[:size], {"change": change, "page_size": (page_size & 0xFE00) + ((page_size & 1) << 16),
                        "mx_frame": mx_frame, "n_page": n_page, "salt": salt, "n_backfill": n_backfill}


def begin_pinned_read(source: sqlite3.Connection, db_path: str, held_fds: list[int]) -> dict[str, Any] | None:
    """Open the read transaction and return its snapshot's wal-index header.

    None, with no transaction open, when the header kept changing under a busy writer or
    cannot be read (no -shm: the app holds the database in exclusive locking mode).
    The -shm descriptor goes into ``held_fds``: the caller closes it only after closing
    ``source``, as closing any descriptor of a file drops every POSIX lock this process
    holds on it (SQLite's read lock in the -shm among them).
    """
    shm_fd = None
    for attempt in range(PIN_ATTEMPTS):
        if shm_fd is None:
            shm_fd = open_held(db_path + "-shm", held_fds)
        before = read_wal_index(shm_fd) if shm_fd is not None else None
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if shm_fd is None:  # the first read made the -shm
            shm_fd = open_held(db_path + "-shm", held_fds)
        after = read_wal_index(shm_fd) if shm_fd is not None else None
        if before is not None and after is not None and before[0] == after[0]:
            return {**after[1], "shm_fd": shm_fd}
        source.execute("COMMIT")
        time.sleep(0.001 * attempt)
    return None


def pinned_file_copy(source: sqlite3.Connection, db_path: str, tmp_path: str,
                     wal_index: Mapping[str, Any] | None, held_fds: list[int], progress: Any = None,
                     hash_copy: bool = False) -> str | None:
    """Write the snapshot ``source``'s read transaction holds into the new file ``tmp_path``.

    ``wal_index``: the snapshot's wal-index header (WAL mode), None with a rollback journal.
    The descriptors it opens on the database and its WAL go into ``held_fds``, for the
    caller to close after ``source`` (see :func:`begin_pinned_read`).
    With ``hash_copy`` it returns the sha256 of the finished copy, hashed in a thread that
    trails the copy (each piece once its bytes are final), else None.
    Raises SnapshotNotPinned when what it finds does not add up; nothing is left written then.
    """
    page_size = pragma_value(source, "page_size")
    page_count = pragma_value(source, "page_count")
    # With no frame in the WAL (mx_frame 0) the snapshot is the file alone and the header's
    # page size and count are left 0.
    if wal_index is not None and wal_index["mx_frame"] and (wal_index["page_size"] != page_size
                                                           or wal_index["n_page"] != page_count):
        raise SnapshotNotPinned("the wal-index header does not describe this snapshot")
    total = page_size * page_count
    dst_fd = os.open(tmp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    hasher = TrailingHash(dst_fd) if hash_copy else None
    try:
        src_fd = open_held(db_path, held_fds)
        if src_fd is None:
            raise SnapshotNotPinned("cannot open %s" % db_path)
        wal_fd, frames = None, {}
        if wal_index is not None and wal_index["n_backfill"] < wal_index["mx_frame"]:
            wal_fd = open_held(db_path + "-wal", held_fds)
            if wal_fd is None:
                raise SnapshotNotPinned("cannot open the WAL of %s" % db_path)
            frames = snapshot_wal_frames(wal_fd, wal_index, page_count)
        finisher = PageFinisher(dst_fd, wal_fd, frames, page_size, page_count, hasher)

        def step(status: int, remaining: int, length: int) -> None:
            finisher.final_up_to(length - remaining)
            if progress is not None:
                progress(status, remaining, length)

        copied = copy_file_bytes(src_fd, dst_fd, total, step,
                                 progress.step_bytes if progress is not None else COPY_STEP_BYTES)
        os.ftruncate(dst_fd, total)
        missing = [page for page in range(copied // page_size + 1, page_count + 1) if page not in frames]
        if missing or copied % page_size:
            raise SnapshotNotPinned("%d page(s) are neither in the file nor in the WAL" % len(missing))
        finisher.final_up_to(total)
        digest = hasher.result(total) if hasher is not None else None
    except BaseException:
        if hasher is not None:
            hasher.abandon()
        os.close(dst_fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    os.close(dst_fd)
    return digest


class PageFinisher:
    """Makes a pinned copy's pages final in file order, as the copy of the file's bytes goes.

    Once the bytes up to an offset are copied, the newest WAL frame of every snapshot page
    below it is laid over them and, once page 1 is there, the header is made that of a
    rollback-journal database: from then on nothing writes those bytes again, and the
    hasher (when given) may read them.
    """

    def __init__(self, dst_fd: int, wal_fd: int | None, frames: Mapping[int, int], page_size: int,
                 page_count: int, hasher: TrailingHash | None) -> None:
        self.dst_fd = dst_fd
        self.wal_fd = wal_fd
        self.frames = frames
        self.pending = sorted(frames)
        self.page_size = page_size
        self.page_count = page_count
        self.hasher = hasher
        self.header_done = False
        self._next = 0

    def final_up_to(self, offset: int) -> None:
        pages = min(offset // self.page_size, self.page_count)
        while self._next < len(self.pending) and self.pending[self._next] <= pages:
            page_no = self.pending[self._next]
            page = os.pread(self.wal_fd, self.page_size, self.frames[page_no])  # type: ignore[arg-type]
            if len(page) != self.page_size:
                raise SnapshotNotPinned("WAL frame of page %d is cut short" % page_no)
            os.pwrite(self.dst_fd, page, (page_no - 1) * self.page_size)
            self._next += 1
        if pages >= 1 and not self.header_done:
            self.finish_header()
        if self.hasher is not None and self.header_done:
            self.hasher.advance(pages * self.page_size)

    def finish_header(self) -> None:
        # The copy is a rollback-journal database (bytes 18-19), and its in-header size
        # (offset 28) is valid (offset 92 equal to the change counter at 24).
        header = bytearray(os.pread(self.dst_fd, 100, 0))
        if header[:16] != SQLITE_HEADER:
            raise SnapshotNotPinned("the copy does not start with an SQLite header")
        header[18:20] = b"\x01\x01"
        header[28:32] = self.page_count.to_bytes(4, "big")
        header[92:96] = header[24:28]
        os.pwrite(self.dst_fd, bytes(header), 0)
        self.header_done = True


class TrailingHash:
    """sha256 of a file written front to back, computed in a thread that trails the writer.

    The writer calls :meth:`advance` once the bytes before an offset are final and
    :meth:`result` with the file's size once all are; :meth:`abandon` when it gives up.
    The thread reads through the writer's own descriptor (closing another descriptor of
    the file would drop the POSIX locks SQLite takes on it later).
    """

    CHUNK = 1 << 20

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._final = 0
        self._end: int | None = None
        self._stop = False
        self._ready = threading.Condition()
        self._job = Background(self._run)

    def advance(self, offset: int) -> None:
        with self._ready:
            if offset > self._final:
                self._final = offset
                self._ready.notify()

    def result(self, size: int) -> str:
        with self._ready:
            self._final = self._end = size
            self._ready.notify()
        return self._job.result()

    def abandon(self) -> None:
        with self._ready:
            self._stop = True
            self._ready.notify()
        self._job.wait()

    def _run(self) -> str | None:
        digest = hashlib.sha256()
        buffer = bytearray(self.CHUNK)
        view = memoryview(buffer)
        hashed = 0
        while True:
            with self._ready:
                while not self._stop and hashed >= self._final and (self._end is None or hashed < self._end):
                    self._ready.wait()
                if self._stop:
                    return None
                final, end = self._final, self._end
            if end is not None and hashed >= end:
                return digest.hexdigest()
            while hashed < final:
                want = min(self.CHUNK, final - hashed)
                read = os.preadv(self.fd, [view[:want]], hashed)
                if read <= 0:
                    raise OSError(errno.EIO, "the copy is shorter than its final size")
                digest.update(view[:read])
                hashed += read


def snapshot_wal_frames(fd: int, wal_index: Mapping[str, Any], page_count: int) -> dict[int, int]:
    """Where in the WAL the newest version of each page among the snapshot's frames not yet
    checkpointed (n_backfill+1 .. mx_frame) starts: {page number: offset of its bytes}."""
    page_size = wal_index["page_size"]
    frame_bytes = WAL_FRAME_HEADER_BYTES + page_size
    newest: dict[int, int] = {}
    header = os.pread(fd, WAL_HEADER_BYTES, 0)
    if (len(header) < WAL_HEADER_BYTES or int.from_bytes(header[:4], "big") not in WAL_MAGIC
            or int.from_bytes(header[8:12], "big") != page_size or header[16:24] != wal_index["salt"]):
        raise SnapshotNotPinned("the WAL header does not match the wal-index")
    for frame in range(wal_index["n_backfill"] + 1, wal_index["mx_frame"] + 1):
        offset = WAL_HEADER_BYTES + (frame - 1) * frame_bytes
        frame_header = os.pread(fd, WAL_FRAME_HEADER_BYTES, offset)
        if len(frame_header) < WAL_FRAME_HEADER_BYTES or frame_header[8:16] != wal_index["salt"]:
            raise SnapshotNotPinned("WAL frame %d is not part of the snapshot" % frame)
        page_no = int.from_bytes(frame_header[:4], "big")
        if 1 <= page_no <= page_count:
            newest[page_no] = offset + WAL_FRAME_HEADER_BYTES
    return newest
