"""The documented configuration cannot drift from the roles' argument specs and defaults."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import module_docs
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent for p in REPO.glob("roles/*/meta/argument_specs.yml"))


def test_configuration_doc_is_generated_from_the_argument_specs() -> None:
    result = subprocess.run([sys.executable, str(REPO / "tools" / "gen_config_docs.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_specified_with_the_same_value(role: Path) -> None:
    defaults_file = role / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    missing = sorted(set(defaults) - set(options))
    assert not missing, "%s: defaults without an argument spec: %s" % (role.name, missing)
    differing = {name: (value, options[name].get("default")) for name, value in defaults.items()
                 if "default" in options[name] and options[name]["default"] != value}
    assert not differing, "%s: defaults differ from the argument spec: %s" % (role.name, differing)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_specified_default_lives_in_the_role_defaults(role: Path) -> None:
    defaults_file = role / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    own = [name for name, option in options.items() if "default" in option]
    assert sorted(set(own) - set(defaults)) == []


def test_the_readme_module_table_lists_every_module() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("\n## Modules\n", 1)[1].strip().split("\n\n", 1)[0]
    listed = set()
    for row in table.splitlines()[2:]:
        listed.update(re.findall(r"`(sqlite_\w+)`", row.split("|")[1]))
    modules = {path.stem for path in (REPO / "library").glob("*.py")}
    assert listed == modules, "README's module table: missing %s, unknown %s" % (
        sorted(modules - listed), sorted(listed - modules))


def test_every_module_has_its_documentation_file_and_no_other() -> None:
    library = REPO / "library"
    assert sorted(path.stem for path in library.glob("*.y*ml")) == module_docs.module_names()
    assert not list(library.glob("*.yaml"))  # one suffix: ansible-doc would take the first it finds


@pytest.mark.parametrize("module", module_docs.module_names())
def test_module_documentation_is_data_and_the_module_only_code(module: str) -> None:
    """library/<module>.yml holds DOCUMENTATION, EXAMPLES (tasks, as text) and RETURN; the .py none of them."""
    docs = module_docs.load_docs(module)
    assert docs["DOCUMENTATION"]["module"] == module
    assert isinstance(docs["EXAMPLES"], str) and all("name" in task for task in yaml.safe_load(docs["EXAMPLES"]))
    assert isinstance(docs["RETURN"], dict)
    assert module_docs.doc_path(module).read_text().startswith("---\n")
    tree = ast.parse((REPO / "library" / (module + ".py")).read_text())
    assigned = {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
                if isinstance(target, ast.Name)}
    assert not assigned & set(module_docs.KEYS), module
