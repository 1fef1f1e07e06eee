"""Bad input, one table across the three faces: the modules, the playbooks and the on-host runner.

Each case runs in its own copy of a small site (an app database in rollback-journal mode, a
backup folder holding one finished backup, a text file, a folder, an installed runner) and must
end with a clear message that names the problem, no traceback, a failing exit status, and the
site's file tree exactly as it was (modes, sizes, contents, mtimes).

Cases already proven elsewhere are not repeated here: the 40 module cases of
tests/modules/test_modules.py (``test_bad_input_fails_clearly_and_changes_nothing``), the 21 of
tests/modules/test_restore_module.py, the drill's in tests/modules/test_drill_module.py, the
runner's bad configs and arguments in tests/unit/test_runner.py, the guard's in
tests/integration/test_fleet_playbooks.py and restore.yml's in tests/integration/test_restore.py.
Playbooks run against this machine (``ansible_connection: local``), every path inside the case's
folder; provision.yml only in check mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import module_test_helpers as helpers
import pytest
from core_parts import install_core
from module_test_helpers import core, fill

REPO = Path(__file__).resolve().parents[2]
CONTROLLER_PYTHON = str(REPO / ".venv" / "bin" / "python")
RUNNER_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"


@dataclass
class Case:
    id: str
    face: str  # module | playbook | runner
    spec: dict[str, Any]
    message: str
    status: int | None = None  # exit status of a playbook or the runner
    kind: str | None = None  # a module's kind (None: Ansible's own argument check)
    extra: dict[str, Any] = field(default_factory=dict)


# {d} is the case's own folder. Module specs: module + args; playbook specs: playbook, -e vars (JSON),
# inventory overrides of the local host, extra arguments; runner specs: config overrides + argv.
CASES = [
    # -- modules the earlier tables do not cover
    Case("archive-relative-dir", "module", {"sqlite_archive_info": {"archive_dir": "archive", "host": "pi1",
                                                                    "name": "gym"}},
         "archive folder must be an absolute path", kind="bad_input"),
    Case("archive-info-without-name", "module", {"sqlite_archive_info": {"archive_dir": "{d}/archive", "host": "pi1"}},
         "missing required arguments: name"),
    Case("archive-without-state", "module", {"sqlite_archive": {"archive_dir": "{d}/archive", "host": "pi1",
                                                                "name": "gym"}},
         "missing required arguments: state"),
    Case("archive-prepare-without-transfers", "module",
         {"sqlite_archive": {"archive_dir": "{d}/archive", "host": "pi1", "state": "prepare"}},
         "state is prepare but all of the following are missing: transfers"),
    Case("archive-bad-state", "module", {"sqlite_archive": {"archive_dir": "{d}/archive", "host": "pi1",
                                                            "name": "gym", "state": "sync"}},
         "value of state must be one of: prepare, import"),
    Case("archive-lock-timeout-text", "module", {"sqlite_archive_info": {"archive_dir": "{d}/archive", "host": "pi1",
                                                                         "name": "gym", "lock_timeout": "soon"}},
         "argument 'lock_timeout' is of type str and we were unable to convert to float"),
    Case("export-negative-max-backups", "module", {"sqlite_export": {"backup_dir": "{d}/bk", "name": "gym",
                                                                     "max_backups": -1}},
         "max_backups must be 0 or more", kind="bad_input"),
    Case("export-remove-a-folder-not-its-own", "module",
         {"sqlite_export": {"backup_dir": "{d}", "state": "absent", "staging_dir": "{d}/app"}},
         "is not a staging folder of", kind="bad_input"),
    Case("export-relative-backup-dir", "module", {"sqlite_export": {"backup_dir": "bk", "name": "gym"}},
         "backup folder must be an absolute path", kind="bad_input"),
    Case("export-name-dotdot", "module", {"sqlite_export": {"backup_dir": "{d}/bk", "name": "../gym"}},
         "name '../gym' is not allowed", kind="bad_input"),
    Case("export-have-without-file", "module", {"sqlite_export": {"backup_dir": "{d}/bk", "name": "gym",
                                                                  "have": [{"sha256": "00"}]}},
         "have must be a list of {file, sha256}", kind="bad_input"),
    Case("working-copy-keep-0", "module", {"sqlite_working_copy": {"src": "{backup}", "dest": "{d}/work/gym.db",
                                                                   "keep": 0}},
         "keep must be at least 1", kind="bad_input"),
    Case("working-copy-of-a-live-database", "module",
         {"sqlite_working_copy": {"src": "{d}/app/gym.db", "dest": "{d}/work/gym.db"}},
         "has no manifest", kind="corrupt"),
    Case("working-copy-dest-is-a-folder", "module", {"sqlite_working_copy": {"src": "{backup}", "dest": "{d}/adir"}},
         "is a directory", kind="bad_input"),
    Case("info-name-dotdot", "module", {"sqlite_info": {"backup_dir": "{d}/bk", "name": "../gym"}},
         "name '../gym' is not allowed", kind="bad_input"),
    Case("retention-keep-last-text", "module", {"sqlite_retention": {"backup_dir": "{d}/bk", "name": "gym",
                                                                     "keep_last": "three"}},
         "argument 'keep_last' is of type str and we were unable to convert to int"),
    Case("backup-negative-busy-timeout", "module",
         {"sqlite_backup": {"path": "{d}/app/gym.db", "name": "gym", "backup_dir": "{d}/bk", "busy_timeout_ms": -5}},
         "busy_timeout_ms must be a whole number of milliseconds from 0 to 2147483647", kind="bad_input"),
    # -- accepted once, and wrong (the nights-after issue): refused before anything is taken or written
    Case("backup-busy-timeout-beyond-sqlite", "module",
         {"sqlite_backup": {"path": "{d}/app/gym.db", "name": "gym", "backup_dir": "{d}/bk",
                            "busy_timeout_ms": 10 ** 20}},
         "busy_timeout_ms must be a whole number of milliseconds from 0 to 2147483647", kind="bad_input"),
    Case("backup-lock-timeout-nan", "module",
         {"sqlite_backup": {"path": "{d}/app/gym.db", "name": "gym", "backup_dir": "{d}/bk", "lock_timeout": "nan"}},
         "lock_timeout must be a number of seconds from 0 to 604800, got nan", kind="bad_input"),
    Case("backup-keep-days-a-million", "module",
         {"sqlite_backup": {"path": "{d}/app/gym.db", "name": "gym", "backup_dir": "{d}/bk",
                            "retention": {"keep_days": 1000000}}},
         "keep_days 1000000 is over 36525 (a century); nothing was backed up", kind="bad_input"),
    Case("backup-keep-label-days-a-billion", "module",
         {"sqlite_backup": {"path": "{d}/app/gym.db", "name": "gym", "backup_dir": "{d}/bk",
                            "retention": {"keep_last": 3, "keep_label_days": {"pre-upgrade": 1000000000}}}},
         "keep_label_days[pre-upgrade] must be a whole number of days from 0 to 36525", kind="bad_input"),
    Case("backup-into-a-shared-folder", "module",
         {"sqlite_backup": {"path": "{d}/app/gym.db", "name": "gym", "backup_dir": "{d}/shared"}},
         "holds files that are not ours: refusing to make it private", kind="bad_input"),
    Case("backup-owner-beyond-any-uid", "module",
         {"sqlite_backup": {"path": "{d}/app/gym.db", "name": "gym", "backup_dir": "{d}/newbk",
                            "owner": "99999999999"}},
         "owner '99999999999' is not a valid id", kind="bad_input"),
    Case("checkpoint-relative-path", "module", {"sqlite_checkpoint": {"path": "app/gym.db"}},
         "must be an absolute path", kind="bad_input"),
    # -- playbooks, as run from the repository root
    Case("backup-relative-database-path", "playbook",
         {"playbook": "backup.yml", "host": {"sqlite_backup_databases": [{"name": "gym", "path": "app/gym.db"}]}},
         "database path must be an absolute path, got 'app/gym.db'", status=2),
    Case("backup-name-with-slash", "playbook",
         {"playbook": "backup.yml", "host": {"sqlite_backup_databases": [{"name": "gym/x", "path": "{d}/app/gym.db"}]}},
         "name 'gym/x' is not allowed", status=2),
    Case("backup-negative-keep", "playbook", {"playbook": "backup.yml", "vars": {"sqlite_backup_keep_last": -1}},
         "retention of gym: keep_last, keep_days, keep_hourly, keep_daily, keep_weekly, keep_monthly and keep_yearly "
         "must be 0 or more",
         status=2),
    Case("backup-keep-nothing", "playbook",
         {"playbook": "backup.yml", "vars": {"sqlite_backup_" + rule: 0 for rule in
                                             ("keep_last", "keep_days", "keep_daily", "keep_weekly", "keep_monthly")}},
         "not all 0", status=2),
    Case("backup-keep-not-a-number", "playbook",
         {"playbook": "backup.yml", "vars": {"sqlite_backup_keep_daily": "many"}},
         "argument 'sqlite_backup_keep_daily' is of type str and we were unable to convert to int", status=2),
    Case("playbook-keep-days-a-million", "playbook",
         {"playbook": "backup.yml", "vars": {"sqlite_backup_keep_days": 1000000}},
         "keep_days 1000000 is over 36525 (a century); nothing was backed up", status=2),
    Case("playbook-one-name-twice", "playbook",
         {"playbook": "backup.yml", "host": {"sqlite_backup_databases": [
             {"name": "gym", "path": "{d}/app/gym.db"}, {"name": "gym", "path": "{d}/notes.txt"}]}},
         "names gym more than once", status=2),
    Case("backup-no-databases", "playbook", {"playbook": "backup.yml", "host": {"sqlite_backup_databases": []}},
         "sqlite_backup_databases is empty for local1", status=2),
    Case("restore-without-restore-hosts", "playbook", {"playbook": "restore.yml", "vars": {"restore_database": "gym"}},
         "Nothing restored: restoring is never implicit", status=2),
    Case("stats-without-inventory", "playbook", {"playbook": "stats.yml", "inventory": "{d}/no-such-inventory.yml"},
         "the inventory has no host in group sqlite_hosts", status=2),
    Case("provision-cron-hour-smuggles-a-command", "playbook",
         {"playbook": "provision.yml", "args": ["--check"],
          "vars": {"sqlite_runner_cron_hour": "3 * * * root touch {d}/pwned #"}},
         "sqlite_runner_cron_minute, _hour and _weekday must be cron fields", status=2),
    # -- the on-host runner's CLI
    Case("runner-cleanup-with-a-bad-keep", "runner",
         {"config": {"retention": {"keep_last": "three", "keep_days": 7}}, "argv": ["backup", "--cleanup"]},
         "keep_last must be a non-negative integer, got 'three'", status=2),
    Case("runner-cleanup-with-an-unknown-zone", "runner",
         {"config": {"timezone": "Mars/Olympus_Mons"}, "argv": ["backup", "--cleanup"]},
         "unknown time zone 'Mars/Olympus_Mons'", status=2),
    Case("runner-keep-days-a-million", "runner", {"config": {}, "argv": ["backup", "--cleanup", "--keep-days",
                                                                        "1000000"]},
         "keep_days 1000000 is over 36525 (a century)", status=2),
    Case("runner-one-name-twice", "runner",
         {"config": {"databases": [{"name": "gym", "path": "{d}/app/gym.db"}, {"name": "gym", "path": "{d}/x.db"}]},
          "argv": ["backup"]},
         "names database gym twice", status=2),
    Case("runner-lock-timeout-nan", "runner", {"config": {"lock_timeout": float("nan")}, "argv": ["backup"]},
         "lock_timeout must be a number of seconds from 0 to 604800", status=2),
    Case("runner-busy-timeout-text", "runner", {"config": {"busy_timeout_ms": "abc"}, "argv": ["backup"]},
         "busy_timeout_ms must be a whole number of milliseconds from 0 to 2147483647, got 'abc'", status=2),
    Case("runner-label-with-a-space", "runner", {"config": {}, "argv": ["backup", "--label", "pre upgrade"]},
         "label 'pre upgrade' is not allowed", status=2),
    Case("runner-unknown-method", "runner", {"config": {"method": "cp"}, "argv": ["backup"]},
         "method must be one of pinned_copy, backup_api, vacuum_into", status=2),
    Case("runner-database-is-a-folder", "runner",
         {"config": {"databases": [{"name": "gym", "path": "{d}/adir"}]}, "argv": ["backup"]},
         "is a directory, not a database file", status=2),
    Case("runner-database-is-a-text-file", "runner",
         {"config": {"databases": [{"name": "gym", "path": "{d}/notes.txt"}]}, "argv": ["backup"]},
         "is not an SQLite 3 database", status=2),
    Case("runner-verify-unknown-integrity", "runner", {"config": {}, "argv": ["verify", "--integrity", "paranoid"]},
         "invalid choice: 'paranoid'", status=2),
]


def runner_config(folder: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    config = {"host": "testpi", "backup_dir": str(folder / "bk"),
              "databases": [{"name": "gym", "path": str(folder / "app" / "gym.db")}], "lock_timeout": 5,
              "retention": {"keep_last": 3, "keep_days": 7}, "timezone": "UTC", "metrics_dir": "",
              "log_file": str(folder.parent / "logs" / (folder.name + ".log"))}  # logging a refusal is no change
    config.update(overrides)
    return config


def run_playbook(case: Case, folder: Path, root: Path) -> tuple[int, str]:
    spec = case.spec
    host = {"ansible_connection": "local", "ansible_python_interpreter": CONTROLLER_PYTHON,
            "sqlite_backup_databases": [{"name": "gym", "path": str(folder / "app" / "gym.db")}],
            "sqlite_backup_dir": str(folder / "bk"), "sqlite_archive_dir": str(folder / "archive"),
            "sqlite_sync_dir": str(folder / "work"), "sqlite_runner_dir": str(folder / "opt"),
            "sqlite_runner_log_dir": str(folder / "log"), "sqlite_runner_metrics_dir": "",
            "sqlite_schedule_log_dir": str(folder / "log"), "sqlite_schedule_cron_file": "sqlite-bad-input-test"}
    host.update(fill(spec.get("host", {}), d=str(folder)))
    inventory = root / "inventories" / (case.id + ".json")
    inventory.write_text(json.dumps({"all": {"children": {"sqlite_hosts": {"hosts": {"local1": host}}}}}))
    target = fill(spec["inventory"], d=str(folder)) if "inventory" in spec else str(inventory)
    argv = [str(ANSIBLE_PLAYBOOK), "-i", target, spec["playbook"], *spec.get("args", [])]
    if spec.get("vars"):
        argv += ["-e", json.dumps(fill(spec["vars"], d=str(folder)))]
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def run_runner(case: Case, folder: Path) -> tuple[int, str]:
    argv = [RUNNER_PYTHON, str(folder / "opt" / "sqlite_backup_runner.py"), "--config",
            str(folder / "opt" / "config.json"), *case.spec["argv"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ beside the installed core
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=folder)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case, each in its own copy of the site; modules in one playbook, the rest side by side."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "inventories").mkdir()
    (root / "logs").mkdir()
    template = root / "template"
    (template / "app").mkdir(parents=True)
    helpers.make_database(template / "app" / "gym.db", rows=40, journal_mode="delete")
    backup = core.snapshot(str(template / "app" / "gym.db"), str(template / "bk"), "gym")["file"]
    (template / "notes.txt").write_text("not a database\n" * 20)
    (template / "adir").mkdir()
    (template / "shared").mkdir()  # a folder others use too, like /tmp
    (template / "shared" / "someone-elses.txt").write_text("not ours\n")
    (template / "shared").chmod(0o1777)
    (template / "opt").mkdir()
    shutil.copy2(REPO / "runner" / "sqlite_backup_runner.py", template / "opt" / "sqlite_backup_runner.py")
    install_core(template / "opt")
    folders = {}
    for case in CASES:
        folder = shutil.copytree(template, root / case.id, copy_function=shutil.copy2, symlinks=True)
        if case.face == "runner":
            config = runner_config(folder, fill(case.spec["config"], d=str(folder)))
            (folder / "opt" / "config.json").write_text(json.dumps(config))
        folders[case.id] = folder
    before = {case_id: helpers.tree_state(folder) for case_id, folder in folders.items()}

    module_cases = [case for case in CASES if case.face == "module"]
    results: dict[str, Any] = {}
    module_results = helpers.run_cases(
        [next(iter(fill(case.spec, d=str(folders[case.id]), backup=f"{folders[case.id]}/bk/{backup}").items()))
         for case in module_cases], CONTROLLER_PYTHON, tmp_dir=root)
    for case, result in zip(module_cases, module_results):
        results[case.id] = ("failed" if result.get("failed") else "ok", result.get("msg", ""), result.output, result)

    def other(case: Case) -> tuple[str, Any]:
        if case.face == "playbook":
            status, output = run_playbook(case, folders[case.id], root)
        else:
            status, output = run_runner(case, folders[case.id])
        return case.id, (status, output, output, None)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results.update(pool.map(other, [case for case in CASES if case.face != "module"]))
    return {case.id: (results[case.id], before[case.id], helpers.tree_state(folders[case.id])) for case in CASES}


def test_the_table_spans_the_three_faces_with_at_least_25_cases() -> None:
    faces = {face: sum(1 for case in CASES if case.face == face) for face in ("module", "playbook", "runner")}
    assert len(CASES) >= 25 and all(faces.values()), faces
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_a_clear_message_no_traceback_and_changes_nothing(outcomes: dict[str, Any],
                                                                         case: Case) -> None:
    (status, message, output, result), before, after = outcomes[case.id]
    if case.face == "module":
        assert status == "failed", result
        assert result.get("changed", False) is False, result
        if case.kind is not None:
            assert result.get("kind") == case.kind, result
        assert "module_stderr" not in result and "MODULE FAILURE" not in message, result
    else:
        assert status == case.status, output[-3000:]
    assert case.message in message, (message if case.face == "module" else output)[-3000:]
    assert "Traceback" not in output
    assert without_run_records(after) == without_run_records(before), "bad input changed the site's files"


def without_run_records(state: dict[str, Any]) -> dict[str, Any]:
    """A site's files less the run records every playbook run leaves (the archive folder holding them, and so
    the site folder's own mtime, may be new); anything else new or changed still shows."""
    return {path: entry for path, entry in state.items()
            if path not in (".", "archive", "archive/runs") and not path.startswith("archive/runs/")}
