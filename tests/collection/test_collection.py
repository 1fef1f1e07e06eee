"""The collection sqlitefleet.sqlite_fleet, built from the repository by tools/build_collection.py.

Built into a temporary folder, installed with ``ansible-galaxy collection install`` (offline: it has no
dependencies) and used the way other people's playbooks use it: by FQCN, with a configuration that
knows nothing of this repository (no library, module_utils or doc_fragments path). The playbook runs a
whole pull on a real SQLite file on localhost, so modules, module_utils, the action plugin (which
imports the core on the controller), the doc fragments and a role all come from the collection.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
FQCN = "sqlitefleet.sqlite_fleet"
PYTHON39 = "/root/.pyenv/versions/3.9.18/bin/python3"  # the hosts' Python, as in tests/modules
HOST_PYTHON = PYTHON39 if os.path.exists(PYTHON39) else "/usr/bin/python3"
FRAGMENTS = sorted(path.stem.removeprefix("sqlite_fleet_") for path in (REPO / "doc_fragments").glob("*.py"))

sys.path.insert(0, str(REPO / "tools"))
import build_collection  # noqa: E402
import module_docs  # noqa: E402

MODULES = module_docs.module_names()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(command: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def strip_colour(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("build")
    proc = subprocess.run([str(BIN / "python"), str(REPO / "tools" / "build_collection.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (tarball,) = out.glob("sqlitefleet-sqlite_fleet-*.tar.gz")
    return {"tree": build_collection.collection_dir(out), "tarball": tarball}


@pytest.fixture(scope="module")
def user_env(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Another project's controller: the collection installed with ansible-galaxy, nothing else configured."""
    home = tmp_path_factory.mktemp("user")
    (home / "ansible.cfg").write_text("[defaults]\ncollections_path = %s\nretry_files_enabled = False\n"
                                      "interpreter_python = %s\n" % (home / "collections", HOST_PYTHON))
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(home / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_HOME=str(home / ".ansible"),
               ANSIBLE_LOCAL_TEMP=str(home / "tmp"), PYTHONDONTWRITEBYTECODE="1")
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(home / "collections"),
         str(built["tarball"])], env, home)
    env["USER_HOME"] = str(home)
    return env


def test_the_tarball_holds_the_plugins_roles_and_metadata(built: dict[str, Path]) -> None:
    with tarfile.open(built["tarball"]) as tar:
        names = set(tar.getnames())
    for module in MODULES:
        assert {"plugins/modules/%s.py" % module, "plugins/modules/%s.yml" % module} <= names, module
    assert "plugins/action/sqlite_fetch.py" in names
    assert {"plugins/module_utils/sqlite_fleet.py", "plugins/module_utils/sqlite_fleet/__init__.py"} & names
    for fragment in FRAGMENTS:
        assert "plugins/doc_fragments/%s.py" % fragment in names, fragment
    for role in build_collection.COLLECTION_ROLES:
        assert "roles/%s/tasks/main.yml" % role in names, role
    assert {"MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml"} <= names  # galaxy.yml: in MANIFEST
    assert not [name for name in names if "__pycache__" in name or name.startswith(".git")]


