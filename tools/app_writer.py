#!/usr/bin/env python3
"""An app-like writer that keeps committing to a SQLite database while backups run.

Stdlib only, Python 3.9+. Each transaction touches two tables, as an app's would:
it inserts one row into ``app_events`` and bumps the single row of ``app_counter``
by one, so in every consistent snapshot

    SELECT n FROM app_counter == SELECT count(*) FROM app_events == max(seq)

``check_invariant`` checks exactly that on a database or a backup of it. The two
tables are created when missing, so any database will do (the demo database of
``tools/demo_db.py`` for instance).

    python3 tools/app_writer.py demo/gym.db --rate 100 --duration 30 \\
        --no-autocheckpoint --status-file /tmp/writer.json --ready-file /tmp/writer.ready

With ``--no-autocheckpoint`` committed rows stay in the ``-wal`` file while the
writer runs, where a plain file copy of the ``.db`` misses them. (On a clean exit
SQLite still checkpoints when the writer holds the last connection.)

The status file is a JSON object, replaced atomically every ``--status-interval``
seconds and at the end: ``pid``, ``committed`` (highest seq known committed: the
last seq this writer committed, or the counter it found at start), ``commits``
(by this process), ``errors`` (failed transactions, locked ones included),
``locked_errors``, ``rate`` (commits per second), ``p50_ms``/``p99_ms``/``max_ms``
(commit latency, BEGIN to COMMIT), ``started``/``updated`` (Unix time), ``state``
("running" or "stopped") and a few more.

Exit codes: 0 stopped cleanly (signal or --duration), 2 bad input (missing
database, not a database), 1 SQLite error while setting up.

Tests start it with ``start_writer`` (a subprocess) and stop it with ``.stop()``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Callable, Union

from arg_types import non_negative

DEFAULT_RATE = 50.0
DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_STATUS_INTERVAL_S = 0.2
DEFAULT_PAYLOAD_BYTES = 100
JOURNAL_MODE_CHOICES = ("wal", "delete", "keep")
SCRIPT_PATH = Path(__file__).resolve()

# Never sleep longer than this at a time, so a stop request is seen quickly.
SLEEP_SLICE_S = 0.05
# After a failed transaction that did not wait (disk full, I/O error), pause before retrying.
ERROR_PAUSE_S = 0.01

APP_TABLES_SQL = (
    """CREATE TABLE IF NOT EXISTS app_events (
        id      INTEGER PRIMARY KEY,
        seq     INTEGER NOT NULL UNIQUE,
        at      REAL NOT NULL,
        payload BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS app_counter (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        n  INTEGER NOT NULL
    )""",
    """INSERT INTO app_counter (id, n)
        SELECT 1, (SELECT count(*) FROM app_events)
        WHERE NOT EXISTS (SELECT 1 FROM app_counter)""",
)

DbRef = Union[str, "os.PathLike[str]", sqlite3.Connection]


class WriterInputError(Exception):
    """Bad input: the CLI exits 2 with this message."""


# ---------------------------------------------------------------- latency statistics


@dataclass
class LatencyStats:
    """Commit latencies in log-spaced buckets about 2 % wide.

    Memory stays bounded however long the writer runs, and percentiles cost one
    pass over at most a few hundred buckets. The maximum is exact.
    """

    growth: float = 1.02
    smallest_s: float = 1e-6
    buckets: Counter = field(default_factory=Counter)
    count: int = 0
    max_s: float = 0.0

    def bucket_of(self, seconds: float) -> int:
        if seconds <= self.smallest_s:
            return 0
        return int(math.log(seconds / self.smallest_s, self.growth)) + 1

    def upper_edge_s(self, bucket: int) -> float:
        return self.smallest_s * self.growth**bucket

    def add(self, seconds: float) -> None:
        self.buckets[self.bucket_of(seconds)] += 1
        self.count += 1
        self.max_s = max(self.max_s, seconds)

    def percentile_s(self, fraction: float) -> float | None:
        """The latency below which ``fraction`` of the commits fall (None before any commit)."""
        if self.count == 0:
            return None
        wanted = max(1, math.ceil(fraction * self.count))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= wanted:
                return min(self.upper_edge_s(bucket), self.max_s)
        return self.max_s


def milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


# ---------------------------------------------------------------- writer state


@dataclass
class WriterOptions:
    db: Path
    rate: float = DEFAULT_RATE  # transactions per second, 0 = flat out
    duration: float = 0.0  # seconds, 0 = until stopped
    journal_mode: str = "keep"
    no_autocheckpoint: bool = False
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    status_file: Path | None = None
    ready_file: Path | None = None
    status_interval: float = DEFAULT_STATUS_INTERVAL_S
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    exit_with_parent: bool = False


@dataclass
class WriterState:
    committed: int = 0
    commits: int = 0
    errors: int = 0
    locked_errors: int = 0
    last_error: str | None = None
    latencies: LatencyStats = field(default_factory=LatencyStats)
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    journal_mode: str | None = None
    state: str = "starting"
    stop_reason: str | None = None


def status_dict(state: WriterState, options: WriterOptions) -> dict:
    elapsed_s = time.monotonic() - state.started_monotonic
    return {
        "pid": os.getpid(),
        "db": str(options.db),
        "state": state.state,
        "stop_reason": state.stop_reason,
        "committed": state.committed,
        "commits": state.commits,
        "errors": state.errors,
        "locked_errors": state.locked_errors,
        "last_error": state.last_error,
        "rate": round(state.commits / elapsed_s, 3) if elapsed_s > 0 else 0.0,
        "target_rate": options.rate,
        "p50_ms": milliseconds(state.latencies.percentile_s(0.50)),
        "p99_ms": milliseconds(state.latencies.percentile_s(0.99)),
        "max_ms": milliseconds(state.latencies.max_s if state.latencies.count else None),
        "journal_mode": state.journal_mode,
        "autocheckpoint": not options.no_autocheckpoint,
        "started": state.started,
        "updated": time.time(),
    }


def write_json_atomically(path: Path, data: dict) -> None:
    """Write to a temporary name beside ``path``, then rename: readers never see half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, sort_keys=True) + "\n")
    os.replace(temporary, path)


