"""Security properties, checked statically over what ships and on real files where that is cheap.

* Backups are private whatever the umask: folders 0700, files 0600 (core snapshot, archive import,
  working copy). The same on the fleet: test_fleet_playbooks.py's first test and
  test_reliability.py check every host folder and archive with ``private_tree_problems``.
* SSH host keys are checked in every shipped configuration and every ssh/rsync invocation (tests
  and benchmarks included); nothing turns checking off.
* No shell command is built from inventory strings: no ``shell``/``raw``/``script`` task, ``command``
  only with an ``argv`` list, cron jobs quote every interpolation, and the runner's cron schedule
  fields (which cannot be quoted) are validated first.
* SQL never interpolates a name that is not quoted: every formatted statement in the core, the
  modules and the runner is either ``%d`` of a number, an identifier through quote_identifier, or one
  of a reviewed list of values that were checked against a closed set first.
* Secrets (the healthchecks URL) are marked ``no_log`` wherever a task handles them and never reach
  the cron line, the runner's output or its log.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sqlite3
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CORE_DIR = REPO / "module_utils"
if str(CORE_DIR) not in sys.path:
    sys.path.insert(0, str(CORE_DIR))

import sqlite_fleet as core  # noqa: E402
from core_parts import core_files, core_trees  # noqa: E402

THIS_FILE = Path(__file__).resolve()
SKIP_DIRS = {".venv", ".git", "__pycache__", "node_modules", ".pytest_cache", ".hypothesis", "var", "demo"}
ANSIBLE_YAML = sorted({*REPO.glob("*.yml"), *REPO.glob("playbooks/**/*.yml"), *REPO.glob("roles/*/tasks/*.yml"),
                       *REPO.glob("roles/*/handlers/*.yml")})
PYTHON_SHIPPED = [*core_files(CORE_DIR), *sorted((REPO / "library").glob("*.py")),
                  REPO / "runner" / "sqlite_backup_runner.py"]


def repo_files(*suffixes: str) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            path = Path(dirpath) / name
            if path.resolve() != THIS_FILE and (not suffixes or name.endswith(suffixes) or name in suffixes):
                yield path


class AnsibleLoader(yaml.SafeLoader):
    """safe_load that keeps Ansible's tagged scalars (!unsafe, !vault) as plain values."""


AnsibleLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node)
                                    if isinstance(node, yaml.ScalarNode) else None)


# The runner role's main.yml only picks present/absent; install.yml holds what it installs.
RUNNER_INSTALL_TASKS = REPO / "roles" / "sqlite_runner" / "tasks" / "install.yml"


def tasks_of(path: Path) -> Iterator[dict[str, Any]]:
    """Every task of a playbook or task file, blocks, rescue and always included."""
    def walk(items: Any) -> Iterator[dict[str, Any]]:
        for item in items or []:
            if not isinstance(item, dict):
                continue
            for section in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
                if isinstance(item.get(section), list):
                    yield from walk(item[section])
            if not any(key in item for key in ("hosts", "import_playbook", "ansible.builtin.import_playbook",
                                                "block")):
                yield item

    yield from walk(yaml.load(path.read_text(), Loader=AnsibleLoader))


# --------------------------------------------------------------------------- private files


@pytest.fixture
def no_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def database_of(path: Path, *statements: str) -> Path:
    """A database file made by ``statements``, committed."""
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


def modes_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


