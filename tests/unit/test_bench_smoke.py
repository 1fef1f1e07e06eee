"""Smoke test of the benchmarks: ``bench/run_all.py --quick --only snapshot,verify`` runs and
writes results with the expected shape. Speed is never asserted: only that every figure,
ratio and target verdict is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_results_with_every_figure_and_verdict(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run_all.py"), "--quick", "--only", "snapshot,verify",
         "--results-dir", str(results_dir), "--tmp", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((results_dir / "results.json").read_text())
    markdown = (results_dir / "results.md").read_text()

    assert results["errors"] == {}
    assert {"hostname", "date_utc", "python", "python_sqlite", "sqlite3_cli", "load_average_at_start",
            "load_average_at_end"} <= set(results["machine"])
    assert results["config"]["quick"] is True
    assert set(results["benchmarks"]) == {"snapshot", "verify"}

    snapshot = results["benchmarks"]["snapshot"]
    assert set(snapshot["idle"]["methods"]) == {"ours", "ours_copy", "ours_copy_backup_api", "cp_fsync",
                                                "cli_backup", "vacuum_into", "query_copy"}
    for figures in snapshot["idle"]["methods"].values():
        assert {"median_s", "best_s", "median_mib_s", "cpu_seconds_median"} <= set(figures)
    assert {"ours_vs_cli_backup", "ours_vs_cp_fsync", "ours_vs_vacuum_into", "ours_vs_query_copy",
            "ours_copy_vs_cli_backup"} <= set(snapshot["idle"]["throughput_ratios"])
    writer = snapshot["under_writer"]
    assert {"idle_commits_per_s", "ours_commits_per_s", "rate_ratio_ours_vs_idle", "ours_max_ms_worst",
            "ours_locked_errors", "cli_backup_finished", "stepped_backup_finished"} <= set(writer["summary"])
    assert writer["summary"]["ours_finished"] is True
    assert writer["summary"]["ours_consistent"] is True  # correctness, not speed

    verify = results["benchmarks"]["verify"]
    for kind in ("rows", "blobs"):
        db = verify["databases"][kind]
        assert {"sha256", "quick_check_default", "quick_check_ours", "integrity_check_default",
                "integrity_check_ours", "db_checks", "verify_backup"} <= set(db["figures"])
        assert {"integrity_check_speedup_ours_vs_default", "hashing_overhead_in_verify_backup"} <= set(db["ratios"])

    assert results["targets"], "no target verdicts"
    for verdict in results["targets"]:
        assert verdict["status"] in {"PASS", "MISS", "NOT MEASURED"}
        assert {"name", "value", "threshold", "benchmark"} <= set(verdict)
        if verdict["status"] == "MISS":
            assert verdict["by"], verdict
    assert "## Targets" in markdown and "## Snapshot" in markdown and "## Verification" in markdown


def test_issue15_snapshot_bench_writes_every_method_step_and_ratio(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_snapshot_pull.py"), "--quick", "--no-pull",
         "--results-dir", str(results_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((results_dir / "issue15_snapshot_pull.json").read_text())
    markdown = (results_dir / "issue15_snapshot_pull.md").read_text()
    (size,) = results["snapshot"]
    for cache in ("warm", "cold"):
        methods = size[cache]["methods"]
        assert set(methods) == {"ours", "ours_hash_after", "ours_nice0", "cli_backup", "cli_backup_nice10", "cp"}
        steps = methods["ours"]["steps_median_s"]
        assert {"copy_database", "inspect_copy", "fsync_path", "commit_backup"} <= set(steps)
        assert {"ours_vs_cli_backup", "ours_vs_cli_backup_nice10", "ours_vs_ours_hash_after"} <= set(
            size[cache]["time_ratios"])
    assert size["under_writer"]["consistent"] is True  # correctness, not speed
    assert "load_average_at_end" in results and "## Snapshot" in markdown


def test_payload_bench_writes_every_module_and_what_its_payload_holds(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_payload.py"), "--results-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = json.loads((tmp_path / "payload.json").read_text())["after"]
    assert {"sqlite_backup", "sqlite_checkpoint", "sqlite_archive"} <= set(after)
    backup = after["sqlite_backup"]
    assert backup["payload_bytes"] > backup["zip_bytes"] > backup["ansible_zipped_bytes"] > 0
    assert "snapshots" in backup["core_parts"] and "drills" not in backup["core_parts"]
    assert "| sqlite_backup |" in (tmp_path / "payload.md").read_text()