def is_locked_error(error: sqlite3.Error) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


# ---------------------------------------------------------------- database I/O


def read_write_uri(db: Path) -> str:
    """``mode=rw`` never creates a missing database."""
    return f"{db.resolve().as_uri()}?mode=rw"


def read_only_uri(db: Path, immutable: bool = False) -> str:
    return f"{db.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")


def open_database(options: WriterOptions) -> sqlite3.Connection:
    if not options.db.exists():
        raise WriterInputError(f"{options.db}: no such database (the writer does not create one)")
    if not options.db.is_file():
        raise WriterInputError(f"{options.db}: not a file")
    conn = sqlite3.connect(
        read_write_uri(options.db),
        uri=True,
        isolation_level=None,  # transactions are explicit
        timeout=options.busy_timeout_ms / 1000,
    )
    conn.execute(f"PRAGMA busy_timeout = {int(options.busy_timeout_ms)}")
    return conn


def prepare_database(conn: sqlite3.Connection, options: WriterOptions) -> tuple[str, int]:
    """Journal mode, checkpoint setting and app tables; returns (journal mode, counter)."""
    if options.journal_mode != "keep":
        conn.execute(f"PRAGMA journal_mode = {options.journal_mode}")
    journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if options.journal_mode != "keep" and journal_mode != options.journal_mode:
        raise sqlite3.OperationalError(f"could not switch to journal_mode={options.journal_mode} (is {journal_mode})")
    if options.no_autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in APP_TABLES_SQL:
            conn.execute(statement)
        counter = conn.execute("SELECT n FROM app_counter WHERE id = 1").fetchone()[0]
        conn.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise
    return journal_mode, counter


def rollback_quietly(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def commit_one_event(conn: sqlite3.Connection, payload: bytes) -> int:
    """One app transaction: a new event and the counter bumped by one. Returns the event's seq."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        seq = conn.execute("SELECT n + 1 FROM app_counter WHERE id = 1").fetchone()[0]
        conn.execute("INSERT INTO app_events (seq, at, payload) VALUES (?, ?, ?)", (seq, time.time(), payload))
        conn.execute("UPDATE app_counter SET n = n + 1 WHERE id = 1")
        conn.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise
    return seq


# ---------------------------------------------------------------- main loop


class StopFlag:
    """Set by SIGTERM/SIGINT (or by a test) to end the loop after the current transaction."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason

    def handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request(f"signal {signal.Signals(signum).name}")

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.handle_signal)
        signal.signal(signal.SIGINT, self.handle_signal)


