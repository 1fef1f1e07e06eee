"""The core as the tests see it, whether it is one file or the package module_utils/sqlite_fleet/.

Import it as ``core_parts`` (tests/conftest.py puts tests/ on sys.path). Stdlib only, no pytest.

- ``whole_core(module)``: makes ``core.X`` reach every name of every part (the package binds none:
  its ``__init__.py`` is the map, and its own ``__getattr__`` finds a name in its part) and makes
  ``core.X = value`` (``monkeypatch.setattr(core, ...)``) rebind X in every part that holds that
  same object, as it did in the single file. tests/conftest.py applies it to ``sqlite_fleet``.
- ``core_files(module_utils)``: the core's source files; ``core_sha256_of(files)``: what
  ``core_sha256()`` records for them (``LC_ALL=C sha256sum *.py | sha256sum`` in the package).
- ``install_core(folder)``: the core laid into a runner folder as roles/sqlite_runner installs it.
- ``core_trees(module_utils)``: the parsed source of every core file (for scans of the code).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import shutil
import sys
import types
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_UTILS = REPO / "module_utils"
PACKAGE = "sqlite_fleet"
_MISSING = object()


class _WholeCore(types.ModuleType):
    """A package whose attribute access and assignment reach into its loaded parts."""

    def _parts(self) -> list[types.ModuleType]:
        prefix = self.__name__ + "."
        return [module for name, module in list(sys.modules.items()) if name.startswith(prefix) and module]

    def __getattr__(self, name: str):  # only for names the package itself does not bind
        for part in self._parts():
            if name in vars(part):
                return vars(part)[name]
        raise AttributeError("module %r (or any of its parts) has no attribute %r" % (self.__name__, name))

    def __setattr__(self, name: str, value: object) -> None:
        current = getattr(self, name, _MISSING)
        if name not in vars(self) and current is not _MISSING:
            # a part's name the package does not bind: remember it, so that deleting the patch (what
            # monkeypatch does for names absent from the package's __dict__) puts the part's value back
            vars(self).setdefault("_part_values", {})[name] = current
        self._rebind_parts(name, current, value)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        current = vars(self).get(name)
        part_values = vars(self).get("_part_values", {})
        if name in part_values:
            self._rebind_parts(name, current, part_values.pop(name))
        super().__delattr__(name)

    def _rebind_parts(self, name: str, current: object, value: object) -> None:
        """Every part that binds ``name`` to the object the package sees now gets ``value``."""
        for part in self._parts():
            if current is not _MISSING and vars(part).get(name, _MISSING) is current:
                setattr(part, name, value)


def whole_core(module: types.ModuleType) -> types.ModuleType:
    """The core module made whole for tests (a single-file core is left as it is)."""
    if hasattr(module, "__path__") and not isinstance(module, _WholeCore):
        # every part loaded now: the package imports none, and a part loaded after a patch would
        # bind the patched object (and keep it after the patch is undone)
        for part in getattr(module, "PARTS", ()):
            importlib.import_module("%s.%s" % (module.__name__, part))
        module.__class__ = _WholeCore
    return module


def core_files(module_utils: Path = MODULE_UTILS) -> list[Path]:
    """The core's source files under ``module_utils``, sorted by name."""
    package = module_utils / PACKAGE
    if package.is_dir():
        return sorted(package.glob("*.py"), key=lambda path: path.name)
    return [module_utils / (PACKAGE + ".py")]


def core_sha256_of(files: Iterable[Path]) -> str:
    """sha256 of the ``sha256sum`` lines of ``files`` sorted by name (what core_sha256() records)."""
    lines = "".join("%s  %s\n" % (hashlib.sha256(path.read_bytes()).hexdigest(), path.name)
                    for path in sorted(files, key=lambda path: path.name))
    return hashlib.sha256(lines.encode()).hexdigest()


def install_core(folder: Path, module_utils: Path = MODULE_UTILS) -> None:
    """Copy the core into ``folder`` as roles/sqlite_runner installs it beside the runner."""
    package = module_utils / PACKAGE
    if package.is_dir():
        (folder / PACKAGE).mkdir(exist_ok=True)
        for path in core_files(module_utils):
            shutil.copy2(path, folder / PACKAGE / path.name)
    else:
        shutil.copy2(module_utils / (PACKAGE + ".py"), folder / (PACKAGE + ".py"))


def core_trees(module_utils: Path = MODULE_UTILS) -> list[ast.Module]:
    return [ast.parse(path.read_text(), str(path)) for path in core_files(module_utils)]
