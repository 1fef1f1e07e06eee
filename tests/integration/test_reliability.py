"""Reliability and security under real faults: nothing is lost, nothing broken looks like a backup.

Each fault is injected for real on the test fleet (tests/fleet.py: SSH hosts in network
namespaces with private mounts of /var/backups/sqlite, /srv/app, ...), and the playbooks run as
a user runs them (``ansible-playbook`` from the repository root, host keys checked):

* ``kill -9`` of a snapshot of a 200 MB database, in its copy and in its check;
* the link to a host set down while backup.yml pulls a larger file over a 20 Mbit/s link;
* a host's backup folder on a full tmpfs (filled before the run, and filled by "another
  process" right after the free-space check), and an archive on a tmpfs too small for the pull;
* a database held by an exclusive lock for longer than the busy timeout;
* broken and hostile hosts: forged entries in the backup folder (a symlink to /etc/passwd named
  like a backup, manifests naming ``../../x.db`` or ``/etc/passwd``, a 5 MB manifest, invalid
  JSON), and hosts whose Python lies in its answers (path traversal in the offered file name,
  a 5 MB manifest, output that is not JSON);
* the host's cron runner, an Ansible backup and a prune started together on one folder;
* corrupted archived backups against verify, restore and the drill (a table);
* hostile manifests and transfers handed to sqlite_archive directly (a table);
* a year of daily retention runs on a real folder, with gaps, DST, clock skew and a clock that
  jumps back (hypothesis).

What each test proves and the counts are written down in docs/reliability.md. The Site, tree
snapshots and summary lines come from integration_helpers.py, the module runs from module_test_helpers.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlite_fleet as core
from core_parts import install_core
from demo_db import create_demo_db
from fleet import Fleet, Host
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from integration_helpers import (
    BACKUP_DIR,
    DB_NAME,
    DB_PATH,
    MIB,
    REPO,
    PlaybookRun,
    Site,
    backups_in,
    flip_byte,
    make_database,
    private_tree_problems,
    rows_by_host,
    run_records,
    sha256_of,
    sha256sum_check,
    summary_lines,
    tree_state,
)
from module_test_helpers import run_cases

CORE_DIR = REPO / "module_utils"
TMP_SNAPSHOT = re.compile(r"^\.sqlite-backup-tmp\.(?P<name>[A-Za-z0-9_.-]+?)\.\d+\.[0-9a-f]{8}\.db$")
INCOMING = ".sqlite-backup-tmp.incoming."
CONTROLLER_PYTHON = str(REPO / ".venv" / "bin" / "python")

# The core's snapshot, run by a host's own Python inside its namespaces (the core is stdlib only).
SNAPSHOT_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import sqlite_fleet as core
try:
    taken = core.snapshot(sys.argv[2], sys.argv[3], sys.argv[4], source_host="test")
except core.BackupError as exc:
    print(json.dumps({"ok": False, "kind": exc.kind, "msg": str(exc)}))
    sys.exit(3)
print(json.dumps({"ok": True, "file": taken["file"], "verified": taken["verified"],
                  "removed_unfinished": taken["removed_unfinished"]}))
"""

VERIFY_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import sqlite_fleet as core
print(json.dumps({k: v for k, v in core.verify_backup(sys.argv[2]).items() if k in ("ok", "problems")}))
"""

# The same, but "another process" fills the folder's disk right after the free-space check passed.
FILL_AFTER_CHECK_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import sqlite_fleet as core
parts = [m for n, m in list(sys.modules.items()) if n.split(".")[0] == "sqlite_fleet"]  # the file, or the package's
checked = next(m.check_free_space for m in parts if hasattr(m, "check_free_space"))

def check_then_fill(directory, needed, what):
    checked(directory, needed, what)
    with open(os.path.join(directory, "filler.bin"), "wb") as filler:
        try:
            while True:
                filler.write(b"\xa5" * (1 << 20))
                filler.flush()
        except OSError:
            pass

for module in parts:
    if getattr(module, "check_free_space", None) is checked:  # every part that uses it
        module.check_free_space = check_then_fill
""" + SNAPSHOT_SCRIPT.split("import sqlite_fleet as core", 1)[1]


# --------------------------------------------------------------------------- helpers


