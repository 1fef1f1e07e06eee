"""What the integration tests share: playbook runs against a test fleet, the Site a test works in,
and what they read from backups, databases and file trees.

Import it as ``integration_helpers`` (tests/conftest.py puts this folder on sys.path; bench/common.py
puts it on the benchmarks' path too). No pytest import: fixtures stay in the test files, built
from the pieces here. Paths are as a host sees them (``host.path(DB_PATH)`` is pi1's copy).

Constants
    REPO, ANSIBLE_PLAYBOOK, ANSIBLE_CFG, PLAYBOOK_TIMEOUT (s), MIB
    DB_NAME ("gym"), DB_PATH (its file on a host), BACKUP_DIR (the host's backup folder),
    HOST_DIRS (the hosts' private folders), BACKUP_NAME (a backup's file name; group 1: its UTC stamp)
Playbook runs
    PlaybookRun             argv, rc, stdout, stderr, seconds; ``.output``; ``.explain()`` for assertion messages
    playbook_env(base)      base + the repository's ANSIBLE_CONFIG, no colour, no ANSIBLE_INVENTORY
    start_playbook (-> StartedPlaybook), finish_playbook, run_playbook
                            ``ansible-playbook [-i inventory] args...`` from the repository root
    debug_result(stdout, task, host)   what an ``ansible.builtin.debug`` task printed for host
    summary_lines(run)                 the SUMMARY (one line per host and database) the record callback prints
    run_records(archive, command), rows_by_host(record)   the run records (docs/cli.md), a host's one row
The site
    Site(fleet, tmp)        a fleet and this test's controller folder (archive, working copies, run logs):
                            archive_folder(), host_backup_folder(), create_database(s)(), one_host(),
                            inventory(), env(), run(), run_command() (a documented command line),
                            backup() (must succeed), run_many(), start()/finish() (a run in the
                            background), start_writer() (the app-like writer inside a host)
    reset_host(host, folders)   link up, unshaped, its private folders emptied (as fleet3 fixtures do)
Files
    sha256_of, open_ro, integrity_check, table_counts, user_version, header_journal_mode,
    backups_in, manifest_of, sha256sum_check, changed_pages, flip_byte, private_tree_problems,
    and, the same as the module tests', corrupt_table_pages, make_database and tree_state
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app_writer import WriterHandle, writer_command
from demo_db import create_demo_db
from fleet import DEFAULT_MOUNTS, Fleet, Host
from module_test_helpers import corrupt_table_pages as corrupt_table_pages
from module_test_helpers import make_database as make_database
from module_test_helpers import tree_state as tree_state

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
ANSIBLE_CFG = REPO / "ansible.cfg"
PLAYBOOK_TIMEOUT = 600
MIB = 1024 * 1024

DB_NAME = "gym"
DB_PATH = "/srv/app/gym.db"
BACKUP_DIR = "/var/backups/sqlite"
# The hosts' private folders a playbook may touch (Ansible's own ~/.ansible/tmp aside).
HOST_DIRS = DEFAULT_MOUNTS
# group 1: the UTC stamp in the name
BACKUP_NAME = re.compile(rf"^{DB_NAME}_backup_(\d{{8}}_\d{{6}})(?:_\d+)?\.db$")


# ------------------------------------------------------------------------- playbook runs


@dataclass
class PlaybookRun:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def explain(self) -> str:
        """The run's command and output, for assertion messages."""
        return (f"\n$ {shlex.join(self.argv)}\nexit {self.rc} after {self.seconds:.1f} s\n"
                f"--- stdout\n{self.stdout[-12000:]}\n--- stderr\n{self.stderr[-4000:]}")


@dataclass
class StartedPlaybook:
    """An ansible-playbook still running (``start_playbook``); ``finish_playbook`` waits for it."""

    process: subprocess.Popen[str]
    argv: list[str]
    args: tuple[str, ...]  # ansible-playbook's own arguments: the playbook first, without -i
    started: float