def test_backups_archive_and_working_copies_are_private_whatever_the_umask(tmp_path: Path, no_umask: None) -> None:
    db = database_of(tmp_path / "app.db", "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)")
    os.chmod(db, 0o666)
    taken = core.snapshot(str(db), str(tmp_path / "backups" / "nested"), "app")
    folder = tmp_path / "backups" / "nested"
    assert modes_under(folder) == {".": 0o700, core.LOCK_FILE: 0o600, taken["file"]: 0o600,
                                   taken["file"] + ".sha256": 0o600, taken["file"] + ".json": 0o600}

    archive = tmp_path / "archive" / "pi1" / "app"
    for level in (tmp_path / "archive", archive.parent, archive):
        core.ensure_private_dir(str(level), None)
    incoming = archive / (".sqlite-backup-tmp.incoming." + taken["file"])
    incoming.write_bytes(Path(taken["backup"]).read_bytes())
    os.chmod(incoming, 0o666)
    core.import_backup(str(incoming), taken["manifest"], str(archive), source_host="pi1")
    assert set(modes_under(tmp_path / "archive").values()) == {0o700, 0o600}
    assert {k for k, v in modes_under(tmp_path / "archive").items() if v == 0o700} == {".", "pi1", "pi1/app"}

    installed = core.install_working_copy(str(archive / taken["file"]), str(tmp_path / "work" / "app.db"))
    assert stat.S_IMODE(os.stat(installed["dest"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "work").st_mode) == 0o700


def test_the_roles_create_backup_folders_0700_and_the_runner_config_0600() -> None:
    runner_tasks = {task.get("name"): task
                    for task in tasks_of(RUNNER_INSTALL_TASKS)}
    config = runner_tasks["Write the runner's config from the inventory"]["ansible.builtin.template"]
    assert config["mode"] == "0600"
    folders = runner_tasks["Create the backup, log, metrics and cron folders"]["loop"]
    assert {"path": "{{ sqlite_backup_dir }}", "mode": "0700"} in folders


# --------------------------------------------------------------------------- host keys

# Built from parts, so that this file does not hold what it looks for.
CHECKING_OFF = [re.compile(pattern, re.I) for pattern in (
    "StrictHostKeyChecking" + r"\s*[= ]\s*(no|off|accept-new)\b",
    "UserKnownHostsFile" + r"\s*[= ]\s*/dev/null",
    "host_key_checking" + r"\s*[=:]\s*(false|no|0|off)\b",
    "HOST_KEY_CHECKING" + r"[\"']?\s*[=:,]\s*[\"']?(false|no|0|off)\b",
    r"ansible(\.posix)?\.synchronize|\bsynchronize:",
)]
# ssh or rsync run as a command: an argv starting with it, or a shell line. Not: "ssh -O exit" to a
# local control socket or "ssh -V" (they reach no host), nor a table row labelled "ssh".
SSH_INVOCATION = re.compile(r"""\[\s*(?:["'](?:ssh|rsync)["']|RSYNC)\s*,(?![^\]]*["']-O["'])"""
                            r"""(?!\s*(?:["']-V["']|["']--version["']|m\.get))|^\s*(?:ssh|rsync)\s+-""", re.M)


def test_host_key_checking_is_on_in_ansible_cfg() -> None:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    assert cfg.getboolean("defaults", "host_key_checking") is True
    assert "-o StrictHostKeyChecking=yes" in cfg.get("ssh_connection", "ssh_args")


def test_nothing_shipped_or_tested_turns_host_key_checking_off() -> None:
    offenders = []
    for path in repo_files(".yml", ".yaml", ".cfg", ".ini", ".py", ".sh", ".j2", ".json", "Makefile",
                           "sqlite-fleet-run"):
        text = path.read_text(errors="replace")
        for pattern in CHECKING_OFF:
            for match in pattern.finditer(text):
                offenders.append("%s: %s" % (path.relative_to(REPO), match.group(0)))
    assert offenders == []


def test_every_ssh_or_rsync_invocation_checks_host_keys() -> None:
    invoking = [path for path in repo_files(".py", ".sh", "sqlite-fleet-run")
                if SSH_INVOCATION.search(path.read_text(errors="replace"))]
    assert invoking, "the scan found no ssh invocation at all"
    unchecked = [str(p.relative_to(REPO)) for p in invoking if "StrictHostKeyChecking=yes" not in p.read_text()]
    assert unchecked == []


def test_inventories_do_not_disable_checking_or_ship_keys() -> None:
    for path in (REPO / "inventory").rglob("*.yml"):
        data = json.dumps(yaml.load(path.read_text(), Loader=AnsibleLoader))
        for forbidden in ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_password",
                          "ansible_ssh_pass", "ansible_become_pass", "PRIVATE KEY"):
            assert forbidden not in data, (path, forbidden)


# --------------------------------------------------------------------------- no shell strings

SHELL_MODULES = {"shell", "ansible.builtin.shell", "ansible.legacy.shell", "raw", "ansible.builtin.raw",
                 "script", "ansible.builtin.script", "expect", "ansible.builtin.expect"}
COMMAND_MODULES = {"command", "ansible.builtin.command", "ansible.legacy.command"}
CRON_MODULES = {"cron", "ansible.builtin.cron"}
JINJA = re.compile(r"\{\{(.*?)\}\}", re.S)


def test_ansible_yaml_was_found() -> None:
    assert len(ANSIBLE_YAML) >= 10 and sum(1 for path in ANSIBLE_YAML for _ in tasks_of(path)) >= 40


