"""The core as a package, module_utils/sqlite_fleet/: its files, its checksum, its imports.

``core_sha256()`` (recorded in every manifest, compared by the archive to spot an outdated runner)
must change when any file of the package changes; the runner imports the package without Ansible;
every part is small. The layout is made by tools/split_core.py (tests/unit/test_split_core.py).
"""

from __future__ import annotations

import ast
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
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import sqlite_fleet as c; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ansible', 'sqlite_fleet_cli'))); "
             "print(len([m for m in sys.modules if m.startswith('sqlite_fleet.')]))")
    proc = subprocess.run([python, "-I", "-S", "-c", probe, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", str(len(core.PARTS))]


def test_the_parts_import_only_the_standard_library_and_each_other() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in core_files():
        assert path.read_text().count("\n") <= 500, "%s is over 500 lines" % path.name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert all(alias.name.split(".")[0] in stdlib for alias in node.names), (path.name, ast.unparse(node))
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in stdlib | {"__future__"}, (path.name, ast.unparse(node))


def test_the_package_reexports_what_the_faces_use() -> None:
    """Modules, the action plugin, the runner and the CLI import their names from the package itself."""
    names = set()
    repo = MODULE_UTILS.parent
    for path in [*(repo / "library").glob("*.py"), *(repo / "action_plugins").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "ansible.module_utils.sqlite_fleet":
                names.update(alias.name for alias in node.names)
    assert names, "no module imports the core"
    assert names <= set(vars(core)), sorted(names - set(vars(core)))
    assert set(core.__all__) <= set(vars(core))