def playbook_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (a fleet's env(), or os.environ) for a playbook run as a user runs it: the
    repository's ansible.cfg, no colour codes in the output, only the inventory given with -i."""
    env = {**base, "ANSIBLE_CONFIG": str(ANSIBLE_CFG), "ANSIBLE_NOCOLOR": "1"}
    env.pop("ANSIBLE_INVENTORY", None)
    return env


def start_playbook(*args: str, inventory: Path | None, env: Mapping[str, str], cwd: Path = REPO,
                   wrapper: Sequence[str] = ()) -> StartedPlaybook:
    """``[wrapper...] ansible-playbook [-i inventory] args...`` from cwd, output captured."""
    argv = [*wrapper, str(ANSIBLE_PLAYBOOK), *(["-i", str(inventory)] if inventory else []), *args]
    process = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    return StartedPlaybook(process, argv, args, time.monotonic())


def finish_playbook(started: StartedPlaybook, timeout: float = PLAYBOOK_TIMEOUT) -> PlaybookRun:
    """Wait for the run (killed after ``timeout`` seconds, then TimeoutExpired)."""
    try:
        stdout, stderr = started.process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        started.process.kill()
        started.process.communicate()
        raise
    return PlaybookRun(started.argv, started.process.returncode, stdout, stderr, time.monotonic() - started.started)


def run_playbook(*args: str, inventory: Path | None, env: Mapping[str, str], cwd: Path = REPO,
                 timeout: float = PLAYBOOK_TIMEOUT) -> PlaybookRun:
    return finish_playbook(start_playbook(*args, inventory=inventory, env=env, cwd=cwd), timeout)


def debug_result(stdout: str, task: str, host: str = "localhost") -> dict[str, Any]:
    """What the default callback printed for an ``ansible.builtin.debug`` task on host."""
    start = stdout.find(f"TASK [{task}]")
    assert start >= 0, f"task {task!r} not in the output:\n{stdout[-6000:]}"
    lines = stdout[start:].splitlines()
    opener = f"ok: [{host}] => {{"
    first = lines.index(opener)
    body = ["{"]
    for line in lines[first + 1:]:
        body.append(line)
        if line == "}":
            break
    return json.loads("\n".join(body))


def summary_lines(run: PlaybookRun) -> list[str]:
    """The SUMMARY the sqlite_fleet_record callback prints after the recap: one line per host and database."""
    assert "SUMMARY *" in run.stdout, f"no summary in the output:\n{run.stdout[-6000:]}"
    block = run.stdout.rsplit("SUMMARY *", 1)[1].splitlines()[1:]
    return [line for line in block if line.strip() and " (exit " not in line and not line.startswith("record: ")]


def run_records(archive: Path, command: str) -> list[dict[str, Any]]:
    """The run records (docs/cli.md) of one command, oldest first."""
    runs = archive / "runs"
    if not runs.is_dir():
        return []
    records = [json.loads(path.read_text()) for path in sorted(runs.glob("*.json"))]
    return [record for record in records if record["command"] == command]


def rows_by_host(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per host, its one database's row of the record, with the host's outcome folded into ``ok``."""
    rows: dict[str, dict[str, Any]] = {}
    for host, row in record["hosts"].items():
        databases = list(row["databases"].values())
        assert len(databases) <= 1, f"{host}: one database expected: {row}"
        db = dict(databases[0]) if databases else {}
        db["ok"] = row["outcome"] == "ok" and db.get("outcome") == "ok"
        db["transfers"] = [f"{p['file']} ({p['mode']})" for p in db.get("pulled") or []]
        db["transferred_bytes"] = db.get("bytes_sent")
        rows[host] = db
    return rows


# ------------------------------------------------------------------------- the site


@dataclass
class Site:
    """A fleet plus this test's controller folder (archive, working copies, run logs), and a way to
    run playbooks against it. Each run's command and output go to ``tmp/runNN-<playbook>.log``."""

    fleet: Fleet
    tmp: Path
    writers: list[WriterHandle] = field(default_factory=list)
    runs: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def archive(self) -> Path:
        return self.tmp / "archive"

    @property
    def working(self) -> Path:
        return self.tmp / "working"

    @property
    def hosts(self) -> list[Host]:
        return list(self.fleet)

    def archive_folder(self, host: str) -> Path:
        return self.archive / host / DB_NAME

    def host_backup_folder(self, host: Host) -> Path:
        return host.path(BACKUP_DIR)

    def create_database(self, host: Host, seed: int = 1, **options: Any) -> Path:
        """The demo database (60 members unless ``members`` says otherwise) at the host's DB_PATH."""
        options.setdefault("members", 60)
        db = host.path(DB_PATH)
        create_demo_db(db, seed=seed, **options)
        return db

    def create_databases(self, hosts: Sequence[Host] | None = None, **options: Any) -> None:
        for index, host in enumerate(hosts or self.hosts):
            self.create_database(host, seed=index + 1, **options)

    def inventory(self, name: str = "hosts.yml", hosts: Sequence[Host] | None = None,
                  databases: Mapping[str, list[dict[str, Any]]] | None = None,
                  host_vars: Mapping[str, Mapping[str, Any]] | None = None,
                  group_vars: Mapping[str, Any] | None = None, group: str = "sqlite_hosts",
                  names: Mapping[str, str] | None = None) -> Path:
        """An inventory of ``hosts`` (default: all) in ``group``, each backing up DB_PATH as DB_NAME
        unless ``databases`` says otherwise per host, plus ``host_vars`` per host; the archive and the
        working copies in tmp, plus ``group_vars``. ``names`` keeps only the hosts it names, under new
        inventory names (pi1 -> oldpi)."""
        members = {}
        for host in hosts or self.hosts:
            if names is not None and host.name not in names:
                continue
            host_databases = (databases or {}).get(host.name, [{"name": DB_NAME, "path": DB_PATH}])
            members[names[host.name] if names else host.name] = {
                **self.fleet.host_vars(host), "sqlite_backup_databases": host_databases,
                **(host_vars or {}).get(host.name, {})}
        body = {"hosts": members, "vars": {"sqlite_archive_dir": str(self.archive),
                                           "sqlite_sync_dir": str(self.working), **(group_vars or {})}}
        path = self.tmp / name
        path.write_text(json.dumps({"all": {"children": {group: body}}}, indent=2) + "\n")
        return path

    def env(self) -> dict[str, str]:
        return playbook_env(self.fleet.env())

    def start(self, playbook: str, *args: str, inventory: Path | None, env: Mapping[str, str] | None = None,
              cwd: Path = REPO, wrapper: Sequence[str] = ()) -> StartedPlaybook:
        """``[wrapper...] ansible-playbook [-i inventory] playbook args...`` from cwd (the repository root
        by default), in the background: ``finish`` waits for it."""
        return start_playbook(playbook, *args, inventory=inventory, env=self.env() if env is None else env, cwd=cwd,
                              wrapper=wrapper)

    def finish(self, started: StartedPlaybook, timeout: float = PLAYBOOK_TIMEOUT) -> PlaybookRun:
        run = finish_playbook(started, timeout)
        with self._lock:
            self.runs += 1
            log = self.tmp / f"run{self.runs:02d}-{Path(started.args[0]).stem}.log"
        log.write_text(run.explain())
        print(f"{shlex.join(started.args)}: exit {run.rc} in {run.seconds:.1f} s (log: {log})")
        return run

    def run(self, playbook: str, *args: str, inventory: Path | None, env: Mapping[str, str] | None = None,
            cwd: Path = REPO, timeout: float = PLAYBOOK_TIMEOUT) -> PlaybookRun:
        """``ansible-playbook [-i inventory] playbook args...`` from cwd (the repository root by default)."""
        return self.finish(self.start(playbook, *args, inventory=inventory, env=env, cwd=cwd), timeout)

    def run_command(self, command: str, *extra: str, inventory: Path) -> PlaybookRun:
        """A command line as the docs write it (``ansible-playbook restore.yml -e ...``), run from the
        repository root with ``inventory``; ``extra`` arguments (JSON -e values) are appended."""
        words = shlex.split(command)
        assert words[0] == "ansible-playbook", command
        return self.run(*words[1:], *extra, inventory=inventory)

    def backup(self, inventory: Path, playbook: str = "backup.yml") -> PlaybookRun:
        """backup.yml (or ``playbook``), which must succeed."""
        run = self.run(playbook, inventory=inventory)
        assert run.rc == 0, run.explain()
        return run

    def one_host(self) -> tuple[Host, Path, Path]:
        """pi1 with its database, and the inventory: (host, database, inventory)."""
        host = self.fleet["pi1"]
        return host, self.create_database(host), self.inventory()

    def run_many(self, *calls: tuple[tuple[str, ...], dict[str, Any]]) -> list[PlaybookRun]:
        """Several independent runs at once: ((playbook, *args), run's keywords) each."""
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            futures = [pool.submit(self.run, *args, **keywords) for args, keywords in calls]
            return [future.result() for future in futures]

    def start_writer(self, host: Host, **options: Any) -> WriterHandle:
        """The app-like writer, run inside the host's namespaces on its database."""
        workdir = self.tmp / f"writer-{host.name}-{len(self.writers)}"
        workdir.mkdir()
        status, ready = workdir / "status.json", workdir / "ready"
        argv = writer_command(DB_PATH, status, ready, python=host.python, **options)
        with open(workdir / "stderr.txt", "wb") as stderr:
            process = host.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        handle = WriterHandle(process, status, ready, workdir)
        self.writers.append(handle)
        handle.wait_ready(timeout=30)
        return handle


def reset_host(host: Host, folders: Sequence[str] = HOST_DIRS) -> None:
    """Link up and unshaped, its private ``folders`` emptied and 0755: what a test on a shared fleet
    starts from."""
    host.link_up()
    host.unshape()
    for folder in folders:
        host.empty(folder)
        host.path(folder).chmod(0o755)


def reset_site(fleet: Fleet, tmp: Path, folders: Sequence[str] = HOST_DIRS) -> Iterator[Site]:
    """A fixture's body: the shared fleet's hosts reset (link up, unshaped, ``folders`` emptied)
    before and after the test, and its Site."""
    for host in fleet:
        reset_host(host, folders)
    yield Site(fleet, tmp)
    for host in fleet:
        reset_host(host, folders)


# ------------------------------------------------------------------------- files


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_ro(path: Path) -> sqlite3.Connection:
    """Read-only, immutable when no -wal is beside it (then nothing appears beside it either)."""
    wal = Path(str(path) + "-wal")
    immutable = "&immutable=1" if not wal.exists() or wal.stat().st_size == 0 else ""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{immutable}", uri=True, isolation_level=None)


def integrity_check(path: Path) -> list[str]:
    conn = open_ro(path)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def table_counts(path: Path) -> dict[str, int]:
    conn = open_ro(path)
    try:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
        return {table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables}
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = open_ro(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def header_journal_mode(path: Path) -> str:
    """WAL databases have file format numbers 2/2 at bytes 18-19 of the header."""
    return "wal" if path.read_bytes()[18:20] == b"\x02\x02" else "delete"


def backups_in(folder: Path) -> list[str]:
    """Backup file names (not sidecars) in folder, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir() if BACKUP_NAME.match(entry.name))


def manifest_of(backup: Path) -> dict[str, Any]:
    return json.loads(backup.with_name(backup.name + ".json").read_text())


def sha256sum_check(folder: Path) -> subprocess.CompletedProcess[str]:
    """Real coreutils ``sha256sum -c *.sha256`` in folder."""
    sums = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sha256"))
    assert sums, f"no .sha256 files in {folder}"
    return subprocess.run(["sha256sum", "-c", *sums], cwd=folder, capture_output=True, text=True, check=False)


def changed_pages(old: Path, new: Path, page_size: int = 4096) -> int:
    """How many pages of ``new`` differ from the same page of ``old``."""
    changed = 0
    with open(old, "rb") as a, open(new, "rb") as b:
        while True:
            page = b.read(page_size)
            if not page:
                return changed
            changed += a.read(page_size) != page


def flip_byte(path: Path, offset: int | None = None, mask: int = 0xFF) -> None:
    """XOR one byte in place (the middle one unless ``offset`` is given), as a bad sector would."""
    with open(path, "r+b") as handle:
        if offset is None:
            offset = os.fstat(handle.fileno()).st_size // 2
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ mask]))


def private_tree_problems(root: Path) -> list[str]:
    """Folders not 0700 or files not 0600 (or anything else) under root, root included."""
    problems = []
    for dirpath, dirnames, filenames in os.walk(root):
        mode = stat.S_IMODE(os.lstat(dirpath).st_mode)
        if mode != 0o700:
            problems.append(f"{dirpath}: folder mode {mode:o}")
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{path}: not a regular file")
            elif stat.S_IMODE(st.st_mode) != 0o600:
                problems.append(f"{path}: file mode {stat.S_IMODE(st.st_mode):o}")
    return problems
