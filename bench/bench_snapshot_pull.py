#!/usr/bin/env python3
"""Issue 15's snapshot and first-pull targets: bench/results/issue15_snapshot_pull.{md,json}.

    .venv/bin/python bench/bench_snapshot_pull.py                 # 256 and 512 MiB, 5 rounds, the pull
    .venv/bin/python bench/bench_snapshot_pull.py --sizes 256 --rounds 3 --no-pull
    .venv/bin/python bench/bench_snapshot_pull.py --quick --results-dir /tmp/r   # smoke run

Snapshot, idle database, every method in every round in rotating order, page cache warm
(the database just written) and cold (the database's own pages dropped from the page cache
with posix_fadvise before each run; nothing else's):

  ours            sqlite_fleet.snapshot(): pinned copy hashed as it is written (this branch)
  ours_hash_after the same with the sha256 taken after the copy (as before this branch)
  ours_nice0      ours without the nice 10 a WAL snapshot runs at (BACKUP_NICE = 0)
  cli_backup      sqlite3 CLI ``.backup`` + fsync (runs at the caller's priority)
  cli_backup_nice10   the same under ``nice -n 10``, the priority our snapshot runs at
  cp              cp + fsync (no consistency: a floor)

Then ours under an app-like writer (200 commits/s): the writer's worst commit. Where the
time of ``ours`` goes comes from timing the core's steps (copy, check, row counts, fsync,
hash, commit) in the same runs. The first pull is bench_first_pull.py's. The machine is
shared with other jobs: medians of rounds, load averages recorded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

_REPO = Path(__file__).resolve().parents[1]
for _folder in ("bench", "module_utils", "tools", "tests", "tests/integration"):
    sys.path.insert(0, str(_REPO / _folder))

import app_writer  # noqa: E402
import demo_db  # noqa: E402
import sqlite_fleet  # noqa: E402
from common import (  # noqa: E402
    MIB,
    RESULTS_DIR,
    SQLITE3_CLI,
    Config,
    cpu_seconds,
    evict_from_page_cache,
    fsync_file,
    load_average,
    machine_info,
    median,
    remove_db,
    rotate,
    rounded,
    workdir,
    write_json,
)
from core_parts import whole_core  # noqa: E402

# core.X reaches every part, and core.X = value rebinds X in every part that holds it (tests/core_parts.py)
core = whole_core(sqlite_fleet)

METHODS = ("ours", "ours_hash_after", "ours_nice0", "cli_backup", "cli_backup_nice10", "cp")
STEPS = ("copy_database", "inspect_copy", "run_integrity_check", "count_rows_in", "fsync_path", "sha256_file",
         "fsync_and_hash", "commit_backup")


class StepTimer:
    """Wall seconds of the core's steps during one snapshot (wrapping them; threads included)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._real: dict[str, Any] = {}

    def __enter__(self) -> StepTimer:
        for name in STEPS:
            real = self._real[name] = getattr(core, name)
            setattr(core, name, self._wrap(name, real))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, real in self._real.items():
            setattr(core, name, real)

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return timed


def snapshot_ours(db: Path, backups: Path, variant: str) -> dict[str, Any]:
    saved_nice, saved_copy = core.BACKUP_NICE, core.copy_database
    if variant == "ours_nice0":
        core.BACKUP_NICE = 0
    if variant == "ours_hash_after":
        core.copy_database = lambda *a, **k: saved_copy(*a, **{**k, "hash_copy": False})
    try:
        with StepTimer() as steps:
            result = core.snapshot(str(db), str(backups), "bench")
    finally:
        core.BACKUP_NICE, core.copy_database = saved_nice, saved_copy
    for path in (result["backup"], result["backup"] + ".sha256", result["backup"] + ".json"):
        os.unlink(path)
    if not result["verified"] or result["manifest"]["method"] != "pinned_copy":
        raise RuntimeError("the snapshot was not a verified pinned copy: %s" % result["problems"])
    return {"steps": steps.seconds}


