#!/usr/bin/env python3
"""Create the demo database of the gym-controller app (stdlib only, Python 3.9+).

The app grew from a Raspberry Pi gym locker controller: members rent lockers and
open doors with their cards. The demo database has what such an app has: foreign
keys, indexes, a view, WAL mode and a ``user_version``. ``--size-mb`` pads it with a
``photos`` table of incompressible BLOBs so tests and benchmarks get a database of a
chosen size quickly.

The same seed always gives the same content. The database is built under a
temporary name beside the target and moved into place when complete, so a
half-built file never carries the target's name.

    python3 tools/demo_db.py demo/gym.db --members 500 --size-mb 64 --seed 7

Prints a one-line JSON summary. Exit codes: 0 done, 2 bad input (for example the
file exists and --force was not given), 1 SQLite or file-system error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from arg_types import non_negative

SCHEMA_VERSION = 3
PAGE_SIZE = 4096
DEFAULT_MEMBERS = 200
DEFAULT_SEED = 1
JOURNAL_MODES = ("wal", "delete")
BYTES_PER_MB = 1024 * 1024

# Padding: BLOBs of 64 overflow pages' worth of payload each, inserted in
# transactions of about 64 MiB.
OVERFLOW_PAYLOAD_PER_PAGE = PAGE_SIZE - 4
PHOTO_BYTES = OVERFLOW_PAYLOAD_PER_PAGE * 64
PHOTOS_PER_TRANSACTION = 256
# Stop padding when the file is within this many bytes of the target.
SIZE_TOLERANCE_BYTES = 2 * PAGE_SIZE

EPOCH_SECONDS = int(datetime(2023, 1, 1, tzinfo=timezone.utc).timestamp())
ZONES = ("A", "B", "C", "D")
DOORS = ("front", "gym-floor", "pool", "sauna")
FIRST_NAMES = tuple(
    "Alex Billie Casey Dana Eli Frankie Gabi Harper Ira Jo Kim Lou Max Noa Oli Pat Quinn Robin Sam Toni".split()
)
LAST_NAMES = tuple(
    "Berg Costa Dahl Ek Fischer Garcia Holm Ivanova Jensen "
    "Kowalski Lind Moreau Novak Olsen Petrov Rossi Sato Weber".split()
)

SCHEMA_SQL = """
CREATE TABLE members (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL,
    phone     TEXT,
    joined_at TEXT NOT NULL,
    active    INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1))
);
CREATE TABLE lockers (
    id     INTEGER PRIMARY KEY,
    zone   TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'free' CHECK (status IN ('free', 'rented', 'broken'))
);
CREATE TABLE rentals (
    id         INTEGER PRIMARY KEY,
    member_id  INTEGER NOT NULL REFERENCES members (id),
    locker_id  INTEGER NOT NULL REFERENCES lockers (id),
    started_at TEXT NOT NULL,
    ended_at   TEXT
);
CREATE TABLE access_log (
    id        INTEGER PRIMARY KEY,
    member_id INTEGER REFERENCES members (id),
    at        TEXT NOT NULL,
    door      TEXT NOT NULL,
    result    TEXT NOT NULL CHECK (result IN ('granted', 'denied'))
);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE photos (
    id        INTEGER PRIMARY KEY,
    member_id INTEGER REFERENCES members (id),
    taken_at  TEXT NOT NULL,
    mime      TEXT NOT NULL DEFAULT 'image/jpeg',
    data      BLOB NOT NULL
);
CREATE VIEW current_rentals AS
    SELECT r.id, r.locker_id, l.zone, r.member_id, m.name, r.started_at
    FROM rentals AS r
    JOIN lockers AS l ON l.id = r.locker_id
    JOIN members AS m ON m.id = r.member_id
    WHERE r.ended_at IS NULL;
"""

# Built after the bulk load, which is faster than keeping them up to date row by row.
INDEX_SQL = """
CREATE INDEX rentals_member_id ON rentals (member_id);
CREATE INDEX rentals_locker_id ON rentals (locker_id);
CREATE INDEX access_log_member_at ON access_log (member_id, at);
CREATE INDEX access_log_at ON access_log (at);
CREATE INDEX photos_member_id ON photos (member_id);
"""

TABLES = ("members", "lockers", "rentals", "access_log", "counters", "photos")


class DemoDbError(Exception):
    """Bad input for the demo database (the CLI exits 2 with this message)."""


# ---------------------------------------------------------------- pure helpers


def timestamp(seconds_after_epoch: float) -> str:
    """SQLite-style UTC text timestamp ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH_SECONDS + int(seconds_after_epoch)))