def run_writer(options: WriterOptions, stop: StopFlag | None = None) -> dict:
    """Commit until ``stop`` is requested or ``options.duration`` passes; returns the final status.

    Raises WriterInputError for a missing database and sqlite3.Error when setting up fails;
    errors of single transactions are counted, not raised.
    """
    stop = stop or StopFlag()
    parent_pid = os.getppid()
    conn = open_database(options)
    state = WriterState()
    try:
        state.journal_mode, state.committed = prepare_database(conn, options)
        state.state = "running"
        publish = make_publisher(state, options)
        publish()
        interval_s = 1.0 / options.rate if options.rate > 0 else 0.0
        deadline = state.started_monotonic + options.duration if options.duration > 0 else math.inf
        next_due = time.monotonic()
        next_status = next_due + options.status_interval
        ready = False
        while stop.reason is None:
            now = time.monotonic()
            if now >= deadline:
                stop.request("duration")
                break
            if now >= next_status:
                publish()
                next_status = now + options.status_interval
                if options.exit_with_parent and os.getppid() != parent_pid:
                    stop.request("parent exited")
                    break
            if now < next_due:
                time.sleep(min(next_due - now, next_status - now, deadline - now, SLEEP_SLICE_S))
                continue
            attempt_one(conn, state, options)
            if not ready and state.commits > 0:
                mark_ready(options, publish)
                ready = True
            next_due = max(next_due + interval_s, time.monotonic()) if interval_s else 0.0
    finally:
        state.state = "stopped"
        state.stop_reason = stop.reason
        conn.close()
    final_status = status_dict(state, options)
    if options.status_file:
        write_json_atomically(options.status_file, final_status)
    return final_status


def attempt_one(conn: sqlite3.Connection, state: WriterState, options: WriterOptions) -> None:
    began = time.monotonic()
    try:
        state.committed = commit_one_event(conn, os.urandom(options.payload_bytes))
    except sqlite3.DatabaseError as error:  # locked, disk full, I/O error: count it, keep going
        state.errors += 1
        state.locked_errors += is_locked_error(error)
        state.last_error = str(error)
        time.sleep(ERROR_PAUSE_S)
        return
    state.commits += 1
    state.latencies.add(time.monotonic() - began)


def make_publisher(state: WriterState, options: WriterOptions) -> Callable[[], None]:
    def publish() -> None:
        if options.status_file:
            write_json_atomically(options.status_file, status_dict(state, options))

    return publish


def mark_ready(options: WriterOptions, publish: Callable[[], None]) -> None:
    """After the first commit: publish the status, then touch the ready file."""
    publish()
    if options.ready_file:
        options.ready_file.touch()


# ---------------------------------------------------------------- invariant check


def invariant_of(conn: sqlite3.Connection) -> tuple[bool, int, str]:
    """Check n == count(*) == max(seq) (and min(seq) == 1) in one statement, so one snapshot."""
    try:
        rows, n, count, max_seq, min_seq = conn.execute(
            """SELECT (SELECT count(*) FROM app_counter),
                      (SELECT n FROM app_counter WHERE id = 1),
                      (SELECT count(*) FROM app_events),
                      (SELECT max(seq) FROM app_events),
                      (SELECT min(seq) FROM app_events)"""
        ).fetchone()
    except sqlite3.DatabaseError as error:
        return False, 0, f"cannot read the app tables: {error}"
    facts = f"n={n}, count={count}, max(seq)={max_seq}, min(seq)={min_seq}"
    if rows != 1 or n is None:
        return False, 0, f"app_counter must hold exactly one row, holds {rows}"
    if count == 0:
        return n == 0, n, f"{facts}: {'ok' if n == 0 else 'counter without events'}"
    ok = n == count == max_seq and min_seq == 1
    return ok, n, f"{facts}: {'ok' if ok else 'invariant broken'}"


