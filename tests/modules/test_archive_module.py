"""sqlite_archive, run through Ansible: the warning about a host's outdated on-host runner."""

from __future__ import annotations

import shutil
from pathlib import Path

from module_test_helpers import core, make_database, run_module


def import_one(tmp_path: Path, tool: dict, runner: bool) -> dict:
    db = make_database(tmp_path / "app.db", rows=50)
    taken = core.snapshot(str(db), str(tmp_path / "host"), "app")
    manifest = dict(taken["manifest"], tool=tool)
    if runner:
        manifest["runner"] = {"version": tool["version"], "made_by": "on-host runner"}
    folder = tmp_path / "archive" / "pi1" / "app"
    for level in (folder.parent.parent, folder.parent, folder):  # private, as the pull's prepare step makes them
        level.mkdir(mode=0o700)
    incoming = folder / (".sqlite-backup-tmp.incoming." + taken["file"])
    shutil.copyfile(taken["backup"], incoming)
    return run_module("sqlite_archive", {"archive_dir": str(tmp_path / "archive"), "host": "pi1", "name": "app",
                                         "state": "import", "incoming": str(incoming), "manifest": manifest})


def test_a_backup_made_by_an_older_runner_is_archived_with_a_warning(tmp_path: Path) -> None:
    old = {"name": core.TOOL_NAME, "version": "0.0.1", "core_sha256": "0" * 64}
    result = import_one(tmp_path, old, runner=True)
    assert not result.get("failed"), result
    assert "run provision.yml" in result["outdated_runner"]
    assert any("run provision.yml" in w for w in result.get("warnings", [])), result


def test_a_backup_made_by_the_current_core_brings_no_warning(tmp_path: Path) -> None:
    current = {"name": core.TOOL_NAME, "version": core.CORE_VERSION,
               "core_sha256": core.core_sha256()}
    result = import_one(tmp_path, current, runner=True)
    assert not result.get("failed"), result
    assert "outdated_runner" not in result
    assert not any("provision.yml" in w for w in result.get("warnings", [])), result