def test_the_metadata_comes_from_pyproject_and_requirements(built: dict[str, Path]) -> None:
    tree = built["tree"]
    galaxy = yaml.safe_load((tree / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == tuple(FQCN.split("."))
    assert galaxy["version"] == build_collection.project_version()
    assert built["tarball"].name == "sqlitefleet-sqlite_fleet-%s.tar.gz" % galaxy["version"]
    assert galaxy["license"] == ["GPL-3.0-or-later"] and galaxy["readme"] == "README.md"
    runtime = yaml.safe_load((tree / "meta" / "runtime.yml").read_text())
    wanted = next(Requirement(line) for line in (REPO / "requirements.txt").read_text().splitlines()
                  if line.startswith("ansible-core"))
    assert SpecifierSet(runtime["requires_ansible"]) == wanted.specifier
    import ansible.release

    assert Version(ansible.release.__version__) in wanted.specifier  # the controller we test with fits


def test_the_build_rewrites_imports_fragments_and_actions_to_fqcns(built: dict[str, Path]) -> None:
    tree = built["tree"]
    for path in (tree / "plugins").rglob("*.py"):
        assert not re.search(r"ansible\.module_utils\.sqlite_fleet", path.read_text()), path
    for module in MODULES:
        text = (tree / "plugins" / "modules" / ("%s.py" % module)).read_text()
        if "ansible.module_utils.sqlite_fleet" in (REPO / "library" / ("%s.py" % module)).read_text():
            assert "ansible_collections.%s.plugins.module_utils.sqlite_fleet" % FQCN in text, module
        docs = module_docs.load_docs(module, tree / "plugins" / "modules")
        fragments = docs["DOCUMENTATION"].get("extends_documentation_fragment", [])
        assert fragments and all(name.startswith(FQCN + ".") for name in fragments), (module, fragments)
        assert docs["RETURN"] == module_docs.load_docs(module)["RETURN"], module  # the rest as in the repository
        for task in yaml.safe_load(docs["EXAMPLES"]):
            ours = [key for key in task if key.split(".")[-1] in MODULES]
            assert all(key.startswith(FQCN + ".") for key in ours), (module, ours)
    actions = 0
    for path in sorted((tree / "roles").glob("*/tasks/*.yml")):
        for task in walk_tasks(yaml.safe_load(path.read_text()) or []):
            for key in task:
                if key.split(".")[-1] in MODULES:
                    assert key == "%s.%s" % (FQCN, key.split(".")[-1]), (path, key)
                    actions += 1
    assert actions >= 8  # the roles' backup, verify, listing, prepare, fetch, import, working copy, drill


def walk_tasks(tasks: list) -> list[dict]:
    found = []
    for task in tasks:
        found.append(task)
        for key in ("block", "rescue", "always"):
            found.extend(walk_tasks(task.get(key) or []))
    return found


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE members (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO members (name) VALUES (?)", [("member %d" % i,) for i in range(300)])
    conn.close()
    return db


def test_another_playbook_runs_a_whole_pull_and_a_role_by_fqcn(user_env: dict[str, str], app_db: Path,
                                                               tmp_path: Path) -> None:
    backups, archive, results = tmp_path / "backups", tmp_path / "archive", tmp_path / "results.json"
    common = {"archive_dir": str(archive), "host": "local"}
    tasks = [
        {"name": "What the archive holds", f"{FQCN}.sqlite_archive_info": dict(common, name="app"),
         "register": "listed"},
        {"name": "Back up, prune and stage what the archive lacks", f"{FQCN}.sqlite_backup": {
            "path": str(app_db), "name": "app", "backup_dir": str(backups), "source_host": "local",
            "retention": {"keep_last": 3}, "export": {"have": "{{ listed.have }}"}}, "register": "taken"},
        {"name": "Check the offer", f"{FQCN}.sqlite_archive": dict(
            common, state="prepare", transfers="{{ taken.transfers }}", databases=["app"]), "register": "prepared"},
        {"name": "Fetch (the action plugin)", f"{FQCN}.sqlite_fetch": {
            "transfers": "{{ prepared.transfers }}", "dest": str(archive / "local"), "backup_dir": str(backups),
            "staging_dirs": ["{{ taken.staging_dir }}"]}, "register": "fetched"},
        {"name": "Import and prune", f"{FQCN}.sqlite_archive": dict(
            common, state="import", transfers="{{ prepared.transfers }}", databases=["app"],
            retention={"keep_last": 2}), "register": "imported"},
        {"name": "Facts", f"{FQCN}.sqlite_info": {"path": str(app_db), "backup_dir": str(backups), "name": "app"},
         "register": "info"},
        {"name": "What the archive holds now", f"{FQCN}.sqlite_archive_info": dict(common, name="app"),
         "register": "relisted"},
        {"name": "Keep the results", "ansible.builtin.copy": {
            "dest": str(results), "mode": "0600",
            "content": "{{ {'taken': taken, 'fetched': fetched, 'imported': imported, 'info': info,"
                       " 'listed': listed, 'relisted': relisted} | to_json }}"}},
    ]
    plays = [
        {"name": "A pull, module by module", "hosts": "localhost", "connection": "local", "gather_facts": False,
         "tasks": tasks},
        {"name": "The backup role of the collection", "hosts": "localhost", "connection": "local",
         "gather_facts": False, "roles": [{"role": f"{FQCN}.sqlite_backup", "sqlite_backup_dir": str(backups),
                                           "sqlite_backup_databases": [{"name": "app", "path": str(app_db)}]}]},
    ]
    playbook = tmp_path / "site.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)], user_env, Path(user_env["USER_HOME"]))

    got = json.loads(results.read_text())
    taken = got["taken"]
    assert got["listed"]["have"] == [] and taken["verified"] is True
    assert taken["sha256"] == sha256_of(Path(taken["backup"]))
    assert [t["file"] for t in taken["transfers"]] == [taken["file"]]
    assert got["fetched"]["bytes"] == taken["size_bytes"]
    assert [entry["file"] for entry in got["imported"]["imported"]] == [taken["file"]]
    (have,) = got["relisted"]["have"]
    assert (have["file"], have["sha256"], have["verified"]) == (taken["file"], taken["sha256"], True)
    archived = archive / "local" / "app" / taken["file"]
    assert sha256_of(archived) == taken["sha256"]
    assert got["info"]["database"]["tables"]["members"] == 300 and got["info"]["backups"]["count"] == 1
    assert not list((backups).glob(".sqlite-export.*"))  # the fetch removed the staging folder
    assert len(list(backups.glob("app_backup_*.db"))) == 2  # and the role took a second backup


def test_ansible_doc_renders_every_module_by_fqcn_with_the_repositorys_options(user_env: dict[str, str]) -> None:
    names = ["%s.%s" % (FQCN, module) for module in MODULES]
    proc = run([str(BIN / "ansible-doc"), *names], user_env, Path(user_env["USER_HOME"]))
    assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
    text = strip_colour(proc.stdout)
    for name in names:
        assert "> MODULE %s" % name in text, name
    in_collection = json.loads(run([str(BIN / "ansible-doc"), "--json", *names], user_env,
                                   Path(user_env["USER_HOME"])).stdout)
    in_repository = repository_docs(MODULES)
    for module in MODULES:
        assert in_collection["%s.%s" % (FQCN, module)]["doc"]["options"] == in_repository[module]["doc"]["options"]


def repository_docs(modules: list[str]) -> dict:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = run([str(BIN / "ansible-doc"), "--json", "-M", "library", *modules], env, REPO)
    assert "WARNING" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_ansible_doc_renders_every_module_in_the_repository_with_its_fragments() -> None:
    docs = repository_docs(MODULES)
    assert sorted(docs) == MODULES
    for module, entry in docs.items():
        doc = entry["doc"]
        assert doc["author"] == ["Sqlite Fleet Backup authors (@sqlite-fleet-backup)"], module
        assert doc["attributes"]["check_mode"]["support"] == "full", module
        assert all(item["module"].startswith(FQCN + ".") for item in doc.get("seealso", []) if "module" in item)
    assert set(docs["sqlite_backup"]["doc"]["options"]["retention"]["suboptions"]) == \
        set(docs["sqlite_retention"]["doc"]["options"]) - {"backup_dir", "name", "lock_timeout", "now"}
    assert set(docs["sqlite_backup"]["doc"]["options"]["export"]["suboptions"]) <= \
        set(docs["sqlite_export"]["doc"]["options"])
    assert "list" not in docs["sqlite_archive"]["doc"]["options"]["state"]["choices"]


# --------------------------------------------------------------------------- the rewrites, on their own


def test_imports_of_the_core_are_rewritten_as_a_file_or_as_a_package() -> None:
    text = ("from ansible.module_utils.basic import AnsibleModule\n"
            "from ansible.module_utils.sqlite_fleet import BackupError\n"
            "from ansible.module_utils.sqlite_fleet.snapshot import snapshot\n"
            "import ansible.module_utils.sqlite_fleet_extra\n")
    rewritten = build_collection.rewrite_imports(text, ["sqlite_fleet"])
    ours = "ansible_collections.sqlitefleet.sqlite_fleet.plugins.module_utils.sqlite_fleet"
    assert rewritten.splitlines() == [
        "from ansible.module_utils.basic import AnsibleModule",
        "from %s import BackupError" % ours,
        "from %s.snapshot import snapshot" % ours,
        "import ansible.module_utils.sqlite_fleet_extra",  # not ours: untouched
    ]
    assert build_collection.module_utils_names() == ["sqlite_fleet", "sqlite_offsite"]  # the repository's


def test_fragments_and_task_actions_are_rewritten_and_nothing_else() -> None:
    doc = ("options:\n  retention:\n    description: x\nextends_documentation_fragment:\n"
           "  - sqlite_fleet_attributes\n  - sqlite_fleet_retention.rules\n  - ansible.builtin.files\nseealso: []\n")
    assert build_collection.rewrite_fragments(doc).splitlines()[4:7] == [
        "  - sqlitefleet.sqlite_fleet.attributes", "  - sqlitefleet.sqlite_fleet.retention.rules",
        "  - ansible.builtin.files"]
    tasks = ("- name: Back up\n  sqlite_backup:\n    backup_dir: /b\n  vars:\n    sqlite_backup_dir: /b\n"
             "- block:\n    - sqlite_verify:   # check\n        path: /b/x.db\n- ansible.builtin.debug:\n"
             "    msg: sqlite_backup\n")
    rewritten = build_collection.rewrite_role_tasks(tasks, {"sqlite_backup", "sqlite_verify"})
    assert yaml.safe_load(rewritten)[0]["sqlitefleet.sqlite_fleet.sqlite_backup"] == {"backup_dir": "/b"}
    assert yaml.safe_load(rewritten)[0]["vars"] == {"sqlite_backup_dir": "/b"}
    assert "sqlitefleet.sqlite_fleet.sqlite_verify" in yaml.safe_load(rewritten)[1]["block"][0]
    assert yaml.safe_load(rewritten)[2] == {"ansible.builtin.debug": {"msg": "sqlite_backup"}}