def run_core_in_host(host: Host, script: str, *args: str, timeout: float = 300) -> tuple[int, dict[str, Any]]:
    proc = host.run([host.python, "-c", script, str(CORE_DIR), *args], capture_output=True, text=True,
                    timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def host_view(host: Host, path: str) -> Path:
    """``path`` as the host sees it, mounts made inside its namespace included (via /proc/<pid>/root)."""
    return Path("/proc/%d/root%s" % (host.sshd_pid, path))


def final_names(entries: Sequence[str]) -> list[str]:
    """Entries that carry a final name: backups and their sidecars."""
    return [e for e in entries if core.parse_backup_filename(e) or
            (e.endswith((".db.json", ".db.sha256")) and core.parse_backup_filename(e.rsplit(".", 1)[0]))]


def folder_entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def line_of(run: PlaybookRun, host: str) -> str:
    lines = [line for line in summary_lines(run) if line.startswith((host + " ", host + ":"))]
    assert len(lines) == 1, summary_lines(run)
    return lines[0]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(poll)


def tree_outside(root: Path, *skip: Path) -> dict[str, tuple[Any, ...]]:
    """tree_state of root without the subtrees skip (the archives) and the test's own run logs
    (root itself is left out: its mtime moves with every log written into it)."""
    prefixes = [str(folder.relative_to(root)) for folder in skip]
    return {k: v for k, v in tree_state(root).items() if k != "." and not re.fullmatch(r"run\d\d-.*\.log", k)
            and not any(k == prefix or k.startswith(prefix + "/") for prefix in prefixes)}


# --------------------------------------------------------------------------- kill -9


def header_mode(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(20)[18:20]


@pytest.mark.integration
def test_kill_9_during_a_200mb_snapshot_leaves_no_backup_and_the_next_run_cleans_up(
        make_fleet: Callable[..., Fleet]) -> None:
    """SIGKILL in the copy (temporary file growing) and in the check (copy switched to DELETE mode)."""
    host = make_fleet(1)["pi1"]
    db = "/srv/app/big.db"
    facts = create_demo_db(host.path(db), members=300, size_mb=200, seed=9)
    db_bytes = host.path(db).stat().st_size
    assert db_bytes >= 199 * MIB, facts
    db_sha = sha256_of(host.path(db))
    folder = host.path(BACKUP_DIR)
    argv = [host.python, "-c", SNAPSHOT_SCRIPT, str(CORE_DIR), db, BACKUP_DIR, "big"]

    def temporary() -> Path | None:
        """This attempt's temporary copy (not one an earlier kill left)."""
        old = {name for name, _ in leftovers.values()}
        found = [folder / e for e in folder_entries(folder) if TMP_SNAPSHOT.match(e) and e not in old]
        return found[0] if found else None

    leftovers: dict[str, tuple[str, int]] = {}
    for phase in ("copy", "check"):
        proc = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen: list[int] = []

        def in_phase(current_phase: str = phase, sizes: list[int] = seen) -> Path | None:
            tmp = temporary()
            if tmp is None:
                return None
            try:
                size = tmp.stat().st_size
                mode = header_mode(tmp)
            except OSError:
                return None
            if current_phase == "copy":  # growing, well short of the whole database
                sizes.append(size)
                return tmp if len(sizes) >= 2 and 0 < sizes[-2] < size < db_bytes // 2 else None
            return tmp if mode == b"\x01\x01" and size == db_bytes else None

        tmp = wait_for(in_phase, 120, "the snapshot's %s phase" % phase, poll=0.002)
        os.kill(proc.pid, signal.SIGKILL)  # nsenter exec()s the command: this is the snapshot itself
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.returncode
        entries = folder_entries(folder)
        assert final_names(entries) == [], f"killed in its {phase}, a file got a final name: {entries}"
        assert tmp.name in entries
        if phase == "check":  # this attempt was the next run after the first kill: it cleaned up first
            assert not [e for e in entries if e.startswith(leftovers["copy"][0])], entries
        leftovers[phase] = (tmp.name, tmp.stat().st_size)
    assert leftovers["copy"][1] < db_bytes, leftovers  # the first kill hit the copy itself
    assert sha256_of(host.path(db)) == db_sha, "the live database changed"

    started = time.monotonic()
    code, result = run_core_in_host(host, SNAPSHOT_SCRIPT, db, BACKUP_DIR, "big")
    seconds = time.monotonic() - started
    assert code == 0 and result["ok"] and result["verified"], result
    assert leftovers["check"][0] in result["removed_unfinished"], result
    backup = result["file"]
    assert folder_entries(folder) == sorted([core.LOCK_FILE, backup, backup + ".json", backup + ".sha256"])
    checked = core.verify_backup(str(folder / backup), integrity="quick")
    assert checked["ok"], checked["problems"]
    assert private_tree_problems(folder) == []
    assert sha256_of(host.path(db)) == db_sha
    print(f"kill -9: {db_bytes / MIB:.0f} MiB database built in {facts['seconds']:.1f} s; killed in the copy at "
          f"{leftovers['copy'][1] / MIB:.0f} MiB and in the check; next snapshot {seconds:.1f} s removed "
          f"{result['removed_unfinished']}")


# --------------------------------------------------------------------------- link down mid-pull

# Ansible's ssh notices a dead link by its keep-alives (ansible.cfg: 10 s x 3). The test host
# gets 1 s x 3, so the run fails within seconds; host key checking stays on.
FAST_DEAD_LINK_SSH_ARGS = ("-C -o ControlMaster=auto -o ControlPersist=60s -o ServerAliveInterval=1 "
                           "-o ServerAliveCountMax=3 -o StrictHostKeyChecking=yes")


@pytest.mark.integration
def test_link_down_during_the_pull_fails_that_host_and_the_next_run_completes(
        make_fleet: Callable[..., Fleet], tmp_path: Path) -> None:
    fleet = make_fleet(2)
    slow, other = fleet["pi1"], fleet["pi2"]
    site = Site(fleet, tmp_path)
    create_demo_db(slow.path(DB_PATH), members=100, size_mb=8, seed=4)  # incompressible photos: ssh -C cannot help
    create_demo_db(other.path(DB_PATH), members=50, seed=5)
    db_bytes = slow.path(DB_PATH).stat().st_size
    inventory = site.inventory(host_vars={slow.name: {"ansible_ssh_args": FAST_DEAD_LINK_SSH_ARGS}})
    folder = site.archive_folder(slow.name)
    slow.shape(rate="8mbit", burst="64kb", latency="200ms")  # about 8 s for the whole file

    def pulling() -> Path | None:
        for entry in folder_entries(folder):
            path = folder / entry
            with_size = path.stat().st_size if entry.startswith(INCOMING) else 0
            if MIB < with_size < db_bytes // 2:
                return path
        return None

    try:
        running = site.start("backup.yml", inventory=inventory)
        partial = wait_for(pulling, 180, "the pull of %s to be under way" % slow.name, poll=0.02)
        slow.link_down()
        cut_at = partial.stat().st_size
        first = site.finish(running)
    finally:
        slow.link_up()
        slow.unshape()

    assert first.rc != 0, first.explain()
    assert f"1 unreachable ({slow.name})" in first.output, first.explain()
    slow_line = line_of(first, slow.name)
    assert slow_line.startswith(f"{slow.name}: UNREACHABLE - "), slow_line
    # the fetch is part of the backup's own task (the sqlite_backup action plugin)
    fetch = first.stdout[first.stdout.index("TASK [sqlite_backup : Snapshot each database"):]
    fetch = fetch[:fetch.find("TASK [", 10)]
    assert f"fatal: [{slow.name}]: UNREACHABLE!" in fetch and "Failed to connect to the host via sftp" in fetch, fetch
    assert line_of(first, other.name).startswith(f"{other.name} {DB_NAME}: ") and "FAILED" not in line_of(
        first, other.name)
    after_cut = folder_entries(folder)
    assert final_names(after_cut) == [], f"a partial file got a final name: {after_cut}"
    for entry in after_cut:  # the interrupted transfer stays under its temporary name, if at all
        assert entry == core.LOCK_FILE or entry.startswith(INCOMING), after_cut
    (host_backup,) = backups_in(site.host_backup_folder(slow))  # the snapshot on the host is fine
    assert len(backups_in(site.archive_folder(other.name))) == 1

    fleet.close_control_masters()
    second = site.run("backup.yml", "--limit", f"{slow.name},localhost", inventory=inventory)  # see docs/reliability.md
    assert second.rc == 0, second.explain()
    archived = backups_in(folder)
    assert host_backup in archived and len(archived) == 2, archived
    assert [e for e in folder_entries(folder) if e.startswith(".sqlite-backup-tmp")] == [], folder_entries(folder)
    sums = sha256sum_check(folder)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    for backup in archived:
        assert core.verify_backup(str(folder / backup), integrity="quick")["ok"], backup
    assert private_tree_problems(site.archive / slow.name) == []
    record = rows_by_host(run_records(site.archive, "backup")[-1])[slow.name]
    assert record["ok"], record
    staging = [e for e in folder_entries(site.host_backup_folder(slow)) if e.startswith(core.EXPORT_PREFIX)]
    print(f"link down: cut at {cut_at / MIB:.1f} of {db_bytes / MIB:.1f} MiB; first run {first.seconds:.1f} s "
          f"({slow_line!r}); second run {second.seconds:.1f} s archived {archived}; staging folders left on the "
          f"host by the cut run: {staging}")


# --------------------------------------------------------------------------- broken and hostile hosts

LOCKER_SCRIPT = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")  # rollback-journal database: no reader gets in until this ends
open(sys.argv[2], "w").close()
time.sleep(600)
"""

# A host whose Python lies: it runs the real interpreter and rewrites the answer that stages the pull
# (sqlite_backup's, with transfers and staging_dir).
LYING_PYTHON = r'''#!{python}
import json, subprocess, sys
MODE = {mode!r}
proc = subprocess.run([{python!r}, *sys.argv[1:]], stdin=sys.stdin.buffer, capture_output=True)
out = proc.stdout
try:
    answer = json.loads(out)
except ValueError:
    answer = None
if isinstance(answer, dict) and answer.get("transfers") and "staging_dir" in answer:
    if MODE == "not-json":
        out = b'{{"transfers": [{{"file": "gym_backup_'
    else:
        for transfer in answer["transfers"]:
            if MODE == "traversal":
                transfer["file"] = "../../../../../escaped/" + transfer["file"]
            elif MODE == "huge-manifest":
                transfer["manifest"]["padding"] = "x" * (5 << 20)
        out = json.dumps(answer).encode()
sys.stdout.buffer.write(out)
sys.stderr.buffer.write(proc.stderr)
sys.exit(proc.returncode)
'''

# The archive of one host on a tmpfs too small for its pull, mounted for this run only (a private
# mount namespace of ansible-playbook); what it holds afterwards is listed before the mount goes.
SMALL_ARCHIVE_SCRIPT = r"""
archive=$1; listing=$2; shift 2
mount -t tmpfs -o size=8m,mode=0700 tmpfs "$archive" || exit 99
"$@"; rc=$?
find "$archive" -mindepth 1 -printf '%P\t%y\t%s\n' > "$listing"
exit $rc
"""


def forge_backup_folder(host: Host, template: str) -> list[str]:
    """Entries named like backups that are not: a symlink to /etc/passwd, manifests naming other files,
    a 5 MB manifest, invalid JSON, a manifest that is a symlink. Returns their names."""
    folder = host.path(BACKUP_DIR)
    manifest = json.loads((folder / (template + ".json")).read_text())
    forged = {}
    for day, how in enumerate(["symlink", "dotdot", "huge", "not-json", "manifest-symlink", "absolute"], start=1):
        name = "gym_backup_202001%02d_000000.db" % day
        if how == "symlink":
            (folder / name).symlink_to("/etc/passwd")
        else:
            shutil.copyfile(folder / template, folder / name)
        text = json.dumps(dict(manifest, file=name))
        if how == "dotdot":
            text = json.dumps(dict(manifest, file="../../x.db"))
        elif how == "absolute":
            text = json.dumps(dict(manifest, file="/etc/passwd"))
        elif how == "huge":
            text = json.dumps(dict(manifest, file=name, padding="x" * (5 << 20)))
        elif how == "not-json":
            text = '{"file": "%s", ' % name
        if how == "manifest-symlink":
            (folder / (name + ".json")).symlink_to(folder / (template + ".json"))
        else:
            (folder / (name + ".json")).write_text(text)
        forged[name] = how
    return sorted(forged)


@pytest.mark.integration
def test_one_run_with_broken_and_hostile_hosts_fails_only_those_and_writes_nothing_outside(
        make_fleet: Callable[..., Fleet], tmp_path: Path) -> None:
    """pi1 healthy; pi2 backup folder full; pi3 database locked; pi4 forged entries in its folder;
    pi5-pi7 lying Pythons (path traversal, 5 MB manifest, not JSON); pi8 archive too small."""
    fleet = make_fleet(8)
    hosts = {host.name: host for host in fleet}
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    (ctl / "operator-notes.txt").write_text("the controller's own files beside the archive\n")
    site = Site(fleet, ctl)
    small = ctl / "small-archive"
    small.mkdir()
    listing = tmp_path / "small-archive.listing"
    sizes = {"pi2": 4, "pi8": 12}
    for index, (name, host) in enumerate(hosts.items()):
        create_demo_db(host.path(DB_PATH), members=40, size_mb=sizes.get(name, 0), seed=index + 1,
                       journal_mode="delete" if name == "pi3" else "wal")
    db_sha = {name: sha256_of(host.path(DB_PATH)) for name, host in hosts.items()}
    extra: dict[str, dict[str, Any]] = {"pi3": {"sqlite_backup_busy_timeout_ms": 1500},
                                        "pi8": {"sqlite_archive_dir": str(small)}}

    # pi2: its backup folder is a 28 MiB tmpfs holding one older backup ...
    full = hosts["pi2"]
    full.run(["mount", "-t", "tmpfs", "-o", "size=28m,mode=0700", "tmpfs", BACKUP_DIR], check=True)
    full_folder = host_view(full, BACKUP_DIR)
    code, older = run_core_in_host(full, SNAPSHOT_SCRIPT, DB_PATH, BACKUP_DIR, DB_NAME)
    assert code == 0 and older["ok"], older
    older_sha = sha256_of(full_folder / older["file"])
    # ... and another process fills it right after a snapshot's free-space check: ENOSPC mid-copy.
    code, enospc = run_core_in_host(full, FILL_AFTER_CHECK_SCRIPT, DB_PATH, BACKUP_DIR, DB_NAME)
    assert code == 3 and enospc["kind"] == core.KIND_NO_SPACE, enospc
    # the pinned copy's kernel copy meets ENOSPC (SQLite's backup API would say "database or disk is full")
    assert enospc["msg"].startswith("no space left while copying %s: [Errno 28]" % DB_PATH), enospc
    after_enospc = folder_entries(full_folder)
    assert after_enospc == sorted([core.LOCK_FILE, older["file"], older["file"] + ".json",
                                   older["file"] + ".sha256", "filler.bin"]), after_enospc
    assert core.free_bytes(str(full_folder)) < MIB

    # pi3: the app holds an exclusive lock for longer than the busy timeout.
    locked = hosts["pi3"]
    code, earlier = run_core_in_host(locked, SNAPSHOT_SCRIPT, DB_PATH, BACKUP_DIR, DB_NAME)
    assert code == 0, earlier
    ready = locked.path("/srv/app/locker.ready")
    locker = locked.popen([locked.python, "-c", LOCKER_SCRIPT, DB_PATH, "/srv/app/locker.ready"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(ready.exists, 30, "the locker")
    locked_before = tree_state(locked.path(BACKUP_DIR))

    # pi4: forged entries beside one real backup.
    forger = hosts["pi4"]
    code, real = run_core_in_host(forger, SNAPSHOT_SCRIPT, DB_PATH, BACKUP_DIR, DB_NAME)
    assert code == 0, real
    forged = forge_backup_folder(forger, real["file"])
    forged_before = {k: v for k, v in tree_state(forger.path(BACKUP_DIR)).items() if k.split(".db")[0] + ".db"
                     in forged}

    # pi5-pi7: lying Pythons.
    for name, mode in (("pi5", "traversal"), ("pi6", "huge-manifest"), ("pi7", "not-json")):
        liar = hosts[name].path("/opt/sqlite-backup/lying-python")
        liar.write_text(LYING_PYTHON.format(python=hosts[name].python, mode=mode))
        liar.chmod(0o755)
        extra[name] = {"ansible_python_interpreter": "/opt/sqlite-backup/lying-python"}

    inventory = site.inventory(host_vars=extra)
    outside_before = tree_outside(ctl, site.archive, small)
    try:
        run = site.finish(site.start(
            "backup.yml", inventory=inventory,
            wrapper=["unshare", "--mount", "--propagation", "private", "sh", "-c", SMALL_ARCHIVE_SCRIPT, "sh",
                     str(small), str(listing)]))
    finally:
        locker.kill()
        locker.wait()

    assert run.rc not in (0, 99), run.explain()
    expected_failures = {
        "pi2": [f"not enough free space in {BACKUP_DIR} for a snapshot of {DB_PATH}: need ", " available"],
        "pi3": [f"database is locked while starting a read transaction on {DB_PATH}", "busy timeout exceeded"],
        "pi5": ["the host offered an unacceptable transfer #1: it names file '../../../../../escaped/gym_backup_"],
        "pi6": ["the host offered an unacceptable transfer #1", "bytes, over the 1048576 limit"],
        "pi7": ["Module result deserialization failed"],  # the backup's answer, which stages the pull
        "pi8": [f"not enough free space in {small} for the pull of 1 backup(s) from pi8 (",
                "bytes to fetch and rebuild): need ", " available"],
    }
    assert "%d failed (%s)" % (len(expected_failures), ", ".join(sorted(expected_failures))) in run.output, \
        run.explain()
    for name, parts in expected_failures.items():
        line = line_of(run, name)
        assert "FAILED" in line and all(part in line for part in parts), (name, line)
    for name in ("pi1", "pi4"):
        assert line_of(run, name).endswith("verified on host and in archive"), line_of(run, name)
    assert "Traceback" not in run.output

    # Nothing written outside the archives; nothing with a final name where a host failed.
    assert tree_outside(ctl, site.archive, small) == outside_before
    assert not list(tmp_path.rglob("escaped")), "a file escaped the archive"
    for name in ("pi2", "pi3", "pi5", "pi6", "pi7"):
        entries = folder_entries(site.archive_folder(name))
        assert final_names(entries) == [] and not [e for e in entries if e.startswith(INCOMING)], (name, entries)
    small_entries = listing.read_text().splitlines()
    assert small_entries == [], small_entries  # refused before the folders the files go to were made
    assert private_tree_problems(site.archive) == []

    # pi2: clear refusal up front, older backup intact, no partial file, live database untouched.
    assert folder_entries(full_folder) == after_enospc
    assert sha256_of(full_folder / older["file"]) == older_sha
    code, checked = run_core_in_host(full, VERIFY_SCRIPT, BACKUP_DIR + "/" + older["file"])  # SQLite resolves
    assert code == 0 and checked["ok"], checked  # /proc/<pid>/root to "/": read the tmpfs from inside
    # pi3: the lock held past the timeout changed nothing.
    assert tree_state(locked.path(BACKUP_DIR)) == locked_before
    # pi4: the forged entries were never offered, and are still there untouched.
    archived = backups_in(site.archive_folder("pi4"))
    assert real["file"] in archived and len(archived) == 2 and not set(archived) & set(forged), archived
    assert {k: v for k, v in tree_state(forger.path(BACKUP_DIR)).items() if k.split(".db")[0] + ".db"
            in forged} == forged_before
    for name, host in hosts.items():
        assert sha256_of(host.path(DB_PATH)) == db_sha[name], f"{name}: the live database changed"

    print(f"broken and hostile hosts: run {run.seconds:.1f} s; pi7: {line_of(run, 'pi7')}")


# --------------------------------------------------------------------------- concurrency

RUNNER_DIR = "/opt/sqlite-backup"
RETENTION = {"keep_last": 3, "keep_days": 7, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}


class FolderWatch:
    """Lists a folder every millisecond in a thread: what was there, and when."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.samples: list[frozenset[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(frozenset(os.listdir(self.folder)))
            except OSError:
                pass
            time.sleep(0.001)

    def stop(self) -> list[frozenset[str]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def install_runner(host: Host) -> None:
    """The runner as provision.yml installs it (tests/integration/test_provision.py runs the role itself)."""
    opt = host.path(RUNNER_DIR)
    shutil.copy2(REPO / "runner" / "sqlite_backup_runner.py", opt / "sqlite_backup_runner.py")
    install_core(opt)
    config = {"host": host.name, "backup_dir": BACKUP_DIR, "databases": [{"name": DB_NAME, "path": DB_PATH}],
              "retention": dict(RETENTION, keep_label_days={}), "timezone": "UTC", "lock_timeout": 120,
              "busy_timeout_ms": 5000, "log_file": "/var/log/sqlite-backup/backup.log", "metrics_dir": ""}
    (opt / "config.json").write_text(json.dumps(config))
    (opt / "config.json").chmod(0o600)


def clone_old_backups(folder: Path, template: str, days_ago: Sequence[int]) -> list[str]:
    """Finished backups of our own making, dated days ago (the template's bytes under older names)."""
    manifest = json.loads((folder / (template + ".json")).read_text())
    now = core.utcnow().replace(microsecond=0)
    made = []
    for days in days_ago:
        created = now - dt.timedelta(days=days)
        name = core.backup_filename(DB_NAME, created)
        os.link(folder / template, folder / name)
        (folder / (name + ".sha256")).write_text("%s  %s\n" % (manifest["sha256"], name))
        (folder / (name + ".json")).write_text(json.dumps(dict(manifest, file=name, created=core.iso_utc(created))))
        for entry in (name + ".sha256", name + ".json"):
            (folder / entry).chmod(0o600)
        made.append(name)
    return made


@pytest.mark.integration
def test_cron_runner_ansible_backup_and_prune_started_together_serialise_on_the_lock(
        make_fleet: Callable[..., Fleet], tmp_path: Path) -> None:
    import fcntl

    fleet = make_fleet(1)
    host = fleet["pi1"]
    site = Site(fleet, tmp_path)
    create_demo_db(host.path(DB_PATH), members=100, size_mb=32, seed=6)
    install_runner(host)
    folder = host.path(BACKUP_DIR)
    code, first = run_core_in_host(host, SNAPSHOT_SCRIPT, DB_PATH, BACKUP_DIR, DB_NAME)
    assert code == 0, first
    old = clone_old_backups(folder, first["file"], range(40, 50))
    inventory = site.inventory(host_vars={host.name: {
        **{"sqlite_backup_" + rule: value for rule, value in RETENTION.items()}, "sqlite_backup_timezone": "UTC"}})
    runner = [host.python, RUNNER_DIR + "/sqlite_backup_runner.py", "--config", RUNNER_DIR + "/config.json", "--json"]
    lock_path = folder / core.LOCK_FILE

    # Hold the folder's lock, start all three, wait until all three wait for it, then let go.
    held = os.open(lock_path, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    watch = FolderWatch(folder)
    try:
        playbook = site.start("backup.yml", inventory=inventory)
        cron_backup = host.popen([*runner, "backup", "--cleanup"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        prune = host.popen([*runner, "prune"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        waiting = wait_for(lambda: (lambda found: found if len(found) >= 3 else None)(
                           core.processes_holding([str(lock_path)])), 180,
                           "the runner, the prune and Ansible's snapshot to wait for the lock", poll=0.05)
    finally:
        fcntl.flock(held, fcntl.LOCK_UN)
        os.close(held)
    cron_out, cron_err = cron_backup.communicate(timeout=300)
    prune_out, prune_err = prune.communicate(timeout=300)
    run = site.finish(playbook)
    samples = watch.stop()

    assert cron_backup.returncode == 0, cron_out + cron_err
    assert prune.returncode == 0, prune_out + prune_err
    assert run.rc == 0, run.explain()
    cron_file = json.loads(cron_out)["results"][0]["file"]
    ansible_file = rows_by_host(run_records(site.archive, "backup")[-1])[host.name]["backup"]
    assert cron_file != ansible_file

    # Serialised: never two snapshots' temporary files at once, never a deletion during a snapshot.
    temporaries = [{e for e in sample if TMP_SNAPSHOT.match(e)} for sample in samples]
    assert max(len(t) for t in temporaries) == 1, "two snapshots at once"
    assert len(set().union(*temporaries)) >= 2, "both snapshots were seen at work"
    for before, after, tmp_before, tmp_after in zip(samples, samples[1:], temporaries, temporaries[1:]):
        if tmp_before & tmp_after:  # the same snapshot held the lock from one sample to the next
            gone = {e for e in before - after if core.parse_backup_filename(e)}
            assert not gone, f"{gone} deleted while a snapshot held the lock"

    # Nothing lost, nothing half-deleted.
    entries = folder_entries(folder)
    seen = {e for sample in samples for e in sample if core.parse_backup_filename(e)}
    for backup in seen | {first["file"], cron_file, ansible_file}:
        present = [suffix for suffix in ("", ".sha256", ".json") if backup + suffix in entries]
        assert present in ([], ["", ".sha256", ".json"]), (backup, present)
    listing = core.list_backups(str(folder), DB_NAME)
    assert listing["unfinished"] == [] and listing["invalid"] == [], listing
    kept = sorted(b["file"] for b in listing["backups"])
    assert kept == sorted([first["file"], cron_file, ansible_file]), kept
    assert not set(old) & set(entries)
    for backup in kept:
        assert core.verify_backup(str(folder / backup), integrity="quick")["ok"], backup
    assert ansible_file in backups_in(site.archive_folder(host.name))
    assert sha256sum_check(site.archive_folder(host.name)).returncode == 0
    print(f"concurrency: {len(waiting)} processes waited on the lock ({waiting}); {len(samples)} listings; "
          f"{len(set().union(*temporaries))} snapshots, one at a time; playbook {run.seconds:.1f} s")


# --------------------------------------------------------------------------- corrupted archive backups


def corrupt(backup: Path, how: str) -> None:
    manifest_path, sum_path = Path(str(backup) + ".json"), Path(str(backup) + ".sha256")
    if how == "flipped-byte":
        flip_byte(backup, mask=0x01)
    elif how == "truncated":
        os.truncate(backup, backup.stat().st_size // 2)
    elif how == "manifest-missing":
        manifest_path.unlink()
    elif how == "manifest-rows-edited":  # the counts lie, the checksums still match the file
        manifest = json.loads(manifest_path.read_text())
        table = sorted(manifest["tables"])[0]
        manifest["tables"][table] += 1
        manifest_path.write_text(json.dumps(manifest))
    elif how == "manifest-sha-edited":
        manifest = json.loads(manifest_path.read_text())
        manifest["sha256"] = hashlib.sha256(b"another file").hexdigest()
        manifest_path.write_text(json.dumps(manifest))
    elif how == "manifest-not-json":
        manifest_path.write_text(manifest_path.read_text()[:-40])
    elif how == "checksum-file-missing":
        sum_path.unlink()
    else:
        raise ValueError(how)


# corruption -> what each refusal must say besides the file's name
CORRUPTIONS = {
    "flipped-byte": "checksum",
    "truncated": "checksum",
    "manifest-missing": "has no manifest",
    "manifest-rows-edited": "rows, manifest says",
    "manifest-sha-edited": "checksum",
    "manifest-not-json": "is not valid JSON",
    "checksum-file-missing": "has no checksum file",
}
TOOLS = ("sqlite_verify", "sqlite_restore", "sqlite_drill")
CORRUPTION_CASES = [(how, tool) for how in CORRUPTIONS for tool in TOOLS]


@pytest.fixture(scope="module")
def corruption_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    """Per case an archive <host>/<name>/ with two good backups, the newest then corrupted, and an app
    database to restore onto; every case run through Ansible in one playbook."""
    root = tmp_path_factory.mktemp("corruption")
    cases, folders = [], {}
    for how, tool in CORRUPTION_CASES:
        folder = root / f"{how}-{tool}"
        archive = folder / "archive" / "pi1" / DB_NAME
        db = make_database(Path(folder / "app").mkdir(parents=True) or folder / "app" / "gym.db", rows=80)
        for _attempt in range(5):  # both in one second (the newest named _1): the names alone must order them
            shutil.rmtree(archive, ignore_errors=True)
            first = core.snapshot(str(db), str(archive), DB_NAME, source_host="pi1")["backup"]
            conn = sqlite3.connect(db)
            conn.execute("INSERT INTO members (name, note) VALUES ('late', 'x')")
            conn.commit()
            conn.close()
            newest = Path(core.snapshot(str(db), str(archive), DB_NAME, source_host="pi1")["backup"])
            if newest.name.endswith("_1.db"):
                break
        assert core.verify_backup(first)["ok"] and core.verify_backup(str(newest))["ok"]
        corrupt(newest, how)
        (folder / "scratch").mkdir()
        args = {"sqlite_verify": {"path": str(newest)},
                "sqlite_restore": {"path": str(db), "backup": str(newest)},
                "sqlite_drill": {"archive_dir": str(folder / "archive"), "scratch_dir": str(folder / "scratch")}}
        cases.append((tool, args[tool]))
        folders[(how, tool)] = (folder, newest.name)

    def state(folder: Path) -> dict[str, Any]:  # the drill's scratch folder is its own: only empty again
        return {k: v for k, v in tree_state(folder).items() if k != "scratch"}

    before = {case: state(folder) for case, (folder, _) in folders.items()}
    results = run_cases(cases, CONTROLLER_PYTHON, tmp_dir=root)
    for folder, _ in folders.values():
        assert folder_entries(folder / "scratch") == [], folder
    return {case: (result, folders[case][1], before[case], state(folders[case][0]))
            for case, result in zip(folders, results)}


@pytest.mark.parametrize(("how", "tool"), CORRUPTION_CASES, ids=["%s-%s" % case for case in CORRUPTION_CASES])
def test_a_corrupted_archived_backup_is_refused_by_verify_restore_and_drill(
        corruption_runs: dict[tuple[str, str], Any], how: str, tool: str) -> None:
    result, file, before, after = corruption_runs[(how, tool)]
    assert result.get("failed") is True, result
    assert result["kind"] == "corrupt", result
    assert file in result["msg"], result["msg"]
    problems = result["msg"] if tool != "sqlite_drill" else json.dumps(result["results"])
    assert CORRUPTIONS[how] in problems, problems
    assert "Traceback" not in result.output and "module_stderr" not in result
    assert result.get("changed", False) is False
    assert after == before, "refusing changed files"


# --------------------------------------------------------------------------- hostile input to sqlite_archive

# id, args ({archive}, {incoming}, {manifest}, {transfer}: filled per case), msg substring, kind
HOSTILE_ARCHIVE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("import-file-dotdot", {"manifest": {"file": "../../x.db"}}, "names an unacceptable file '../../x.db'", "corrupt"),
    ("import-file-absolute", {"manifest": {"file": "/tmp/x.db"}}, "names an unacceptable file '/tmp/x.db'",
     "corrupt"),
    ("import-file-not-a-backup", {"manifest": {"file": "passwd"}}, "names an unacceptable file 'passwd'", "corrupt"),
    ("import-huge-manifest", {"manifest": {"padding": "x" * (5 << 20)}}, "bytes, over the 1048576 limit", "corrupt"),
    ("import-malformed-sha", {"manifest": {"sha256": "abc"}}, "sha256 missing or malformed", "corrupt"),
    ("import-other-database", {"manifest": {"name": "other"}}, "does not match the file name", "corrupt"),
    ("import-lying-sha", {"manifest": {"sha256": "0" * 64}}, "does not match the host's manifest", "corrupt"),
    ("import-incoming-outside", {"incoming": "/etc/passwd"}, "must lie in", "bad_input"),
    ("import-incoming-symlink", {"incoming": "{symlink}"}, "is missing or not a regular file", "bad_input"),
    ("import-delta-base-dotdot", {"mode": "delta", "base": "../../gym_backup_20200101_000000.db"},
     "is not a backup file name", "bad_input"),
    ("import-host-dotdot", {"host": "../evil"}, "host '../evil' is not allowed", "bad_input"),
    ("info-name-dotdot", {"name": "../../etc"}, "name '../../etc' is not allowed", "bad_input"),
    ("prepare-file-dotdot", {"transfer": {"file": "../../../escaped/gym_backup_20200101_000000.db"}},
     "it names file '../../../escaped/gym_backup_20200101_000000.db' but its manifest describes", "corrupt"),
    ("prepare-name-dotdot", {"transfer": {"name": "../../etc"}}, "database name '../../etc' is not allowed",
     "corrupt"),
    ("prepare-name-not-configured", {"transfer": {"name": "shop"}}, "'shop' is not one this host backs up",
     "corrupt"),
    ("prepare-mode-unknown", {"transfer": {"mode": "copy"}}, "mode 'copy' is neither full nor delta", "corrupt"),
    ("prepare-base-dotdot", {"transfer": {"mode": "delta", "base": "../gym_backup_20200101_000000.db"}},
     "is not a backup of gym", "corrupt"),
    ("prepare-negative-bytes", {"transfer": {"bytes": -1}}, "bytes -1 of", "corrupt"),
    ("prepare-size-lies", {"transfer": {"size_bytes": 1}}, "is not the manifest's", "corrupt"),
    ("prepare-relative-fetch-path", {"transfer": {"fetch_path": "etc/shadow"}}, "fetch_path must be an absolute path",
     "corrupt"),
    ("prepare-offered-twice", {"transfers": "twice"}, "is offered twice", "corrupt"),
    ("prepare-huge-manifest", {"transfer": {"manifest": {"padding": "x" * (5 << 20)}}},
     "bytes, over the 1048576 limit", "corrupt"),
    ("prepare-not-a-mapping", {"transfers": ["gym_backup_20200101_000000.db"]}, "#1: not a mapping", "corrupt"),
]


@pytest.fixture(scope="module")
def hostile_archive_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each case in its own controller folder: <case>/archive (the archive) beside <case>/outside
    (the controller's own files); sqlite_archive called directly, all cases in one playbook."""
    root = tmp_path_factory.mktemp("hostile-archive")
    host_side = root / "host"
    db = make_database(Path(host_side).mkdir() or host_side / "gym.db", rows=60)
    taken = core.snapshot(str(db), str(host_side / "backups"), DB_NAME, source_host="pi1")
    manifest = taken["manifest"]
    passwd_sha = sha256_of(Path("/etc/passwd"))
    cases, folders = [], {}
    for case_id, changes, _msg, _kind in HOSTILE_ARCHIVE_CASES:
        folder = root / case_id
        archive, db_dir = folder / "archive", folder / "archive" / "pi1" / DB_NAME
        folder.mkdir()
        for level in (archive, archive / "pi1", db_dir):  # private, as the pull makes them
            level.mkdir(mode=0o700)
        (folder / "outside").mkdir()
        (folder / "outside" / "notes.txt").write_text("the controller's own file\n")
        incoming = db_dir / (INCOMING + taken["file"])
        shutil.copyfile(taken["backup"], incoming)
        (db_dir / (INCOMING + "link")).symlink_to("/etc/passwd")
        transfer = {"file": taken["file"], "name": DB_NAME, "mode": "full", "base": None,
                    "fetch_path": "/var/backups/sqlite/.sqlite-export.x/" + taken["file"],
                    "bytes": manifest["size_bytes"], "size_bytes": manifest["size_bytes"], "manifest": manifest}
        transfer.update({k: v for k, v in changes.get("transfer", {}).items() if k != "manifest"})
        transfer["manifest"] = dict(manifest, **changes.get("transfer", {}).get("manifest", {}))
        if "transfer" in changes or "transfers" in changes:
            transfers = changes.get("transfers", [transfer])
            transfers = [transfer, transfer] if transfers == "twice" else transfers
            args = {"archive_dir": str(archive), "host": "pi1", "state": "prepare", "transfers": transfers,
                    "databases": [DB_NAME]}
        else:
            args = {"archive_dir": str(archive), "host": changes.get("host", "pi1"), "name": DB_NAME,
                    "state": "import", "incoming": str(incoming), "manifest": dict(manifest, **changes.get("manifest",
                                                                                                          {}))}
            args.update({k: v for k, v in changes.items() if k in ("incoming", "mode", "base", "state", "name")})
            if args["incoming"] == "{symlink}":
                args["incoming"] = str(db_dir / (INCOMING + "link"))
        if case_id.startswith("info-"):
            cases.append(("sqlite_archive_info", {k: args[k] for k in ("archive_dir", "host", "name")}))
        else:
            cases.append(("sqlite_archive", args))
        folders[case_id] = (folder, incoming)
    before = {case_id: tree_outside(folder, folder / "archive") for case_id, (folder, _) in folders.items()}
    results = run_cases(cases, CONTROLLER_PYTHON, tmp_dir=root)
    outcome = {}
    for (case_id, (folder, incoming)), result in zip(folders.items(), results):
        archive_files = [str(p.relative_to(folder)) for p in (folder / "archive").rglob("*") if p.is_file()]
        outcome[case_id] = (result, before[case_id], tree_outside(folder, folder / "archive"), archive_files,
                            incoming.exists())
    assert sha256_of(Path("/etc/passwd")) == passwd_sha
    return outcome


@pytest.mark.parametrize(("case_id", "message", "kind"), [(c[0], c[2], c[3]) for c in HOSTILE_ARCHIVE_CASES],
                         ids=[c[0] for c in HOSTILE_ARCHIVE_CASES])
def test_hostile_manifests_and_transfers_are_refused_and_nothing_is_written_outside_the_archive(
        hostile_archive_runs: dict[str, Any], case_id: str, message: str, kind: str) -> None:
    result, before, after, archive_files, incoming_left = hostile_archive_runs[case_id]
    assert result.get("failed") is True, result
    assert message in result["msg"], result["msg"]
    assert result["kind"] == kind, result
    assert "Traceback" not in result.output and "module_stderr" not in result
    assert after == before, "something was written outside the archive"
    assert final_names([Path(f).name for f in archive_files]) == [], archive_files
    if case_id.startswith("import-") and case_id not in ("import-incoming-outside", "import-incoming-symlink",
                                                         "import-host-dotdot"):
        assert not incoming_left, "a refused import must consume its incoming file"


# --------------------------------------------------------------------------- a year of retention runs

BERLIN = "Europe/Berlin"
YEAR_START = dt.datetime(2025, 1, 1, 2, 0, tzinfo=dt.timezone.utc)  # spans both of Berlin's DST changes


@pytest.fixture(scope="module")
def retention_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retention-template")
    db = make_database(root / "app.db", rows=20)
    return Path(core.snapshot(str(db), str(root / "backups"), "app")["backup"])


def add_backup(template: Path, folder: Path, name: str, created: dt.datetime, verified: bool,
               label: str | None) -> str:
    """A finished backup as the commit protocol leaves it, dated ``created`` (the Pi's clock)."""
    seq = 0
    while (folder / core.backup_filename(name, created, seq)).exists():
        seq += 1
    file = core.backup_filename(name, created, seq)
    os.link(template, folder / file)
    manifest = json.loads(Path(str(template) + ".json").read_text())
    manifest.update(file=file, name=name, created=core.iso_utc(created), verified=verified, label=label)
    (folder / (file + ".sha256")).write_text("%s  %s\n" % (manifest["sha256"], file))
    (folder / (file + ".json")).write_text(json.dumps(manifest))
    return file


def light_state(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {e: (st.st_ino, st.st_size, st.st_mtime_ns) for e in os.listdir(folder)
            for st in [os.lstat(folder / e)]}


@st.composite
def years(draw: Any) -> dict[str, Any]:
    policy = {"keep_last": draw(st.integers(1, 5)), "keep_days": draw(st.integers(0, 10)),
              "keep_daily": draw(st.integers(0, 10)), "keep_weekly": draw(st.integers(0, 6)),
              "keep_monthly": draw(st.integers(0, 4)), "keep_label_days": {"pre-upgrade": draw(st.integers(0, 60))}}
    jump_day = draw(st.integers(20, 340))
    return {
        "policy": policy,
        "seed": draw(st.integers(0, 2**32 - 1)),
        "gap_chance": draw(st.sampled_from([0.0, 0.1, 0.3])),
        "skew_minutes": draw(st.integers(0, 90)),  # the Pi's clock wanders by up to this much
        "jump": (jump_day, draw(st.integers(1, 20)), dt.timedelta(days=draw(st.integers(1, 400)))),
    }


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(years())
def test_a_year_of_daily_retention_runs_on_a_real_folder_never_loses_what_it_must_keep(
        retention_template: Path, year: dict[str, Any]) -> None:
    """Daily runs for a year at 03:00 Berlin time (DST both ways), with gaps, clock skew, a clock that
    jumps back for days (a Pi without RTC), unverified and labelled backups, another database's backups
    and files the tool did not make; each day a check-mode run, then the real run."""
    rng = random.Random(year["seed"])
    policy = year["policy"]
    tz = core.resolve_timezone(BERLIN)
    jump_day, jump_days, jump = year["jump"]
    folder = Path(retention_template.parent.parent / ("year-%d" % year["seed"]))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    foreign = {"notes.txt": b"the admin's notes\n", "app_backup_20250105_000000.db": b"named like a backup\n",
               "app_backup_20250106_000000.db.bak": b"a renamed copy\n", ".hidden": b"dot\n"}
    for entry, content in foreign.items():
        (folder / entry).write_bytes(content)
    others = [add_backup(retention_template, folder, "other", YEAR_START - dt.timedelta(days=d), True, None)
              for d in (400, 30)]
    runs = deleted_total = 0
    try:
        for day in range(365):
            true_now = YEAR_START + dt.timedelta(days=day, minutes=rng.randint(-year["skew_minutes"],
                                                                               year["skew_minutes"]))
            clock = true_now - jump if jump_day <= day < jump_day + jump_days else true_now
            if rng.random() < year["gap_chance"]:
                continue  # the Pi was off
            add_backup(retention_template, folder, "app", clock, verified=rng.random() > 0.08,
                       label="pre-upgrade" if rng.random() < 0.05 else None)
            listing = core.list_backups(str(folder), "app")["backups"]
            newest = max(b["created"] for b in listing)
            verified = [b for b in listing if b["verified"]]
            newest_verified = max(verified, key=lambda b: (b["created"], b["file"]))["file"] if verified else None
            before = light_state(folder)

            planned = core.apply_retention(str(folder), "app", policy, now=clock, timezone=BERLIN, check_mode=True)
            assert light_state(folder) == before, "check mode touched the folder"
            done = core.apply_retention(str(folder), "app", policy, now=clock, timezone=BERLIN)
            runs += 1
            after = light_state(folder)
            deleted = set(done["deleted"])
            deleted_total += len(deleted)
            assert sorted(deleted) == sorted(planned["deleted"]), "check mode said otherwise"
            assert set(before) - set(after) == {f + s for f in deleted for s in ("", ".sha256", ".json")}
            assert set(after) - set(before) <= {core.LOCK_FILE}
            assert deleted <= {b["file"] for b in listing}, "deleted what is not one of its backups"
            for entry, content in foreign.items():
                assert (folder / entry).read_bytes() == content
            assert all((folder / o).exists() for o in others)
            if clock < newest:
                assert not deleted, "deleted while the clock is behind the newest backup"
            if newest_verified:
                assert newest_verified not in deleted
            kept = [b for b in listing if b["file"] not in deleted]
            counted = sorted((b for b in listing if b["verified"] and b["label"] is None),
                             key=lambda b: (b["created"], b["file"]), reverse=True)
            assert not deleted & {b["file"] for b in counted[: policy["keep_last"]]}
            if policy["keep_days"]:
                assert not deleted & {b["file"] for b in listing if b["label"] is None
                                      and b["created"] >= clock - dt.timedelta(days=policy["keep_days"])}
            days_seen: list[str] = []
            for b in counted:
                bucket = b["created"].astimezone(tz).strftime("%Y-%m-%d")
                if bucket not in days_seen:
                    days_seen.append(bucket)
                    if len(days_seen) <= policy["keep_daily"]:
                        assert b["file"] not in deleted, ("keep_daily", bucket)
            labelled_days = policy["keep_label_days"]["pre-upgrade"]
            assert not deleted & {b["file"] for b in listing if b["label"] == "pre-upgrade"
                                  and clock - b["created"] <= dt.timedelta(days=labelled_days)}
            if newest_verified:
                newest_verified_created = next(b["created"] for b in listing if b["file"] == newest_verified)
                assert not deleted & {b["file"] for b in listing if not b["verified"]
                                      and b["created"] > newest_verified_created}
            assert kept, "a run left no backup"
        assert runs > 200 and deleted_total > 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
