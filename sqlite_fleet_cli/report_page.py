"""``sqlite-fleet report``: one self-contained HTML page of the fleet's history.

Problems first (databases with no fresh verified backup, failed drills, failed runs, hosts whose
SQLite carries the WAL-reset bug), the status table, then per host and database five charts
over the last weeks: freshness against the threshold, backup size, snapshot duration, bytes
sent per run (failed runs marked), and restore drills with their RTO (pass green, fail red).

The charts are inline SVG drawn by a jinja2 template (templates/fleet-report.html.j2) from the
geometry of charts.py: no plotting dependency, no script, no font or style sheet to fetch, every
name escaped by jinja2's autoescape. Written atomically (0600) to ``<archive>/fleet-report.html``
by default, beside ``drills/drill-report.html``, which it links to (and which links back).

    python -m sqlite_fleet_cli.report_page [-i INVENTORY] [--archive-dir DIR] [--days 28] [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import charts
from .fleet_inventory import BadInput, Fleet, add_fleet_arguments, command_main, read_fleet_arguments
from .fleet_status import (
    EXIT_BAD_INPUT,
    STATE_WORDS,
    FleetStatus,
    collect_status,
    limit_text,
    run_summary,
)
from .history import BACKUP_COMMANDS, DRILL_REPORT, archived, core, number

FLEET_REPORT = "fleet-report.html"  # under the archive; library/sqlite_drill.py links to this name
TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "fleet-report.html.j2"
DEFAULT_DAYS = 28
EXIT_NOT_WRITTEN = 1


def when(moment: _dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


# --------------------------------------------------------------------------- one database's history


def arrivals_of(status: FleetStatus, host: str, database: str,
                backups: Sequence[dict[str, Any]]) -> list[tuple[_dt.datetime, _dt.datetime]]:
    """(arrived in the archive, taken) of every verified backup known, once per backup (by the second it
    was taken): the records say when a run archived it; one only the archive holds arrived when taken."""
    arrived: dict[_dt.datetime, _dt.datetime] = {}
    for run in status.runs:
        entry = run.database(host, database)
        if run.check_mode or entry is None:
            continue
        taken = [entry["newest_verified_in_archive_created"]]
        if entry["verified_in_archive"]:
            taken += [parsed["created"] for parsed in map(core.parse_backup_filename, entry["archived"]) if parsed]
        for created in taken:
            if created is not None and created <= run.finished:
                second = created.replace(microsecond=0)
                arrived[second] = min(arrived.get(second, run.finished), run.finished)
    for backup in backups:
        if backup["verified"]:
            arrived.setdefault(backup["created"].replace(microsecond=0), backup["created"])
    return [(arrival, created) for created, arrival in arrived.items()]


def backup_points(status: FleetStatus, host: str, database: str, backups: Sequence[dict[str, Any]]
                  ) -> tuple[list[tuple[_dt.datetime, float, str]], list[tuple[_dt.datetime, float, str]]]:
    """(taken, size, tooltip) and (taken, snapshot seconds, tooltip) of each backup the records or the
    archive know, once per file."""
    sizes: dict[str, tuple[_dt.datetime, float, str]] = {}
    seconds: dict[str, tuple[_dt.datetime, float, str]] = {}
    for run in status.runs:
        entry = run.database(host, database)
        if run.check_mode or entry is None or not entry["backup"] or entry["created"] is None:
            continue
        file, created = entry["backup"], entry["created"]
        if entry["size_bytes"] is not None:
            sizes[file] = (created, entry["size_bytes"], "%s: %s" % (file, core.human_bytes(entry["size_bytes"])))
        if entry["seconds"] is not None:
            seconds[file] = (created, entry["seconds"], "%s: snapshot in %.2f s" % (file, entry["seconds"]))
    for backup in backups:
        file = backup["file"]
        sizes.setdefault(file, (backup["created"], backup["size_bytes"],
                                "%s: %s" % (file, core.human_bytes(backup["size_bytes"]))))
        duration = number(backup["manifest"].get("duration_seconds"))
        if duration is not None:
            seconds.setdefault(file, (backup["created"], duration, "%s: snapshot in %.2f s" % (file, duration)))
    return list(sizes.values()), list(seconds.values())


def run_bars(status: FleetStatus, host: str, database: str) -> list[tuple[_dt.datetime, float | None, bool, str]]:
    """(started, bytes sent, ok, tooltip) of every backup, sync or pre-upgrade run meant for the host."""
    bars = []
    for run in status.runs:
        host_entry = run.hosts.get(host)
        if run.check_mode or run.command not in BACKUP_COMMANDS or host_entry is None \
                or host_entry.get("outcome") == "skipped":
            continue
        summary = run_summary(run, host, database)
        sent = summary["bytes_sent"]
        label = "%s %s %s: %s%s" % (when(run.started), run.command, run.run_id, summary["outcome"] or "?",
                                    ", sent %s" % core.human_bytes(sent) if sent is not None else
                                    (" - " + summary["message"] if summary["message"] else ""))
        bars.append((run.started, sent, summary["outcome"] == "ok", label))
    return bars


def drill_bars(status: FleetStatus, host: str, database: str) -> list[tuple[_dt.datetime, float | None, bool, str]]:
    return [(d.time, d.rto_seconds, d.passed, "%s drill %s%s%s" % (
        when(d.time), "passed" if d.passed else "FAILED",
        " in %.2f s" % d.rto_seconds if d.rto_seconds is not None else "",
        ": " + d.problems[0] if d.problems and not d.passed else ""))
        for d in status.drills if d.host == host and d.database == database]


def database_charts(status: FleetStatus, row: dict[str, Any], start: _dt.datetime) -> list[dict[str, Any]]:
    host, database, end = row["host"], row["database"], status.generated
    if database is None:
        return []
    backups = archived(status.archive_dir, host, database)
    sizes, seconds = backup_points(status, host, database, backups)
    return [
        charts.freshness_chart(arrivals_of(status, host, database, backups), start, end, status.max_age_seconds),
        charts.series_chart("size", "Backup size", "size", sizes, start, end, charts.byte_unit,
                            "no backup taken in this window"),
        charts.series_chart("duration", "Snapshot duration", "time", seconds, start, end, charts.seconds_unit,
                            "no snapshot timed in this window"),
        charts.bars_chart("sent", "Bytes sent per run (failed runs marked)", "sent", run_bars(status, host, database),
                          start, end, charts.byte_unit, "no backup run in this window"),
        charts.bars_chart("drills", "Restore drills: RTO, pass or fail", "RTO", drill_bars(status, host, database),
                          start, end, charts.seconds_unit, "no restore drill in this window"),
    ]


ALWAYS_DRAWN = ("freshness", "sent")  # even empty: "never backed up" and the failed runs are the story


def section(status: FleetStatus, row: dict[str, Any], start: _dt.datetime) -> dict[str, Any]:
    """A database's charts; those without data in the window (but freshness and runs) named, not drawn."""
    drawn = database_charts(status, row, start)
    return {"row": row, "charts": [c for c in drawn if not c["empty"] or c["kind"] in ALWAYS_DRAWN],
            "empty": [c["empty"] for c in drawn if c["empty"] and c["kind"] not in ALWAYS_DRAWN]}