def check_invariant(db: DbRef, immutable: bool = False) -> tuple[bool, int, str]:
    """(ok, n, detail) for a database path or an open connection.

    A path is opened read-only (``mode=ro``); pass ``immutable=True`` for a finished
    backup file, which SQLite then reads without any locking or -wal/-shm files.
    """
    if isinstance(db, sqlite3.Connection):
        return invariant_of(db)
    path = Path(db)
    if not path.is_file():
        return False, 0, f"{path}: no such database"
    conn = sqlite3.connect(read_only_uri(path, immutable), uri=True, isolation_level=None)
    try:
        return invariant_of(conn)
    finally:
        conn.close()


# ---------------------------------------------------------------- subprocess helpers for tests


def writer_command(
    db: str | os.PathLike,
    status_file: Path,
    ready_file: Path,
    python: str | None = None,
    rate: float = DEFAULT_RATE,
    duration: float = 0.0,
    journal_mode: str = "keep",
    no_autocheckpoint: bool = False,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    status_interval: float = DEFAULT_STATUS_INTERVAL_S,
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES,
    exit_with_parent: bool = True,
) -> list[str]:
    command = [
        python or sys.executable,
        str(SCRIPT_PATH),
        str(db),
        "--rate", str(rate),
        "--duration", str(duration),
        "--journal-mode", journal_mode,
        "--busy-timeout-ms", str(busy_timeout_ms),
        "--status-file", str(status_file),
        "--ready-file", str(ready_file),
        "--status-interval", str(status_interval),
        "--payload-bytes", str(payload_bytes),
    ]  # fmt: skip
    if no_autocheckpoint:
        command.append("--no-autocheckpoint")
    if exit_with_parent:
        command.append("--exit-with-parent")
    return command


