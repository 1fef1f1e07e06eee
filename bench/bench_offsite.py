"""What the offsite copy sends per run: restic's dedup on consecutive backups of one database.

For each database size, an archive gets one backup (first run), then after a change (a few rows
added, or 1 % of the rows rewritten) a second backup (second run); each run is one
``sqlite_offsite.send`` to a fresh local restic repository. Prints the bytes restic added
(``data_added``, before compression) and writes them to bench/results/offsite.json.

    .venv/bin/python bench/bench_offsite.py [--sizes-mb 10,50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

import sqlite_fleet as core
import sqlite_offsite as offsite
from common import RESULTS_DIR  # noqa: F401  (puts module_utils on sys.path)

ROW_BYTES = 2000


def make_db(path: Path, megabytes: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload BLOB)")
    conn.executemany("INSERT INTO events (payload) VALUES (randomblob(?))",
                     [(ROW_BYTES,)] * (megabytes * 1024 * 1024 // ROW_BYTES))
    conn.commit()
    conn.close()


def change(path: Path, how: str) -> None:
    conn = sqlite3.connect(path)
    if how == "add 10 rows":
        conn.executemany("INSERT INTO events (payload) VALUES (randomblob(?))", [(ROW_BYTES,)] * 10)
    else:  # rewrite 1 % of the rows, spread over the file
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        conn.execute("UPDATE events SET payload = randomblob(?) WHERE id % 100 = 0", (ROW_BYTES,))
        assert count
    conn.commit()
    conn.close()


def measure(megabytes: int, how: str, workdir: Path) -> dict[str, object]:
    db = workdir / "app.db"
    make_db(db, megabytes)
    folder = workdir / "archive" / "pi1" / "app"
    folder.mkdir(parents=True)
    env = offsite.restic_env(str(workdir / "repo"), password="bench-only-password",
                             cache_dir=str(workdir / "cache"))
    offsite.init_repository(env)
    core.snapshot(str(db), str(folder), "app", now=dt.datetime(2026, 1, 1, 3, tzinfo=dt.timezone.utc))
    first = offsite.send(str(workdir / "archive"), env)
    change(db, how)
    taken = core.snapshot(str(db), str(folder), "app", now=dt.datetime(2026, 1, 2, 3, tzinfo=dt.timezone.utc))
    second = offsite.send(str(workdir / "archive"), env)
    size = Path(taken["backup"]).stat().st_size
    return {"database_mb": megabytes, "change": how, "backup_bytes": size, "first_run_bytes": first["data_added"],
            "second_run_bytes": second["data_added"], "second_run_share": round(second["data_added"] / size, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="10,50")
    args = parser.parse_args(argv)
    rows = []
    for megabytes in (int(x) for x in args.sizes_mb.split(",")):
        for how in ("add 10 rows", "rewrite 1% of rows"):
            with tempfile.TemporaryDirectory(prefix="bench-offsite.") as tmp:
                row = measure(megabytes, how, Path(tmp))
            rows.append(row)
            print("%4d MB, %-18s: first run %10d bytes, second run %10d bytes (%.1f %% of the new backup)"
                  % (megabytes, how, row["first_run_bytes"], row["second_run_bytes"], 100 * row["second_run_share"]))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "offsite.json").write_text(json.dumps({"results": rows}, indent=2) + "\n")
    print("written: %s" % (RESULTS_DIR / "offsite.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
