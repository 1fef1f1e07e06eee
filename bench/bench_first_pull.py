"""First full pull of a big database on an unshaped link: backup.yml against plain copies.

One test-fleet host (tests/fleet.py: its own network namespace and sshd), a WAL database
padded with incompressible photos, nothing shaped. Each round, in rotating order:

  ours            backup.yml into an empty archive (Ansible's ssh options from ansible.cfg, no ``-C``);
                  the host has the on-host runner (roles/sqlite_runner), so its side runs through it
  ours_module     the same with ``-e sqlite_backup_use_runner=false``: the module shipped to the host
  ours_C          the same with ``-C`` (ssh compression) added to the ssh options, as ansible.cfg once had
  scp / scp_C     scp of the host's newest backup, without / with ``-C``
  sftp / sftp_C   sftp ``get`` of it (the transfer Ansible's fetch uses), without / with ``-C``
  ssh_cat         ``ssh host cat file > file`` (the stream sqlite3_rsync's first pull is, in effect)
  rsync           rsync over ssh into an empty folder (whole file)
  sqlite3_rsync   SQLite's own sqlite3_rsync of the host's live database into an empty folder (the
                  replica's integrity and row counts checked afterwards, untimed); only where the
                  binary is (bench/build_sqlite3_rsync.sh builds it; see bench/sqlite3_rsync_anchor.py)

Where ours spends its time comes from ansible.posix's profile_tasks (per task), and from the
controller's import step measured alone on the pulled file: sha256, integrity_check (full and
quick), row counts.

    bench/bench_first_pull.py [MIB [ROUNDS]]   (default 256 MiB, 3 rounds; writes
                                                bench/results/first_pull.json and .md)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
for _folder in ("bench", "module_utils", "tools", "tests", "tests/integration"):
    if str(_REPO / _folder) not in sys.path:
        sys.path.insert(0, str(_REPO / _folder))

import demo_db  # noqa: E402
import sqlite3_rsync_anchor  # noqa: E402
import sqlite_fleet as core  # noqa: E402
from bench_cost import install_runner  # noqa: E402
from common import MIB, REPO, RESULTS_DIR, RSYNC, Config, load_average, median, rotate, rounded, workdir  # noqa: E402
from fleet import Fleet  # noqa: E402
from integration_helpers import ANSIBLE_PLAYBOOK, BACKUP_DIR, DB_NAME, DB_PATH  # noqa: E402

PLAYBOOK_TIMEOUT = 1800
TASK_LINE = re.compile(r"^(?P<task>.+?) -+ (?P<seconds>\d+\.\d+)s$")


def ansible_ssh_args() -> str:
    """The ssh_args of the repository's ansible.cfg."""
    for line in (REPO / "ansible.cfg").read_text().splitlines():
        if line.strip().startswith("ssh_args"):
            return line.split("=", 1)[1].strip()
    return ""


