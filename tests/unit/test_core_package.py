"""The core as a package, module_utils/sqlite_fleet/: its files, its checksum, its imports.

``core_sha256()`` (recorded in every manifest, compared by the archive to spot an outdated runner)
must change when any file of the package changes; the runner imports the package without Ansible;
every part is small. The layout is made by tools/split_core.py (tests/unit/test_split_core.py).
"""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_fleet as core
from core_parts import MODULE_UTILS, core_files, core_sha256_of

PACKAGE = MODULE_UTILS / "sqlite_fleet"
HOST_PYTHONS = [p for p in ("/usr/bin/python3", "/root/.pyenv/versions/3.9.18/bin/python3") if Path(p).exists()]
SHA_PROBE = "import sys; sys.path.insert(0, sys.argv[1]); import sqlite_fleet as c; print(c.core_sha256())"

pytestmark = pytest.mark.skipif(not PACKAGE.is_dir(), reason="the core is still one file")


def test_core_sha256_covers_every_file_of_the_package() -> None:
    on_disk = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert sorted(["__init__.py", *("%s.py" % part for part in core.PARTS)]) == on_disk
    assert sorted(Path(path).name for path in core.core_files()) == on_disk
    assert core.core_sha256() == core_sha256_of(core_files())
    listing = subprocess.run("LC_ALL=C sha256sum *.py | sha256sum", shell=True, cwd=PACKAGE,  # noqa: S602
                             capture_output=True, text=True, check=True).stdout.split()[0]
    assert core.core_sha256() == listing  # what the docstring promises an operator can check by hand


def test_a_change_to_any_file_of_the_package_changes_core_sha256(tmp_path: Path) -> None:
    def sha_of(folder: Path) -> str:
        return subprocess.run([sys.executable, "-c", SHA_PROBE, str(folder)], capture_output=True, text=True,
                              check=True).stdout.strip()

    base = tmp_path / "base"
    shutil.copytree(PACKAGE, base / "sqlite_fleet", ignore=shutil.ignore_patterns("__pycache__"))
    original = sha_of(base)
    assert original == core.core_sha256()
    seen = {original}
    for name in sorted(path.name for path in PACKAGE.glob("*.py")):
        changed = tmp_path / name
        shutil.copytree(base, changed)
        with open(changed / "sqlite_fleet" / name, "a") as handle:
            handle.write("# one more line\n")
        sha = sha_of(changed)
        assert sha not in seen, name
        seen.add(sha)


@pytest.mark.parametrize("python", HOST_PYTHONS)
def test_the_runner_imports_the_package_without_ansible(tmp_path: Path, python: str) -> None:
    """As on a host: the package beside the runner, Python isolated from site-packages (no Ansible)."""
    shutil.copytree(PACKAGE, tmp_path / "sqlite_fleet", ignore=shutil.ignore_patterns("__pycache__"))
    probe = ("import importlib, sys; sys.path.insert(0, sys.argv[1]); import sqlite_fleet as c; "
             "print(len([m for m in sys.modules if m.startswith('sqlite_fleet.')])); "
             "[importlib.import_module('sqlite_fleet.' + part) for part in c.PARTS]; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ansible', 'sqlite_fleet_cli'))); "
             "print(len([m for m in sys.modules if m.startswith('sqlite_fleet.')]))")
    proc = subprocess.run([python, "-I", "-S", "-c", probe, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    # the package itself loads no part (the map); every part loads without Ansible
    assert proc.stdout.split("\n")[:3] == ["0", "[]", str(len(core.PARTS))]


def test_the_parts_import_only_the_standard_library_and_each_other() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in core_files():
        assert path.read_text().count("\n") <= 500, "%s is over 500 lines" % path.name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert all(alias.name.split(".")[0] in stdlib for alias in node.names), (path.name, ast.unparse(node))
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in stdlib | {"__future__"}, (path.name, ast.unparse(node))


def test_the_faces_import_each_name_from_the_part_that_holds_it() -> None:
    """Modules, action plugins and the runner import from the parts (so that a module's payload holds
    only what it uses); each name from the part that defines it, not one that imported it."""
    repo = MODULE_UTILS.parent
    faces = [*(repo / "library").glob("*.py"), *(repo / "action_plugins").glob("*.py"),
             repo / "runner" / "sqlite_backup_runner.py"]
    seen = 0
    for path in faces:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            module = node.module.replace("ansible.module_utils.", "", 1)
            if module.split(".")[0] != "sqlite_fleet":
                continue
            assert module != "sqlite_fleet", "%s: %s (import from a part)" % (path.name, ast.unparse(node))
            part = importlib.import_module(module)
            for alias in node.names:
                assert alias.name in vars(part), (path.name, module, alias.name)
                defined_in = getattr(vars(part)[alias.name], "__module__", module)
                assert defined_in in (module, "builtins") or not defined_in.startswith("sqlite_fleet"), \
                    (path.name, alias.name, module, defined_in)
                seen += 1
    assert seen > 50


def test_the_package_finds_any_name_of_its_parts_for_the_controller() -> None:
    """The CLI and scripts on the controller ask the package itself (``core.human_bytes``)."""
    import sqlite_fleet.present
    import sqlite_fleet.snapshots

    assert core.human_bytes is sqlite_fleet.present.human_bytes
    assert core.snapshot is sqlite_fleet.snapshots.snapshot
    assert core.PARTS[0] == "errors"
    with pytest.raises(AttributeError, match="no_such_name"):
        core.no_such_name  # noqa: B018