def cli_backup(db: Path, out: Path, nice: int = 0) -> None:
    argv = [SQLITE3_CLI, str(db), ".backup '%s'" % out]
    subprocess.run((["nice", "-n", str(nice)] if nice else []) + argv, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fsync_file(out)


def copy_cp(db: Path, out: Path) -> None:
    subprocess.run(["cp", str(db), str(out)], check=True)
    fsync_file(out)


def idle_runs(config: Config, db: Path, scratch: Path, cold: bool) -> dict[str, Any]:
    out, backups = scratch / "out.db", scratch / "backups"
    actions: dict[str, Callable[[], Any]] = {
        "ours": lambda: snapshot_ours(db, backups, "ours"),
        "ours_hash_after": lambda: snapshot_ours(db, backups, "ours_hash_after"),
        "ours_nice0": lambda: snapshot_ours(db, backups, "ours_nice0"),
        "cli_backup": lambda: cli_backup(db, out),
        "cli_backup_nice10": lambda: cli_backup(db, out, 10),
        "cp": lambda: copy_cp(db, out),
    }
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    steps: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS if m.startswith("ours")}
    loads = []
    for round_no in range(config.rounds):
        for method in rotate(METHODS, round_no):
            remove_db(out)
            if cold:
                evict_from_page_cache(db)
            started, cpu_before = time.perf_counter(), cpu_seconds()
            result = actions[method]()
            seconds[method].append(time.perf_counter() - started)
            cpu[method].append(cpu_seconds() - cpu_before)
            remove_db(out)
            if method in steps:
                steps[method].append(result["steps"])
        loads.append(os.getloadavg()[0])
        config.log("  %s round %d: %s  load %.1f" % ("cold" if cold else "warm", round_no + 1, "  ".join(
            "%s %.2f" % (m, seconds[m][-1]) for m in METHODS), loads[-1]))
    nbytes = db.stat().st_size
    methods = {m: {"median_s": median(s), "seconds": s, "median_mib_s": nbytes / MIB / median(s),
                   "cpu_median_s": median(cpu[m])} for m, s in seconds.items()}
    for method, entries in steps.items():
        methods[method]["steps_median_s"] = {n: median([e.get(n, 0.0) for e in entries]) for n in STEPS}
    # time of ours / time of the other, median of per-round pairs (< 1: ours is faster)
    ratios = {"%s_vs_%s" % (a, b): statistics.median([x / y for x, y in zip(seconds[a], seconds[b])])
              for a in ("ours", "ours_hash_after", "ours_nice0") for b in ("cli_backup", "cli_backup_nice10", "cp")}
    ratios["ours_vs_ours_hash_after"] = statistics.median(
        [x / y for x, y in zip(seconds["ours"], seconds["ours_hash_after"])])
    return {"methods": methods, "time_ratios": ratios, "load_1min": loads}


def writer_runs(config: Config, db: Path, scratch: Path) -> dict[str, Any]:
    """Ours under an app-like writer (the bench_snapshot.py set-up): the writer's worst commit."""
    backups = scratch / "backups-writer"
    rounds: list[dict[str, Any]] = []
    alone: list[dict[str, Any]] = []
    for _ in range(1 if config.quick else 3):
        for phase in ("alone", "ours"):  # the writer alone for as long, as a baseline of this machine's load
            writer = app_writer.start_writer(db, rate=config.writer_rate, status_interval=0.05)
            ok = True
            try:
                writer.wait_ready(timeout=60)
                time.sleep(0.5)
                started = time.perf_counter()
                if phase == "ours":
                    result = core.snapshot(str(db), str(backups), "bench")
                    ok, _, _detail = app_writer.check_invariant(result["backup"], immutable=True)
                    for path in (result["backup"], result["backup"] + ".sha256", result["backup"] + ".json"):
                        os.unlink(path)
                else:
                    time.sleep(rounds[-1]["seconds"] if rounds else 1.0)
                seconds = time.perf_counter() - started
            finally:
                final = writer.stop()
            entry = {"seconds": seconds, "consistent": ok, "writer_max_ms": final.get("max_ms"),
                     "writer_p99_ms": final.get("p99_ms"), "locked_errors": final.get("locked_errors")}
            (rounds if phase == "ours" else alone).append(entry)
            config.log("  writer %s: %s" % (phase, entry))
    return {"rounds": rounds, "alone": alone, "worst_commit_ms": max(r["writer_max_ms"] for r in rounds),
            "worst_commit_alone_ms": max(r["writer_max_ms"] for r in alone),
            "consistent": all(r["consistent"] for r in rounds)}


