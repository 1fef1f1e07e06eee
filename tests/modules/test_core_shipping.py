"""AnsiballZ ships each module the parts of the core it imports, and that is enough for it to run.

A module imports its names from the parts (``from ansible.module_utils.sqlite_fleet.snapshots
import snapshot``), never from the package itself, whose ``__init__.py`` is a map that imports no
part. Ansible's dependency finder follows those imports and the parts' relative imports and zips
exactly those parts (and ``__init__.py``) into the payload: a part too many is payload fat sent
with every task, a part too few fails the import on the host.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from core_parts import MODULE_UTILS, core_files
from module_test_helpers import REPO, make_database, run_module, run_tasks

CORE = "ansible.module_utils.sqlite_fleet"
IN_ZIP = "ansible/module_utils/sqlite_fleet/"
LIBRARY = REPO / "library"
FACES = [*sorted(LIBRARY.glob("*.py")), *sorted((REPO / "action_plugins").glob("*.py"))]


def imported_parts(path: Path) -> set[str]:
    """The parts of the core a module imports, and the parts those import (relative imports), closed."""
    wanted = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(CORE + "."):
            wanted.add(node.module[len(CORE) + 1:].split(".")[0])
        elif isinstance(node, ast.Import):
            wanted.update(alias.name[len(CORE) + 1:].split(".")[0] for alias in node.names
                          if alias.name.startswith(CORE + "."))
    parts, todo = set(), list(wanted)
    while todo:
        part = todo.pop()
        if part in parts:
            continue
        parts.add(part)
        for node in ast.walk(ast.parse((MODULE_UTILS / "sqlite_fleet" / (part + ".py")).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                todo.append(node.module.split(".")[0])
    return parts


def core_modules() -> list[str]:
    return [path.stem for path in sorted(LIBRARY.glob("*.py")) if imported_parts(path)]


def payloads(modules: list[str]) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "ansiballz.py"), *modules], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("face", FACES, ids=lambda path: "%s/%s" % (path.parent.name, path.name))
def test_faces_import_from_the_parts_not_from_the_package(face: Path) -> None:
    for node in ast.walk(ast.parse(face.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == CORE:
            pytest.fail("%s: %s (import from the part that holds the name)" % (face.name, ast.unparse(node)))


def test_the_package_file_imports_no_part() -> None:
    """__init__.py maps the parts; an import of one there would ship it with every module."""
    init = MODULE_UTILS / "sqlite_fleet" / "__init__.py"
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module == "__future__", ast.unparse(node)
        elif isinstance(node, ast.Import):
            assert all(not alias.name.startswith(("sqlite_fleet", "ansible")) for alias in node.names)


def test_each_module_ships_exactly_the_parts_it_imports() -> None:
    modules = core_modules()
    assert len(modules) >= 10, modules
    every_part = {path.stem for path in core_files()} - {"__init__"}
    built = payloads(modules)
    for module in modules:
        assert built[module]["payload"], module
        shipped = sorted(name[len(IN_ZIP):-3] for name in built[module]["files"] if name.startswith(IN_ZIP))
        assert shipped == sorted({"__init__", *imported_parts(LIBRARY / (module + ".py"))}), module
    # the point of it: the host's snapshot module does not carry the controller's or the drills' parts
    backup = imported_parts(LIBRARY / "sqlite_backup.py")
    assert {"pull", "archive", "drills", "restore", "restore_task", "present", "progress"}.isdisjoint(backup)
    assert "backup_task" in backup  # the module and the runner's task command run one function
    assert backup < every_part
    # sqlite_archive runs on the controller and needs the sha256 of the whole core (outdated_runner)
    assert imported_parts(LIBRARY / "sqlite_archive.py") == every_part


def test_what_each_module_ships_is_enough_for_it_to_run(tmp_path: Path) -> None:
    """Every module imports all it needs from its payload on the host: each one, given an option no
    module has, gets as far as AnsibleModule's check of its options, which reports the options it
    was given (a part missing from the zip fails the import before that: "No module named ...", no
    invocation)."""
    modules = core_modules()
    results = run_tasks([{module: {"no_such_option": 1}} for module in modules], tmp_dir=tmp_path)
    for module, result in zip(modules, results):
        outcome = result["localhost"]
        assert outcome.get("failed") is True, (module, outcome)
        invocation = outcome.get("invocation") or {}
        assert "no_such_option" in invocation.get("module_args", {}), (module, outcome.get("msg"), outcome)


def test_a_backup_made_by_the_module_records_no_core_sha256_it_cannot_compute(tmp_path: Path, python: str) -> None:
    """The module's payload holds only some parts, so the sha256 of the whole core (which the runner
    records, and the archive compares to spot an outdated runner) is not known on the host: the
    manifest says null rather than a hash of fewer files under the same name. The module's code is
    the controller's of that run."""
    db = make_database(tmp_path / "app.db")
    taken = run_module("sqlite_backup", {"path": str(db), "name": "app", "backup_dir": str(tmp_path / "backups")},
                       python=python)
    assert taken.get("changed") is True and taken["verified"] is True, taken
    manifest = json.loads(Path(taken["backup"] + ".json").read_text())
    assert manifest["tool"]["name"] == "sqlite-fleet-backup"
    assert manifest["tool"]["core_sha256"] is None
