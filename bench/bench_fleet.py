"""Fleet scale: wall time of backup.yml for 1, 5, 10 and 20 test hosts, and what a host costs.

One test fleet (tests/fleet.py) of the largest size; each run uses the first n hosts, a fresh
archive and empty backup folders on the hosts (every run is a first backup and a full pull
of a small database), and starts without SSH connections (ControlPersist masters closed).

Variants:
  after      the repository as it is (pipelining, ControlPersist, no fact gathering, and the
             separate verify task of the sqlite_backup role off: sqlite_backup_verify_after_commit)
  before     the same with the separate verify task on (-e sqlite_backup_verify_after_commit=true):
             one more module run per host, as before the change
  no_pipelining_no_controlpersist
             ``after`` with pipelining off and no SSH connection sharing, to show what those
             two settings of ansible.cfg buy

CPU: controller = ansible-playbook and its children (ssh clients, local modules); hosts =
what the hosts' sshd and their children (the modules run on the hosts) used, read from each
sshd's reaped-children CPU time after its connections closed. The test hosts share the
controller's CPUs; real hosts have their own.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import demo_db
from common import REPO, Config, cpu_seconds, load_average, median, paired_ratio, rotate, rounded, target, workdir
from fleet import Fleet, Host
from integration_helpers import ANSIBLE_PLAYBOOK, BACKUP_DIR, DB_PATH

PLAYBOOK_TIMEOUT = 1800
SSH_ARGS_NO_SHARING = "-C -o ControlMaster=no -o ServerAliveInterval=10 -o ServerAliveCountMax=3 " \
                      "-o StrictHostKeyChecking=yes"

VARIANTS: dict[str, dict[str, Any]] = {
    "after": {"extra": [], "env": {}},
    "before": {"extra": ["-e", "sqlite_backup_verify_after_commit=true"], "env": {}},
    "no_pipelining_no_controlpersist": {"extra": [], "env": {"ANSIBLE_PIPELINING": "False",
                                                             "ANSIBLE_SSH_ARGS": SSH_ARGS_NO_SHARING}},
}


def sshd_children_cpu(host: Host) -> float:
    """CPU seconds of the host's sshd's reaped children (sessions, modules)."""
    assert host.sshd is not None
    with open("/proc/%d/stat" % host.sshd.pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = int(fields[13]) + int(fields[14])  # cutime, cstime (fields 16 and 17 of proc(5))
    return ticks / _clock_ticks()


def _clock_ticks() -> int:
    import os

    return os.sysconf("SC_CLK_TCK")


def one_run(config: Config, fleet: Fleet, tmp: Path, variant: str, n: int, label: str = "") -> dict[str, Any]:
    hosts = fleet.hosts[:n]
    fleet.close_control_masters()
    for host in hosts:
        host.empty(BACKUP_DIR)  # what the backup folder holds: the folder is the host's bind mount
    time.sleep(0.3)
    tag = "%s-%s-%d-%d" % (label or "run", variant, n, time.monotonic_ns())
    archive = tmp / ("archive-%s" % tag)
    inventory = tmp / ("hosts-%s.yml" % tag)
    body = {"hosts": {h.name: fleet.host_vars(h) for h in hosts},
            "vars": {"sqlite_backup_databases": [{"name": "gym", "path": DB_PATH}],
                     "sqlite_archive_dir": str(archive)}}
    import json

    inventory.write_text(json.dumps({"all": {"children": {"sqlite_hosts": body}}}, indent=2))
    env = {**fleet.env(), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **VARIANTS[variant]["env"]}
    hosts_cpu_before = sum(sshd_children_cpu(h) for h in hosts)
    load_before = load_average()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "backup.yml", *VARIANTS[variant]["extra"]],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT, check=False)
    seconds = time.perf_counter() - started
    controller_cpu = cpu_seconds() - cpu_before
    fleet.close_control_masters()
    time.sleep(0.5)  # let each sshd reap its sessions
    hosts_cpu = sum(sshd_children_cpu(h) for h in hosts) - hosts_cpu_before
    (tmp / ("%s.log" % tag)).write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError("backup.yml on %d hosts (%s) failed (exit %d):\n%s\n%s"
                           % (n, variant, proc.returncode, proc.stdout[-4000:], proc.stderr[-2000:]))
    module_tasks = proc.stdout.count("\nchanged: [") + proc.stdout.count("\nok: [")
    entry = {"variant": variant, "hosts": n, "seconds": round(seconds, 2),
             "controller_cpu_s": round(controller_cpu, 2), "hosts_cpu_s": round(hosts_cpu, 2),
             "task_results": module_tasks, "load_average_before": load_before}
    config.log("  fleet %-32s n=%2d  %6.1f s  controller cpu %5.1f s  hosts cpu %5.1f s  load %s"
               % (variant, n, seconds, controller_cpu, hosts_cpu, load_before))
    return entry


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x."""
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return num / den