def snapshot_size(config: Config, mib: int) -> dict[str, Any]:
    with workdir(config, "bench-issue15-") as scratch:
        db = scratch / "live.db"
        config.log("snapshot: creating a %d MiB WAL database" % mib)
        demo_db.create_demo_db(db, size_mb=mib, seed=11, journal_mode="wal")
        return {"mib": round(db.stat().st_size / MIB, 1),
                "warm": idle_runs(config, db, scratch, cold=False),
                "cold": idle_runs(config, db, scratch, cold=True),
                "under_writer": writer_runs(config, db, scratch)}


# --------------------------------------------------------------------------- report


def fmt_row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = ["# Issue 15: snapshot time and first full pull", "",
             "Generated by `bench/bench_snapshot_pull.py` on %s (%s, %s CPUs, %s MiB; Python %s, SQLite %s; %s)."
             % (m["date_utc"], m["cpu_model"], m["cpus"], m["memory_mib"], m["python"], m["python_sqlite"],
                m["sqlite3_cli"]),
             "The machine is shared with other jobs (load average at start %s, at end %s): every figure is the "
             "median of %d rounds, each method once per round in rotating order; ratios are medians of per-round "
             "pairs." % (m["load_average_at_start"], data["load_average_at_end"], data["rounds"]), ""]
    for size in data["snapshot"]:
        lines += ["## Snapshot, %s MiB WAL database, idle" % size["mib"], "",
                  fmt_row(["method", "warm median s", "warm MiB/s", "warm CPU s", "cold median s", "cold MiB/s",
                           "cold CPU s"]),
                  fmt_row(["---"] * 7)]
        for method in METHODS:
            w, c = size["warm"]["methods"][method], size["cold"]["methods"][method]
            lines.append(fmt_row([method, "%.3f" % w["median_s"], "%.0f" % w["median_mib_s"],
                                  "%.3f" % w.get("cpu_median_s", 0), "%.3f" % c["median_s"],
                                  "%.0f" % c["median_mib_s"], "%.3f" % c.get("cpu_median_s", 0)]))
        lines += ["", fmt_row(["time ratio (< 1: the first is faster)", "warm", "cold"]), fmt_row(["---"] * 3)]
        for key in size["warm"]["time_ratios"]:
            lines.append(fmt_row([key, "%.3f" % size["warm"]["time_ratios"][key],
                                  "%.3f" % size["cold"]["time_ratios"][key]]))
        lines += ["", "Where the time of a snapshot goes (wall seconds of the core's steps, median; the fsync "
                  "and the hash of `ours_hash_after` run in a thread beside the check; `ours` hashes inside "
                  "copy_database, trailing the copy):", "",
                  fmt_row(["step"] + ["%s %s" % (v, c) for v in ("ours", "ours_hash_after") for c in ("warm", "cold")]),
                  fmt_row(["---"] * 5)]
        for step in STEPS:
            lines.append(fmt_row([step] + ["%.3f" % size[c]["methods"][v]["steps_median_s"][step]
                                           for v in ("ours", "ours_hash_after") for c in ("warm", "cold")]))
        w = size["under_writer"]
        lines += ["", "Under an app-like writer (200 commits/s): worst commit %.1f ms over %d snapshots "
                  "(target <= 30 ms; the writer alone on this machine, as long: worst %.1f ms), snapshots "
                  "consistent: %s; runs: %s" % (
                      w["worst_commit_ms"], len(w["rounds"]), w.get("worst_commit_alone_ms", -1), w["consistent"],
                      ", ".join("%.2f s / max %.1f ms / p99 %.1f ms" % (r["seconds"], r["writer_max_ms"],
                                                                      r["writer_p99_ms"]) for r in w["rounds"])), ""]
    pull = data.get("first_pull")
    if pull:
        lines += ["## First full pull, %s MiB, unshaped link (test fleet host in a network namespace)" % pull["mib"],
                  "", "sqlite3_rsync: %s. `ssh_cat` (`ssh host cat file > file`) is the bare stream. "
                  % pull.get("sqlite3_rsync", "not measured") +
                  "`ours` = the whole `backup.yml` (snapshot on the host, staging, "
                  "fetch, import with the archive's full integrity_check, sync); the plain copies copy the "
                  "host's newest backup only.", "",
                  fmt_row(["method", "median s", "MiB/s", "throughput vs ssh_cat", "wire bytes"]),
                  fmt_row(["---"] * 5)]
        for method, entry in pull["methods"].items():
            lines.append(fmt_row([method, "%.2f" % entry["median_s"], "%.1f" % entry["median_mib_s"],
                                  "%.3f" % pull["throughput_vs_ssh_cat"][method], entry["wire_bytes_median"]]))
        lines += ["", "ssh options: with `%s`, without `%s`." % (pull["ssh_args_with_C"], pull["ssh_args_without_C"]),
                  "", "Where `backup.yml`'s time goes (profile_tasks, median seconds per task):", "",
                  fmt_row(["task", "ours (-C)", "ours_no_C"]), fmt_row(["---"] * 3)]
        tasks_c = pull["methods"]["ours"]["tasks_median_s"]
        tasks_n = pull["methods"]["ours_no_C"]["tasks_median_s"]
        for task in tasks_c:
            if max(tasks_c[task], tasks_n.get(task, 0.0)) >= 0.2:
                lines.append(fmt_row([task, "%.2f" % tasks_c[task], "%.2f" % tasks_n.get(task, 0.0)]))
        lines += ["", "A run where nothing changed (a second backup.yml, one small delta pulled), median of 2: %s."
                  % "; ".join("%s: %.2f s, %d bytes on the wire" % (k, v["seconds"], v["wire_bytes"])
                              for k, v in pull.get("no_change_run", {}).items())]
        lines += ["", "The controller's import checks of the pulled copy, each alone (median s): %s" % ", ".join(
            "%s %.3f" % kv for kv in pull["import_costs_median_s"].items()), ""]
    lines += data.get("notes", [])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512", help="snapshot database sizes in MiB (default 256,512)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pull-mb", type=int, default=256)
    parser.add_argument("--pull-rounds", type=int, default=3)
    parser.add_argument("--no-pull", action="store_true", help="skip the first pull (it needs root and a test fleet)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 MiB, one round")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    config = Config.quick_config() if args.quick else Config(rounds=args.rounds)
    sizes = [8] if args.quick else [int(s) for s in args.sizes.split(",")]
    data: dict[str, Any] = {"machine": machine_info(config), "rounds": config.rounds,
                            "snapshot": [snapshot_size(config, mib) for mib in sizes]}
    if not args.no_pull:
        import bench_first_pull
        pull_config = Config.quick_config() if args.quick else Config(rounds=args.pull_rounds, pull_mb=args.pull_mb)
        data["first_pull"] = {"mib": pull_config.pull_mb, **bench_first_pull.run(pull_config)}
    data["load_average_at_end"] = load_average()
    data = rounded(data)
    folder = Path(args.results_dir)
    write_json(folder / "issue15_snapshot_pull.json", data)
    (folder / "issue15_snapshot_pull.md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