# --------------------------------------------------------------------------- the page


def link(target: str, page: str, archive_dir: str) -> str:
    """A relative link when both files live in the archive, else a file: URI."""
    inside = all(os.path.commonpath([os.path.abspath(p), os.path.abspath(archive_dir)]) == os.path.abspath(archive_dir)
                 for p in (target, page))
    return os.path.relpath(target, os.path.dirname(os.path.abspath(page))) if inside else Path(target).as_uri()


def fleet_problems(status: FleetStatus, start: _dt.datetime) -> list[str]:
    """Runs of the window that failed before any host (bad input, the guard), newest first."""
    return ["%s %s %s: %s" % (when(run.started), run.command, run.run_id, run.message or run.outcome)
            for run in reversed(status.runs) if run.started >= start
            if not run.hosts and not run.check_mode and run.outcome not in (None, "ok")]


def page_context(status: FleetStatus, *, days: float, output: str) -> dict[str, Any]:
    start = status.generated - _dt.timedelta(days=days)
    counts = status.state_counts()
    wal = status.wal_reset_hosts()
    overall = ("fail" if counts["never"] or counts["stale"] or counts["drill_failed"] else
               "warn" if counts["run_failed"] or wal or fleet_problems(status, start) else "ok")
    drill_report = os.path.join(status.archive_dir, DRILL_REPORT)
    return {
        "generated": when(status.generated),
        "window": "%s to %s" % (start.strftime("%Y-%m-%d"), status.generated.strftime("%Y-%m-%d")),
        "days": "%g" % days,
        "archive_dir": status.archive_dir,
        "inventory": ", ".join(status.inventory),
        "max_age": limit_text(status.max_age_seconds),
        "overall": overall,
        "overall_word": {"fail": "ATTENTION", "warn": "WARNINGS", "ok": "ALL FRESH"}[overall],
        "counts": counts,
        "state_words": STATE_WORDS,
        "rows": status.rows,
        "problem_rows": [row for row in status.rows if row["problems"]],
        "wal": wal,
        "fleet_problems": fleet_problems(status, start),
        "unreadable": status.unreadable,
        "not_in_inventory": sorted({row["host"] for row in status.rows if not row["in_inventory"]}),
        "sections": [section(status, row, start) for row in status.rows],
        "drill_report": link(drill_report, output, status.archive_dir) if os.path.isfile(drill_report) else None,
        "runs_in_window": sum(1 for run in status.runs if run.started >= start),
        "drills_in_window": sum(1 for drill in status.drills if drill.time >= start),
    }


