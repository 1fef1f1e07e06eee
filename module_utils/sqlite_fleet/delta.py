# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Delta files: the pages that changed between two backups of one database, and their application.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any

from .errors import KIND_BAD_INPUT, KIND_CORRUPT, BackupError
from .files import copy_file_bytes, sha256_file
from .inputs import SQLITE_HEADER

#
# A backup-API copy keeps the page order of its source, so two backups of one database
# differ only in the pages the app changed in between. The host holds both the new backup
# and the previous one that the controller already archived (same sha256), so it can work
# out the changed pages by itself and send just those: nothing has to travel upstream
# (rsync's receiver sends a checksum per block of its basis first).
#
# Delta file: DELTA_MAGIC, a 4-byte big-endian header length, a JSON header, then one zlib
# stream of, for each changed page in rising order, a 4-byte big-endian page number
# (0-based) and the page's bytes XOR the base's page (zeros where the base has none). An
# app that changes a row rewrites one cell of a page: the rest of the XOR is zeros, which
# compress to almost nothing, even when the data itself is incompressible.

DELTA_MAGIC = b"SQLFDLT2"
DELTA_ZLIB_LEVEL = 6
DELTA_HEADER_MAX = 1 << 16
DELTA_BLOCK_BYTES = 1 << 20
_PAGE_NO = struct.Struct(">I")


def page_size_of(path: str) -> int:
    """Page size from the database header (offset 16, big-endian; 1 means 65536)."""
    with open(path, "rb") as handle:
        header = handle.read(100)
    if header[:16] != SQLITE_HEADER:
        raise BackupError("%s is not an SQLite 3 database" % path, KIND_CORRUPT)
    size = int.from_bytes(header[16:18], "big")
    size = 65536 if size == 1 else size
    if size < 512 or size & (size - 1):
        raise BackupError("%s has an invalid page size %d" % (path, size), KIND_CORRUPT)
    return size


