# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One playbook run through ansible-runner: a private data dir ``var/runs/<run_id>/`` (artifacts
kept, the oldest pruned by count), the repository's ansible.cfg and playbooks from any working
directory, host key checking on, secret -e values through a private file, the fold fed event by
event, the record written at the end."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import record as records
from .events import Fold, action_of
from .paths import ANSIBLE_CFG, CALLBACK_PLUGINS, PLAYBOOKS, REPO, RUNS_DIR, core
from .pull_progress import PullDisplay
from .summary import step_line, summary_lines

ENV_RUN_ID = "SQLITE_FLEET_RUN_ID"  # set for the playbook: the callback plugin then writes no second record
STDOUT_CALLBACK = "sqlite_fleet_output"
DEFAULT_KEEP_RUNS = 50
ENV_NOT_SECRET = ("ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_PRIVATE_KEY_FILE")  # settings, named like secrets


@dataclass
class Request:
    """What to run: the command, its ansible-playbook options, and how to show it."""

    command: str
    argv: list[str]  # as typed, for the record (secrets are removed there)
    inventories: list[str] = field(default_factory=list)
    limit: str | None = None
    check: bool = False
    diff: bool = False
    extra_vars: list[str] = field(default_factory=list)
    verbosity: int = 0
    keep_runs: int = DEFAULT_KEEP_RUNS
    progress: bool = False
    runs_dir: str = RUNS_DIR
    pull_progress: bool = False  # the pulls' progress while they run (PullDisplay)
    terminal: TextIO | None = None  # where to redraw it in place (else lines through say)


@dataclass
class Outcome:
    record: dict[str, Any]
    record_path: str | None
    lines: list[str]


def secret_extra_vars_file(value: str, folder: str) -> str:
    """Write one secret -e value to a 0600 file in ``folder`` (YAML/JSON as given, key=value as JSON)."""
    text = value
    if not value.lstrip().startswith(("{", "[", "---")):
        from ansible.parsing.splitter import parse_kv

        text = json.dumps(parse_kv(value))
    handle, path = tempfile.mkstemp(prefix="extra-vars-", suffix=".yml", dir=folder)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    return path


def playbook_arguments(request: Request, secrets_dir: str) -> list[str]:
    """The ansible-playbook options (besides playbook, inventory and limit); secret -e values as @files."""
    arguments = []
    if request.check:
        arguments.append("--check")
    if request.diff:
        arguments.append("--diff")
    if request.verbosity:
        arguments.append("-" + "v" * request.verbosity)
    for value in request.extra_vars:
        if records.is_secret(value):
            value = "@" + secret_extra_vars_file(value, secrets_dir)
        arguments += ["-e", value]
    return arguments


def runner_environment(run_id: str) -> dict[str, str]:
    """What the playbook needs beyond the caller's environment (which ansible-runner passes on)."""
    bin_dir = os.path.dirname(sys.executable)
    plugins = [path for path in (os.environ.get("ANSIBLE_CALLBACK_PLUGINS"), CALLBACK_PLUGINS) if path]
    return {
        "ANSIBLE_CONFIG": ANSIBLE_CFG,
        # ansible-runner turns host key checking off unless told; the fleet's hosts are checked
        "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
        "ANSIBLE_CALLBACK_PLUGINS": ":".join(plugins),
        "ANSIBLE_STDOUT_CALLBACK": STDOUT_CALLBACK,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "MAX_EVENT_RES": str(64 << 20),  # a whole loop's results in one event, not an empty res
        ENV_RUN_ID: run_id,
    }


def scrub_artifact_env(data_dir: str) -> None:
    """ansible-runner writes the whole environment into artifacts/*/command: drop secret-looking values."""
    for folder, _dirs, files in os.walk(os.path.join(data_dir, "artifacts")):
        if "command" not in files:
            continue
        path = os.path.join(folder, "command")
        with contextlib.suppress(OSError, ValueError):
            with open(path, encoding="utf-8") as stream:
                saved = json.load(stream)
            env = saved.get("env") or {}
            saved["env"] = {key: (records.REDACTED if records.SECRET_WORDS.search(key) and key not in ENV_NOT_SECRET
                                  else value) for key, value in env.items()}
            with open(path, "w", encoding="utf-8") as stream:
                json.dump(saved, stream)


