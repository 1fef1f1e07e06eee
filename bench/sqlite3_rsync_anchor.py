"""SQLite's own sqlite3_rsync as the benches' anchor: find the binary, pull a test host's live
database with it over the fleet's ssh, check the replica.

sqlite3_rsync ships with SQLite >= 3.47; Debian 12 has 3.40. ``bench/build_sqlite3_rsync.sh`` builds
it into ``var/bin``. Looked for in this order: $SQLITE3_RSYNC, <repo>/var/bin/sqlite3_rsync, PATH.
Without it the benches say "not measured" and why. The test hosts share this machine's file
system outside their private mounts, so the far side runs the same binary (``--exe``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from common import REPO

TIMEOUT_S = 1800


def find() -> str | None:
    """Path of a sqlite3_rsync that runs, or None."""
    for candidate in (os.environ.get("SQLITE3_RSYNC"), str(REPO / "var" / "bin" / "sqlite3_rsync"),
                      shutil.which("sqlite3_rsync")):
        if candidate and os.access(candidate, os.X_OK):
            proc = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=20, check=False)
            if proc.returncode == 0:
                return os.path.abspath(candidate)
    return None


def describe(binary: str | None) -> str:
    """The version line to print beside the figures, or why there are none."""
    if binary is None:
        return ("not measured: no sqlite3_rsync here (it ships with SQLite 3.47+; this machine's SQLite is %s); "
                "bench/build_sqlite3_rsync.sh builds it" % sqlite3.sqlite_version)
    stamp = Path(binary + ".version")
    if stamp.exists():
        return stamp.read_text().strip()
    return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()


def quote(name: str) -> str:
    return '"%s"' % name.replace('"', '""')


def table_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        return {n: conn.execute("SELECT count(*) FROM %s" % quote(n)).fetchone()[0]  # noqa: S608 - quoted
                for n in names}
    finally:
        conn.close()


def check_replica(replica: Path, origin: Path) -> dict[str, Any]:
    """The replica passes integrity_check and holds the origin's tables with the same row counts."""
    conn = sqlite3.connect("file:%s?mode=ro" % replica, uri=True)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    counts, expected = table_counts(replica), table_counts(origin)
    if integrity != "ok" or counts != expected:
        raise RuntimeError("sqlite3_rsync's replica %s is not the origin's copy: integrity %r, rows %s, origin %s"
                           % (replica, integrity, counts, expected))
    return {"integrity_check": integrity, "tables": len(counts), "rows": sum(counts.values())}


class Anchor:
    """sqlite3_rsync pulls from one fleet's hosts (origin on the host, replica here)."""

    def __init__(self, binary: str, fleet: Any, tmp: Path) -> None:
        self.binary = binary
        self.fleet = fleet
        self.ssh = tmp / "sqlite3_rsync-ssh"  # --ssh takes one program: the fleet's options go in a wrapper
        self.ssh.write_text("#!/bin/sh\nexec ssh %s \"$@\"\n" % shlex.join([
            "-F", "/dev/null", "-i", str(fleet.client_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=%s" % fleet.known_hosts,
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ControlMaster=no", "-o", "ControlPath=none"]))
        self.ssh.chmod(0o755)

    def pull(self, host: Any, remote_path: str, replica: Path) -> dict[str, Any]:
        """One sqlite3_rsync run from ``host``'s ``remote_path`` onto ``replica`` (created if absent):
        wall seconds and the host link's bytes (rx + tx); the replica checked afterwards, untimed."""
        argv = [self.binary, "root@%s:%s" % (host.address, remote_path), str(replica),
                "--ssh", str(self.ssh), "--exe", self.binary]
        rx0, tx0 = host.link_bytes()
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        seconds = time.perf_counter() - started
        rx1, tx1 = host.link_bytes()
        if proc.returncode != 0:
            raise RuntimeError("sqlite3_rsync failed (exit %d): %s %s" % (proc.returncode, proc.stdout[-2000:],
                                                                         proc.stderr[-2000:]))
        return {"variant": "sqlite3_rsync", "seconds": round(seconds, 3), "wire_bytes": (rx1 - rx0) + (tx1 - tx0),
                "bytes": replica.stat().st_size, "replica": check_replica(replica, host.path(remote_path))}
