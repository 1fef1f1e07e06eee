# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A scheduled run (cron, launchd): one at a time, logged, the log size-capped.

``sqlite-fleet COMMAND --log FILE`` takes ``FILE.lock`` (flock; when the previous run still holds
it: one log line and exit 75), rotates FILE past 5 MiB (only the lock's holder does), and appends
the run's start, progress, summary and end to FILE.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from typing import Any, TextIO

from .paths import core

EX_TEMPFAIL = 75
LOG_MAX_BYTES = 5 << 20
LOG_KEEP = 3


def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ScheduledLog:
    """The lock and the log of a scheduled run; ``busy`` when another run holds the lock."""

    def __init__(self, path: str, max_bytes: int = LOG_MAX_BYTES) -> None:
        self.path = os.path.abspath(path)
        self.lock_path = self.path + ".lock"
        self.max_bytes = max_bytes
        self.busy = False
        self._lock: TextIO | None = None
        self._log: TextIO | None = None

    def __enter__(self) -> ScheduledLog:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self._lock = open(self.lock_path, "a")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.busy = True
            with open(self.path, "a") as log:
                log.write("%s skipped: the previous run still holds %s\n" % (stamp(), self.lock_path))
            return self
        core().rotate_log(self.path, self.max_bytes, LOG_KEEP)
        self._log = open(self.path, "a", buffering=1)  # noqa: SIM115 - line-buffered for tail -f
        self.write("started (pid %d)" % os.getpid())
        return self

    def write(self, line: str) -> None:
        if self._log is not None:
            self._log.write(("%s %s\n" % (stamp(), line)) if "\n" not in line else line + "\n")

    def __exit__(self, *exc: Any) -> None:
        if self._log is not None:
            if exc[0] is not None:
                self.write("stopped by %s" % exc[0].__name__)
            self._log.close()
        if self._lock is not None:
            self._lock.close()
