"""tools/split_core.py: the single-file core split into the package, on small made-up cores.

The tool runs as the lead runs it (a process, ``--repo`` pointing at a scratch repository); the
package it writes is imported by a real Python.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "split_core.py"
BANNER = "# " + "-" * 75 + " %s\n"

CORE = '''"""A made-up core."""

from __future__ import annotations

import os

KIND_IO = "io"


class BackupError(Exception):
    """A failure."""

''' + BANNER % "names" + '''

def utcnow() -> int:
    return 1

''' + BANNER % "files" + '''

# Where the copy is flushed: a comment that stays with its function.
def fsync_path(path: str) -> bool:
    return os.path.exists(path)

''' + BANNER % "snapshot" + '''

def snapshot(path: str) -> int:
    if not fsync_path(path):
        raise BackupError("missing " + path, KIND_IO)
    return utcnow()


def a_new_function() -> int:
    return snapshot("/") + 1
'''

FACE = "import sqlite_fleet as core\n\nprint(core.snapshot('/'), core.a_new_function())\n"


def scratch_repo(tmp_path: Path, core: str) -> Path:
    repo = tmp_path / "repo"
    (repo / "module_utils").mkdir(parents=True)
    (repo / "runner").mkdir()
    (repo / "module_utils" / "sqlite_fleet.py").write_text(core)
    (repo / "runner" / "face.py").write_text(FACE)
    return repo


def split(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), "--repo", str(repo), *args], capture_output=True, text=True,
                          timeout=60)


def test_each_section_becomes_its_part_and_the_package_works(tmp_path: Path) -> None:
    repo = scratch_repo(tmp_path, CORE)
    done = split(repo)
    assert done.returncode == 0, done.stderr
    package = repo / "module_utils" / "sqlite_fleet"
    assert not (repo / "module_utils" / "sqlite_fleet.py").exists()
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "errors.py", "files.py", "names.py",
                                                         "snapshots.py"]
    snapshot = (package / "snapshots.py").read_text()
    assert "from .errors import KIND_IO, BackupError\n" in snapshot
    assert "from .files import fsync_path\n" in snapshot and "def a_new_function()" in snapshot  # new: its section's
    assert "import os" not in snapshot and "import os\n" in (package / "files.py").read_text()
    assert "# Where the copy is flushed: a comment that stays with its function.\ndef fsync_path" in (
        package / "files.py").read_text()
    init = (package / "__init__.py").read_text()
    assert 'PARTS = (\n    "errors",\n    "names",\n    "files",\n    "snapshots",\n)' in init
    assert "from .snapshots import a_new_function, snapshot\n" in init  # what the face uses
    runner = "import sys; sys.path.insert(0, sys.argv[1]); exec(open(sys.argv[2]).read())"  # as the runner does
    face = repo / "runner" / "face.py"
    run = subprocess.run([sys.executable, "-I", "-c", runner, str(repo / "module_utils"), str(face)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "2"]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    repo = scratch_repo(tmp_path, CORE)
    done = split(repo, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "snapshots.py" in done.stdout
    assert sorted(p.name for p in (repo / "module_utils").iterdir()) == ["sqlite_fleet.py"]


@pytest.mark.parametrize(("change", "says"), [
    # names would import snapshots, which imports names
    (("def utcnow() -> int:\n    return 1\n", "def utcnow() -> int:\n    return 1\n\n\ndef late() -> int:\n"
      "    return snapshot('/')\n"), "import cycle between parts names -> snapshots -> names"),
    ((BANNER % "files", BANNER % "files of another kind"),
     "banner section(s) 'files of another kind' in no row of SECTIONS"),
    (("def utcnow() -> int:\n    return 1\n", "COUNT = 0\n\n\ndef utcnow() -> int:\n    global COUNT\n    COUNT += 1\n"
      "    return 1\n\n\ndef seen() -> int:\n    return COUNT\n"), None),
])
def test_a_split_the_tables_cannot_make_is_refused_and_changes_nothing(tmp_path: Path, change: tuple[str, str],
                                                                         says: str | None) -> None:
    core = CORE.replace(*change)
    if says is None:  # COUNT rebound in names, read in snapshot: a copy there would go stale
        core = core.replace("    return utcnow()\n", "    return utcnow() + COUNT\n")
        says = "COUNT is rebound at run time in part names but used in part snapshots"
    assert core != CORE
    repo = scratch_repo(tmp_path, core)
    done = split(repo)
    assert done.returncode == 2
    assert done.stderr.startswith("split_core: refused: ") and says in done.stderr, done.stderr
    assert "OVERRIDES" in done.stderr or "SECTIONS" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (repo / "module_utils").iterdir()) == ["sqlite_fleet.py"]
    assert (repo / "module_utils" / "sqlite_fleet.py").read_text() == core