def aggregate(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeated runs of one variant and size: medians, and every run's seconds."""
    return {"runs": len(entries), "all_seconds": [e["seconds"] for e in entries],
            "seconds": round(median([e["seconds"] for e in entries]), 2),
            "controller_cpu_s": round(median([e["controller_cpu_s"] for e in entries]), 2),
            "hosts_cpu_s": round(median([e["hosts_cpu_s"] for e in entries]), 2)}


def run(config: Config, variants: tuple[str, ...] = ("after", "before")) -> dict[str, Any]:
    rounds = 1 if config.quick else 2  # before and after, back to back, each round in another order
    plan: list[tuple[str, int]] = []
    for n in sorted(set(config.fleet_sizes) | set(config.fleet_before_sizes)):
        pair = [("after", n)] if n in config.fleet_sizes else []
        if n in config.fleet_before_sizes and "before" in variants:
            pair.append(("before", n))
        for round_no in range(rounds if len(pair) == 2 else 1):
            plan.extend(rotate(pair, round_no))
    if "no_pipelining_no_controlpersist" in variants:  # right after "after" at that size: back to back
        n = 5 if 5 in config.fleet_sizes else min(config.fleet_sizes)
        plan.insert(plan.index(("after", n)) + 1, ("no_pipelining_no_controlpersist", n))
    largest = max(n for _, n in plan)
    runs = []
    with Fleet(largest) as fleet, workdir(config, "bench-fleet-") as tmp:
        for index, host in enumerate(fleet):
            demo_db.create_demo_db(host.path(DB_PATH), members=60, seed=index + 1)
        config.log("fleet: %d hosts up; runs: %s" % (largest, plan))
        config.log("  (warm-up run, not counted: the first run after start-up is slower)")
        one_run(config, fleet, tmp, "after", 1, label="warmup")
        for variant, n in plan:
            runs.append(one_run(config, fleet, tmp, variant, n))
    grouped: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for entry in runs:
        grouped.setdefault(entry["variant"], {}).setdefault(entry["hosts"], []).append(entry)
    by_variant = {variant: {n: aggregate(entries) for n, entries in sizes.items()}
                  for variant, sizes in grouped.items()}
    analysis = {}
    for variant, entries in by_variant.items():
        sizes = sorted(entries)
        first, last = entries[sizes[0]], entries[sizes[-1]]
        per_host = slope([(n, entries[n]["seconds"]) for n in sizes])
        analysis[variant] = {
            "sizes": sizes,
            "seconds": [entries[n]["seconds"] for n in sizes],
            "wall_ratio_largest_vs_smallest": round(last["seconds"] / first["seconds"], 2) if len(sizes) > 1 else None,
            "seconds_per_extra_host": round(per_host, 2) if per_host is not None else None,
            "controller_cpu_s_per_host": round(slope([(n, entries[n]["controller_cpu_s"]) for n in sizes]) or 0, 2)
            if len(sizes) > 1 else None,
            "hosts_cpu_s_per_host": round(slope([(n, entries[n]["hosts_cpu_s"]) for n in sizes]) or 0, 2)
            if len(sizes) > 1 else None,
            "fixed_seconds_at_0_hosts": round(first["seconds"] - (per_host or 0) * sizes[0], 1)
            if per_host is not None else None,
        }
    comparisons = {}
    for n in sorted(set(by_variant.get("after", {})) & set(by_variant.get("before", {}))):
        after, before = by_variant["after"][n], by_variant["before"][n]
        pairs = list(zip(grouped["before"][n], grouped["after"][n]))
        comparisons["hosts_%d" % n] = {
            "before_s": before["seconds"], "after_s": after["seconds"],
            "before_runs_s": before["all_seconds"], "after_runs_s": after["all_seconds"],
            "speedup": paired_ratio([b["seconds"] for b, _ in pairs], [a["seconds"] for _, a in pairs]),
            "controller_cpu_before_s": before["controller_cpu_s"], "controller_cpu_after_s": after["controller_cpu_s"],
            "hosts_cpu_before_s": before["hosts_cpu_s"], "hosts_cpu_after_s": after["hosts_cpu_s"],
            "cpu_saved_s": round(before["controller_cpu_s"] + before["hosts_cpu_s"]
                                 - after["controller_cpu_s"] - after["hosts_cpu_s"], 2),
        }
    settings = {}
    for n, plain in by_variant.get("no_pipelining_no_controlpersist", {}).items():
        after = by_variant.get("after", {}).get(n)
        if after:
            settings["hosts_%d" % n] = {"without_s": plain["seconds"], "with_s": after["seconds"],
                                        "speedup": round(plain["seconds"] / after["seconds"], 3),
                                        "controller_cpu_without_s": plain["controller_cpu_s"],
                                        "controller_cpu_with_s": after["controller_cpu_s"]}
    result = {"runs": runs, "analysis": analysis, "before_vs_after": comparisons,
              "pipelining_and_controlpersist": settings,
              "database": "demo database, 60 members (~150 KiB), one per host"}
    after = analysis.get("after", {})
    ratio = None
    note = ""
    if after.get("sizes") and 1 in after["sizes"] and 20 in after["sizes"]:
        one, twenty = by_variant["after"][1], by_variant["after"][20]
        ratio = round(twenty["seconds"] / one["seconds"], 2)
        note = ("CPU time, 20 hosts vs 1: controller %.1f s vs %.1f s, hosts %.1f s vs %.1f s"
                % (twenty["controller_cpu_s"], one["controller_cpu_s"], twenty["hosts_cpu_s"], one["hosts_cpu_s"]))
    result["targets"] = [target(
        "backup.yml wall time, 20 hosts vs 1 host", ratio, "<=", 2.0, "x",
        why_missed="every test host runs its modules on the controller's own CPUs (2 here, shared with other "
                   "jobs): the hosts' CPU time adds up instead of running in parallel as on 20 real Pis; "
                   "see controller and hosts CPU per host", note=note)]
    return rounded(result)