def make_delta(base_path: str, target_path: str, delta_path: str, *, base_sha256: str | None = None,
               target_sha256: str | None = None) -> dict[str, Any]:
    """Write the pages of ``target_path`` that differ from ``base_path`` into ``delta_path``.

    ``base_sha256``/``target_sha256``: the files' checksums when already known (their
    manifests), else computed here. They only label the delta: the receiver checks its base
    against the first and the rebuilt file against the target's manifest.
    """
    page_size = page_size_of(target_path)
    if page_size_of(base_path) != page_size:
        raise BackupError("page sizes differ between %s and %s: no delta possible"
                          % (os.path.basename(base_path), os.path.basename(target_path)), KIND_BAD_INPUT)
    target_size = os.path.getsize(target_path)
    changed = 0
    packer = zlib.compressobj(DELTA_ZLIB_LEVEL)
    with open(base_path, "rb") as base, open(target_path, "rb") as target, \
            open(delta_path, "wb") as out:
        header = json.dumps({
            "base_sha256": base_sha256 or sha256_file(base_path),
            "target_sha256": target_sha256 or sha256_file(target_path),
            "target_size": target_size,
            "page_size": page_size,
        }).encode()
        out.write(DELTA_MAGIC + len(header).to_bytes(4, "big") + header)
        # Compare a block of pages at a time; look at single pages only in blocks that differ.
        block_size = page_size * max(1, DELTA_BLOCK_BYTES // page_size)
        page_no = 0
        while True:
            block = target.read(block_size)
            if not block:
                break
            old = base.read(block_size)
            if old != block:
                for offset in range(0, len(block), page_size):
                    page = block[offset:offset + page_size]
                    old_page = old[offset:offset + page_size]
                    if old_page != page:
                        record = _PAGE_NO.pack(page_no + offset // page_size) + xor_bytes(page, old_page)
                        out.write(packer.compress(record))
                        changed += 1
            page_no += -(-len(block) // page_size)
        out.write(packer.flush())
        out.flush()
        os.fsync(out.fileno())
    return {"pages_total": page_no, "pages_changed": changed, "delta_bytes": os.path.getsize(delta_path),
            "target_bytes": target_size, "page_size": page_size}


def xor_bytes(page: bytes, old_page: bytes) -> bytes:
    """``page`` XOR ``old_page`` (zero-extended to ``page``'s length); its own inverse."""
    size = len(page)
    old_page = old_page.ljust(size, b"\0")
    return (int.from_bytes(page, "big") ^ int.from_bytes(old_page, "big")).to_bytes(size, "big")


def delta_records(delta: Any, record_size: int, name: str) -> Iterator[bytes]:
    """The records of a delta's compressed body, at most one record's worth inflated at a time."""
    unpacker = zlib.decompressobj()
    pending = b""
    while not unpacker.eof:
        data = unpacker.unconsumed_tail or delta.read(1 << 16)
        if not data:
            raise BackupError("delta %s is truncated" % name, KIND_CORRUPT)
        try:
            pending += unpacker.decompress(data, record_size)
        except zlib.error as exc:
            raise BackupError("delta %s is corrupt: %s" % (name, exc), KIND_CORRUPT) from None
        while len(pending) >= record_size:
            yield pending[:record_size]
            pending = pending[record_size:]
    if pending or unpacker.unused_data or delta.read(1):
        raise BackupError("delta %s has bytes after its last page" % name, KIND_CORRUPT)


def apply_delta(base_path: str, delta_path: str, out_path: str) -> dict[str, Any]:
    """Rebuild the target from ``base_path`` + ``delta_path`` into ``out_path`` (new file).

    Every field of the delta is bounded before use (it comes from a host); the caller still
    checks the result's sha256 against the manifest: the checksum decides.
    """
    name = os.path.basename(delta_path)
    with open(delta_path, "rb") as delta:
        if delta.read(len(DELTA_MAGIC)) != DELTA_MAGIC:
            raise BackupError("%s is not a delta file (of this version)" % name, KIND_CORRUPT)
        header_len = int.from_bytes(delta.read(4), "big")
        if not 0 < header_len <= DELTA_HEADER_MAX:
            raise BackupError("delta header length %d is out of range" % header_len, KIND_CORRUPT)
        try:
            header = json.loads(delta.read(header_len).decode("utf-8"))
            page_size = int(header["page_size"])
            target_size = int(header["target_size"])
            base_sha256 = str(header["base_sha256"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            raise BackupError("delta header of %s is malformed" % name, KIND_CORRUPT) from None
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1) or target_size < 0 \
                or target_size % page_size:
            raise BackupError("delta header has an impossible page or file size", KIND_CORRUPT)
        if sha256_file(base_path) != base_sha256:
            raise BackupError("the delta was made against another base than %s" % os.path.basename(base_path),
                              KIND_CORRUPT)
        fd = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            changed = rebuild_from_delta(fd, base_path, delta, target_size, page_size, name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out_path)
            raise
        finally:
            os.close(fd)
    return {"pages_changed": changed, "target_bytes": target_size}


def rebuild_from_delta(fd: int, base_path: str, delta: Any, target_size: int, page_size: int, name: str) -> int:
    """Write the base's pages, then the delta's, into ``fd``; returns the pages changed."""
    # Start from the base's pages (cut or zero-extended to the target's length) ...
    with open(base_path, "rb") as base:
        copy_file_bytes(base.fileno(), fd, target_size)
    os.ftruncate(fd, target_size)
    # ... and turn the changed ones into the target's (page numbers strictly rising, so a
    # hostile delta cannot inflate to more than the file's pages).
    pages_total = target_size // page_size
    changed = 0
    last = -1
    for record in delta_records(delta, _PAGE_NO.size + page_size, name):
        (page_no,) = _PAGE_NO.unpack(record[:_PAGE_NO.size])
        if not last < page_no < pages_total:
            raise BackupError("delta names page %d out of order or beyond the file's %d pages"
                              % (page_no, pages_total), KIND_CORRUPT)
        last = page_no
        old_page = os.pread(fd, page_size, page_no * page_size)
        os.pwrite(fd, xor_bytes(record[_PAGE_NO.size:], old_page), page_no * page_size)
        changed += 1
    os.fsync(fd)
    return changed
