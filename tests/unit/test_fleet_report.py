"""``sqlite-fleet report`` over the scripted two-week history, opened in real headless Chromium.

The page must be self-contained (no script, nothing fetched), put the problems first, draw
per host and database five charts with dated x axes and y axes in named units, and show the
hostile host and database names as text, never as markup. The screenshot is decoded here in
pure Python: not blank, the banner red, the charts' colours present.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from browser import decode_png, first_row_with, red, require_chromium, run_chromium  # noqa: E402
from fleet_history import (  # noqa: E402
    BRAVO_FAILED_DAYS,
    DAYS,
    DB,
    HOSTILE_DB,
    HOSTILE_HOST,
    History,
    build_history,
    record,
    write_record,
)

from sqlite_fleet_cli import charts  # noqa: E402
from sqlite_fleet_cli.report_page import main_report  # noqa: E402

ALL_CHARTS = ["freshness", "size", "duration", "sent", "drills"]
Y_TITLES = {"freshness": "age (h)", "size": "size (KiB)", "duration": "time (ms)", "sent": "sent (KiB)",
            "drills": "RTO (ms)"}
DATE_LABEL = re.compile(r"^\d\d [A-Z][a-z]{2}$")
NUMBER = re.compile(r"^\d+(\.\d+)?$")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return build_history(tmp_path_factory.mktemp("history"))


class Page(HTMLParser):
    """Sections (one per host and database) with their charts, as the DOM holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.style = ""
        self._in_style = False
        self.headings: list[str] = []
        self.sections: list[dict[str, Any]] = []
        self.problems: list[dict[str, str]] = []
        self.table: dict[str, list[str]] = {}  # host -> texts of its row in the status table
        self._row: list[str] | None = None
        self.hrefs: list[str] = []
        self.text: list[str] = []
        self._text_class: str | None = None
        self._heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        classes = found.get("class", "").split()
        self.tags.add(tag)
        self.attributes.update(found)
        self._in_style = tag == "style"
        if tag == "a":
            self.hrefs.append(found.get("href", ""))
        if tag == "h2":
            self._heading = True
        if tag == "li" and "problem" in classes and "fleet" not in classes:
            self.problems.append({"host": found["data-host"], "database": found["data-database"]})
        if tag == "tr" and "row" in classes:
            self._row = self.table.setdefault(found["data-host"], [])
        if tag == "section" and "database" in classes:
            self.sections.append({"host": found["data-host"], "database": found["data-database"],
                                  "state": found["data-state"], "charts": []})
        chart = self.sections[-1]["charts"][-1] if self.sections and self.sections[-1]["charts"] else None
        if tag == "figure" and "chart" in classes:
            self.sections[-1]["charts"].append({"kind": found["data-chart"], "x_ticks": [], "y_ticks": [],
                                                "x_title": None, "y_title": None, "threshold": False,
                                                "bars": [], "marks": 0, "lines": 0})
        elif chart is not None:
            if tag == "text":
                self._text_class = next((c for c in ("x-tick", "y-tick", "x-title", "y-title") if c in classes), None)
            elif tag == "line" and "threshold" in classes:
                chart["threshold"] = True
            elif tag == "rect" and "bar" in classes:
                chart["bars"].append(classes[-1])
            elif tag == "path" and "mark" in classes:
                chart["marks"] += 1
            elif tag == "polyline":
                chart["lines"] += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag == "tr":
            self._row = None
        if tag == "text":
            self._text_class = None
        if tag == "h2":
            self._heading = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
            return
        self.text.append(data)
        if self._row is not None and data.strip():
            self._row.append(data.strip())
        if self._heading:
            self.headings.append(data.strip())
        if self._text_class and self.sections and self.sections[-1]["charts"]:
            chart = self.sections[-1]["charts"][-1]
            key = self._text_class.replace("-", "_")
            if key in ("x_tick", "y_tick"):
                chart[key + "s"].append(data.strip())
            else:
                chart[key] = data.strip()


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def assert_self_contained(html: str) -> None:
    """No element that runs or fetches anything, no attribute that loads a resource, no CSS import."""
    page = parse(html)
    assert not {"script", "link", "iframe", "object", "embed", "img", "image", "use"} & page.tags, page.tags
    assert not {"src", "srcset", "xlink:href", "background"} & page.attributes, page.attributes
    assert not any(a.startswith("on") for a in page.attributes), page.attributes
    assert all(not re.match(r"^[a-z][a-z0-9+.-]*:", href) for href in page.hrefs), page.hrefs
    assert "url(" not in page.style and "@import" not in page.style
    assert "http://" not in html and "https://" not in html


def count_near(rows: list[bytes], colour: tuple[int, int, int], tolerance: int = 24) -> int:
    return sum(1 for row in rows for x in range(0, len(row), 3)
               if all(abs(row[x + i] - colour[i]) <= tolerance for i in range(3)))


# --------------------------------------------------------------------------- the page in a browser


