#!/usr/bin/env python3
"""Build the Ansible collection sqlitefleet.sqlite_fleet from this repository's own sources.

    tools/build_collection.py [--out var/collection] [--no-tarball]

Assembles ``<out>/ansible_collections/sqlitefleet/sqlite_fleet/`` (the layout ansible-test and
ansible-galaxy expect) and, unless told not to, builds ``<out>/sqlitefleet-sqlite_fleet-<version>.tar.gz``
with ``ansible-galaxy collection build``. Nothing of the collection is kept twice in git: the
build copies and rewrites, the repository stays a playbook repository with short names.

    library/*.py            -> plugins/modules/       (module_utils imports rewritten)
    library/*.yml           -> plugins/modules/       (each module's documentation: doc fragments, EXAMPLES rewritten)
    module_utils/ (files or packages, the whole tree) -> plugins/module_utils/
    action_plugins/*.py     -> plugins/action/        (module_utils imports rewritten)
    doc_fragments/sqlite_fleet_<part>.py -> plugins/doc_fragments/<part>.py
    roles/<COLLECTION_ROLES> -> roles/                (task actions of our modules rewritten to FQCNs)
    pyproject.toml          -> galaxy.yml             ([tool.sqlite-fleet.collection] + [project] version, description)
    collection/README.md    -> README.md
    requirements.txt        -> meta/runtime.yml       (requires_ansible = the ansible-core range)

The rewrites, all mechanical:
- ``ansible.module_utils.<ours>`` -> ``ansible_collections.<ns>.<name>.plugins.module_utils.<ours>``
  (``<ours>``: every file or package in module_utils/);
- in a module's documentation file (tools/module_docs.py), in ``extends_documentation_fragment``,
  ``sqlite_fleet_<part>`` -> ``<ns>.<name>.<part>``;
- in role tasks and in the modules' EXAMPLES, ``<module>:`` as a task's action -> ``<ns>.<name>.<module>:``.
Docs reference other modules by FQCN in the sources already (``M(sqlitefleet.sqlite_fleet.x)``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import module_docs
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
with open(ROOT / "pyproject.toml", "rb") as _handle:
    PYPROJECT = tomllib.load(_handle)
METADATA = PYPROJECT["tool"]["sqlite-fleet"]["collection"]
NAMESPACE, NAME = METADATA["namespace"], METADATA["name"]
FQCN_PREFIX = "%s.%s." % (NAMESPACE, NAME)
FRAGMENT_PREFIX = "sqlite_fleet_"
# The controller and host roles that stand alone. sqlite_runner installs the repository's runner/
# and core from role_path/../..; sqlite_schedule schedules this repository's playbooks through
# bin/sqlite-fleet-run: both belong to the playbook repository, not to a collection.
COLLECTION_ROLES = ("sqlite_backup", "sqlite_archive", "sqlite_sync", "sqlite_drill")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def collection_dir(out: Path) -> Path:
    return out / "ansible_collections" / NAMESPACE / NAME


def project_version() -> str:
    return PYPROJECT["project"]["version"]


def galaxy_yml() -> str:
    """The collection's galaxy.yml: [tool.sqlite-fleet.collection] with the project's version and description."""
    galaxy = dict(METADATA, readme="README.md", version=project_version(),
                  description=PYPROJECT["project"]["description"], dependencies={},
                  build_ignore=["*.tar.gz", "tests/output"])
    return "# Written by tools/build_collection.py from pyproject.toml.\n" + yaml.safe_dump(galaxy, sort_keys=False)


def requires_ansible() -> str:
    """The ansible-core range of requirements.txt, e.g. '>=2.17,<2.20'."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"\s*ansible-core\s*([<>=!~][^#;\s]*)", line)
        if match:
            return match.group(1)
    raise SystemExit("requirements.txt has no ansible-core requirement with a version range")


def module_utils_names() -> list[str]:
    """What module_utils/ holds: a file sqlite_fleet.py or a package sqlite_fleet/ give 'sqlite_fleet'."""
    names = {path.stem for path in (ROOT / "module_utils").glob("*.py")}
    names |= {path.name for path in (ROOT / "module_utils").iterdir() if (path / "__init__.py").is_file()}
    return sorted(names)


def rewrite_imports(text: str, names: list[str] | None = None) -> str:
    """ansible.module_utils.<one of ours>[.<part>] -> the collection's module_utils (files and packages alike)."""
    pattern = r"\bansible\.module_utils\.(%s)\b" % "|".join(map(re.escape, names or module_utils_names()))
    return re.sub(pattern, r"ansible_collections.%s.%s.plugins.module_utils.\1" % (NAMESPACE, NAME), text)


def rewrite_fragments(text: str) -> str:
    """In a module's documentation: '- sqlite_fleet_<part>' under extends_documentation_fragment -> FQCN."""
    item = r"(?m)^([ \t]*-[ \t]*)%s([\w.]+)[ \t]*$" % FRAGMENT_PREFIX

    def fqcn(match: re.Match) -> str:
        return match.group(1) + re.sub(item, r"\g<1>%s\2" % FQCN_PREFIX, match.group(2))

    return re.sub(r"(?m)^([ \t]*extends_documentation_fragment:[ \t]*\n)((?:[ \t]+-[ \t]*\S+[ \t]*\n)+)", fqcn, text)


def rewrite_examples(text: str, actions: set[str]) -> str:
    """In a module's documentation file, its EXAMPLES block only (up to the next top-level key): the tasks' actions."""
    return re.sub(r"(?ms)^(EXAMPLES:[^\n]*\n)(.*?)(?=^\S|\Z)",
                  lambda m: m.group(1) + rewrite_role_tasks(m.group(2), actions), text, count=1)


def rewrite_role_tasks(text: str, actions: set[str]) -> str:
    """'<module>:' as a task's action key (alone on its line, optionally after '- ') -> '<ns>.<name>.<module>:'."""
    pattern = r"(?m)^([ \t]*(?:-[ \t]+)?)(%s)(:[ \t]*(?:#.*)?)$" % "|".join(sorted(map(re.escape, actions)))
    return re.sub(pattern, r"\g<1>%s\2\3" % FQCN_PREFIX, text)


def copy_python(sources: list[Path], dest: Path, rewrite=rewrite_imports, rename=None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for source in sources:
        target = dest / (rename(source.name) if rename else source.name)
        target.write_text(rewrite(source.read_text()))
        shutil.copymode(source, target)


def assemble(out: Path) -> Path:
    coll = collection_dir(out)
    if coll.exists():
        shutil.rmtree(coll)
    coll.mkdir(parents=True)
    plugins = coll / "plugins"

    actions = {path.stem for folder in ("library", "action_plugins") for path in (ROOT / folder).glob("*.py")}
    copy_python(sorted((ROOT / "library").glob("*.py")), plugins / "modules")
    copy_python([module_docs.doc_path(module) for module in module_docs.module_names()], plugins / "modules",
                rewrite=lambda text: rewrite_examples(rewrite_fragments(text), actions))
    shutil.copytree(ROOT / "module_utils", plugins / "module_utils", ignore=SKIP)
    for path in (plugins / "module_utils").rglob("*.py"):
        path.write_text(rewrite_imports(path.read_text()))
    copy_python(sorted((ROOT / "action_plugins").glob("*.py")), plugins / "action")
    copy_python(sorted((ROOT / "doc_fragments").glob(FRAGMENT_PREFIX + "*.py")), plugins / "doc_fragments",
                rename=lambda name: name[len(FRAGMENT_PREFIX):])

    for role in COLLECTION_ROLES:
        shutil.copytree(ROOT / "roles" / role, coll / "roles" / role, ignore=SKIP)
        for folder in ("tasks", "handlers"):
            for path in sorted((coll / "roles" / role / folder).glob("*.yml")):
                path.write_text(rewrite_role_tasks(path.read_text(), actions))

    (coll / "galaxy.yml").write_text(galaxy_yml())
    shutil.copy2(ROOT / METADATA["readme"], coll / "README.md")
    (coll / "meta").mkdir()
    (coll / "meta" / "runtime.yml").write_text(
        "---\n# Written by tools/build_collection.py from requirements.txt's ansible-core range.\n"
        + yaml.safe_dump({"requires_ansible": requires_ansible()}, sort_keys=False))
    return coll


def build_tarball(coll: Path, out: Path) -> Path:
    galaxy = shutil.which("ansible-galaxy", path=str(Path(sys.executable).parent)) or "ansible-galaxy"
    for old in out.glob("%s-%s-*.tar.gz" % (NAMESPACE, NAME)):
        old.unlink()
    subprocess.run([galaxy, "collection", "build", str(coll), "--output-path", str(out), "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    return out / ("%s-%s-%s.tar.gz" % (NAMESPACE, NAME, project_version()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "collection",
                        help="build folder (default: var/collection)")
    parser.add_argument("--no-tarball", action="store_true", help="assemble only, no ansible-galaxy build")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    coll = assemble(out)
    print(coll)
    if not args.no_tarball:
        print(build_tarball(coll, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
