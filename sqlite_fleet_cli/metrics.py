"""The controller's Prometheus textfile: per host and database, what an alert on backup age needs.

Written atomically, mode 0644, for node_exporter's textfile collector, by ``sqlite-fleet status``
and by the CLI after each run (:func:`write_metrics`). Every sample carries exactly the labels
``host`` and ``database``; a figure that is unknown (never drilled, never run) has no sample at
all, never a placeholder value, so ``absent()`` and ``time() - ..._timestamp_seconds`` alerts
stay honest.

To add a metric, add one :class:`Metric` to ``METRICS`` whose
``value`` reads a field of the status row (fleet_status.database_row): a row without that
field, or with it null, gives no sample.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .fleet_inventory import Fleet
from .fleet_status import FleetStatus, collect_status
from .history import core

METRICS_FILE_MODE = 0o644
DEFAULT_METRICS_FILE = os.path.join("metrics", "sqlite-fleet.prom")  # under the archive
Row = Mapping[str, Any]


def unix_time(text: Any) -> float | None:
    moment = core.parse_iso_utc(text)
    return moment.timestamp() if moment else None


def outcome_flag(entry: Mapping[str, Any] | None, good: str) -> float | None:
    return None if entry is None else float(entry["outcome"] == good)


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    value: Callable[[Row], float | None]


def last_event_metrics(kind: str, good: str, time_field: str, success_help: str,
                       time_help: str) -> tuple[Metric, Metric]:
    """``sqlite_fleet_last_<kind>_success`` and ``_timestamp_seconds``, read from the row's
    ``last_<kind>`` entry (whose ``outcome`` is ``good`` on success); no sample without one."""
    key = "last_" + kind
    return (Metric("sqlite_fleet_%s_success" % key, success_help, lambda r: outcome_flag(r[key], good)),
            Metric("sqlite_fleet_%s_timestamp_seconds" % key, time_help,
                   lambda r: unix_time(r[key][time_field]) if r[key] else None))


METRICS: tuple[Metric, ...] = (
    Metric("sqlite_fleet_archive_newest_verified_timestamp_seconds",
           "Unix time the newest verified backup in the archive was taken.",
           lambda r: unix_time(r["archive"]["created"])),
    Metric("sqlite_fleet_archive_newest_verified_age_seconds",
           "Age of the newest verified backup in the archive when this file was written.",
           lambda r: r["archive"]["age_seconds"]),
    Metric("sqlite_fleet_archive_newest_verified_size_bytes",
           "Size of the newest verified backup in the archive.",
           lambda r: r["archive"]["size_bytes"]),
    Metric("sqlite_fleet_archive_verified_backups",
           "Verified backups the archive holds (0: never backed up, or none verified).",
           lambda r: r["archive"]["verified_backups"]),
    Metric("sqlite_fleet_stale",
           "1 when the archive holds no verified backup younger than sqlite_fleet_max_age_seconds, else 0.",
           lambda r: float(r["stale"])),
    Metric("sqlite_fleet_max_age_seconds",
           "The freshness threshold that sqlite_fleet_stale and sqlite-fleet status apply.",
           lambda r: r["max_age_seconds"]),
    # sqlite_fleet_last_run_success, sqlite_fleet_last_run_timestamp_seconds
    *last_event_metrics("run", "ok", "started",
                        "1 when the last backup, sync or pre-upgrade run backed this database up, else 0.",
                        "Unix time the last backup, sync or pre-upgrade run of this host started."),
    # sqlite_fleet_last_drill_success, sqlite_fleet_last_drill_timestamp_seconds
    *last_event_metrics("drill", "passed", "time", "1 when the last restore drill of this database passed, else 0.",
                        "Unix time of the last restore drill of this database."),
    Metric("sqlite_fleet_last_drill_duration_seconds",
           "Duration of the last restore drill (restore, integrity and row checks, probes): the measured RTO.",
           lambda r: r["last_drill"]["rto_seconds"] if r["last_drill"] else None),
    Metric("sqlite_fleet_offsite_newest_timestamp_seconds",
           "Unix time the newest backup in the offsite copy was taken (as the last run that sent it recorded).",
           lambda r: unix_time(r["offsite"]["created"]) if r.get("offsite") else None),
    Metric("sqlite_fleet_offsite_newest_age_seconds",
           "Age of the newest backup in the offsite copy when this file was written.",
           lambda r: r["offsite"]["age_seconds"] if r.get("offsite") else None),
    Metric("sqlite_fleet_wal_reset_bug",
           "1 when the SQLite that backs this database up (Python sqlite3) or the app's carries the WAL-reset bug.",
           lambda r: None if r["sqlite"]["wal_reset_bug"] is None else float(r["sqlite"]["wal_reset_bug"])),
)


def label_value(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample_value(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2 ** 53 else repr(float(value))


def render_metrics(rows: Sequence[Row], max_age: float) -> str:
    """The text exposition of ``rows`` (one HELP and TYPE per metric that has a sample)."""
    lines: list[str] = []
    for metric in METRICS:
        samples = []
        for row in sorted(rows, key=lambda r: (r["host"], r["database"] or "")):
            if row["database"] is None:
                continue  # a host with no known database has nothing to measure
            value = metric.value({**row, "max_age_seconds": max_age})
            if value is not None:
                samples.append('%s{host="%s",database="%s"} %s' % (
                    metric.name, label_value(row["host"]), label_value(row["database"]), sample_value(value)))
        if samples:
            lines += ["# HELP %s %s" % (metric.name, metric.help), "# TYPE %s gauge" % metric.name, *samples]
    return "".join(line + "\n" for line in lines)


def default_metrics_file(fleet: Fleet | None, archive_dir: str) -> str:
    """The inventory's sqlite_fleet_metrics_file, else ``<archive>/metrics/sqlite-fleet.prom``."""
    return (fleet.metrics_file if fleet and fleet.metrics_file else None) or os.path.join(archive_dir,
                                                                                          DEFAULT_METRICS_FILE)


def write_status_metrics(status: FleetStatus, path: str) -> str:
    """Write the textfile of an already collected status (atomic rename, 0644); raises OSError."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.mkdir(folder, 0o755)  # the metrics folder only: never the archive or a collector's folder
    core.write_file_atomic(path, render_metrics(status.counted(), status.max_age_seconds).encode("utf-8"),
                           METRICS_FILE_MODE)
    return path


def write_metrics(archive_dir: str, path: str | None = None, *, fleet: Fleet | None = None,
                  max_age: float | None = None, now: Any = None) -> str:
    """For the CLI after each run: read the archive, records and drill log, write the textfile.

    ``fleet`` (fleet_inventory.load_fleet) names the hosts and databases that should exist;
    without it, every host and database the archive or the records know counts. ``path``
    defaults to :func:`default_metrics_file`. Returns the path; raises OSError.
    """
    status = collect_status(archive_dir, fleet, max_age=max_age, now=now)
    return write_status_metrics(status, path or default_metrics_file(fleet, archive_dir))
