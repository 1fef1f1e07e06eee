# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The progress of the pulls while they run: the fetch writes one small file per host and database
into ``var/runs/<run_id>/progress/`` (the core's PullProgress, asked for through
$SQLITE_FLEET_PROGRESS_DIR); this reads them a few times a second and shows them.

On a terminal, one status line redrawn in place (and cleared before any other line is printed):
``pulling: pi1 gym 45% of 300.0 MiB, 12.5 MiB/s``. Elsewhere (``--progress`` into a pipe or a
log) a line per transfer of 4 MiB or more every 3 s while it runs:
``pi1 gym: pulling gym_backup_20261206_031501.db: 45% (135.0 MiB of 300.0 MiB)``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from .events import human_bytes
from .paths import core

CLEAR_LINE = "\r\x1b[K"


def percent(entry: Mapping[str, Any]) -> int:
    return min(100, 100 * entry["bytes"] // max(entry["total"], 1))


def pulling_line(entry: Mapping[str, Any]) -> tuple[str, str, str]:
    """(host, database, text) of one line for a log or a pipe."""
    return (entry["host"], entry["database"], "pulling %s: %d%% (%s of %s)" % (
        entry.get("file") or "?", percent(entry), human_bytes(entry["bytes"]), human_bytes(entry["total"])))


class PullDisplay:
    """Polls a run's progress folder and shows the transfers still going (see the module's doc).

    ``live``: the terminal to redraw a status line on, or None for lines through ``say``.
    ``finished(host)``: the host's fetch task ended; its files say nothing more about this run.
    ``clear()``: to be called (under ``lock``) before anything else prints a line.
    """

    def __init__(self, folder: str, say: Callable[[str, str | None, str], None], live: TextIO | None,
                 lock: threading.Lock, interval: float = 0.25, line_every: float = 3.0,
                 min_line_bytes: int = 4 << 20) -> None:
        self.folder = folder
        self.say = say
        self.live = live
        self.lock = lock
        self.interval = interval
        self.line_every = line_every
        self.min_line_bytes = min_line_bytes
        self._ended: dict[str, float] = {}  # host -> when its fetch ended (Unix time)
        self._first: dict[tuple[str, str], tuple[float, int]] = {}  # when and at what size seen first
        self._lined: dict[tuple[str, str], float] = {}  # last line printed, per transfer
        self._drawn = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pull-progress-display", daemon=True)

    def start(self) -> PullDisplay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self.lock:
            self.clear()

    def finished(self, host: str) -> None:
        self._ended[host] = time.time()

    def clear(self) -> None:
        if self._drawn and self.live is not None:
            self.live.write(CLEAR_LINE)
            self.live.flush()
            self._drawn = False

    def going(self) -> list[dict[str, Any]]:
        """The transfers not finished whose host's fetch has not ended."""
        return [e for e in core().read_pull_progress(self.folder)
                if e["bytes"] < e["total"] and e["updated"] > self._ended.get(e["host"], 0.0)]

    def rate(self, entry: Mapping[str, Any]) -> float | None:
        key = (entry["host"], entry["database"])
        first = self._first.setdefault(key, (entry["updated"], entry["bytes"]))
        seconds = entry["updated"] - first[0]
        return (entry["bytes"] - first[1]) / seconds if seconds >= 1 else None

    def status_line(self, entries: list[dict[str, Any]]) -> str:
        parts = []
        for entry in entries:
            rate = self.rate(entry)
            parts.append("%s %s %d%% of %s%s" % (entry["host"], entry["database"], percent(entry),
                                                 human_bytes(entry["total"]),
                                                 ", %s/s" % human_bytes(rate) if rate else ""))
        return "pulling: " + "; ".join(parts)

    def tick(self) -> None:
        entries = self.going()
        with self.lock:
            if self.live is not None:
                self.clear()
                if entries:
                    width = shutil.get_terminal_size((100, 24)).columns - 1
                    self.live.write(self.status_line(entries)[:max(width, 20)])
                    self.live.flush()
                    self._drawn = True
                return
            now = time.monotonic()
            for entry in entries:  # the first line once the transfer has run line_every seconds
                key = (entry["host"], entry["database"])
                if entry["total"] >= self.min_line_bytes and now - self._lined.setdefault(key, now) >= self.line_every:
                    self._lined[key] = now
                    self.say(*pulling_line(entry))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # a view of the run: it never stops the run
                continue