@pytest.mark.parametrize("path", ANSIBLE_YAML, ids=lambda p: str(p.relative_to(REPO)))
def test_no_task_runs_a_shell_string(path: Path) -> None:
    for task in tasks_of(path):
        used = SHELL_MODULES & set(task)
        assert not used, "%s: task %r uses %s" % (path.name, task.get("name"), used)
        for module in COMMAND_MODULES & set(task):
            args = task[module]  # argv: a list, or one variable holding a list (never run by a shell)
            argv = args.get("argv") if isinstance(args, dict) else None
            assert isinstance(argv, list) or (isinstance(argv, str) and re.fullmatch(r"\{\{\s*\w+\s*\}\}", argv)), (
                "%s: task %r must pass an argv list, not a command string" % (path.name, task.get("name")))
            assert not {"cmd", "_raw_params"} & set(args), (path.name, task.get("name"))
        for module in CRON_MODULES & set(task):
            for expression in JINJA.findall(str(task[module].get("job", ""))):
                assert re.search(r"\|\s*quote\b|map\('quote'\)", expression), (
                    "%s: cron job interpolates %r unquoted" % (path.name, expression))
        text = json.dumps(task)
        for lookup in re.findall(r"lookup\(\s*'(?:ansible\.builtin\.)?pipe'\s*,([^)]*)\)", text):
            assert "{" not in lookup and "~" not in lookup, "%s: pipe lookup of a templated command" % path.name


def test_the_runner_cron_line_quotes_or_validates_every_interpolation() -> None:
    template = (REPO / "roles" / "sqlite_runner" / "templates" / "cron.j2").read_text()
    validated = {"sqlite_runner_cron_minute", "sqlite_runner_cron_hour", "sqlite_runner_cron_weekday",
                 "sqlite_runner_cron_user"}
    for line in template.splitlines():
        if line.startswith(("#", "{%", "SHELL=", "PATH=")) or not line.strip():
            continue
        for expression in JINJA.findall(line):
            expression = expression.strip()
            if expression in validated or re.fullmatch(r"'[^']*' if [a-z_]+ \| bool else ''", expression):
                continue
            assert re.search(r"\|\s*quote\s*$", expression), "cron.j2 interpolates %r unquoted" % expression
    checks = next(task for task in tasks_of(RUNNER_INSTALL_TASKS)
                  if task.get("name") == "Check the cron schedule and user")["ansible.builtin.assert"]["that"]
    for variable in validated:
        assert any(check.startswith(variable + " | string is match('^[") for check in checks), variable
    runner_tasks = list(tasks_of(RUNNER_INSTALL_TASKS))
    names = [task.get("name") for task in runner_tasks]
    assert names.index("Check the cron schedule and user") < names.index("Install the cron entries (one per database)")


# --------------------------------------------------------------------------- SQL identifiers

# Reviewed interpolations into SQL: (function, value) -> why it cannot carry SQL.
REVIEWED_SQL_VALUES = {
    ("pragma_value", "name"): "callers pass string constants (checked below)",
    ("run_integrity_check", "pragma"): "'quick_check' or 'integrity_check', chosen by the code",
    ("checkpoint", "mode"): "upper-cased and checked against CHECKPOINT_MODES before use",
}
# Statements held in a variable: (function, variable) -> how it was built.
REVIEWED_SQL_VARIABLES = {
    ("table_row_counts", "query"): "built with quote_identifier (checked below)",
    ("run_probe", "sql"): "the operator's probe: one SELECT/WITH statement, run with query_only=1",
}


def sql_sites() -> Iterator[tuple[Path, str, ast.Call, ast.expr]]:
    for path in PYTHON_SHIPPED:
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr in ("execute", "executemany", "executescript") and node.args:
                    yield path, function.name, node, node.args[0]


def formatted_values(sql: ast.expr) -> list[tuple[str, ast.expr]] | None:
    """(conversion, value) of each interpolation in a %-formatted or f-string statement; None otherwise."""
    if isinstance(sql, ast.BinOp) and isinstance(sql.op, ast.Mod) and isinstance(sql.left, ast.Constant):
        conversions = re.findall(r"%[-#0 +]*\d*(?:\.\d+)?([a-zA-Z%])", sql.left.value)
        conversions = [c for c in conversions if c != "%"]
        values = sql.right.elts if isinstance(sql.right, ast.Tuple) else [sql.right]
        assert len(conversions) == len(values), ast.dump(sql)
        return list(zip(conversions, values))
    if isinstance(sql, ast.JoinedStr):
        return [("s", part.value) for part in sql.values if isinstance(part, ast.FormattedValue)]
    return None