def member_row(member: tuple) -> tuple:
    """The members table row: ``joined_at`` as text."""
    member_id, name, phone, joined, active = member
    return (member_id, name, phone, timestamp(joined), active)


def locker_count_for(members: int) -> int:
    """A gym has about one locker for every two members, and at least ten."""
    return max(10, math.ceil(members / 2))


def sidecar_paths(db_path: Path) -> list[Path]:
    """The files SQLite may keep beside a database."""
    return [Path(f"{db_path}{suffix}") for suffix in ("-wal", "-shm", "-journal")]


def generate_members(rng: random.Random, count: int) -> list[tuple]:
    """Member rows; ``joined_at`` is seconds after EPOCH here (see ``member_row``)."""
    rows = []
    for member_id in range(1, count + 1):
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        phone = None if rng.random() < 0.1 else f"+46 70 {rng.randrange(10**7):07d}"
        joined = rng.uniform(0, 600 * 86400)
        active = 0 if rng.random() < 0.15 else 1
        rows.append((member_id, name, phone, joined, active))
    return rows


def generate_lockers_and_rentals(
    rng: random.Random, lockers: int, members: list[tuple]
) -> tuple[list[tuple], list[tuple]]:
    """Lockers and their rental history; a locker with an open rental is 'rented'."""
    active_ids = [row[0] for row in members if row[4] == 1]
    all_ids = [row[0] for row in members]
    locker_rows = []
    rental_rows = []
    for locker_id in range(1, lockers + 1):
        zone = ZONES[(locker_id - 1) * len(ZONES) // lockers]
        clock = rng.uniform(0, 30 * 86400)
        if all_ids:
            for _ in range(rng.randrange(4)):
                started = clock + rng.uniform(0, 40 * 86400)
                ended = started + rng.uniform(3600, 90 * 86400)
                member_id = rng.choice(all_ids)
                rental_rows.append((member_id, locker_id, timestamp(started), timestamp(ended)))
                clock = ended
        if active_ids and rng.random() < 0.5:
            started = clock + rng.uniform(0, 20 * 86400)
            rental_rows.append((rng.choice(active_ids), locker_id, timestamp(started), None))
            status = "rented"
        else:
            status = "broken" if rng.random() < 0.03 else "free"
        locker_rows.append((locker_id, zone, status))
    numbered_rentals = [(rental_id, *row) for rental_id, row in enumerate(rental_rows, 1)]
    return locker_rows, numbered_rentals


def generate_access_log(rng: random.Random, members: list[tuple]) -> list[tuple]:
    """About fifteen door events per member, plus denied swipes of unknown cards."""
    events = []
    for member_id, _name, _phone, joined, active in members:
        for _ in range(rng.randrange(5, 26)):
            at = joined + rng.uniform(0, 120 * 86400)
            granted = active == 1 and rng.random() > 0.02
            events.append((at, member_id, rng.choice(DOORS), "granted" if granted else "denied"))
    for _ in range(len(members) // 10):
        events.append((rng.uniform(0, 700 * 86400), None, "front", "denied"))
    events.sort(key=lambda event: event[0])
    return [
        (event_id, member_id, timestamp(at), door, result)
        for event_id, (at, member_id, door, result) in enumerate(events, 1)
    ]


def counters_for(rentals: list[tuple], access_log: list[tuple], members: list[tuple]) -> list[tuple]:
    return [
        ("members_joined", len(members)),
        ("rentals_started", len(rentals)),
        ("doors_opened", sum(1 for row in access_log if row[4] == "granted")),
        ("doors_denied", sum(1 for row in access_log if row[4] == "denied")),
    ]


def photo_batches(
    rng: random.Random, photos: int, photo_bytes: int, member_ids: list[int], first_id: int
) -> Iterator[list[tuple]]:
    """Rows for the photos table, in batches of one transaction each."""
    batch: list[tuple] = []
    for photo_id in range(first_id, first_id + photos):
        member_id = rng.choice(member_ids) if member_ids else None
        taken = timestamp(rng.uniform(0, 700 * 86400))
        batch.append((photo_id, member_id, taken, rng.randbytes(photo_bytes)))
        if len(batch) == PHOTOS_PER_TRANSACTION:
            yield batch
            batch = []
    if batch:
        yield batch


def photos_needed(missing_bytes: int) -> tuple[int, int]:
    """How many photos of which size fill ``missing_bytes`` of file (roughly, from below)."""
    pages_per_photo = math.ceil(PHOTO_BYTES / OVERFLOW_PAYLOAD_PER_PAGE) + 1
    bytes_per_photo = pages_per_photo * PAGE_SIZE
    if missing_bytes >= bytes_per_photo:
        return missing_bytes // bytes_per_photo, PHOTO_BYTES
    # One last, smaller photo; leave room for its b-tree cell and the index entry.
    last_photo_bytes = missing_bytes * OVERFLOW_PAYLOAD_PER_PAGE // PAGE_SIZE - 2 * PAGE_SIZE
    return (1, last_photo_bytes) if last_photo_bytes > 0 else (0, 0)


# ---------------------------------------------------------------- database I/O


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN ... COMMIT on an autocommit connection (ROLLBACK on error)."""
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def file_bytes(conn: sqlite3.Connection) -> int:
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return page_count * page_size


def load_base_data(conn: sqlite3.Connection, rng: random.Random, members: int) -> list[int]:
    """Schema and gym data in one transaction; returns the member ids."""
    member_rows = generate_members(rng, members)
    locker_rows, rental_rows = generate_lockers_and_rentals(rng, locker_count_for(members), member_rows)
    access_rows = generate_access_log(rng, member_rows)
    conn.executescript(SCHEMA_SQL)  # DDL commits at once; the data goes in one transaction
    with transaction(conn):
        conn.executemany("INSERT INTO members VALUES (?, ?, ?, ?, ?)", map(member_row, member_rows))
        conn.executemany("INSERT INTO lockers VALUES (?, ?, ?)", locker_rows)
        conn.executemany("INSERT INTO rentals VALUES (?, ?, ?, ?, ?)", rental_rows)
        conn.executemany("INSERT INTO access_log VALUES (?, ?, ?, ?, ?)", access_rows)
        conn.executemany("INSERT INTO counters VALUES (?, ?)", counters_for(rental_rows, access_rows, member_rows))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.executescript(INDEX_SQL)
    return [row[0] for row in member_rows]


def pad_with_photos(conn: sqlite3.Connection, rng: random.Random, target_bytes: int, member_ids: list[int]) -> int:
    """Insert incompressible photos until the file is about ``target_bytes``; returns photos added."""
    added = 0
    for _attempt in range(64):  # converges in two or three rounds
        missing = target_bytes - file_bytes(conn)
        if missing <= SIZE_TOLERANCE_BYTES:
            break
        photos, photo_bytes = photos_needed(missing)
        if photos == 0:
            break
        for batch in photo_batches(rng, photos, photo_bytes, member_ids, first_id=added + 1):
            with transaction(conn):
                conn.executemany("INSERT INTO photos (id, member_id, taken_at, data) VALUES (?, ?, ?, ?)", batch)
        added += photos
    return added


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per table of TABLES (constant names, quoted anyway)."""
    return {
        table: conn.execute(f"SELECT count(*) FROM {quote_identifier(table)}").fetchone()[0]  # noqa: S608
        for table in TABLES
    }


def build_database(build_path: Path, members: int, target_bytes: int, journal_mode: str, seed: int) -> dict:
    """Build the whole database at ``build_path``; returns facts for the summary."""
    rng = random.Random(seed)
    conn = sqlite3.connect(str(build_path), isolation_level=None)
    try:
        # A fresh scratch file: no journal and no fsync while loading; it is renamed
        # into place only when complete.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -131072")  # 128 MiB
        conn.execute("PRAGMA foreign_keys = ON")
        member_ids = load_base_data(conn, rng, members)
        photos = pad_with_photos(conn, rng, target_bytes, member_ids)
        final_mode = conn.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone()[0]
        return {
            "journal_mode": final_mode,
            "user_version": conn.execute("PRAGMA user_version").fetchone()[0],
            "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
            "page_count": conn.execute("PRAGMA page_count").fetchone()[0],
            "photos_added": photos,
            "tables": table_row_counts(conn),
        }
    finally:
        conn.close()


def remove_if_present(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def move_into_place(build_path: Path, db_path: Path, force: bool) -> None:
    """Give the finished file its name; never overwrite unless ``force``."""
    if force:
        # Stale -wal/-shm files of the replaced database must not be applied to the new one.
        for sidecar in sidecar_paths(db_path):
            remove_if_present(sidecar)
        os.replace(build_path, db_path)
        return
    try:
        os.link(build_path, db_path)  # fails if the name appeared meanwhile
    except FileExistsError:
        raise DemoDbError(f"{db_path} already exists (use --force to replace it)") from None
    except OSError:
        if db_path.exists():  # file system without hard links
            raise DemoDbError(f"{db_path} already exists (use --force to replace it)") from None
        os.rename(build_path, db_path)
        return
    build_path.unlink()


def check_arguments(db_path: Path, members: int, size_mb: float, journal_mode: str, force: bool) -> None:
    if members < 0:
        raise DemoDbError(f"members must be 0 or more, not {members}")
    if size_mb < 0:
        raise DemoDbError(f"size_mb must be 0 or more, not {size_mb}")
    if journal_mode.lower() not in JOURNAL_MODES:
        raise DemoDbError(f"journal_mode must be one of {', '.join(JOURNAL_MODES)}, not {journal_mode!r}")
    if db_path.is_dir():
        raise DemoDbError(f"{db_path} is a directory")
    if db_path.exists() and not force:
        raise DemoDbError(f"{db_path} already exists (use --force to replace it)")


def create_demo_db(
    path: str | os.PathLike,
    members: int = DEFAULT_MEMBERS,
    size_mb: float = 0,
    journal_mode: str = "wal",
    seed: int = DEFAULT_SEED,
    force: bool = False,
) -> dict:
    """Create the demo database at ``path`` and return its summary.

    ``size_mb`` (MiB, 0 = no padding) is the wanted file size; photos are added
    until the file is within a few KiB of it (a database whose gym data alone is
    bigger is not shrunk). Raises ``DemoDbError`` on bad input, for example when
    ``path`` exists and ``force`` is false.
    """
    started = time.monotonic()
    db_path = Path(path)
    check_arguments(db_path, members, size_mb, journal_mode, force)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    build_path = db_path.with_name(f".{db_path.name}.building-{os.getpid()}")
    for stale in [build_path, *sidecar_paths(build_path)]:
        remove_if_present(stale)
    try:
        facts = build_database(build_path, members, int(size_mb * BYTES_PER_MB), journal_mode.lower(), seed)
        move_into_place(build_path, db_path, force)
    finally:
        for leftover in [build_path, *sidecar_paths(build_path)]:
            remove_if_present(leftover)
    return {
        "path": str(db_path),
        "bytes": db_path.stat().st_size,
        "size_mb_requested": size_mb,
        "members": members,
        "seed": seed,
        **facts,
        "sqlite_version": sqlite3.sqlite_version,
        "seconds": round(time.monotonic() - started, 3),
    }


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Create the demo SQLite database of the gym-controller app "
        "(members, lockers, rentals, access_log, counters, photos).",
        epilog="Prints a one-line JSON summary. Exit status: 0 done, 2 bad input "
        "(e.g. PATH exists without --force), 1 SQLite or file-system error.",
    )
    parser.add_argument("path", metavar="PATH", help="database file to create (parent folders are created)")
    parser.add_argument("--members", type=non_negative(int), default=DEFAULT_MEMBERS,
                        help=f"number of members (default {DEFAULT_MEMBERS})")
    parser.add_argument("--size-mb", type=non_negative(float), default=0, metavar="M",
                        help="pad with incompressible photos up to about M MiB (default 0: no padding)")
    parser.add_argument("--journal-mode", choices=JOURNAL_MODES, default="wal",
                        help="journal mode of the finished database (default wal)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"random seed; the same seed gives the same content (default {DEFAULT_SEED})")
    parser.add_argument("--force", action="store_true", help="replace PATH if it exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = create_demo_db(
            args.path,
            members=args.members,
            size_mb=args.size_mb,
            journal_mode=args.journal_mode,
            seed=args.seed,
            force=args.force,
        )
    except DemoDbError as error:
        print(f"demo_db: {error}", file=sys.stderr)
        return 2
    except (sqlite3.Error, OSError) as error:
        print(f"demo_db: cannot create {args.path}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
