#!/usr/bin/env python3
"""Run the benchmarks of issue #7 and write bench/results/results.json and results.md.

    .venv/bin/python bench/run_all.py                       # everything (about 15-20 minutes)
    .venv/bin/python bench/run_all.py --only snapshot,verify
    .venv/bin/python bench/run_all.py --quick --results-dir /tmp/r   # smoke run, small sizes

Benchmarks: snapshot (bench_snapshot.py), verify (bench_verify.py), pull (bench_pull.py) and
fleet (bench_fleet.py); pull and fleet need root and a test fleet (tests/fleet.py). Every
figure of ours is measured beside the alternatives in the same run; the results say which
targets are met (PASS) or missed (MISS, by how much and why). Speed is never asserted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, Config, load_average, machine_info, write_json  # noqa: E402

BENCHMARKS = ("snapshot", "verify", "pull", "fleet")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help="comma-separated benchmarks to run: %s (default all)" % ", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, one round")
    parser.add_argument("--size-mb", type=int, help="size of the snapshot benchmark's database (default 512)")
    parser.add_argument("--verify-mb", type=int, help="size of the verify benchmark's databases (default 128)")
    parser.add_argument("--pull-mb", type=int, help="size of the pull benchmark's database (default 192)")
    parser.add_argument("--rounds", type=int, help="repetitions of each measurement (default 3)")
    parser.add_argument("--fleet-sizes", help="comma-separated fleet sizes (default 1,5,10,20)")
    parser.add_argument("--fleet-before-sizes", help="fleet sizes also run before the cut (default 1,20)")
    parser.add_argument("--no-fleet-defaults", action="store_true",
                        help="skip the fleet run without pipelining and ControlPersist (skipped by --quick)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where results.json/.md go")
    parser.add_argument("--tmp", help="folder for scratch files (default: the system's temporary folder)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in BENCHMARKS]
    if unknown:
        parser.error("unknown benchmark(s): %s (choose from %s)" % (", ".join(unknown), ", ".join(BENCHMARKS)))
    return args


def make_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    if args.size_mb:
        overrides["snapshot_mb"] = args.size_mb
    if args.verify_mb:
        overrides["verify_mb"] = args.verify_mb
    if args.pull_mb:
        overrides["pull_mb"] = args.pull_mb
    if args.rounds:
        overrides["rounds"] = args.rounds
    if args.fleet_sizes:
        overrides["fleet_sizes"] = tuple(int(n) for n in args.fleet_sizes.split(","))
    if args.fleet_before_sizes is not None:
        overrides["fleet_before_sizes"] = tuple(int(n) for n in args.fleet_before_sizes.split(",") if n)
    if args.tmp:
        overrides["tmp_base"] = args.tmp
    return Config.quick_config(**overrides) if args.quick else Config(**overrides)


def runner(name: str, args: argparse.Namespace) -> Callable[[Config], dict[str, Any]]:
    if name == "snapshot":
        import bench_snapshot
        return bench_snapshot.run
    if name == "verify":
        import bench_verify
        return bench_verify.run
    if name == "pull":
        import bench_pull
        return bench_pull.run
    import bench_fleet
    with_defaults = not (args.no_fleet_defaults or args.quick)
    variants = ("after", "before") + (("no_pipelining_no_controlpersist",) if with_defaults else ())
    return lambda config: bench_fleet.run(config, variants)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so fleets, writers and scratch files are cleaned up."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    config = make_config(args)
    started = time.monotonic()
    results: dict[str, Any] = {
        "issue": 7,
        "machine": machine_info(config),
        "config": {k: v for k, v in vars(config).items() if k != "log"},
        "benchmarks": {},
        "errors": {},
    }
    for name in args.only:
        config.log("== %s" % name)
        bench_started = time.monotonic()
        try:
            results["benchmarks"][name] = runner(name, args)(config)
        except Exception as exc:  # one broken benchmark does not lose the others' figures
            results["errors"][name] = "%s: %s\n%s" % (type(exc).__name__, exc, traceback.format_exc()[-3000:])
            config.log("!! %s failed: %s" % (name, exc))
        else:
            results["benchmarks"][name]["runtime_s"] = round(time.monotonic() - bench_started, 1)
    results["machine"]["load_average_at_end"] = load_average()
    results["runtime_s"] = round(time.monotonic() - started, 1)
    results["targets"] = [dict(t, benchmark=name) for name, data in results["benchmarks"].items()
                          for t in data.get("targets", [])]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.results_dir / "results.json", results)
    import report

    markdown = report.render(results)
    (args.results_dir / "results.md").write_text(markdown)
    print(report.render_targets(results["targets"]))
    print("runtime %.0f s; results in %s" % (results["runtime_s"], args.results_dir))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
