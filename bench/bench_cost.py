#!/usr/bin/env python3
"""Per-run and per-host cost of backup.yml (issue 15): the one-task pull against the separate tasks.

    bench/bench_cost.py [--quick] [--rounds 3] [--sizes 1,4,10] [--name cost] [--variants one_task]
                        [--runner] [--mitogen DIR]

Variants, measured back to back in alternating order on the same test fleet (tests/fleet.py):
  one_task   the default: one task per database does list -> backup on the host -> fetch ->
             import -> prune (action_plugins/sqlite_backup.py, the archive work in-process)
  separate   -e sqlite_pull_in_one_task=false: list, backup, prepare, fetch and import as their
             own tasks (three local module runs per host), as before
  one_task_module  -e sqlite_backup_use_runner=false: one_task with the module shipped to the host
             even where the on-host runner is installed (with --runner: the "before" of issue 15's runner path)
--runner installs the on-host runner (runner/ and the core, as roles/sqlite_runner does) on every
bench host first, so one_task takes the runner path (no module payload).
--mitogen DIR adds each variant's twin "<variant>+mitogen", measured back to back with it: the same
playbook under Mitogen for Ansible's mitogen_linear strategy, unpacked (not installed) in DIR (the
folder holding ansible_mitogen/ and mitogen/, e.g. an unpacked wheel of the mitogen package). A
"+mitogen" run that fails is a figure too: its first error line is recorded in place of its numbers.
Anchors: rsync (over ssh, no connection sharing) of the host's newest backup onto the archive's copy;
SQLite's own sqlite3_rsync (bench/sqlite3_rsync_anchor.py; bench/build_sqlite3_rsync.sh builds it,
"not measured" without it) of the host's live database onto a replica here, brought up to date
before each figure, so that it sees exactly nothing or one 1% change.

Figures:
  no change  one host, nothing written since the last run: seconds and bytes on the wire (the
             host link's rx + tx: SSH, module payloads, data)
  1% change  one host, ~1% of the rows updated since the last run
  per host   n hosts (fresh archive and empty backup folders: a first backup and full pull of a small
             database each): wall seconds, controller CPU (ansible-playbook and all its children,
             ssh ControlPersist masters included: this process is their subreaper and reaps them)
             and the hosts' CPU (their sshd's reaped children) apart; per extra host = the slope.
             "hosts verified": hosts whose newest archived backup matches its .sha256 and passes
             PRAGMA integrity_check, checked here after the run (not taken from the run's output).
Prints the figures and writes bench/results/<name>.md and .json. The test hosts share the
controller's two CPUs, and other jobs may run: the load average is noted with each run.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, RESULTS_DIR, RSYNC, Config, cpu_seconds, load_average, median, workdir  # noqa: E402, I001

import demo_db  # noqa: E402
import sqlite3_rsync_anchor  # noqa: E402
from bench_fleet import slope, sshd_children_cpu  # noqa: E402
from core_parts import install_core  # noqa: E402
from fleet import Fleet, Host  # noqa: E402
from integration_helpers import ANSIBLE_PLAYBOOK, BACKUP_DIR, DB_NAME, DB_PATH  # noqa: E402

VARIANTS = {"one_task": [], "separate": ["-e", "sqlite_pull_in_one_task=false"],
            "one_task_module": ["-e", "sqlite_backup_use_runner=false"]}
DEFAULT_VARIANTS = ("one_task", "separate")
RUNNER_DIR = "/opt/sqlite-backup"
MITOGEN = "+mitogen"
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants (the ssh ControlPersist masters) are re-parented to this process, so
    reaping them adds their CPU time to RUSAGE_CHILDREN: the controller's CPU includes them."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def mitogen_env(folder: Path) -> dict[str, str]:
    """Ansible's environment for the mitogen_linear strategy from an unpacked Mitogen in ``folder``."""
    strategy = folder / "ansible_mitogen" / "plugins" / "strategy"
    if not (strategy / "mitogen_linear.py").is_file():
        raise SystemExit("--mitogen %s: no ansible_mitogen/plugins/strategy/mitogen_linear.py there" % folder)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {"ANSIBLE_STRATEGY_PLUGINS": str(strategy), "ANSIBLE_STRATEGY": "mitogen_linear", "PYTHONPATH": path}


