"""``sqlite-fleet status``: is every database of the fleet backed up, verified and drilled, and since when?

One row per host and database (worst first), ``--json`` for scripts, the controller's
Prometheus textfile written on the way, and an exit code for a monitor:
0 all fresh and the last drills passed; 4 a database has no verified archived backup younger
than the threshold (or none at all); 5 the last drill of a database failed (when none is
stale); 2 bad input.

    python -m sqlite_fleet_cli.status [-i INVENTORY] [--archive-dir DIR] [--max-age 36h] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

from .fleet_inventory import BadInput, add_fleet_arguments, command_main, read_fleet_arguments
from .fleet_status import (
    EXIT_BAD_INPUT,
    STATE_WORDS,
    FleetStatus,
    collect_status,
    limit_text,
)
from .history import core
from .metrics import default_metrics_file, write_status_metrics

WAL_RESET_BUG = "SQLite before 3.51.3; 3.44.6+ and 3.50.7+ are fixed"


def printable(value: Any) -> str:
    """Text for a terminal: control characters (escape sequences, newlines) shown as \\xNN."""
    text = "-" if value is None else str(value)
    return "".join(c if unicodedata.category(c)[0] != "C" else "\\x%02x" % ord(c) if ord(c) < 256 else
                   "\\u%04x" % ord(c) for c in text)


def short_time(iso: str | None) -> str:
    moment = core.parse_iso_utc(iso)
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    return "%d ms" % round(value * 1000) if value < 1 else "%.2f s" % value if value < 100 else \
        core.human_age(value)


def row_cells(row: dict[str, Any]) -> list[str]:
    archive, on_host, run, drill = row["archive"], row["on_host"], row["last_run"], row["last_drill"]
    offsite = row.get("offsite")
    return [
        STATE_WORDS[row["state"]],
        printable(row["host"]),
        printable(row["database"]),
        short_time(archive["created"]) if archive["created"] else "none",
        core.human_age(archive["age_seconds"]),
        (short_time(on_host["created"]) if on_host["newest_verified"] else "none") if on_host else "not seen",
        "%s (%s)" % (short_time(offsite["created"]), core.human_age(offsite["age_seconds"])) if offsite else "none",
        "%s %s %s" % (printable(run["command"]), printable(run["outcome"]), short_time(run["started"])) if run else
        "never run",
        "%s %s" % (drill["outcome"], short_time(drill["time"])) if drill else "never drilled",
        seconds_text(drill["rto_seconds"]) if drill else "-",
    ]


HEADER = ["STATE", "HOST", "DATABASE", "NEWEST IN ARCHIVE", "AGE", "NEWEST ON HOST", "NEWEST OFFSITE (AGE)",
          "LAST RUN", "LAST DRILL", "RTO"]


def render_table(status: FleetStatus) -> list[str]:
    rows = [HEADER] + [row_cells(row) for row in status.rows]
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() for cells in rows]
    problems = [row for row in status.rows if row["problems"]]
    if problems:
        lines.append("")
        lines += ["%s %s: %s" % (printable(row["host"]), printable(row["database"]),
                                 printable("; ".join(row["problems"]))) for row in problems]
    wal = status.wal_reset_hosts()
    if wal:
        lines.append("")
        lines.append("WAL-reset bug (%s) on: %s" % (WAL_RESET_BUG, "; ".join(
            "%s: %s" % (printable(entry["host"]), ", ".join(entry["affected"])) for entry in wal)))
    others = sorted({row["host"] for row in status.rows if not row["in_inventory"]})
    if others:
        lines.append("in the archive or the records but not in the inventory (not counted): %s"
                     % ", ".join(printable(h) for h in others))
    for item in status.unreadable:
        lines.append("skipped: %s" % printable(item))
    return lines


def summary_line(status: FleetStatus, metrics: str | None) -> str:
    counted = status.counted()
    counts = ", ".join("%d %s" % (n, STATE_WORDS[state].lower()) for state, n in status.state_counts().items() if n)
    return "%d database%s: %s; threshold %s; archive %s%s" % (
        len(counted), "" if len(counted) == 1 else "s", counts or "none", limit_text(status.max_age_seconds),
        printable(status.archive_dir), "; metrics %s" % printable(metrics) if metrics else "")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    add_fleet_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the status as one JSON document")
    parser.add_argument("--metrics-file", metavar="PATH",
                        help="the Prometheus textfile to write; default: the inventory's sqlite_fleet_metrics_file, "
                             "else <archive>/metrics/sqlite-fleet.prom")
    parser.add_argument("--no-metrics", action="store_true", help="do not write the Prometheus textfile")


def run_status(args: argparse.Namespace) -> int:
    """What ``sqlite-fleet status`` does with its parsed arguments; returns the exit code."""
    try:
        fleet, archive_dir, max_age = read_fleet_arguments(args)
    except (BadInput, ValueError) as exc:
        print("sqlite-fleet status: %s" % exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    status = collect_status(archive_dir, fleet, max_age=max_age)
    metrics, metrics_error = None, None
    if not args.no_metrics:
        path = args.metrics_file or default_metrics_file(fleet, archive_dir)
        try:
            metrics = write_status_metrics(status, path)
        except OSError as exc:
            metrics_error = "metrics not written (%s): %s" % (path, exc)
            print("sqlite-fleet status: %s" % metrics_error, file=sys.stderr)
    if args.json:
        document = status.to_json()
        document.update(metrics_file=metrics, metrics_error=metrics_error)
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print("\n".join(render_table(status) + [summary_line(status, metrics)]))
    return status.exit_code()


def main_status(argv: Sequence[str] | None = None) -> int:
    return command_main("sqlite-fleet status", __doc__, add_status_arguments, run_status, argv)


if __name__ == "__main__":
    sys.exit(main_status())