def prune_runs(runs_dir: str, keep: int) -> list[str]:
    """Keep the newest ``keep`` run folders (their names sort by time); remove the rest."""
    try:
        names = sorted(name for name in os.listdir(runs_dir) if os.path.isdir(os.path.join(runs_dir, name)))
    except FileNotFoundError:
        return []
    doomed = names[: max(len(names) - max(keep, 1), 0)]
    for name in doomed:
        shutil.rmtree(os.path.join(runs_dir, name), ignore_errors=True)
    return doomed


def absolute_inventory(source: str) -> str:
    """An inventory path as the caller meant it from their working directory ("a,b," host lists as given)."""
    return os.path.abspath(source) if os.path.exists(source) else source


def error_lines(data_dir: str) -> list[str]:
    """Ansible's own error lines (a run that failed before any event, e.g. a bad playbook or option)."""
    found = []
    for folder, _dirs, files in os.walk(os.path.join(data_dir, "artifacts")):
        if "stdout" in files:
            with contextlib.suppress(OSError), open(os.path.join(folder, "stdout"), errors="replace") as stream:
                found += [line.strip() for line in stream if "ERROR" in line or "error:" in line]
    return found


class Interrupt:
    """SIGINT/SIGTERM ask ansible-runner to cancel the run (it stops the playbook); the record says so."""

    def __init__(self) -> None:
        self.asked = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._ask)
        return self

    def _ask(self, _signum: int, _frame: Any) -> None:
        self.asked = True

    def __exit__(self, *_exc: Any) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def cancel(self) -> bool:
        return self.asked


def run_playbook(request: Request, say: Callable[[str], None]) -> Outcome:
    """Run the command's playbook; ``say`` gets progress lines (when asked for) and the summary."""
    import ansible_runner

    started = dt.datetime.now(dt.timezone.utc)
    run_id = records.new_run_id(started)
    data_dir = os.path.join(request.runs_dir, run_id)
    os.makedirs(request.runs_dir, mode=0o700, exist_ok=True)
    os.makedirs(data_dir, mode=0o700)
    playbook = PLAYBOOKS[request.command]
    fold = Fold(request.command, request.check)
    lock = threading.Lock()
    display: PullDisplay | None = None
    envvars = runner_environment(run_id)

    def show(host: str, database: str | None, text: str) -> None:
        if request.progress:
            with lock:
                if display is not None:
                    display.clear()
                say(step_line(host, database, text))

    if request.pull_progress and not request.check:
        progress_dir = os.path.join(data_dir, "progress")
        envvars[core().PROGRESS_DIR_ENV] = progress_dir
        display = PullDisplay(progress_dir, lambda *step: say(step_line(*step)), request.terminal, lock).start()

    def on_event(event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        if display is not None and action_of(data) == "sqlite_fetch" and \
                event.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
            display.finished(str(data.get("host")))
        for step in fold.feed(event):
            show(*step)
        return True

    secrets_dir = tempfile.mkdtemp(prefix="sqlite-fleet-")
    try:
        with Interrupt() as interrupt:
            runner = ansible_runner.run(
                private_data_dir=data_dir, ident=run_id, project_dir=REPO,
                playbook=os.path.join(REPO, playbook),
                inventory=[absolute_inventory(source) for source in request.inventories] or None,
                limit=request.limit, cmdline=shlex.join(playbook_arguments(request, secrets_dir)),
                envvars=envvars, quiet=True, event_handler=on_event,
                cancel_callback=interrupt.cancel, rotate_artifacts=0,
            )
    finally:
        shutil.rmtree(secrets_dir, ignore_errors=True)
        if display is not None:
            display.stop()
        scrub_artifact_env(data_dir)
    interrupted = interrupt.asked or runner.status == "canceled"
    fold.finish(interrupted=interrupted)
    message = None
    if not fold.run and runner.rc not in (0, None):
        errors = error_lines(data_dir)
        message = errors[-1] if errors else "ansible-playbook exited %s before any host was reached" % runner.rc
    outcome = records.outcome_of(fold, runner.rc, interrupted)
    sources = [absolute_inventory(source) for source in request.inventories] or fold.run.get("inventory") or []
    record = records.build_record(
        fold, run_id=run_id, command=request.command, playbook=playbook, argv=request.argv, via="cli",
        inventory=sources[0] if len(sources) == 1 else sources or None, limit=request.limit,
        check_mode=request.check, started=started, ended=dt.datetime.now(dt.timezone.utc), outcome=outcome,
        message=message)
    path, notes = records.file_record(record, fold, dt.datetime.now(dt.timezone.utc))
    records.write_record(record, data_dir)
    prune_runs(request.runs_dir, request.keep_runs)
    return Outcome(record, path, summary_lines(record) + notes)
