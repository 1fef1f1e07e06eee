"""sqlite_drill, run through Ansible on a real archive built with the core's own snapshot().

No fleet: the archive layout ``<archive>/<host>/<name>/<backups>`` is made in tmp_path by taking
real backups of real SQLite files, exactly as the sqlite_archive role leaves it. The module runs
on the controller, so it runs under the controller's Python (the venv, which has jinja2).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from module_test_helpers import (
    BIN,
    REPO,
    SYSTEM_PYTHON,
    core,
    corrupt_table_pages,
    make_database,
    run_cases,
    run_many,
    run_module,
    tree_state,
)

CONTROLLER_PYTHON = str(BIN / "python")
TEMPLATES = str(REPO / "roles" / "sqlite_drill" / "templates")
# A host name with every kind of character the core allows in names (validate_name).
ODD_HOST = "Pi-7.gym_lan"
PROBE_NAME = '<b>members</b> "present" & <i>counted</i>'
EVIL_FOLDER = "x<script>alert(1)<"
PROBES = {"gym": [{"name": PROBE_NAME, "sql": "SELECT count(*) FROM members", "expect": "> 0"},
                  {"name": "visits", "sql": "SELECT count(*) FROM visits", "expect": ">= 1"}]}


# --------------------------------------------------------------------------- helpers


def add_rows(db: Path, rows: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO members (name, note) VALUES (?, ?)",
                         [("late member %d" % i, "y" * 200) for i in range(rows)])
        conn.execute("COMMIT")
    finally:
        conn.close()


def archive_backups(archive: Path, host: str, db: Path, count: int = 3, name: str = "gym") -> list[Path]:
    """``count`` real backups of ``db`` in the archive folder of ``host``, the database growing between."""
    taken = []
    for index in range(count):
        if index:
            add_rows(db, 150)
        snap = core.snapshot(str(db), str(archive / host / name), name, source_host=host)
        assert snap["verified"], snap
        taken.append(Path(snap["backup"]))
    return taken


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    position = len(data) // 2 if offset is None else offset
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def drill_args(archive: Path, **extra: Any) -> dict[str, Any]:
    args = {"archive_dir": str(archive), "drill_log": str(archive / "drills" / "drill-log.jsonl"),
            "report_dir": str(archive / "drills"), "templates_dir": TEMPLATES, "probes": PROBES}
    args.update(extra)
    return args


def log_lines(archive: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (archive / "drills" / "drill-log.jsonl").read_text().splitlines()]


class ReportParser(HTMLParser):
    """The report's table rows (in page order) and every tag and text, as a browser parses them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[dict[str, str]] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)
        found = dict(attrs)
        self.classes.extend((found.get("class") or "").split())
        if tag == "tr" and "entry" in (found.get("class") or "").split():
            self.rows.append({"host": found["data-host"], "database": found["data-database"],
                              "status": found["data-status"], "class": found["class"]})

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_report(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text())
    parser.close()
    return parser


def assert_self_contained(html: str) -> None:
    """No script and nothing fetched; its one link (to the fleet's history page) is relative."""
    lowered = html.lower()
    assert lowered.count("href=") == 1 and 'href="../fleet-report.html"' in lowered, "one relative link"
    lowered = lowered.replace('href="../fleet-report.html"', "")
    for marker in ("<script", "<link", " src=", "href=", "@import", "url(", "http://", "https://"):
        assert marker not in lowered, "the report must be self-contained, found %r" % marker


def assert_clean_failure(result) -> None:
    assert "Traceback" not in result.output and "module_stderr" not in result, result


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def healthy_archive(tmp_path: Path) -> dict[str, Any]:
    """Two hosts, one with two databases, three growing backups each."""
    archive = tmp_path / "archive"
    sources = tmp_path / "sources"
    sources.mkdir()
    backups = {}
    for host, names in (("pi1", ("gym", "shop")), (ODD_HOST, ("gym",))):
        for name in names:
            db = make_database(sources / ("%s-%s.db" % (host, name)), rows=200 + len(backups) * 50)
            backups[(host, name)] = archive_backups(archive, host, db, name=name)
    return {"archive": archive, "backups": backups}