def test_the_report_in_headless_chromium(history: History, tmp_path: Path) -> None:
    require_chromium()
    assert main_report(["-i", str(history.inventory), "--days", "16"]) == 0
    page_path = history.archive / "fleet-report.html"
    assert page_path.stat().st_mode & 0o777 == 0o600
    html = page_path.read_text()
    assert_self_contained(html)
    # the hostile names and messages are text, escaped; never a tag or an attribute
    assert "<img" not in html and "<b>" not in html and "onerror=alert(1)>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&#34;quoted&#34; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; &amp; &#34;quotes&#34;" in html

    dom = run_chromium(["--dump-dom", page_path.as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    page = parse(dom.stdout)
    assert not {"script", "img", "b", "iframe"} & page.tags, page.tags
    assert HOSTILE_HOST in "".join(page.text) and HOSTILE_DB in "".join(page.text)
    # problems first, then the table, then the history
    assert page.headings[:3] == ["Problems", "Warnings", "Every database"], page.headings
    assert {(p["host"], p["database"]) for p in page.problems} == {
        (HOSTILE_HOST, HOSTILE_DB), ("delta", "gym"), ("charlie", "gym"), ("bravo", "gym")}
    assert [(s["host"], s["state"]) for s in page.sections] == [
        (HOSTILE_HOST, "never"), ("delta", "never"), ("charlie", "stale"), ("bravo", "drill_failed"), ("alpha", "ok")]
    sections = {s["host"]: s for s in page.sections}
    for host in ("alpha", "bravo", "charlie"):
        drawn = sections[host]["charts"]
        assert [c["kind"] for c in drawn] == ALL_CHARTS, (host, drawn)
        for chart in drawn:
            assert chart["x_title"] == "date (UTC)" and chart["y_title"] == Y_TITLES[chart["kind"]], chart
            assert len(chart["x_ticks"]) >= 2 and all(DATE_LABEL.match(t) for t in chart["x_ticks"]), chart
            assert len(chart["y_ticks"]) >= 3 and all(NUMBER.match(t) for t in chart["y_ticks"]), chart
        freshness = drawn[0]
        assert freshness["threshold"] and freshness["lines"] == 1
    sent = {host: sections[host]["charts"][3] for host in ("alpha", "bravo", "charlie")}
    # one bar a day, and one for the old-format record of playbooks/report.yml on day 0
    assert sent["alpha"]["bars"] == ["good"] * (DAYS + 1) and sent["alpha"]["marks"] == 0
    assert sent["bravo"]["bars"].count("bad") == len(BRAVO_FAILED_DAYS) == sent["bravo"]["marks"]
    assert sent["charlie"]["marks"] == DAYS - 1 - 9  # unreachable after day 9: a cross each, no bar
    drills = sections["bravo"]["charts"][4]
    assert drills["bars"] == ["good", "good", "bad"] and drills["marks"] == 1
    assert [c["kind"] for c in sections["delta"]["charts"]] == ["freshness", "sent"]
    assert sections["delta"]["charts"][1]["marks"] == DAYS
    assert all(not href or href.startswith("drills/") for href in page.hrefs)

    shot = tmp_path / "fleet-report.png"
    taken = run_chromium([f"--screenshot={shot}", "--window-size=1280,3600", page_path.as_uri()],
                         tmp_path / "profile")
    assert shot.is_file(), f"no screenshot (exit {taken.returncode}):\n{taken.stderr[-3000:]}"
    print("screenshot:", shot)
    width, height, rows = decode_png(shot)
    assert (width, height) == (1280, 3600)
    colours = {row[x:x + 3] for row in rows[::7] for x in range(0, len(row), 21)}
    assert len(colours) > 100, "the screenshot is nearly blank"
    background = sum(1 for row in rows[::5] for x in range(0, len(row), 15) if row[x:x + 3] in (
        b"\xf5\xf7\xf9", b"\xff\xff\xff"))
    assert background < 0.9 * (len(rows[::5]) * (width // 5)), "the page is mostly empty"
    assert first_row_with(rows[:60], range(0, width), red, min_pixels=1000) is not None, "the banner is red"
    lower = rows[1100:]  # the charts, below the problems and the table
    assert count_near(lower, (0x2F, 0x6D, 0xB3)) > 300, "no freshness line"
    assert count_near(lower, (0x7B, 0x3F, 0xA0)) > 200, "no size line"
    assert count_near(lower, (0x43, 0xA0, 0x47)) > 300, "no green bars"
    assert count_near(lower, (0xC6, 0x28, 0x28)) > 200, "no threshold line or failure marks"


def test_a_short_window_draws_less_but_states_the_same(history: History, tmp_path: Path) -> None:
    output = tmp_path / "short.html"
    assert main_report(["-i", str(history.inventory), "--days", "2", "--output", str(output)]) == 0
    page = parse(output.read_text())
    sections = {s["host"]: s for s in page.sections}
    # charlie's last record that saw it is 4 days old: outside the window, still in the table
    charlie = page.table["charlie"]
    assert charlie[charlie.index("backup unreachable") - 1].startswith("seen 20"), charlie
    sent = sections["bravo"]["charts"][3]
    assert len(sent["bars"]) == 2 and sent["marks"] == 0  # the two runs of the last two days, both ok
    drills = sections["alpha"]["charts"][4]
    assert drills["bars"] == ["good"]  # the drills of days 0 and 7 are outside the window
    assert "run failed before any host" not in output.read_text()  # day 6 is outside too

    # the third copy: per host and database the newest backup offsite and its age (bravo's and
    # alpha's last upload failed: the one before is the newest offsite); charlie never sent one
    for host in ("alpha", "bravo"):
        sent = [run for run in history.runs if (run["hosts"][host].get("databases") or {}).get(DB, {}).get("offsite")]
        newest = sent[-1]["hosts"][host]["databases"][DB]["offsite"]["file"]
        cells = page.table[host]
        assert newest in cells, cells
        age = cells[cells.index(newest) + 1]  # the day before's backup, sent that day
        assert re.fullmatch(r"1\.0 d old, sent 20\d\d-\d\d-\d\d \d\d:\d\d UTC", age), cells
    assert "none offsite" in page.table["charlie"] and "none offsite" in page.table[HOSTILE_HOST]


def test_the_newest_offsite_name_is_text_not_markup(history: History, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(history.archive, archive)
    hostile = 'gym_backup_<img src=x onerror=alert(2)>.db'
    alpha = {**history.runs[-1]["hosts"]["alpha"]}
    alpha["databases"] = {DB: {**alpha["databases"][DB], "offsite": {
        "file": hostile, "created": alpha["databases"][DB]["created"], "snapshot_id": "snap9999"}}}
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    write_record(archive, record(started.strftime("%Y%m%dT%H%M%SZ") + "-0ff51e", started, {"alpha": alpha}))
    output = tmp_path / "page.html"
    assert main_report(["-i", str(history.inventory), "--archive-dir", str(archive), "--output", str(output)]) == 0
    html = output.read_text()
    assert "<img src=x onerror=alert(2)>" not in html
    assert "gym_backup_&lt;img src=x onerror=alert(2)&gt;.db" in html
    assert hostile in parse(html).table["alpha"]


def test_bad_input_and_an_unwritable_page(history: History, tmp_path: Path, capsys) -> None:
    assert main_report(["-i", str(history.inventory), "--days", "0"]) == 2
    assert main_report(["-i", str(history.inventory), "--archive-dir", str(tmp_path / "nope")]) == 2
    assert main_report(["-i", str(history.inventory), "--output", str(tmp_path / "no" / "page.html")]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(e.startswith("sqlite-fleet report: ") for e in errors), errors
    assert not (tmp_path / "no").exists()


# --------------------------------------------------------------------------- the chart geometry


def test_axis_ticks_and_units() -> None:
    assert charts.value_ticks(0) == (1.0, [0.0, 0.5, 1.0])
    assert charts.value_ticks(129) == (150.0, [0.0, 50.0, 100.0, 150.0])
    assert charts.value_ticks(0.37) == (0.4, [0.0, 0.1, 0.2, 0.3, 0.4])
    assert charts.byte_unit(900) == ("B", 1) and charts.byte_unit(634880) == ("KiB", 1024)
    assert charts.byte_unit(300 << 20) == ("MiB", 1 << 20)
    assert charts.seconds_unit(0.02) == ("ms", 0.001) and charts.seconds_unit(42) == ("s", 1.0)
    end = dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.timezone.utc)
    week = charts.date_ticks(end - dt.timedelta(days=7), end)
    assert [t.day for t in week] == [30, 1, 2, 3, 4, 5, 6] and all(t.hour == 0 for t in week)
    month = charts.date_ticks(end - dt.timedelta(days=28), end)
    assert len(month) == 4 and all(t.weekday() == 0 for t in month)


def test_freshness_is_a_saw_tooth_of_the_newest_verified_backup() -> None:
    start = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    hour = dt.timedelta(hours=1)
    # taken at 03:00 each day, in the archive at 03:30; one taken before the window began
    arrivals = [(start - 20 * hour + hour / 2, start - 20 * hour)] + \
        [(start + (24 * d + 3) * hour + hour / 2, start + (24 * d + 3) * hour) for d in (0, 1, 3)]
    series, drops = charts.freshness_series(arrivals, start, start + 96 * hour)
    ages = [round(age / 3600, 1) for _, age in series]
    assert ages == [20.0, 23.5, 0.5, 24.5, 0.5, 48.5, 0.5, 21.0]
    assert [round(age / 3600, 1) for _, age in drops] == [0.5, 0.5, 0.5]
    assert charts.freshness_series([], start, start + hour) == ([], [])
    chart = charts.freshness_chart(arrivals, start, start + 96 * hour, 36 * 3600)
    assert chart["threshold"]["label"] == "limit 36 h" and chart["y_title"] == "age (h)"
    assert chart["plot"]["top"] <= chart["threshold"]["y"] <= chart["plot"]["bottom"]