def is_call_to(node: ast.expr, *names: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names


def test_every_formatted_sql_statement_quotes_identifiers_or_interpolates_numbers() -> None:
    seen, problems = 0, []
    for path, function, call, sql in sql_sites():
        if isinstance(sql, ast.Constant):
            continue
        seen += 1
        where = "%s:%d %s()" % (path.name, call.lineno, function)
        values = formatted_values(sql)
        if values is None:
            if not (isinstance(sql, ast.Name) and (function, sql.id) in REVIEWED_SQL_VARIABLES):
                problems.append("%s: unreviewed SQL %s" % (where, ast.unparse(sql)))
            continue
        for conversion, value in values:
            if conversion in "di" or is_call_to(value, "quote_identifier"):
                continue
            if isinstance(value, ast.Name) and (function, value.id) in REVIEWED_SQL_VALUES:
                continue
            problems.append("%s: %%%s of %s is neither a number nor a quoted identifier" % (
                where, conversion, ast.unparse(value)))
    assert seen >= 8, "the scan found too few formatted statements: %d" % seen
    assert problems == []


def test_the_reviewed_sql_values_are_what_the_review_says() -> None:
    functions = {node.name: node for tree in core_trees(CORE_DIR) for node in ast.walk(tree)
                 if isinstance(node, ast.FunctionDef)}
    # pragma_value: only ever called with a constant, lower-case pragma name
    for path in PYTHON_SHIPPED:
        for node in ast.walk(ast.parse(path.read_text())):
            if is_call_to(node, "pragma_value"):
                name = node.args[1]
                assert isinstance(name, ast.Constant) and re.fullmatch(r"[a-z_]+", name.value), (
                    path.name, node.lineno, ast.unparse(node))
    # table_row_counts: its query is assembled with quote_identifier
    query = [node for node in ast.walk(functions["table_row_counts"]) if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == "query" for t in node.targets)]
    assert query and all(any(is_call_to(n, "quote_identifier") for n in ast.walk(q.value)) for q in query)
    # checkpoint: the mode is checked against the closed set before it reaches SQL
    source = ast.unparse(functions["checkpoint"])
    assert source.index("if mode not in CHECKPOINT_MODES") < source.index("wal_checkpoint(%s)")
    for function, _ in (*REVIEWED_SQL_VALUES, *REVIEWED_SQL_VARIABLES):
        assert function in functions, function


def test_hostile_table_names_are_counted_not_executed(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    hostile = ['x"; DROP TABLE members; --', "it's", 'a""b', "select", "[brackets]"]
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE members (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO members DEFAULT VALUES")
    for name in hostile:
        conn.execute("CREATE TABLE %s (v)" % core.quote_identifier(name))  # noqa: S608 - the quoting under test
        conn.execute("INSERT INTO %s VALUES (1), (2)" % core.quote_identifier(name))  # noqa: S608
    conn.commit()
    conn.close()
    taken = core.snapshot(str(db), str(tmp_path / "backups"), "app", integrity="full")
    assert taken["verified"] and taken["manifest"]["tables"] == {"members": 1, **{name: 2 for name in hostile}}
    assert core.verify_backup(taken["backup"])["ok"]
    assert core.database_facts(str(db))["tables"]["members"] == 1


def test_a_checkpoint_mode_cannot_carry_sql(tmp_path: Path) -> None:
    db = database_of(tmp_path / "app.db", "PRAGMA journal_mode=WAL", "CREATE TABLE t (x)")
    with pytest.raises(core.BackupError) as info:
        core.checkpoint(str(db), "PASSIVE); DROP TABLE t; --")
    assert info.value.kind == core.KIND_BAD_INPUT


# --------------------------------------------------------------------------- secrets

SECRET = re.compile(r"healthchecks_url|password|passphrase|token|secret|private_key", re.I)


def test_tasks_that_handle_a_secret_are_no_log() -> None:
    handling = 0
    for path in ANSIBLE_YAML:
        for task in tasks_of(path):
            body = {k: v for k, v in task.items() if k not in ("name", "no_log")}
            if SECRET.search(json.dumps(body)):
                handling += 1
                assert "no_log" in task, "%s: task %r handles a secret without no_log" % (path.name, task.get("name"))
    templates = {path.name: path.read_text() for path in REPO.glob("roles/*/templates/*.j2")}
    for name, text in templates.items():
        if SECRET.search(text):  # a template with a secret: the task rendering it is no_log
            rendering = [task for path in ANSIBLE_YAML for task in tasks_of(path)
                         if name in json.dumps(task.get("ansible.builtin.template", {}))]
            assert rendering and all("no_log" in task for task in rendering), name
            handling += 1
    assert handling >= 1
    assert not SECRET.search(templates["cron.j2"]), "the cron line must not carry the secret"


def test_the_runner_uses_the_healthchecks_url_only_to_ping() -> None:
    tree = ast.parse((REPO / "runner" / "sqlite_backup_runner.py").read_text())
    users = {function.name for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
             for node in ast.walk(function) if isinstance(node, ast.Constant) and node.value == "healthchecks_url"}
    assert users == {"ping"}
    ping = next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "ping")
    called = {ast.unparse(node.func) for node in ast.walk(ping) if isinstance(node, ast.Call)}
    assert not {"print", "log_line", "sys.stderr.write"} & called
