# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The progress of a long pull: while a host's fetch task runs, the incoming files grow in the
archive (``<archive>/<host>/<database>/.sqlite-backup-tmp.incoming.<file>``); their size against the
size the host announced is the progress. No change to the fetch or its wire protocol."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .events import human_bytes

TMP_PREFIX = ".sqlite-backup-tmp."  # the core's TMP_PREFIX: every incoming file starts with it


def incoming_size(folder: str, filename: str) -> int | None:
    """Size of the incoming file for ``filename`` in ``folder`` (None before it appears)."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return None
    for entry in entries:
        if entry.startswith(TMP_PREFIX) and entry.endswith("." + filename):
            try:
                return os.path.getsize(os.path.join(folder, entry))
            except OSError:
                return None
    return None


class PullWatcher:
    """Reports, every ``interval`` seconds, how far each of a host's transfers has come."""

    def __init__(self, host: str, folder: str, transfers: Sequence[Mapping[str, Any]],
                 say: Callable[[str, str | None, str], None], interval: float = 2.0, min_bytes: int = 4 << 20):
        self.host = host
        self.folder = folder
        self.transfers = [t for t in transfers if isinstance(t.get("bytes"), int) and t["bytes"] >= min_bytes]
        self.say = say
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pull-watcher-%s" % host, daemon=True)

    def start(self) -> PullWatcher:
        if self.transfers:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        last: dict[str, int] = {}
        while not self._stop.wait(self.interval):
            for transfer in self.transfers:
                name, filename, total = str(transfer.get("name")), str(transfer.get("file")), transfer["bytes"]
                size = incoming_size(os.path.join(self.folder, name), filename)
                if size is None or size == last.get(filename) or size >= total:
                    continue
                last[filename] = size
                self.say(self.host, name, "pulling %s: %d%% (%s of %s)" % (
                    filename, 100 * size // max(total, 1), human_bytes(size), human_bytes(total)))
