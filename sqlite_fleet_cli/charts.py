"""Chart geometry for the fleet report: axes, ticks, units and shapes as numbers, drawn as inline SVG
by templates/fleet-report.html.j2. Pure functions of the data; no text here is ever markup (the
template escapes every label it prints).

A chart is a dict: size, plot box, x ticks (dates, UTC), y ticks (in the chosen unit), axis
titles, and its shapes: ``lines`` (polyline points), ``dots``, ``bars`` and ``marks`` (a cross
for an event without a value, e.g. a failed run), each with a ``title`` for the tooltip.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from typing import Any

from .history import core

WIDTH, HEIGHT = 380, 210
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 64, 14, 16, 48  # margins: y labels left, x labels below
BYTE_UNITS = (("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40))
DAY = 86400.0


def nice_step(span: float, count: int = 4) -> float:
    """A step of 1, 2, 2.5 or 5 times a power of ten giving about ``count`` intervals over ``span``."""
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    return next(f * power for f in (1, 2, 2.5, 5, 10) if f * power >= raw)


def value_ticks(top: float, count: int = 4) -> tuple[float, list[float]]:
    """(axis top, ticks from 0) for values up to ``top`` (an empty or all-zero series gets 0..1)."""
    if not top > 0:
        return 1.0, [0.0, 0.5, 1.0]
    step = nice_step(top, count)
    ticks = [0.0]
    while ticks[-1] < top - 1e-9 * step:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks[-1], ticks


def tick_label(value: float) -> str:
    return ("%.2f" % value).rstrip("0").rstrip(".") if value != int(value) else "%d" % value


def byte_unit(largest: float) -> tuple[str, float]:
    """The unit (name, divisor) the largest value reads best in: 734003 -> ("KiB", 1024)."""
    chosen = BYTE_UNITS[0]
    for unit in BYTE_UNITS:
        if largest >= unit[1]:
            chosen = unit
    return chosen


def seconds_unit(largest: float) -> tuple[str, float]:
    if largest < 1:
        return "ms", 0.001
    return ("min", 60.0) if largest >= 600 else ("s", 1.0)


def hours_unit(largest_seconds: float) -> tuple[str, float]:
    return ("d", DAY) if largest_seconds > 5 * DAY else ("h", 3600.0)


def date_ticks(start: _dt.datetime, end: _dt.datetime, most: int = 7) -> list[_dt.datetime]:
    """UTC midnights between start and end, every 1, 2, 7 or 14 days, at most ``most`` of them."""
    days = max((end - start).total_seconds() / DAY, 1)
    step = next((s for s in (1, 2, 7, 14, 28) if days / s <= most), 56)
    first = (start + _dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if step >= 7:  # weekly ticks on Mondays
        first += _dt.timedelta(days=(7 - first.weekday()) % 7)
    ticks = []
    tick = first
    while tick <= end:
        ticks.append(tick)
        tick += _dt.timedelta(days=step)
    return ticks


class Frame:
    """Maps (time, value in the axis unit) to SVG coordinates inside the plot box."""

    def __init__(self, start: _dt.datetime, end: _dt.datetime, top: float) -> None:
        self.start, self.end, self.top = start, end, top
        self.left, self.right = PLOT_LEFT, WIDTH - PLOT_RIGHT
        self.upper, self.lower = PLOT_TOP, HEIGHT - PLOT_BOTTOM

    def x(self, moment: _dt.datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        share = (moment - self.start).total_seconds() / span
        return round(self.left + min(max(share, 0.0), 1.0) * (self.right - self.left), 1)

    def y(self, value: float) -> float:
        share = min(max(value / self.top, 0.0), 1.0)
        return round(self.lower - share * (self.lower - self.upper), 1)


def chart(kind: str, title: str, y_title: str, start: _dt.datetime, end: _dt.datetime, top: float,
          empty: str | None) -> tuple[dict[str, Any], Frame]:
    """An empty chart with its axes; the caller adds the shapes."""
    top, ticks = value_ticks(top)
    frame = Frame(start, end, top)
    return {
        "kind": kind, "title": title, "width": WIDTH, "height": HEIGHT,
        "plot": {"left": frame.left, "right": frame.right, "top": frame.upper, "bottom": frame.lower},
        "x_title": "date (UTC)", "y_title": y_title,
        "x_ticks": [{"x": frame.x(t), "label": t.strftime("%d %b")} for t in date_ticks(start, end)],
        "x_minor": [frame.x(t) for t in date_ticks(start, end, most=62) if (end - start).days <= 62],
        "y_ticks": [{"y": frame.y(v), "label": tick_label(v)} for v in ticks],
        "lines": [], "dots": [], "bars": [], "marks": [], "threshold": None, "empty": empty,
    }, frame


def bar_width(start: _dt.datetime, end: _dt.datetime, events: int) -> float:
    """About a third of the room per event, between 2 and 10 px."""
    room = (WIDTH - PLOT_LEFT - PLOT_RIGHT) / max(events, (end - start).total_seconds() / DAY, 1)
    return round(min(max(room / 3, 2.0), 10.0), 1)


# --------------------------------------------------------------------------- the charts of a database


def freshness_series(arrivals: Sequence[tuple[_dt.datetime, _dt.datetime]], start: _dt.datetime,
                     end: _dt.datetime) -> tuple[list[tuple[_dt.datetime, float]], list[tuple[_dt.datetime, float]]]:
    """From (arrived in the archive, taken) of verified backups: the age of the newest one over the
    window (a saw-tooth: it climbs, and drops when a newer backup arrives), and the drops."""
    current: _dt.datetime | None = None
    series: list[tuple[_dt.datetime, float]] = []
    drops: list[tuple[_dt.datetime, float]] = []
    for arrived, created in sorted(arrivals):
        if arrived > end:
            break
        if arrived <= start:
            current = created if current is None else max(current, created)
            continue
        if not series and current is not None:
            series.append((start, (start - current).total_seconds()))
        if current is not None:
            series.append((arrived, (arrived - current).total_seconds()))
        current = created if current is None else max(current, created)
        series.append((arrived, (arrived - current).total_seconds()))
        drops.append(series[-1])
    if current is not None:
        if not series:
            series.append((start, (start - current).total_seconds()))
        series.append((end, (end - current).total_seconds()))
    return series, drops


def freshness_chart(arrivals: Sequence[tuple[_dt.datetime, _dt.datetime]], start: _dt.datetime,
                    end: _dt.datetime, max_age: float) -> dict[str, Any]:
    """Age of the newest verified archived backup over time, against the freshness threshold (dashed)."""
    series, drops = freshness_series(arrivals, start, end)
    largest = max([age for _, age in series] + [max_age])
    unit, divisor = hours_unit(largest)
    shape, frame = chart("freshness", "Freshness: age of the newest verified backup in the archive",
                         "age (%s)" % unit, start, end, largest * 1.1 / divisor,
                         None if series else "no verified backup in the archive in this window")
    if series:
        shape["lines"].append({"points": " ".join("%s,%s" % (frame.x(t), frame.y(age / divisor))
                                                  for t, age in series), "class": "age"})
    shape["dots"] = [{"x": frame.x(t), "y": frame.y(age / divisor), "class": "arrival",
                      "title": "%s: a backup %s old arrived" % (t.strftime("%Y-%m-%d %H:%M UTC"), core.human_age(age))}
                     for t, age in drops]
    shape["threshold"] = {"y": frame.y(max_age / divisor),
                          "label": "limit %s %s" % (tick_label(round(max_age / divisor, 2)), unit)}
    return shape


def series_chart(kind: str, title: str, quantity: str, points: Sequence[tuple[_dt.datetime, float, str]],
                 start: _dt.datetime, end: _dt.datetime, unit_of: Any, empty: str) -> dict[str, Any]:
    """A line through dated values (size, duration), each point with its tooltip."""
    points = sorted(p for p in points if start <= p[0] <= end)
    unit, divisor = unit_of(max([v for _, v, _ in points] + [0]))
    shape, frame = chart(kind, title, "%s (%s)" % (quantity, unit), start, end,
                         max([v / divisor for _, v, _ in points] + [0]) * 1.1, None if points else empty)
    if points:
        shape["lines"].append({"points": " ".join("%s,%s" % (frame.x(t), frame.y(v / divisor)) for t, v, _ in points),
                               "class": kind})
        shape["dots"] = [{"x": frame.x(t), "y": frame.y(v / divisor), "class": kind, "title": label}
                         for t, v, label in points]
    return shape


def bars_chart(kind: str, title: str, quantity: str, bars: Sequence[tuple[_dt.datetime, float | None, bool, str]],
               start: _dt.datetime, end: _dt.datetime, unit_of: Any, empty: str) -> dict[str, Any]:
    """Dated bars (bytes sent per run, RTO per drill), green when good and red when not; an event
    without a value (a run that sent nothing because it failed) is a red cross on the axis."""
    bars = sorted((b for b in bars if start <= b[0] <= end), key=lambda b: b[0])
    values = [v for _, v, _, _ in bars if v is not None]
    unit, divisor = unit_of(max(values + [0]))
    shape, frame = chart(kind, title, "%s (%s)" % (quantity, unit), start, end,
                         max(values + [0]) / divisor * 1.1, None if bars else empty)
    width = bar_width(start, end, len(bars))
    for moment, value, good, label in bars:
        x = frame.x(moment)
        if value is None:
            shape["marks"].append({"x": x, "y": frame.lower, "class": "bad", "title": label})
            continue
        y = frame.y(value / divisor)
        shape["bars"].append({"x": round(x - width / 2, 1), "y": y, "w": width,
                              "h": round(max(frame.lower - y, 1.0), 1), "class": "good" if good else "bad",
                              "title": label})
        if not good:
            shape["marks"].append({"x": x, "y": frame.lower, "class": "bad", "title": label})
    return shape