def mitogen_version(folder: Path) -> str:
    """The unpacked Mitogen's version (its dist-info's name when there is one) and folder."""
    infos = sorted(p.name.removesuffix(".dist-info") for p in folder.glob("mitogen-*.dist-info"))
    return "%s in %s (ANSIBLE_STRATEGY=mitogen_linear)" % (infos[-1] if infos else "mitogen", folder)


def reap_orphans() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Bench:
    def __init__(self, fleet: Fleet, tmp: Path, log: Any, mitogen: Path | None = None) -> None:
        self.fleet = fleet
        self.tmp = tmp
        self.log = log
        self.env = {**fleet.env(), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
        self.mitogen_env = mitogen_env(mitogen) if mitogen else {}

    def inventory(self, name: str, hosts: list[Host], archive: Path) -> Path:
        body = {"hosts": {h.name: self.fleet.host_vars(h) for h in hosts},
                "vars": {"sqlite_backup_databases": [{"name": DB_NAME, "path": DB_PATH}],
                         "sqlite_archive_dir": str(archive)}}
        path = self.tmp / ("%s.yml" % name)
        path.write_text(json.dumps({"all": {"children": {"sqlite_hosts": body}}}, indent=2))
        return path

    def playbook(self, label: str, variant: str, inventory: Path, hosts: list[Host]) -> dict[str, Any]:
        """One backup.yml run from cold SSH connections: seconds, wire bytes, controller and hosts CPU."""
        self.fleet.close_control_masters()
        time.sleep(0.3)
        reap_orphans()
        links0 = [h.link_bytes() for h in hosts]
        hosts_cpu0 = sum(sshd_children_cpu(h) for h in hosts)
        load = load_average()
        cpu0 = cpu_seconds()
        started = time.perf_counter()
        base = variant.removesuffix(MITOGEN)
        env = {**self.env, **self.mitogen_env} if variant.endswith(MITOGEN) else self.env
        proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "backup.yml", *VARIANTS[base]],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=3600, check=False)
        seconds = time.perf_counter() - started
        links1 = [h.link_bytes() for h in hosts]
        self.fleet.close_control_masters()  # the masters' CPU counts for the controller
        time.sleep(0.5)
        reap_orphans()
        controller = cpu_seconds() - cpu0
        hosts_cpu = sum(sshd_children_cpu(h) for h in hosts) - hosts_cpu0
        (self.tmp / ("%s-%s.log" % (label, variant))).write_text(proc.stdout + proc.stderr)
        error = first_error(proc.stdout + proc.stderr) if proc.returncode != 0 else None
        if error and variant.endswith(MITOGEN):
            self.log("  %-10s %-17s n=%3d FAILED (exit %d): %s" % (label, variant, len(hosts), proc.returncode, error))
            return {"variant": variant, "hosts": len(hosts), "error": error, "exit": proc.returncode,
                    "load_average_before": load}
        if proc.returncode != 0:
            raise RuntimeError("%s (%s) failed (exit %d):\n%s\n%s" % (label, variant, proc.returncode,
                                                                      proc.stdout[-4000:], proc.stderr[-2000:]))
        wire = sum((r1 - r0) + (t1 - t0) for (r0, t0), (r1, t1) in zip(links0, links1))
        entry = {"variant": variant, "hosts": len(hosts), "seconds": round(seconds, 2), "wire_bytes": wire,
                 "controller_cpu_s": round(controller, 2), "hosts_cpu_s": round(hosts_cpu, 2),
                 "task_headers": proc.stdout.count("\nTASK ["),
                 "task_results": len(re.findall(r"(?m)^(?:ok|changed): \[", proc.stdout)),
                 "load_average_before": load}
        self.log("  %-10s %-17s n=%3d %7.2f s  wire %9d B  controller cpu %6.2f s  hosts cpu %6.2f s  load %s"
                 % (label, variant, len(hosts), seconds, wire, controller, hosts_cpu, load))
        return entry

    def rsync_anchor(self, host: Host, archive: Path) -> dict[str, Any]:
        """rsync of the host's newest backup onto the archive's copy (hard-linked under a scratch name)."""
        folder = archive / host.name / DB_NAME
        newest = sorted(p.name for p in folder.glob("%s_backup_*.db" % DB_NAME))[-1]
        scratch = self.tmp / "rsync" / newest
        scratch.parent.mkdir(exist_ok=True)
        if scratch.exists():
            scratch.unlink()
        os.link(folder / newest, scratch)
        ssh = ("ssh -F /dev/null -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes "
               "-o UserKnownHostsFile=%s -o GlobalKnownHostsFile=/dev/null -l root"
               % (self.fleet.client_key, self.fleet.known_hosts))
        (r0, t0) = host.link_bytes()
        started = time.perf_counter()
        subprocess.run([RSYNC, "-e", ssh, "--inplace", "%s:%s" % (host.address, os.path.join(BACKUP_DIR, newest)),
                        str(scratch)], check=True, capture_output=True, timeout=600)
        seconds = time.perf_counter() - started
        (r1, t1) = host.link_bytes()
        entry = {"variant": "rsync", "seconds": round(seconds, 2), "wire_bytes": (r1 - r0) + (t1 - t0)}
        self.log("  %-10s %-9s       %7.2f s  wire %9d B" % ("anchor", "rsync", seconds, entry["wire_bytes"]))
        return entry


