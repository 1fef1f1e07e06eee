# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress of a pull: the files the controller's fetch writes while it copies, and their reader.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from typing import Any

from .names import TMP_PREFIX

PROGRESS_DIR_ENV = "SQLITE_FLEET_PROGRESS_DIR"  # set by the controller's CLI: where the fetch reports
PROGRESS_INTERVAL = 0.25  # seconds between two looks at a growing file (a few reports a second at most)
PROGRESS_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.")


def progress_file_name(host: str, database: str) -> str:
    """``<host>--<database>.json``, every character but letters, digits, ``_`` and ``.`` as %XX."""
    def escaped(text: str) -> str:
        return "".join(c if c in PROGRESS_SAFE else "".join("%%%02X" % b for b in c.encode("utf-8"))
                       for c in str(text))
    return "%s--%s.json" % (escaped(host), escaped(database))


# Invariant: a progress file is always whole (temporary name, then rename) and never fails the transfer it reports.
class PullProgress:
    """While a transfer copies a file to ``dest``, a thread looks at its size every ``interval``
    seconds and, when it grew, rewrites ``<folder>/<host>--<database>.json``:
    ``{"host", "database", "file", "bytes", "total", "updated"}`` (``updated``: Unix time).
    ``from_env`` gives one that reports into $SQLITE_FLEET_PROGRESS_DIR, or one that does nothing.
    """

    def __init__(self, folder: str | None, host: str, database: str, dest: str, total: int,
                 interval: float = PROGRESS_INTERVAL) -> None:
        self.folder = folder
        self.host, self.database, self.dest, self.total = str(host), str(database), dest, total
        self.interval = interval
        self.path = os.path.join(folder, progress_file_name(self.host, self.database)) if folder else None
        self.file = os.path.basename(dest)
        for prefix in (TMP_PREFIX, "incoming."):  # the archive's incoming name: the backup's own name
            self.file = self.file[len(prefix):] if self.file.startswith(prefix) else self.file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: int | None = None

    @classmethod
    def from_env(cls, host: str, database: str, dest: str, total: int) -> PullProgress:
        folder = os.environ.get(PROGRESS_DIR_ENV)
        return cls(folder if folder and os.path.isabs(folder) else None, host, database, dest, total)

    def __enter__(self) -> PullProgress:
        if self.path:
            self.report()
            self._thread = threading.Thread(target=self._watch, name="pull-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self.report()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def report(self) -> None:
        """Write the progress file when the destination's size changed since the last report."""
        try:
            size = os.path.getsize(self.dest)
        except OSError:
            size = 0
        if size == self._last or not self.path:
            return
        text = json.dumps({"host": self.host, "database": self.database, "file": self.file,
                           "bytes": size, "total": self.total, "updated": round(time.time(), 3)})
        tmp = "%s.%s.tmp" % (self.path, secrets.token_hex(4))
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)  # type: ignore[arg-type]
            with open(tmp, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(tmp, self.path)
            self._last = size
        except OSError:  # no room, a file size limit, a folder gone: the transfer goes on unreported
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def read_pull_progress(folder: str) -> list[dict[str, Any]]:
    """Every whole progress file in ``folder`` (see PullProgress), sorted by host and database;
    a missing folder or an unreadable, half-written or foreign file is left out."""
    found = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for name in names:
        if not name.endswith(".json") or "--" not in name:
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as stream:
                entry = json.loads(stream.read(64 << 10))
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("host"), str) and isinstance(entry.get("database"), str) \
                and all(isinstance(entry.get(key), int) and not isinstance(entry.get(key), bool)
                        for key in ("bytes", "total")) and isinstance(entry.get("updated"), (int, float)):
            found.append(entry)
    return sorted(found, key=lambda e: (e["host"], e["database"]))
