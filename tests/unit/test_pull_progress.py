"""The pulls' progress files: the core's PullProgress (written by the fetch while a file grows) and
read_pull_progress, and the CLI's PullDisplay that shows them. Real files, real threads; the
real fetch under the real CLI is in tests/integration/test_cli_progress.py."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from unit_helpers import core

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sqlite_fleet_cli.pull_progress import CLEAR_LINE, PullDisplay  # noqa: E402

MIB = 1 << 20
BACKUP = "gym_backup_20261206_031501.db"


def wait_for(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.01)


def grow(path: Path, size: int) -> None:
    with open(path, "ab") as stream:
        stream.write(b"\0" * (size - (path.stat().st_size if path.exists() else 0)))


def test_a_growing_file_is_reported_and_the_last_report_is_its_final_size(tmp_path: Path) -> None:
    folder, dest = tmp_path / "progress", tmp_path / (".sqlite-backup-tmp.incoming." + BACKUP)
    with core.PullProgress(str(folder), "pi1", "gym", str(dest), 3 * MIB, interval=0.01):
        assert core.read_pull_progress(str(folder)) == [
            {"host": "pi1", "database": "gym", "file": BACKUP, "bytes": 0, "total": 3 * MIB,
             "updated": pytest.approx(time.time(), abs=5)}]
        for step in (1, 2):
            grow(dest, step * MIB)
            wait_for(lambda step=step: core.read_pull_progress(str(folder))[0]["bytes"] == step * MIB,
                     "%d MiB reported" % step)
        grow(dest, 3 * MIB)
    (entry,) = core.read_pull_progress(str(folder))
    assert entry["bytes"] == entry["total"] == 3 * MIB
    assert os.listdir(folder) == ["pi1--gym.json"], "a temporary file was left behind"


def test_no_rewrite_while_the_file_does_not_grow(tmp_path: Path) -> None:
    folder, dest = tmp_path / "progress", tmp_path / "incoming"
    dest.write_bytes(b"\0" * 1000)
    with core.PullProgress(str(folder), "pi1", "gym", str(dest), 2000, interval=0.01):
        first = (folder / "pi1--gym.json").stat()
        time.sleep(0.2)  # some 20 looks at an unchanged file
        assert (folder / "pi1--gym.json").stat().st_ino == first.st_ino, "rewritten without a change"


def test_a_reader_only_ever_sees_whole_files(tmp_path: Path) -> None:
    folder, dest = tmp_path / "progress", tmp_path / "incoming"
    seen, broken, done = [], [], threading.Event()

    def read() -> None:
        while not done.is_set():
            for name in os.listdir(folder) if folder.is_dir() else []:
                if name.endswith(".json"):
                    try:
                        seen.append(json.loads((folder / name).read_text())["bytes"])
                    except FileNotFoundError:
                        continue
                    except ValueError as exc:
                        broken.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with core.PullProgress(str(folder), "pi1", "gym", str(dest), 400 * 4096, interval=0.0005):
            for step in range(1, 401):
                grow(dest, step * 4096)
                time.sleep(0.0005)
    finally:
        done.set()
        reader.join()
    assert not broken and len(seen) > 10 and seen == sorted(seen), (broken, len(seen))


def test_hostile_names_make_one_plain_file_and_come_back_as_they_were(tmp_path: Path) -> None:
    host = "../../etc/passwd\n--x <b>é"
    assert "/" not in core.progress_file_name(host, "gym") and "\n" not in core.progress_file_name(host, "gym")
    dest = tmp_path / "incoming"
    dest.write_bytes(b"x")
    with core.PullProgress(str(tmp_path / "p"), host, "gym", str(dest), 10):
        pass
    (entry,) = core.read_pull_progress(str(tmp_path / "p"))
    assert entry["host"] == host and entry["bytes"] == 1
    assert [p.name for p in (tmp_path / "p").iterdir()] == [core.progress_file_name(host, "gym")]
    assert core.progress_file_name("a-b", "c") != core.progress_file_name("a", "b-c")


def test_without_the_variable_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "incoming"
    dest.write_bytes(b"x" * 10)
    for value in (None, "", "relative/progress"):
        if value is None:
            monkeypatch.delenv(core.PROGRESS_DIR_ENV, raising=False)
        else:
            monkeypatch.setenv(core.PROGRESS_DIR_ENV, value)
        monkeypatch.chdir(tmp_path)
        with core.PullProgress.from_env("pi1", "gym", str(dest), 10):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["incoming"]
    monkeypatch.setenv(core.PROGRESS_DIR_ENV, str(tmp_path / "p"))
    with core.PullProgress.from_env("pi1", "gym", str(dest), 10):
        pass
    assert core.read_pull_progress(str(tmp_path / "p"))[0]["bytes"] == 10


def test_a_progress_folder_that_cannot_be_written_never_stops_the_transfer(tmp_path: Path) -> None:
    blocker = tmp_path / "progress"
    blocker.write_text("a file where the folder should be")
    dest = tmp_path / "incoming"
    with core.PullProgress(str(blocker), "pi1", "gym", str(dest), 10, interval=0.01):
        dest.write_bytes(b"x" * 10)
        time.sleep(0.05)
    assert blocker.read_text() == "a file where the folder should be" and dest.stat().st_size == 10


def test_the_reader_skips_what_is_not_a_whole_progress_file(tmp_path: Path) -> None:
    good = {"host": "pi1", "database": "gym", "file": BACKUP, "bytes": 5, "total": 9, "updated": 1.5}
    (tmp_path / "pi1--gym.json").write_text(json.dumps(good))
    (tmp_path / "pi2--gym.json").write_text('{"host": "pi2", "data')  # cut short
    (tmp_path / "pi3--gym.json").write_text(json.dumps({**good, "host": "pi3", "bytes": "5"}))
    (tmp_path / "pi4--gym.json").write_text(json.dumps({**good, "host": "pi4", "total": True}))
    (tmp_path / "notes.json").write_text(json.dumps(good))
    (tmp_path / "pi5--gym.json.1a2b.tmp").write_text(json.dumps(good))
    (tmp_path / "pi6--gym.json").mkdir()
    assert core.read_pull_progress(str(tmp_path)) == [good]
    assert core.read_pull_progress(str(tmp_path / "missing")) == []


# ------------------------------------------------------------------------- the CLI's display


def report(folder: Path, host: str, size: int, total: int) -> None:
    dest = folder.parent / ("incoming-%s" % host)
    dest.write_bytes(b"\0" * size)
    core.PullProgress(str(folder), host, "gym", str(dest), total).report()


def test_on_a_terminal_one_line_is_redrawn_and_cleared(tmp_path: Path) -> None:
    folder, terminal, lines = tmp_path / "progress", io.StringIO(), []
    display = PullDisplay(str(folder), lambda *step: lines.append(step), terminal, threading.Lock())
    display.tick()
    assert terminal.getvalue() == "", "nothing to show, nothing drawn"
    report(folder, "pi1", 45 * MIB, 100 * MIB)
    report(folder, "pi2", 8 * MIB, 8 * MIB)  # done: not shown
    display.tick()
    assert terminal.getvalue() == "pulling: pi1 gym 45% of 100.0 MiB"
    display.clear()
    display.clear()
    assert terminal.getvalue().endswith("MiB" + CLEAR_LINE), "cleared once"
    display.finished("pi1")  # the fetch task ended (failed, say): its last file says nothing more
    display.tick()
    display.stop()
    assert terminal.getvalue().count("pulling:") == 1 and lines == []


def test_elsewhere_a_line_per_big_transfer_every_few_seconds(tmp_path: Path) -> None:
    folder, lines = tmp_path / "progress", []
    display = PullDisplay(str(folder), lambda *step: lines.append(step), None, threading.Lock(), line_every=0.2)
    report(folder, "pi1", 1 * MIB, 300 * MIB)
    report(folder, "pi2", 1000, 2 * MIB)  # small: no lines
    display.tick()
    assert lines == [], "a line as soon as a transfer starts says nothing"
    time.sleep(0.25)
    report(folder, "pi1", 150 * MIB, 300 * MIB)
    display.tick()
    display.tick()  # within line_every: no second line
    assert lines == [("pi1", "gym", "pulling %s: 50%% (150.0 MiB of 300.0 MiB)" % "incoming-pi1")]