def first_error(output: str) -> str:
    """The first "[ERROR]: ..." line of a playbook's output, else its last non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    found = [line for line in lines if line.startswith("[ERROR]")]
    return (found or lines or ["no output"])[0][:400]


def medians_of(chosen: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Medians of ``keys`` over the runs that worked; {"error": ...} when none did."""
    worked = [r for r in chosen if "error" not in r]
    if not worked:
        return {"error": chosen[0]["error"] if chosen else "not run"}
    return {key: round(median([r[key] for r in worked]), 2) for key in keys}


def verified_in_archive(archive: Path, host: Host) -> bool:
    """The host's newest archived backup matches its .sha256 file and passes PRAGMA integrity_check."""
    backups = sorted((archive / host.name / DB_NAME).glob("%s_backup_*.db" % DB_NAME))
    if not backups:
        return False
    newest = backups[-1]
    sidecar = newest.with_name(newest.name + ".sha256")
    if not sidecar.exists() or sidecar.read_text().split()[0] != hashlib.sha256(newest.read_bytes()).hexdigest():
        return False
    conn = sqlite3.connect("file:%s?mode=ro" % newest, uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def change_rows(db: Path, fraction: float) -> int:
    """Give about ``fraction`` of the rows of the demo database's busy tables a new value."""
    step = max(1, round(1 / fraction))
    conn = sqlite3.connect(db)
    try:
        changed = 0
        for sql in ("UPDATE members SET phone = hex(randomblob(5)) WHERE id %% %d = 0",
                    "UPDATE access_log SET at = strftime('%%Y-%%m-%%dT%%H:%%M:%%f', 'now') WHERE id %% %d = 0",
                    "UPDATE rentals SET started_at = strftime('%%Y-%%m-%%dT%%H:%%M:%%f', 'now') WHERE id %% %d = 0"):
            changed += conn.execute(sql % step).rowcount
        conn.commit()
    finally:
        conn.close()
    return changed


def sqlite3_rsync_pull(bench: Bench, anchor: sqlite3_rsync_anchor.Anchor | None, scenario: str | None) -> list[Any]:
    """sqlite3_rsync of the host's live database onto the bench's replica; untimed (scenario None) to
    bring the replica up to date."""
    if anchor is None:
        return []
    entry = anchor.pull(bench.fleet.hosts[0], DB_PATH, bench.tmp / "sqlite3_rsync-replica.db")
    if scenario is None:
        return []
    bench.log("  %-10s %-13s   %7.2f s  wire %9d B" % ("anchor", "sqlite3_rsync", entry["seconds"],
                                                      entry["wire_bytes"]))
    return [dict(entry, scenario=scenario)]


def install_runner(host: Host) -> None:
    """The on-host runner and the whole core in RUNNER_DIR, as roles/sqlite_runner installs them."""
    folder = host.path(RUNNER_DIR)
    install_core(folder)
    shutil.copy2(REPO / "runner" / "sqlite_backup_runner.py", folder / "sqlite_backup_runner.py")


def one_host(bench: Bench, fleet: Fleet, rounds: int, variants: list[str]) -> dict[str, Any]:
    host = fleet.hosts[0]
    runs: list[dict[str, Any]] = []
    anchors: list[dict[str, Any]] = []
    archives = {v: bench.tmp / ("archive-one-%s" % v) for v in variants}
    binary = sqlite3_rsync_anchor.find()
    rsync3 = sqlite3_rsync_anchor.Anchor(binary, fleet, bench.tmp) if binary else None
    host.empty(BACKUP_DIR)
    for variant, archive in archives.items():  # seed: each variant's archive holds a first backup
        bench.playbook("seed", variant, bench.inventory("one-%s" % variant, [host], archive), [host])
    sqlite3_rsync_pull(bench, rsync3, None)  # seed: its replica holds the database
    for round_no in range(rounds):
        order = list(variants) if round_no % 2 == 0 else list(variants)[::-1]
        for variant in order:
            inventory = bench.inventory("one-%s" % variant, [host], archives[variant])
            runs.append(dict(bench.playbook("no-change", variant, inventory, [host]), scenario="no_change"))
        anchors.append(dict(bench.rsync_anchor(host, archives["one_task"]), scenario="no_change"))
        anchors += sqlite3_rsync_pull(bench, rsync3, "no_change")
        for index, variant in enumerate(order):
            change_rows(host.path(DB_PATH), 0.01)
            if index == 0:  # exactly one 1% change since its last pull
                anchors += sqlite3_rsync_pull(bench, rsync3, "change_1pct")
            inventory = bench.inventory("one-%s" % variant, [host], archives[variant])
            runs.append(dict(bench.playbook("1%-change", variant, inventory, [host]), scenario="change_1pct"))
        anchors.append(dict(bench.rsync_anchor(host, archives["one_task"]), scenario="change_1pct"))
        sqlite3_rsync_pull(bench, rsync3, None)  # up to date again for the next round's "nothing changed"
    table = {}
    for scenario in ("no_change", "change_1pct"):
        for variant in (*variants, "rsync"):
            chosen = [r for r in runs + anchors if r["scenario"] == scenario and r["variant"] == variant]
            figures = medians_of(chosen, ("seconds", "wire_bytes") if variant == "rsync"
                                 else ("seconds", "wire_bytes", "controller_cpu_s"))
            worked = [r for r in chosen if "error" not in r]
            if "error" not in figures:
                figures.update(wire_bytes=int(figures["wire_bytes"]), controller_cpu_s=figures.get("controller_cpu_s"),
                               task_headers=worked[0].get("task_headers", worked[0].get("tasks")),
                               task_results=worked[0].get("task_results"))
            table.setdefault(scenario, {})[variant] = dict(figures, runs=len(worked))
    sqlite3_rsync = {}  # apart from "medians": its rows are there only where the binary is
    for scenario in ("no_change", "change_1pct"):
        chosen = [r for r in anchors if r["scenario"] == scenario and r["variant"] == "sqlite3_rsync"]
        if chosen:
            sqlite3_rsync[scenario] = {"seconds": round(median([r["seconds"] for r in chosen]), 2),
                                       "wire_bytes": int(median([r["wire_bytes"] for r in chosen])),
                                       "runs": len(chosen)}
    return {"runs": runs + anchors, "medians": table, "sqlite3_rsync": sqlite3_rsync}


def per_host(bench: Bench, fleet: Fleet, sizes: list[int], rounds: int, variants: list[str]) -> dict[str, Any]:
    runs = []
    for round_no in range(rounds):
        for n in sizes:
            order = list(variants) if (round_no + n) % 2 == 0 else list(variants)[::-1]
            for variant in order:
                hosts = fleet.hosts[:n]
                for host in hosts:
                    host.empty(BACKUP_DIR)
                archive = bench.tmp / ("archive-%s-%d-%d" % (variant, n, time.monotonic_ns()))
                inventory = bench.inventory("fleet-%s-%d" % (variant, n), hosts, archive)
                entry = bench.playbook("fleet", variant, inventory, hosts)
                verified = sum(1 for h in hosts if list((archive / h.name / DB_NAME).glob("%s_backup_*.db" % DB_NAME)))
                entry["hosts_archived"] = verified
                entry["hosts_verified"] = sum(1 for h in hosts if verified_in_archive(archive, h))
                runs.append(entry)
    table: dict[str, Any] = {}
    for variant in variants:
        points = {}
        for n in sizes:
            chosen = [r for r in runs if r["variant"] == variant and r["hosts"] == n]
            points[n] = medians_of(chosen, ("seconds", "controller_cpu_s", "hosts_cpu_s"))
            points[n]["hosts_archived"] = min(r["hosts_archived"] for r in chosen)
            points[n]["hosts_verified"] = min(r["hosts_verified"] for r in chosen)
            if "error" not in points[n]:
                points[n]["controller_cpu_s_per_host"] = round(points[n]["controller_cpu_s"] / n, 2)
        fits = len(sizes) > 1 and not any("error" in point for point in points.values())
        table[variant] = {
            "by_hosts": points,
            "controller_cpu_s_per_extra_host": round(slope([(n, points[n]["controller_cpu_s"]) for n in sizes]) or 0, 2)
            if fits else None,
            "seconds_per_extra_host": round(slope([(n, points[n]["seconds"]) for n in sizes]) or 0, 2)
            if fits else None,
        }
    return {"runs": runs, "medians": table}


def markdown(result: dict[str, Any]) -> str:
    lines = ["# backup.yml cost per run and per host (issue 15)", "",
             "Generated by `bench/bench_cost.py` on %s (load average at start %s, at end %s; other jobs ran on "
             "this 2-core machine, and the test hosts share its CPUs). Medians of %d round(s), variants back to back "
             "in alternating order." % (result["date_utc"], result["load_start"], result["load_end"],
                                        result["rounds"]), "",
             "sqlite3_rsync: %s." % result["sqlite3_rsync"], "",
             "On-host runner installed on the bench's hosts (--runner): %s." % result.get("runner_installed", False),
             "",
             "Mitogen for Ansible (--mitogen, the \"+mitogen\" variants): %s."
             % (result.get("mitogen") or "not measured"),
             "",
             "## One host: nothing changed, and 1% of the rows changed", "",
             "| run | variant | seconds | bytes on the wire | controller CPU s | task headers | task results |",
             "|---|---|---|---|---|---|---|"]
    for scenario, label in (("no_change", "nothing changed"), ("change_1pct", "1% of rows changed")):
        for variant, row in result["one_host"]["medians"].get(scenario, {}).items():
            if "error" in row:
                lines.append("| %s | %s | failed: %s | | | | |" % (label, variant, row["error"].replace("|", "\\|")))
                continue
            lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                label, variant, row["seconds"], row["wire_bytes"], row["controller_cpu_s"],
                row.get("task_headers", row.get("tasks")), row.get("task_results")))
        anchor = result["one_host"].get("sqlite3_rsync", {}).get(scenario)
        if anchor:
            lines.append("| %s | sqlite3_rsync (live database) | %s | %s | | | |" % (
                label, anchor["seconds"], anchor["wire_bytes"]))
    lines += ["", "## Per host (first backup and full pull of a ~150 KiB database each)", "",
              "| variant | hosts | seconds | controller CPU s | controller CPU s per host | hosts CPU s "
              "| hosts archived | hosts verified |", "|---|---|---|---|---|---|---|---|"]
    for variant, data in result["per_host"]["medians"].items():
        for n, row in data["by_hosts"].items():
            if "error" in row:
                lines.append("| %s | %s | failed: %s | | | | %s | %s |" % (
                    variant, n, row["error"].replace("|", "\\|"), row["hosts_archived"], row.get("hosts_verified")))
                continue
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                variant, n, row["seconds"], row["controller_cpu_s"], row.get("controller_cpu_s_per_host"),
                row["hosts_cpu_s"], row["hosts_archived"], row.get("hosts_verified")))
    lines += ["", "| variant | controller CPU s per extra host | seconds per extra host |", "|---|---|---|"]
    for variant, data in result["per_host"]["medians"].items():
        lines.append("| %s | %s | %s |" % (variant, data["controller_cpu_s_per_extra_host"],
                                           data["seconds_per_extra_host"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, sizes 1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1,4,10")
    parser.add_argument("--name", default="cost")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--no-one-host", action="store_true", help="only the per-host runs (--sizes)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="variants (one_task first), of %s" % ", ".join(VARIANTS))
    parser.add_argument("--runner", action="store_true", help="install the on-host runner on the bench's hosts first")
    parser.add_argument("--mitogen", default=None, metavar="DIR",
                        help="also run every variant under Mitogen's mitogen_linear strategy, unpacked in DIR")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite <name>.md from <name>.json")
    args = parser.parse_args(argv)
    out = Path(args.results_dir)
    if args.markdown_only:
        result = json.loads((out / ("%s.json" % args.name)).read_text())
        for scenario in result["one_host"].get("medians", {}).values():
            for row in scenario.values():
                row.update({k: round(v, 2) for k, v in row.items() if isinstance(v, float)})
                if "wire_bytes" in row:
                    row["wire_bytes"] = int(row["wire_bytes"])
        for data in result["per_host"]["medians"].values():
            for row in data["by_hosts"].values():
                row.update({k: round(v, 2) for k, v in row.items() if isinstance(v, float)})
        (out / ("%s.md" % args.name)).write_text(markdown(result))
        print(markdown(result))
        return 0
    rounds, sizes = (1, [1, 2]) if args.quick else (args.rounds, [int(n) for n in args.sizes.split(",")])
    variants = [v for v in args.variants.split(",") if v]
    if not variants or variants[0] != "one_task" or set(variants) - set(VARIANTS):
        parser.error("--variants: one_task, then any of %s" % ", ".join(VARIANTS))
    mitogen = Path(args.mitogen).resolve() if args.mitogen else None
    if mitogen:
        variants = [name for variant in variants for name in (variant, variant + MITOGEN)]
    config = Config(quick=args.quick, tmp_base=args.tmp)
    become_subreaper()
    result: dict[str, Any] = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": rounds,
                              "load_start": load_average(), "runner_installed": args.runner,
                              "sqlite3_rsync": sqlite3_rsync_anchor.describe(sqlite3_rsync_anchor.find()),
                              "mitogen": mitogen_version(mitogen) if mitogen else None}
    with Fleet(max(sizes)) as fleet, workdir(config, "bench-cost-") as tmp:
        for index, host in enumerate(fleet):
            demo_db.create_demo_db(host.path(DB_PATH), members=60, seed=index + 1)
            if args.runner:
                install_runner(host)
        bench = Bench(fleet, tmp, config.log, mitogen)
        result["one_host"] = {"medians": {}, "runs": []} if args.no_one_host else one_host(bench, fleet, rounds,
                                                                                          variants)
        result["per_host"] = per_host(bench, fleet, sizes, rounds, variants)
    result["load_end"] = load_average()
    out.mkdir(parents=True, exist_ok=True)
    (out / ("%s.json" % args.name)).write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = markdown(result)
    (out / ("%s.md" % args.name)).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