def render_page(context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(bytes=core.human_bytes, age=core.human_age,
                       when=lambda iso: when(core.parse_iso_utc(iso)) if iso else "-",
                       secs=lambda v: "-" if v is None else ("%d ms" % round(v * 1000) if v < 1 else "%.2f s" % v))
    return env.get_template(TEMPLATE).render(**context)


def write_report(archive_dir: str, output: str | None = None, *, fleet: Fleet | None = None,
                 max_age: float | None = None, days: float = DEFAULT_DAYS, now: _dt.datetime | None = None) -> str:
    """Collect the window's history, render the page, write it atomically (0600). Returns the path;
    raises OSError (and jinja2's TemplateError)."""
    now = now or core.utcnow()
    output = output or os.path.join(archive_dir, FLEET_REPORT)
    status = collect_status(archive_dir, fleet, max_age=max_age, now=now)
    html = render_page(page_context(status, days=days, output=output))
    core.write_file_atomic(output, html.encode("utf-8"))
    return output


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    add_fleet_arguments(parser)
    parser.add_argument("--days", type=float, default=DEFAULT_DAYS, help="how many days of history to draw "
                        "(default %d)" % DEFAULT_DAYS)
    parser.add_argument("-o", "--output", metavar="PATH", help="where to write the page; default: "
                        "<archive>/%s" % FLEET_REPORT)


def run_report(args: argparse.Namespace) -> int:
    """What ``sqlite-fleet report`` does with its parsed arguments: 0 written, 1 not written, 2 bad input."""
    try:
        if not 0 < args.days <= 3660:
            raise BadInput("--days must be more than 0 and at most 3660, got %g" % args.days)
        fleet, archive_dir, max_age = read_fleet_arguments(args)
        if not args.output and not os.path.isdir(archive_dir):
            raise BadInput("the archive %s does not exist: nothing was ever pulled into it (pass --output to "
                           "write the page elsewhere)" % archive_dir)
    except (BadInput, ValueError) as exc:
        print("sqlite-fleet report: %s" % exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        path = write_report(archive_dir, args.output, fleet=fleet, max_age=max_age, days=args.days)
    except OSError as exc:
        print("sqlite-fleet report: the page could not be written: %s" % exc, file=sys.stderr)
        return EXIT_NOT_WRITTEN
    print("report: %s" % path)
    return 0


def main_report(argv: Sequence[str] | None = None) -> int:
    return command_main("sqlite-fleet report", __doc__, add_report_arguments, run_report, argv)


if __name__ == "__main__":
    sys.exit(main_report())
