"""Smoke test of bench/bench_cost.py: ``--quick`` runs against its own test fleet and writes its
results with every figure. Speed is never asserted; only that the figures are there and that every
host's backup reached the archive, verified, in both variants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_quick_cost_bench_writes_every_figure(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_cost.py"), "--quick", "--name", "smoke",
                           "--results-dir", str(tmp_path / "results"), "--tmp", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "smoke.json").read_text())
    assert "## Per host" in (tmp_path / "results" / "smoke.md").read_text()
    for scenario in ("no_change", "change_1pct"):
        rows = result["one_host"]["medians"][scenario]
        assert set(rows) == {"one_task", "separate", "rsync"}
        for row in rows.values():
            assert row["seconds"] > 0 and row["wire_bytes"] > 0, row
    for variant, data in result["per_host"]["medians"].items():
        assert data["controller_cpu_s_per_extra_host"] is not None, variant
        for hosts, row in data["by_hosts"].items():
            assert row["hosts_archived"] == int(hosts), (variant, hosts, row)
            assert row["hosts_verified"] == int(hosts), (variant, hosts, row)
            assert row["controller_cpu_s"] > 0, (variant, hosts, row)
