"""Run the modules through Ansible itself, on this machine, against real SQLite files.

Every call goes through ``ansible`` / ``ansible-playbook`` with the repository's ``ansible.cfg``,
the local connection and the JSON stdout callback, so the modules are found, packaged with
their module_utils and run by the interpreter under test exactly as on a host.

Used by tests/modules (whose conftest.py adds the ``python`` fixture), tests/unit/test_bad_inputs.py
and tests/integration (import it as ``module_test_helpers``: tests/conftest.py puts tests/ on sys.path).
No pytest import here.

- ``run_module``, ``run_many``, ``run_tasks``, ``run_cases``: ad hoc and playbook runs, results as ``Run``
- ``ansible_env``, ``documented_options`` (ansible-doc's view of a module)
- ``BIN``, ``REPO``, ``SYSTEM_PYTHON``, ``PYTHON39``, ``MODULES``, ``core`` (the core)
- ``run_cases_in_copies``: bad-input tables, each case in its own copy of a folder; ``fill`` (placeholders)
- ``assert_no_traceback``, ``assert_refused_unchanged``: what a clean refusal looks like
- ``make_database``, ``corrupt_table_pages``, ``tree_state``, ``interpreter_sqlite_version``
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlite_fleet as core  # noqa: F401  (re-exported for the tests; stdlib only)

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
SYSTEM_PYTHON = "/usr/bin/python3"
PYTHON39 = "/root/.pyenv/versions/3.9.18/bin/python3"
MODULES = ("sqlite_backup", "sqlite_verify", "sqlite_retention", "sqlite_info", "sqlite_checkpoint")


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_PIPELINING="1",  # as ansible.cfg does for ssh: no module file written per task
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def documented_options(module: str) -> dict[str, Any]:
    """A module's options as ansible-doc reads them, doc fragments merged in (ansible.cfg's doc_fragments)."""
    proc = subprocess.run([str(BIN / "ansible-doc"), "--json", "-M", "library", module], cwd=REPO, env=ansible_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[module]["doc"]["options"]


class Run(dict):
    """A task's result as Ansible reported it, plus the raw output of the whole run in ``.output``."""

    output: str = ""
    rc: int = 0


def _parse(proc: subprocess.CompletedProcess, what: str) -> dict[str, Any]:
    try:
        start = proc.stdout.index("{")
        return json.loads(proc.stdout[start:])
    except ValueError:
        raise AssertionError("%s printed no JSON (rc=%d)\nstdout:\n%s\nstderr:\n%s"
                             % (what, proc.returncode, proc.stdout, proc.stderr)) from None


def run_module(name: str, args: dict[str, Any], check: bool = False, diff: bool = False,
               python: str = SYSTEM_PYTHON) -> Run:
    """Run one module ad hoc on localhost (local connection) and return its result."""
    command = [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
               "-e", "ansible_python_interpreter=%s" % python, "-m", name, "-a", json.dumps(args)]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    proc = subprocess.run(command, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=120)
    report = _parse(proc, "ansible -m %s" % name)
    result = Run(report["plays"][0]["tasks"][0]["hosts"]["localhost"])
    result.output = proc.stdout + proc.stderr
    result.rc = proc.returncode
    return result