class Pull:
    def __init__(self, config: Config, fleet: Fleet, tmp: Path) -> None:
        self.config = config
        self.fleet = fleet
        self.host = fleet[0]
        self.tmp = tmp
        self.count = 0
        binary = sqlite3_rsync_anchor.find()
        self.sqlite3_rsync = sqlite3_rsync_anchor.Anchor(binary, fleet, tmp) if binary else None

    def ssh_base(self, compress: bool) -> list[str]:
        return ["-F", "/dev/null", "-i", str(self.fleet.client_key), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", "UserKnownHostsFile=%s" % self.fleet.known_hosts, "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "User=root"] + (["-C"] if compress else [])

    def newest_host_backup(self) -> str:
        folder = self.host.path(BACKUP_DIR)
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".db") and "_backup_" in p.name)
        return os.path.join(BACKUP_DIR, names[-1])

    def fresh(self) -> Path:
        self.count += 1
        path = self.tmp / ("run%d" % self.count)
        path.mkdir()
        return path

    def timed(self, label: str, argv: list[str], env: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        rx0, tx0 = self.host.link_bytes()
        started = time.perf_counter()
        kw.setdefault("stdout", subprocess.PIPE)
        proc = subprocess.run(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, timeout=PLAYBOOK_TIMEOUT,
                              check=False, **kw)
        seconds = time.perf_counter() - started
        rx1, tx1 = self.host.link_bytes()
        if proc.returncode != 0:
            raise RuntimeError("%s failed (exit %d):\n%s\n%s" % (label, proc.returncode, (proc.stdout or "")[-3000:],
                                                                proc.stderr[-2000:]))
        return {"seconds": seconds, "wire_bytes": (rx1 - rx0) + (tx1 - tx0), "stdout": proc.stdout}

    def playbook(self, ssh_args: str, folder: Path | None = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """backup.yml into an empty archive, the host's backup folder emptied first: a first pull
        of exactly one backup (an empty archive is otherwise offered every backup the host holds).
        With ``folder``: a run again into that folder's archive, the host left as it is."""
        again = folder is not None
        if folder is None:
            self.host.empty(BACKUP_DIR)
            folder = self.fresh()
        inventory = self.fleet.write_inventory(folder / "inv.yml", group_vars={
            "sqlite_backup_databases": [{"name": DB_NAME, "path": DB_PATH}],
            "sqlite_archive_dir": str(folder / "archive")})
        self.fleet.close_control_masters()
        env = {**self.fleet.env(), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_SSH_ARGS": ssh_args,
               "ANSIBLE_CALLBACKS_ENABLED": "sqlite_fleet_record,ansible.posix.profile_tasks",
               "PROFILE_TASKS_SORT_ORDER": "none", "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all"}
        entry = self.timed("backup.yml", [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), *extra, "backup.yml"],
                           env=env)
        tasks: dict[str, float] = {}
        for line in entry.pop("stdout").splitlines():
            match = TASK_LINE.match(line.strip())
            if match:
                tasks[match.group("task").strip()] = tasks.get(match.group("task").strip(), 0.0) + \
                    float(match.group("seconds"))
        entry["tasks"] = tasks
        pulled = sorted((folder / "archive" / self.host.name / DB_NAME).glob("*.db"))
        if again:
            return entry
        if len(pulled) != 1:
            raise RuntimeError("backup.yml pulled %d backups, not one" % len(pulled))
        entry["bytes"] = pulled[-1].stat().st_size
        entry["pulled"] = str(pulled[-1])
        return entry

    def copy(self, method: str, remote: str) -> dict[str, Any]:
        folder = self.fresh()
        dest = folder / os.path.basename(remote)
        src = "%s:%s" % (self.host.address, remote)
        compress = method.endswith("_C")
        if method.startswith("scp"):
            entry = self.timed(method, ["scp", "-q", *self.ssh_base(compress), src, str(dest)])
        elif method.startswith("sftp"):
            entry = self.timed(method, ["sftp", "-q", "-b", "-", *self.ssh_base(compress), self.host.address],
                               input="get %s %s\n" % (remote, dest))
        elif method == "ssh_cat":
            with open(dest, "wb") as out:
                argv = ["ssh", *self.ssh_base(False), self.host.address, "cat " + shlex.quote(remote)]
                entry = self.timed(method, argv, stdout=out)
        elif method == "rsync":
            ssh = shlex.join(["ssh", *self.ssh_base(False)])
            entry = self.timed(method, [RSYNC, "-e", ssh, src, str(dest)])
        elif method == "sqlite3_rsync" and self.sqlite3_rsync is not None:
            dest = folder / os.path.basename(DB_PATH)
            entry = self.sqlite3_rsync.pull(self.host, DB_PATH, dest)
        else:
            raise ValueError(method)
        entry.pop("stdout", None)
        entry["bytes"] = dest.stat().st_size
        shutil.rmtree(folder)
        return entry


def import_costs(pulled: str, manifest_path: str) -> dict[str, float]:
    """The controller's checks of a pulled copy, each alone (page cache warm: the file was just written)."""
    import json
    manifest = json.loads(Path(manifest_path).read_text())
    out = {}
    for label, action in (("sha256", lambda: core.sha256_file(pulled)),
                          ("integrity_check_full", lambda: core.archive_check(pulled, "full", manifest)),
                          ("quick_check_and_counts", lambda: core.archive_check(pulled, "quick", manifest))):
        started = time.perf_counter()
        action()
        out[label] = time.perf_counter() - started
    return out


KEPT_HEADING = "## Where the seconds go"
METHODS = ("ours", "ours_module", "ours_C", "scp", "scp_C", "sftp", "sftp_C", "ssh_cat", "rsync")


def run(config: Config) -> dict[str, Any]:
    with Fleet(1) as fleet, workdir(config, "bench-first-pull-") as tmp:
        pull = Pull(config, fleet, tmp)
        config.log("first pull: creating a %d MiB WAL database on %s" % (config.pull_mb, pull.host.name))
        demo_db.create_demo_db(pull.host.path(DB_PATH), size_mb=config.pull_mb, seed=21, journal_mode="wal")
        install_runner(pull.host)
        cfg_args = ansible_ssh_args()
        no_c = " ".join(a for a in cfg_args.split() if a != "-C")
        with_c = cfg_args if "-C" in cfg_args.split() else "-C " + cfg_args
        methods = METHODS + (("sqlite3_rsync",) if pull.sqlite3_rsync else ())
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        costs: list[dict[str, float]] = []
        pull.playbook(cfg_args)  # a first backup on the host for the plain copies
        for round_no in range(config.rounds):
            for method in rotate(methods, round_no):
                if method == "ours":
                    entry = pull.playbook(no_c)
                elif method == "ours_module":
                    entry = pull.playbook(no_c, extra=("-e", "sqlite_backup_use_runner=false"))
                elif method == "ours_C":
                    entry = pull.playbook(with_c)
                else:
                    entry = pull.copy(method, pull.newest_host_backup())
                if method.startswith("ours"):
                    if method == "ours":
                        costs.append(import_costs(entry["pulled"], entry["pulled"] + ".json"))
                    shutil.rmtree(Path(entry.pop("pulled")).parents[3])
                runs[method].append(entry)
                config.log("  round %d %-10s %6.2f s  %6.1f MiB/s  wire %d  load %.1f"
                           % (round_no + 1, method, entry["seconds"], entry["bytes"] / MIB / entry["seconds"],
                              entry["wire_bytes"], os.getloadavg()[0]))
        no_change = {}
        for label, args in (("with_C", with_c), ("without_C", no_c)):  # what -C saves on a run that pulls nothing
            first = pull.playbook(args)
            folder = Path(first["pulled"]).parents[3]
            time.sleep(1.1)  # backups are named by the second
            entries = [pull.playbook(args, folder) for _ in range(2)]
            no_change[label] = {"seconds": median([e["seconds"] for e in entries]),
                                "wire_bytes": median([e["wire_bytes"] for e in entries])}
            shutil.rmtree(folder)
            config.log("  no-change run %s: %s" % (label, no_change[label]))
    result: dict[str, Any] = {"rounds": config.rounds, "no_change_run": no_change,
                              "sqlite3_rsync": sqlite3_rsync_anchor.describe(sqlite3_rsync_anchor.find()),
                              "ssh_args_with_C": with_c, "ssh_args_without_C": no_c,
                              "methods": {}}
    for method, entries in runs.items():
        seconds = [e["seconds"] for e in entries]
        nbytes = entries[0]["bytes"]
        result["methods"][method] = {"median_s": median(seconds), "seconds": seconds, "bytes": nbytes,
                                     "median_mib_s": nbytes / MIB / median(seconds),
                                     "wire_bytes_median": median([e["wire_bytes"] for e in entries])}
        if method.startswith("ours"):
            names = entries[0]["tasks"].keys()
            result["methods"][method]["tasks_median_s"] = {
                n: median([e["tasks"].get(n, 0.0) for e in entries]) for n in names}
    result["import_costs_median_s"] = {k: median([c[k] for c in costs]) for k in costs[0]} if costs else {}
    anchor = result["methods"]["ssh_cat"]["median_mib_s"]
    result["throughput_vs_ssh_cat"] = {m: v["median_mib_s"] / anchor for m, v in result["methods"].items()}
    if "sqlite3_rsync" in result["methods"]:
        anchor = result["methods"]["sqlite3_rsync"]["median_mib_s"]
        result["throughput_vs_sqlite3_rsync"] = {m: v["median_mib_s"] / anchor for m, v in result["methods"].items()}
    return rounded(result)


def markdown(result: dict[str, Any]) -> str:
    """The first pull's methods, throughput and ratios (ours' task profile stays in the JSON)."""
    versus = result.get("throughput_vs_sqlite3_rsync", {})
    lines = ["# First full pull, %s MiB, unshaped link (issue 15)" % result["mib"], "",
             "Generated by `bench/bench_first_pull.py` on %s, %d round(s), methods in rotating order; load average "
             "at start %s, at end %s (other jobs share this 2-core machine)." % (
                 result["date_utc"], result["rounds"], result["load_start"], result["load_end"]), "",
             "sqlite3_rsync: %s." % result["sqlite3_rsync"], "",
             "| method | median s | MiB/s | vs ssh_cat | vs sqlite3_rsync | bytes on the wire |",
             "|---|---|---|---|---|---|"]
    for method, entry in result["methods"].items():
        lines.append("| %s | %.2f | %.1f | %.3f | %s | %d |" % (
            method, entry["median_s"], entry["median_mib_s"], result["throughput_vs_ssh_cat"][method],
            "%.3f" % versus[method] if method in versus else "", entry["wire_bytes_median"]))
    lines += ["", "`ours` = the whole `backup.yml` (snapshot on the host, staging, fetch, import with the archive's "
              "full integrity_check); the plain copies copy the host's newest backup; sqlite3_rsync pulls the "
              "live database. The controller's import checks of the pulled copy, each alone (median s): %s." % (
                  ", ".join("%s %.3f" % kv for kv in result["import_costs_median_s"].items()))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import json
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    started = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_start": load_average()}
    output = {"mib": mb, **started, **run(Config(pull_mb=mb, rounds=rounds)), "load_end": load_average()}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "first_pull.json").write_text(json.dumps(output, indent=1) + "\n")
    kept = ""  # a hand-written section from KEPT_HEADING on (the profile of where the time goes) stays
    if (RESULTS_DIR / "first_pull.md").exists():
        before = (RESULTS_DIR / "first_pull.md").read_text()
        kept = before[before.index(KEPT_HEADING):] if KEPT_HEADING in before else ""
    (RESULTS_DIR / "first_pull.md").write_text(markdown(output) + ("\n" + kept if kept else ""))
    print(markdown(output))