class WriterHandle:
    """A writer subprocess started by ``start_writer``."""

    def __init__(self, process: subprocess.Popen, status_file: Path, ready_file: Path, workdir: Path) -> None:
        self.process = process
        self.status_file = status_file
        self.ready_file = ready_file
        self.workdir = workdir  # holds stderr (and status/ready files unless given); removed by stop()
        self._last_status: dict = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stderr_text(self) -> str:
        try:
            return (self.workdir / "stderr.txt").read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""

    def status(self) -> dict:
        """The latest status the writer published ({} before the first one)."""
        try:
            self._last_status = json.loads(self.status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        return dict(self._last_status)

    def _fail_if_exited(self) -> None:
        if not self.running():
            raise RuntimeError(f"writer exited with status {self.process.returncode}: {self.stderr_text()}")

    def wait_ready(self, timeout: float = 10.0) -> dict:
        """Wait for the first commit; returns the status then."""
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            self._fail_if_exited()
            if time.monotonic() > deadline:
                raise TimeoutError(f"writer not ready after {timeout} s: {self.status()}")
            time.sleep(0.01)
        return self.status()

    def wait_committed(self, seq: int, timeout: float = 10.0) -> dict:
        """Wait until the writer reports ``committed >= seq``; returns that status."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.status()
            if current.get("committed", 0) >= seq:
                return current
            self._fail_if_exited()
            if time.monotonic() > deadline:
                raise TimeoutError(f"writer did not reach seq {seq} in {timeout} s: {current}")
            time.sleep(0.01)

    def stop(self, timeout: float = 15.0) -> dict:
        """SIGTERM, wait, and return the final status (with ``returncode``). Kills it after ``timeout``."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.close()
            raise RuntimeError(f"writer did not stop within {timeout} s after SIGTERM; killed") from None
        final_status = self.status()
        final_status["returncode"] = self.process.returncode
        if self.process.returncode != 0:
            final_status["stderr"] = self.stderr_text()
        self.close()
        return final_status

    def kill(self) -> int:
        """SIGKILL (a crash, for fault injection); returns the exit status."""
        self.process.kill()
        returncode = self.process.wait()
        self.status()
        return returncode

    def close(self) -> None:
        self.status()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> WriterHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.running():
            self.stop()
        else:
            self.close()


def start_writer(
    db: str | os.PathLike,
    *,
    python: str | None = None,
    status_file: str | os.PathLike | None = None,
    ready_file: str | os.PathLike | None = None,
    **options: object,
) -> WriterHandle:
    """Start ``app_writer.py`` on ``db`` in a subprocess (this interpreter unless ``python``).

    ``options`` are ``writer_command``'s: rate, duration, journal_mode, no_autocheckpoint,
    busy_timeout_ms, status_interval, payload_bytes, exit_with_parent. The writer exits by
    itself when this process goes away (``exit_with_parent``, on by default).
    """
    workdir = Path(tempfile.mkdtemp(prefix="app_writer-"))
    status_path = Path(status_file) if status_file else workdir / "status.json"
    ready_path = Path(ready_file) if ready_file else workdir / "ready"
    command = writer_command(db, status_path, ready_path, python=python, **options)  # type: ignore[arg-type]
    with open(workdir / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    return WriterHandle(process, status_path, ready_path, workdir)


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> WriterOptions:
    parser = argparse.ArgumentParser(
        description="Keep committing app-like two-table transactions to a SQLite database "
        "(app_events + app_counter) until stopped, as an app would while backups run.",
        epilog="Stops cleanly on SIGTERM/SIGINT or after --duration. Exit status: 0 stopped, "
        "2 bad input (e.g. missing DB), 1 SQLite error while setting up.",
    )
    parser.add_argument("db", metavar="DB", help="existing database file (the app tables are created if missing)")
    parser.add_argument("--rate", type=non_negative(float), default=DEFAULT_RATE, metavar="TX_PER_S",
                        help=f"transactions per second, 0 = flat out (default {DEFAULT_RATE:g})")
    parser.add_argument("--duration", type=non_negative(float), default=0.0, metavar="S",
                        help="stop after S seconds (default 0: run until SIGTERM/SIGINT)")
    parser.add_argument("--journal-mode", choices=JOURNAL_MODE_CHOICES, default="keep",
                        help="switch the database to this journal mode first (default keep)")
    parser.add_argument("--no-autocheckpoint", action="store_true",
                        help="PRAGMA wal_autocheckpoint=0: committed rows stay in the -wal file")
    parser.add_argument("--busy-timeout-ms", type=non_negative(int), default=DEFAULT_BUSY_TIMEOUT_MS, metavar="N",
                        help="wait up to N ms for a lock before counting 'database is locked' "
                             f"(default {DEFAULT_BUSY_TIMEOUT_MS})")
    parser.add_argument("--status-file", type=Path, metavar="F",
                        help="JSON status, replaced atomically while running and at the end")
    parser.add_argument("--ready-file", type=Path, metavar="F", help="touched after the first commit")
    parser.add_argument("--status-interval", type=non_negative(float), default=DEFAULT_STATUS_INTERVAL_S, metavar="S",
                        help=f"seconds between status writes (default {DEFAULT_STATUS_INTERVAL_S})")
    parser.add_argument("--payload-bytes", type=non_negative(int), default=DEFAULT_PAYLOAD_BYTES, metavar="N",
                        help=f"random bytes per event (default {DEFAULT_PAYLOAD_BYTES})")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the parent process exits (used by start_writer)")
    args = parser.parse_args(argv)
    return WriterOptions(
        db=Path(args.db),
        rate=args.rate,
        duration=args.duration,
        journal_mode=args.journal_mode,
        no_autocheckpoint=args.no_autocheckpoint,
        busy_timeout_ms=int(args.busy_timeout_ms),
        status_file=args.status_file,
        ready_file=args.ready_file,
        status_interval=args.status_interval,
        payload_bytes=int(args.payload_bytes),
        exit_with_parent=args.exit_with_parent,
    )


def check_output_paths(options: WriterOptions) -> None:
    for path in (options.status_file, options.ready_file):
        if path is not None and not path.parent.is_dir():
            raise WriterInputError(f"{path}: folder {path.parent} does not exist")


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    stop = StopFlag()
    stop.install()
    try:
        check_output_paths(options)
        run_writer(options, stop)
    except WriterInputError as error:
        print(f"app_writer: {error}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as error:
        print(f"app_writer: {options.db}: {error}", file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as error:  # e.g. "file is not a database"
        print(f"app_writer: {options.db}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"app_writer: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
