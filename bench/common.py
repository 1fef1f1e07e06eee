"""Shared pieces of the benchmarks: paths, timing, statistics, targets, machine facts.

Stdlib only. Every benchmark measures ours and the alternatives in the same run, in
alternating order, and reports ratios of paired runs (ours and an alternative measured
back to back), so that a machine that others load at the same time skews both sides alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
RESULTS_DIR = BENCH_DIR / "results"
for _folder in (REPO / "module_utils", REPO / "tools", REPO / "tests", REPO / "tests" / "integration"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

MIB = 1024 * 1024
SQLITE3_CLI = shutil.which("sqlite3") or "sqlite3"
RSYNC = shutil.which("rsync") or "rsync"


# --------------------------------------------------------------------------- config


@dataclass
class Config:
    """What to run and how big; ``quick`` shrinks everything to a smoke run."""

    quick: bool = False
    snapshot_mb: int = 512
    verify_mb: int = 128
    pull_mb: int = 192
    pull_change: float = 0.01
    pull_rate: str = "20mbit"
    fleet_sizes: tuple[int, ...] = (1, 5, 10, 20)
    fleet_before_sizes: tuple[int, ...] = (1, 20)
    rounds: int = 3
    writer_rate: float = 200.0
    writer_bound_s: float = 30.0
    tmp_base: str | None = None
    log: Callable[[str], None] = field(default=lambda text: print(text, flush=True))

    @classmethod
    def quick_config(cls, **overrides: Any) -> Config:
        values: dict[str, Any] = {
            "quick": True, "snapshot_mb": 16, "verify_mb": 8, "pull_mb": 16, "pull_rate": "100mbit",
            "fleet_sizes": (1, 2), "fleet_before_sizes": (1,), "rounds": 1, "writer_bound_s": 2.0,
        }
        values.update(overrides)
        return cls(**values)


# --------------------------------------------------------------------------- timing


def cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Timing:
    seconds: float
    cpu_seconds: float
    result: Any = None


def timed(function: Callable[[], Any]) -> Timing:
    """Wall and CPU seconds (this process and its children) of ``function()``."""
    cpu = cpu_seconds()
    started = time.perf_counter()
    result = function()
    return Timing(time.perf_counter() - started, cpu_seconds() - cpu, result)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rounded(value: Any, digits: int = 3) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def summary(seconds: Sequence[float], nbytes: int | None = None,
            cpu: Sequence[float] | None = None) -> dict[str, Any]:
    """median/best/all of repeated runs, MiB/s of the median and the best, and the median CPU
    seconds when the runs' ``cpu`` seconds (Timing.cpu_seconds) are given."""
    out: dict[str, Any] = {"runs": len(seconds), "seconds": [round(s, 3) for s in seconds],
                           "median_s": round(median(seconds), 3) if seconds else None,
                           "best_s": round(min(seconds), 3) if seconds else None}
    if nbytes and seconds:
        out["median_mib_s"] = round(nbytes / MIB / median(seconds), 1)
        out["best_mib_s"] = round(nbytes / MIB / min(seconds), 1)
    if cpu:
        out["cpu_seconds_median"] = round(median(cpu), 3)
    return out


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """Median of per-round ratios (runs of one round were measured back to back)."""
    ratios = [n / d for n, d in zip(numerators, denominators) if d]
    return round(statistics.median(ratios), 3) if ratios else None


def rotate(items: Sequence[Any], by: int) -> list[Any]:
    """``items`` rotated left by ``by``: each round starts with another method."""
    if not items:
        return []
    by %= len(items)
    return list(items[by:]) + list(items[:by])


# --------------------------------------------------------------------------- targets


def target(name: str, value: float | None, op: str, threshold: float, unit: str = "",
           why_missed: str = "", note: str = "") -> dict[str, Any]:
    """A target's verdict: PASS or MISS (and by how much), or NOT MEASURED."""
    entry: dict[str, Any] = {"name": name, "value": value, "op": op, "threshold": threshold, "unit": unit}
    if value is None:
        entry.update(status="NOT MEASURED", by="", why="not measured in this run")
        return entry
    ok = value >= threshold if op == ">=" else value <= threshold
    if ok:
        entry.update(status="PASS", by="")
    else:
        gap = threshold - value if op == ">=" else value - threshold
        word = "short by" if op == ">=" else "over by"
        if unit == "%":
            entry["by"] = "%s %s percentage points" % (word, fmt(gap))
        else:
            rel = gap / threshold if threshold else 0.0
            entry["by"] = "%s %s%s (%.0f%% %s the target)" % (word, fmt(gap), unit, rel * 100,
                                                              "below" if op == ">=" else "above")
        entry.update(status="MISS", why=why_missed)
    if note:
        entry["note"] = note
    return entry


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return "%.0f" % value
    if abs(value) >= 10:
        return "%.1f" % value
    return "%.3g" % value


# --------------------------------------------------------------------------- files


def fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def evict_from_page_cache(path: str | os.PathLike[str]) -> None:
    """Drop one file's pages from the page cache (its own pages only, nothing else's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def remove_db(path: str | os.PathLike[str]) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)


@contextlib.contextmanager
def workdir(config: Config, prefix: str) -> Iterator[Path]:
    """A private temporary folder on the bench file system, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=config.tmp_base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- machine


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def command_version(argv: Sequence[str]) -> str | None:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0].strip() if text else None


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def memory_mib() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def filesystem_of(path: str) -> str | None:
    """File system type of the mount holding ``path`` (from /proc/mounts)."""
    best = ("", None)
    with contextlib.suppress(OSError):
        real = os.path.realpath(path)
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")) \
                    and len(parts[1]) >= len(best[0]):
                best = (parts[1], parts[2])
    return best[1]


def machine_info(config: Config) -> dict[str, Any]:
    tmp = config.tmp_base or tempfile.gettempdir()
    return {
        "hostname": socket.gethostname(),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_mib": memory_mib(),
        "bench_tmp": tmp,
        "bench_tmp_fs": filesystem_of(tmp),
        "python": sys.version.split()[0],
        "python_sqlite": sqlite3.sqlite_version,
        "sqlite3_cli": command_version([SQLITE3_CLI, "--version"]),
        "rsync": command_version([RSYNC, "--version"]),
        "ssh": command_version(["ssh", "-V"]),
        "ansible": command_version([str(REPO / ".venv" / "bin" / "ansible"), "--version"]),
        "load_average_at_start": load_average(),
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".%s.tmp" % path.name)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