def run_tasks(tasks: list[dict[str, Any]], python: str = SYSTEM_PYTHON,
              hosts: tuple[str, ...] = ("localhost",), tmp_dir: Path | None = None) -> list[dict[str, Run]]:
    """Run several tasks in one ``ansible-playbook`` call (Ansible starts once).

    Each task is a plain task mapping (``{"sqlite_verify": {...}, "check_mode": true}``); every task
    gets ``ignore_errors: true`` so that all of them run. ``hosts`` are aliases of this machine
    (local connection) whose tasks run in parallel. Returns, per task, host -> result.
    """
    play = [{
        "name": "module tests",
        "hosts": "all",
        "gather_facts": False,
        "tasks": [dict(task, ignore_errors=True) for task in tasks],
    }]
    directory = tmp_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    playbook = directory / (".playbook-%s.json" % os.urandom(4).hex())
    playbook.write_text(json.dumps(play))
    try:
        command = [str(BIN / "ansible-playbook"), "-i", ",".join(hosts) + ",", "-c", "local",
                   "-e", "ansible_python_interpreter=%s" % python, "-f", str(max(len(hosts), 1)), str(playbook)]
        proc = subprocess.run(command, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300)
    finally:
        playbook.unlink()
    report = _parse(proc, "ansible-playbook")
    reported = report["plays"][0]["tasks"]
    assert len(reported) == len(tasks), proc.stdout + proc.stderr
    results = []
    for task in reported:
        per_host = {}
        for host, value in task["hosts"].items():
            per_host[host] = Run(value)
            per_host[host].output = proc.stdout + proc.stderr
            per_host[host].rc = proc.returncode
        results.append(per_host)
    return results


def run_cases(cases: list[tuple[str, dict[str, Any]]], python: str = SYSTEM_PYTHON,
              tmp_dir: Path | None = None, forks: int = 8) -> list[Run]:
    """Run independent (module, args) cases in one ``ansible-playbook`` call: each case is a host
    alias of this machine, grouped by module, with one play per module, so the cases of a module
    run in parallel and no host evaluates another module's task. One result per case, in order."""
    hosts = {"case%03d" % index: {"case_args": args} for index, (module, args) in enumerate(cases)}
    groups: dict[str, dict[str, Any]] = {}
    for host, (module, _args) in zip(hosts, cases):
        groups.setdefault(module, {"hosts": {}})["hosts"][host] = hosts[host]
    inventory = {"all": {"children": groups, "vars": {"ansible_connection": "local",
                                                      "ansible_python_interpreter": python}}}
    plays = [{"name": module, "hosts": module, "gather_facts": False,
              "tasks": [{module: "{{ case_args }}", "ignore_errors": True}]} for module in groups]
    directory = tmp_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    stem = directory / (".cases-%s" % os.urandom(4).hex())
    inventory_file, playbook = Path(str(stem) + ".inventory.json"), Path(str(stem) + ".playbook.json")
    inventory_file.write_text(json.dumps(inventory))
    playbook.write_text(json.dumps(plays))
    try:
        command = [str(BIN / "ansible-playbook"), "-i", str(inventory_file), "-f", str(forks), str(playbook)]
        proc = subprocess.run(command, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300)
    finally:
        inventory_file.unlink()
        playbook.unlink()
    report = _parse(proc, "ansible-playbook")
    results: dict[str, Run] = {}
    for play in report["plays"]:
        for host, value in play["tasks"][0]["hosts"].items():
            results[host] = Run(value)
            results[host].output = proc.stdout + proc.stderr
            results[host].rc = proc.returncode
    assert set(results) == set(hosts), proc.stdout + proc.stderr
    return [results[host] for host in hosts]


def run_many(tasks: list[dict[str, Any]], python: str = SYSTEM_PYTHON, tmp_dir: Path | None = None) -> list[Run]:
    """run_tasks on localhost only: one result per task."""
    return [per_host["localhost"] for per_host in run_tasks(tasks, python, tmp_dir=tmp_dir)]


def fill(value: Any, **placeholders: str) -> Any:
    """``value`` with each ``{name}`` in its strings (in dicts and lists too) replaced by ``placeholders[name]``."""
    if isinstance(value, str):
        for name, text in placeholders.items():
            value = value.replace("{%s}" % name, text)
        return value
    if isinstance(value, dict):
        return {key: fill(item, **placeholders) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, **placeholders) for item in value]
    return value