# --------------------------------------------------------------------------- tests


def test_drills_pass_and_the_reports_show_every_database(healthy_archive, tmp_path):
    archive = healthy_archive["archive"]
    files_before = {key: value for key, value in tree_state(archive).items() if not key.startswith(".")}

    result = run_module("sqlite_drill", drill_args(archive, probes={}, host_probes={"pi1": PROBES}),
                        python=CONTROLLER_PYTHON)

    assert not result.get("failed"), result
    assert result["changed"] is True and result["failed_drills"] == [] and result["stale"] == []
    assert result["unreached"] == [] and result["ignored"] == []
    by_key = {(r["host"], r["database"]): r for r in result["results"]}
    assert sorted(by_key) == sorted(healthy_archive["backups"])
    for key, backups in healthy_archive["backups"].items():
        entry = by_key[key]
        assert entry["status"] == "ok" and entry["ok"] is True and entry["problems"] == [], entry
        assert entry["backup"] == entry["newest"] == backups[-1].name and entry["verified"] is True
        assert entry["sizes"] == [p.stat().st_size for p in backups]  # oldest first
        assert entry["sizes"][0] < entry["sizes"][-1]
        assert entry["restore_seconds"] >= 0 and entry["seconds"] >= entry["restore_seconds"]
        assert 0 <= entry["age_seconds"] < 600
    # host_probes win over probes: pi1's gym ran both probes, the odd host ran none
    assert [(p["name"], p["ok"]) for p in by_key[("pi1", "gym")]["probes"]] == [(PROBE_NAME, True), ("visits", True)]
    assert by_key[("pi1", "gym")]["probes"][0]["value"] == 200 + 300
    assert by_key[(ODD_HOST, "gym")]["probes"] == []
    assert len(result["lines"]) == 3 and all(": OK - drilled " in line for line in result["lines"])

    html_path, md_path = Path(result["report_html"]), Path(result["report_md"])
    assert html_path == archive / "drills" / "drill-report.html" and md_path.parent == html_path.parent
    for path in (html_path, md_path, archive / "drills" / "drill-log.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((archive / "drills").stat().st_mode) == 0o700
    report = parse_report(html_path)
    assert [(r["host"], r["database"], r["status"]) for r in report.rows] == [
        ("Pi-7.gym_lan", "gym", "ok"), ("pi1", "gym", "ok"), ("pi1", "shop", "ok")]
    assert all("status-ok" in r["class"] for r in report.rows)
    assert "svg" in report.tags and "polyline" in report.tags  # the size trend
    assert_self_contained(html_path.read_text())
    markdown = md_path.read_text()
    assert markdown.startswith("# Restore drill: OK")
    for key, backups in healthy_archive["backups"].items():
        assert "## OK: %s / %s" % key in markdown and backups[-1].name in markdown

    lines = log_lines(archive)
    assert [(line["host"], line["database"], line["ok"]) for line in lines] == [
        ("Pi-7.gym_lan", "gym", True), ("pi1", "gym", True), ("pi1", "shop", True)]
    for line in lines:
        assert set(line) >= {"time", "host", "database", "backup", "created", "age_seconds", "size_bytes", "ok",
                             "problems", "probes", "seconds", "restore_seconds"}
    # the drills only read: the backups and their sidecars are untouched, no scratch or -wal is left
    files_after = {key: value for key, value in tree_state(archive).items() if not key.startswith(".")}
    assert {k: v for k, v in files_after.items() if not k.startswith("drills") and k != "."} == \
        {k: v for k, v in files_before.items() if k != "."}
    assert not (archive / ".drill-scratch").exists()
    assert not [p for p in archive.rglob("*") if p.name.endswith(("-wal", "-shm", "-journal"))]


def test_failures_come_first_name_the_file_and_nothing_is_injected(tmp_path):
    archive = tmp_path / "archive"
    sources = tmp_path / "sources"
    sources.mkdir()
    # alpha: healthy (sorts first by name, so "problems first" is the report's doing)
    archive_backups(archive, "alpha", make_database(sources / "alpha.db"))
    # bravo: its newest backup has a flipped byte
    bravo = archive_backups(archive, "bravo", make_database(sources / "bravo.db"))
    flip_byte(bravo[-1])
    # charlie: the newest backup was taken of a corrupt source and flagged unverified
    charlie_db = make_database(sources / "charlie.db", journal_mode="delete")
    charlie = archive_backups(archive, "charlie", charlie_db, count=2)
    corrupt_table_pages(charlie_db)
    unverified = core.snapshot(str(charlie_db), str(archive / "charlie" / "gym"), "gym", integrity="full")
    assert unverified["verified"] is False
    # a folder whose name could inject markup, and an odd host whose probe name carries markup
    (archive / EVIL_FOLDER / "gym").mkdir(parents=True)
    archive_backups(archive, ODD_HOST, make_database(sources / "odd.db"), count=1)

    result = run_module("sqlite_drill", drill_args(archive, host_probes={"alpha": ""}), python=CONTROLLER_PYTHON)

    assert result.get("failed") is True and result["kind"] == "corrupt", result
    assert_clean_failure(result)
    assert result["failed_drills"] == ["bravo/gym", "charlie/gym"]
    assert bravo[-1].name in result["msg"] and unverified["file"] in result["msg"]
    assert "drill-report.html" in result["msg"]
    assert result["ignored"] == [EVIL_FOLDER]
    by_host = {r["host"]: r for r in result["results"]}
    assert [r["host"] for r in result["results"]] == ["bravo", "charlie", ODD_HOST, "alpha"]
    assert by_host["bravo"]["backup"] == bravo[-1].name and by_host["bravo"]["last_good"] == bravo[-2].name
    assert any(p.startswith(bravo[-1].name + ": checksum") for p in by_host["bravo"]["problems"])
    # charlie's newest verified backup drills fine; the newer unverified one fails the drill
    assert by_host["charlie"]["backup"] == charlie[-1].name and by_host["charlie"]["newest"] == unverified["file"]
    assert by_host["charlie"]["verified"] is False and by_host["charlie"]["drill_ok"] is True
    assert by_host["bravo"]["drill_ok"] is False
    assert any(p.startswith("newest backup %s: source" % unverified["file"]) for p in by_host["charlie"]["problems"])
    assert by_host[ODD_HOST]["status"] == "ok" and by_host[ODD_HOST]["probes"][0]["name"] == PROBE_NAME
    assert len(by_host["alpha"]["probes"]) == 2  # an empty host_probes entry falls back to probes

    html = Path(result["report_html"]).read_text()
    report = parse_report(Path(result["report_html"]))
    assert [(r["host"], r["status"]) for r in report.rows] == [
        ("bravo", "fail"), ("charlie", "fail"), (ODD_HOST, "ok"), ("alpha", "ok")]
    assert ["status-fail" in r["class"] for r in report.rows] == [True, True, False, False]
    assert report.text.count(bravo[-1].name) >= 2 and unverified["file"] in "".join(report.text)
    # escaped, not interpreted: the markup is text in the page, never a tag or an attribute
    page_text = "".join(report.text)
    assert PROBE_NAME in page_text and EVIL_FOLDER in page_text
    assert not {"script", "b", "i"} & set(report.tags), report.tags
    assert "<script" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;b&gt;members&lt;/b&gt; &#34;present&#34; &amp; &lt;i&gt;counted&lt;/i&gt;" in html
    assert_self_contained(html)
    markdown = Path(result["report_md"]).read_text()
    assert markdown.startswith("# Restore drill: FAILED")
    assert markdown.index("## FAILED: bravo / gym") < markdown.index("## FAILED: charlie / gym") < \
        markdown.index("## OK: alpha / gym")
    assert bravo[-1].name in markdown and "<script" not in markdown and "<b>" not in markdown
    assert "- Drill: **passed** on `%s`" % charlie[-1].name in markdown  # the drill passed, the newest failed
    assert "\\*\\*\\* in database main \\*\\*\\*" in markdown  # SQLite's *** do not turn into emphasis
    # a probe's expectation reads as written (Markdown is no HTML: no &gt;), markup still defused
    assert "(want > 0)" in markdown and "(want >= 1)" in markdown and "&gt;" not in markdown
    assert "&lt;b>members&lt;/b> \"present\" & &lt;i>counted&lt;/i>" in markdown
    assert "| Verified when taken |" in markdown
    # a FAILED drill's backup was verified when it was taken: said so, not shown green as if it were good now
    bravo_row = html.split('data-host="bravo"')[1].split("</tr>")[0]
    assert "yes, when taken" in bravo_row and "<th>Verified when taken</th>" in html
    assert '<span class="good" title="verified when it was taken">' not in bravo_row
    # the log is written before the task fails: one line per drill
    assert [(line["host"], line["ok"]) for line in log_lines(archive)] == [
        ("bravo", False), ("charlie", False), (ODD_HOST, True), ("alpha", True)]


def test_an_old_newest_backup_is_stale_and_its_host_not_reached(healthy_archive):
    archive = healthy_archive["archive"]

    result = run_module("sqlite_drill", drill_args(archive, max_age_hours=0, unreached_days=0, hosts=["pi1"]),
                        python=CONTROLLER_PYTHON)

    assert result.get("failed") is True and result["kind"] == "stale", result
    assert_clean_failure(result)
    assert result["failed_drills"] == [] and result["stale"] == ["pi1/gym", "pi1/shop"]
    assert "older than 0 h" in result["msg"] and "pi1/gym" in result["msg"]
    assert [r["status"] for r in result["results"]] == ["stale", "stale"]
    assert all(r["ok"] is True for r in result["results"])  # the drills themselves passed
    assert [u["host"] for u in result["unreached"]] == ["pi1"]
    assert any(line.startswith("pi1: not reached for") for line in result["lines"])
    report = parse_report(Path(result["report_html"]))
    assert [(r["host"], r["database"], r["status"]) for r in report.rows] == [("pi1", "gym", "stale"),
                                                                             ("pi1", "shop", "stale")]
    assert all("status-stale" in r["class"] for r in report.rows)
    assert "Hosts not reached for 0 days" in "".join(report.text)
    assert [line["stale"] for line in log_lines(archive)] == [True, True]


def test_check_mode_writes_nothing_and_the_log_keeps_earlier_lines(healthy_archive, tmp_path):
    archive = healthy_archive["archive"]
    before = tree_state(tmp_path)
    checked = run_module("sqlite_drill", drill_args(archive), check=True, python=CONTROLLER_PYTHON)
    assert not checked.get("failed"), checked
    assert tree_state(tmp_path) == before
    assert checked["changed"] is True and "report_html" not in checked
    assert sorted((w["host"], w["database"], w["backup"]) for w in checked["would_drill"]) == sorted(
        (host, name, backups[-1].name) for (host, name), backups in healthy_archive["backups"].items())
    assert "would drill" in checked["msg"]

    first, second = run_many([{"sqlite_drill": drill_args(archive)}, {"sqlite_drill": drill_args(archive)}],
                             python=CONTROLLER_PYTHON, tmp_dir=tmp_path)
    assert not first.get("failed") and not second.get("failed"), (first, second)
    lines = (archive / "drills" / "drill-log.jsonl").read_text().splitlines()
    assert len(lines) == 6
    first_times = {json.loads(line)["time"] for line in lines[:3]}
    second_times = {json.loads(line)["time"] for line in lines[3:]}
    assert len(first_times) == len(second_times) == 1 and first_times != second_times


def test_missing_hosts_databases_and_a_held_lock_fail_and_bad_input_changes_nothing(healthy_archive, tmp_path):
    archive = healthy_archive["archive"]
    before = tree_state(archive)
    cases = [
        # 0: a host of the inventory that never reached the archive, a database never pulled
        ("sqlite_drill", drill_args(archive, hosts=["pi1", "ghost"], databases={"pi1": ["gym", "shop", "till"]},
                                    report_dir=str(tmp_path / "reports0"), drill_log=str(tmp_path / "log0.jsonl"),
                                    scratch_dir=str(tmp_path / "scratch0"))),
        # 1-5: bad input
        ("sqlite_drill", drill_args(archive, probes={"gym": [{"name": "wipe", "sql": "DELETE FROM members"}]})),
        ("sqlite_drill", drill_args(archive, hosts=["../etc"])),
        ("sqlite_drill", {"archive_dir": str(archive), "report_dir": str(tmp_path / "reports")}),
        ("sqlite_drill", drill_args(tmp_path / "no-such-archive")),
        ("sqlite_drill", drill_args(archive, probes={"gym": [{"sql": "SELECT 1", "expected": 1}]})),
        # 6: a pull or prune holds the folder's lock for longer than lock_timeout
        ("sqlite_drill", drill_args(archive, hosts=[ODD_HOST], lock_timeout=0.5, report_dir=str(tmp_path / "reports6"),
                                    drill_log=str(tmp_path / "log6.jsonl"), scratch_dir=str(tmp_path / "scratch6"))),
    ]
    with core.folder_lock(str(archive / ODD_HOST / "gym")):
        results = run_cases(cases, python=CONTROLLER_PYTHON, tmp_dir=tmp_path)

    missing = results[0]
    assert missing.get("failed") is True and missing["kind"] == "corrupt", missing
    assert missing["failed_drills"] == ["ghost/-", "pi1/till"]
    assert "ghost" in missing["msg"] and "till" in missing["msg"]
    assert {(r["host"], r["database"], r["status"]) for r in missing["results"]} == {
        ("ghost", None, "fail"), ("pi1", "till", "fail"), ("pi1", "gym", "ok"), ("pi1", "shop", "ok")}
    assert missing["unreached"] == [{"host": "ghost", "days": None, "newest": None, "newest_created": None}]
    assert len((tmp_path / "log0.jsonl").read_text().splitlines()) == 4
    report = parse_report(tmp_path / "reports0" / "drill-report.html")
    assert [r["status"] for r in report.rows] == ["fail", "fail", "ok", "ok"]
    assert "the archive holds no backup of it" in "".join(report.text)

    locked = results[6]
    assert locked.get("failed") is True and locked["failed_drills"] == [ODD_HOST + "/gym"], locked
    assert "locked by another run" in locked["msg"] and len((tmp_path / "log6.jsonl").read_text().splitlines()) == 1

    for result, words in zip(results[1:6], ("one SELECT statement", "host '../etc' is not allowed",
                                           "required by 'report_dir': templates_dir",
                                           "does not exist", "unknown keys expected")):
        assert result.get("failed") is True and words in result["msg"], (words, result)
        assert_clean_failure(result)
    assert tree_state(archive) == before  # bad input changed nothing (case 0 wrote outside the archive)


def test_without_jinja2_the_drill_still_runs_and_only_the_report_is_refused(healthy_archive, tmp_path):
    """A bare interpreter (here the system Python without jinja2) drills; asking it for a report fails cleanly."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("%s is missing" % SYSTEM_PYTHON)
    archive = healthy_archive["archive"]
    plain, with_report = run_cases(
        [("sqlite_drill", {"archive_dir": str(archive), "drill_log": str(tmp_path / "log.jsonl")}),
         ("sqlite_drill", drill_args(archive, drill_log=str(tmp_path / "other.jsonl")))],
        python=SYSTEM_PYTHON, tmp_dir=tmp_path)
    assert not plain.get("failed"), plain
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3
    if with_report.get("failed"):
        assert "jinja2" in with_report["msg"] and not (tmp_path / "other.jsonl").exists(), with_report
        assert_clean_failure(with_report)
