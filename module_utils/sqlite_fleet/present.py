# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Presentation helpers: sizes and ages for people.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .names import parse_iso_utc

# --------------------------------------------------------------------------- restore drills

DRILL_STATUS_WORD = {"fail": "FAILED", "stale": "STALE", "ok": "OK"}


# --------------------------------------------------------------------------- presentation

def human_bytes(value: float | None) -> str:
    """``1536`` -> ``1.5 KiB`` (``-`` for None), for reports and summaries."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024
    return "%.1f GiB" % size


def human_age(seconds: float | None) -> str:
    """``5400`` -> ``1.5 h`` (``-`` for None), for reports and summaries."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "in the future"
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return "%.1f %s" % (seconds / span, unit)
    return "%d s" % seconds


FLEET_REPORT = "fleet-report.html"  # the fleet's history page, written into the archive by `sqlite-fleet report`


def human_time(iso: Any) -> str:
    """An ISO UTC time -> ``2026-11-22 03:00:00 UTC`` (``-`` when it is not one)."""
    moment = parse_iso_utc(iso)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def human_seconds(value: float | None) -> str:
    """``0.25`` -> ``250 ms``, ``3.5`` -> ``3.50 s`` (``-`` for None)."""
    if value is None:
        return "-"
    return "%d ms" % round(value * 1000) if value < 1 else "%.2f s" % value


def sparkline(sizes: Sequence[float], width: int = 120, height: int = 28, pad: int = 3) -> dict[str, Any] | None:
    """Polyline points of an inline SVG sparkline (numbers only), or None for fewer than two sizes."""
    if len(sizes) < 2:
        return None
    low, high = min(sizes), max(sizes)
    span = (high - low) or 1
    step = (width - 2 * pad) / (len(sizes) - 1)
    points = []
    for index, size in enumerate(sizes):
        x = pad + index * step
        y = height - pad - (size - low) * (height - 2 * pad) / span if high != low else height / 2
        points.append("%.1f,%.1f" % (x, y))
    return {"points": " ".join(points), "width": width, "height": height,
            "last": points[-1].split(",")}


def size_trend(sizes: Sequence[float]) -> str:
    """A word for the trend of the sizes (oldest first)."""
    if len(sizes) < 2:
        return "one backup" if sizes else "no backup"
    first, last = sizes[0], sizes[-1]
    if first == last:
        return "steady"
    change = (last - first) * 100.0 / first if first else 100.0
    return "%s %.1f%%" % ("grew" if last > first else "shrank", abs(change))


def markdown_text(value: Any) -> str:
    """Free text in a Markdown table cell: no column break, no raw HTML, one line. Readable as
    plain text too: only what could start markup is escaped (``<`` before a tag's first
    character, ``&`` before an entity's name), so ``> 0`` stays ``> 0``."""
    text = "" if value is None else str(value)
    for old, new in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("`", "\\`"), ("[", "\\["), ("]", "\\]"),
                     ("\r", " "), ("\n", " ")):
        text = text.replace(old, new)
    text = re.sub(r"&(?=#?[A-Za-z0-9]+;)", "&amp;", text)
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)
    return text


def drill_summary_line(entry: Mapping[str, Any], max_age_hours: float) -> str:
    """One line for one drilled database (failed: its problems and the last good backup)."""
    where = "%s %s" % (entry["host"], entry["database"] or "-")
    if entry["status"] == "fail":
        text = "%s: FAILED - %s" % (where, "; ".join(entry["problems"]))
        if entry["last_good"]:
            text += " (the newest backup that passes is %s)" % entry["last_good"]
        return text
    probes = entry["probes"]
    text = "%s: %s - drilled %s (%s, taken %s ago), restored in %s, drill %s, %s" % (
        where, DRILL_STATUS_WORD[entry["status"]], entry["backup"], human_bytes(entry["size_bytes"]),
        human_age(entry["age_seconds"]), human_seconds(entry["restore_seconds"]), human_seconds(entry["seconds"]),
        "%d/%d probes ok" % (sum(1 for p in probes if p.get("ok")), len(probes)) if probes else "no probes")
    if entry["stale"]:
        text += "; newest backup %s is older than %s h" % (entry["newest"], "%g" % max_age_hours)
    return text


def unreached_line(item: Mapping[str, Any], unreached_days: float) -> str:
    if item["days"] is None:
        return "%s: not reached: the archive holds no backup of it" % item["host"]
    return "%s: not reached for %g days (newest backup %s, over the %g-day limit)" % (
        item["host"], item["days"], item["newest"], unreached_days)


def fleet_report_link(archive_dir: str, report_dir: str) -> dict[str, Any]:
    """Where the drill report links to the fleet's history page: relative when both live in the archive."""
    page = os.path.join(archive_dir, FLEET_REPORT)
    archive = os.path.abspath(archive_dir)
    inside = os.path.commonpath([os.path.abspath(report_dir), archive]) == archive
    return {"href": os.path.relpath(page, report_dir) if inside else pathlib.Path(page).as_uri(),
            "exists": os.path.isfile(page)}