def run_cases_in_copies(template: Path, root: Path, cases: Sequence[tuple[str, str, dict[str, Any]]],
                        placeholders: Callable[[Path], Mapping[str, str]],
                        python: str = SYSTEM_PYTHON) -> dict[str, tuple[Run, dict[str, tuple], dict[str, tuple]]]:
    """Each case (id, module, args) in its own copy of ``template`` (``root/<id>``), its args filled from
    ``placeholders(copy)``; all in one ``run_cases``. id -> (result, tree_state of the copy before, after)."""
    folders = {case_id: shutil.copytree(template, root / case_id, copy_function=shutil.copy2)
               for case_id, _module, _args in cases}
    before = {case_id: tree_state(folder) for case_id, folder in folders.items()}
    results = run_cases([(module, fill(args, **placeholders(folders[case_id]))) for case_id, module, args in cases],
                        python, tmp_dir=root)
    return {case_id: (result, before[case_id], tree_state(folders[case_id]))
            for (case_id, _module, _args), result in zip(cases, results)}


def assert_no_traceback(result: Run) -> None:
    """A clean failure: the module's own message, no crash, no traceback anywhere.
    (Ansible 2.19 puts ``exception: "(traceback unavailable)"`` in every failed result.)"""
    assert "Traceback" not in result.output
    assert "Traceback" not in json.dumps(result)
    assert "module_stderr" not in result and "MODULE FAILURE" not in str(result.get("msg", "")), result


def assert_refused_unchanged(result: Run, before: dict[str, tuple], after: dict[str, tuple], message: str,
                             kind: str | None) -> None:
    """Refused with ``message`` and ``kind`` (None: Ansible's own argument check), changed nothing: said so,
    and its folder's tree is as it was; no traceback."""
    assert result.get("failed") is True, result
    assert result.get("changed", False) is False
    assert message in result["msg"], result["msg"]
    if kind is not None:
        assert result["kind"] == kind, result
    assert_no_traceback(result)
    assert after == before


# --------------------------------------------------------------------------- real SQLite files


def make_database(path: Path, rows: int = 500, journal_mode: str = "wal", index: bool = True) -> Path:
    """A small app-like database: two tables with a foreign key, an index, a user_version."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=%s" % journal_mode)
        conn.execute("PRAGMA user_version=3")
        conn.execute("CREATE TABLE members (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT)")
        conn.execute("CREATE TABLE visits (id INTEGER PRIMARY KEY, member_id INTEGER REFERENCES members(id), "
                     "door TEXT)")
        if index:
            conn.execute("CREATE INDEX members_name ON members(name)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO members (name, note) VALUES (?, ?)",
                         [("member %05d" % i, "x" * 120) for i in range(rows)])
        conn.executemany("INSERT INTO visits (member_id, door) VALUES (?, ?)",
                         [(1 + i % rows, "front") for i in range(rows)])
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path


def corrupt_table_pages(path: Path) -> list[int]:
    """Overwrite bytes in the middle of the file, in three table b-tree leaf pages, so that
    integrity_check reports problems while the file still opens and reads (page 1 and the
    schema stay intact).

    Each page's cell count (header bytes 3-4) is set to 1: the other cells become unaccounted
    space and the index no longer matches the table, which integrity_check reports row by row
    instead of refusing the whole file as malformed."""
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    pages = len(data) // page_size
    leaves = [n for n in range(2, pages + 1) if data[(n - 1) * page_size] == 0x0D]
    assert len(leaves) >= 6, "not enough table leaf pages to corrupt"
    chosen = leaves[len(leaves) // 3: len(leaves) // 3 + 3]
    for number in chosen:
        start = (number - 1) * page_size
        data[start + 3: start + 5] = (1).to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return chosen


def tree_state(root: Path) -> dict[str, tuple]:
    """Everything observable about a directory tree, root (".") included: relative path -> (type, mode,
    uid, gid, size, sha256 of a file or target of a symlink, mtime_ns). The mtime comes last: ``[:-1]``
    is the rest. Empty when root does not exist."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, entry)
            st = os.lstat(path)
            content = None
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
                content = digest.hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            key = os.path.normpath(os.path.relpath(path, root))
            state[key] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                          st.st_size, content, st.st_mtime_ns)
    return state


def interpreter_sqlite_version(python: str) -> str:
    return subprocess.run([python, "-c", "import sqlite3; print(sqlite3.sqlite_version)"],
                          capture_output=True, text=True, check=True).stdout.strip()
