"""Smoke tests for the test fleet itself (tests/fleet.py): real sshd per namespace."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fleet as fleet_lib
import pytest
from fleet import Fleet

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = REPO_ROOT / ".venv" / "bin" / "ansible"
ONE_MIB = 1024 * 1024
RESULT_HEADER = re.compile(r"^(?P<host>\S+) \| (?P<status>[A-Z]+!?) => \{$")


def parse_adhoc_output(stdout: str) -> dict[str, tuple[str, dict]]:
    """Ad-hoc (minimal callback) output -> {host: (status, result)}.

    Each result is printed as 'host | STATUS => {' followed by indented JSON
    closed by '}' at the start of a line.
    """
    results: dict[str, tuple[str, dict]] = {}
    lines = iter(stdout.splitlines())
    for line in lines:
        if match := RESULT_HEADER.match(line):
            body = ["{"]
            for body_line in lines:
                body.append(body_line)
                if body_line == "}":
                    break
            results[match["host"]] = (match["status"], json.loads("\n".join(body)))
    return results


def run_ansible(fleet: Fleet, inventory: Path, *args: str) -> dict[str, tuple[str, dict]]:
    """Ad-hoc ansible from the repo root -> {host: (status, result)}."""
    argv = [str(ANSIBLE), "-i", str(inventory), *args]
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, env=fleet.env(), capture_output=True, text=True, timeout=120
    )
    results = parse_adhoc_output(proc.stdout)
    assert results, f"no per-host results (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return results


def our_namespaces() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    names = {entry["name"] for entry in json.loads(out or "[]")}
    return {name for name in names if fleet_lib.NAME_PATTERN.match(name)}


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


# ------------------------------------------------------------------------- (a)


def test_hosts_answer_over_ssh_and_keep_private_files(fleet3: Fleet) -> None:
    assert [host.name for host in fleet3] == ["pi1", "pi2", "pi3"]
    assert len({host.address for host in fleet3}) == 3
    for host in fleet3:
        result = host.ssh(["hostname"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == host.name

    pi1, pi2 = fleet3["pi1"], fleet3["pi2"]
    remote = "/var/backups/sqlite/x"
    try:
        written = pi1.ssh(["sh", "-c", f"echo only-on-pi1 > {remote}"])
        assert written.returncode == 0, written.stderr
        assert pi1.path(remote).read_text() == "only-on-pi1\n"
        assert pi1.path(remote) != Path(remote)
        assert not pi2.path(remote).exists()
        assert pi2.ssh(["test", "-e", remote]).returncode == 1
        assert not Path(remote).exists(), "private mount leaked into the controller's root"
        assert pi1.run(["cat", remote], capture_output=True, text=True).stdout == "only-on-pi1\n"
    finally:
        pi1.path(remote).unlink(missing_ok=True)


def test_unmounted_paths_are_shared_with_the_controller(fleet3: Fleet) -> None:
    assert fleet3["pi2"].path("/usr/bin/env") == Path("/usr/bin/env")
    assert fleet3["pi2"].path("/srv/app/a/../b.db") == fleet3["pi2"].root / "srv/app/b.db"
    with pytest.raises(ValueError):
        fleet3["pi2"].path("relative/path")


# ------------------------------------------------------------------------- (b)


def test_ssh_refuses_unknown_or_wrong_host_key(fleet3: Fleet, tmp_path: Path) -> None:
    pi1 = fleet3["pi1"]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    unknown = pi1.ssh(["true"], known_hosts=empty)
    assert unknown.returncode == 255
    assert "Host key verification failed" in unknown.stderr

    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)],
                   check=True)
    wrong = tmp_path / "wrong_known_hosts"
    key_type, key_b64 = other_key.with_suffix(".pub").read_text().split()[:2]
    wrong.write_text(f"{pi1.address} {key_type} {key_b64}\n")
    mismatch = pi1.ssh(["true"], known_hosts=wrong)
    assert mismatch.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in mismatch.stderr

    assert pi1.ssh(["true"]).returncode == 0


def test_ansible_refuses_host_missing_from_known_hosts(fleet3: Fleet, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    # A fresh control path: a master connection left by an earlier test (ControlPersist)
    # was verified when it was opened and would be reused without a new host key check.
    control = tmp_path / "cp"
    control.mkdir()
    inventory = fleet3.write_inventory(
        tmp_path / "hosts.yml",
        host_vars={"pi1": {"ansible_ssh_common_args": fleet3.ssh_common_args(empty),
                           "ansible_control_path_dir": str(control)}},
    )
    results = run_ansible(fleet3, inventory, "sqlite_hosts", "--limit", "pi1",
                          "-m", "ansible.builtin.ping")
    status, result = results["pi1"]
    assert status == "UNREACHABLE!", result
    assert "Host key verification failed" in result["msg"]


# ------------------------------------------------------------------------- (c)


def test_ansible_reaches_every_host_with_its_python(fleet3: Fleet, tmp_path: Path) -> None:
    inventory = fleet3.write_inventory(tmp_path / "hosts.yml")
    pings = run_ansible(fleet3, inventory, "sqlite_hosts", "-m", "ansible.builtin.ping")
    assert {host: status for host, (status, _) in pings.items()} == {
        "pi1": "SUCCESS", "pi2": "SUCCESS", "pi3": "SUCCESS"}

    facts = run_ansible(fleet3, inventory, "sqlite_hosts", "-m", "ansible.builtin.setup",
                        "-a", "filter=ansible_python_version")
    versions = {host: result["ansible_facts"]["ansible_python_version"]
                for host, (_, result) in facts.items()}
    assert set(versions) == {"pi1", "pi2", "pi3"}
    if os.access(fleet_lib.PI_PYTHON, os.X_OK):
        assert fleet3["pi1"].python == fleet_lib.PI_PYTHON
        assert versions["pi1"].startswith("3.9."), versions


def test_ansible_copies_files_over_sftp_into_private_mounts(
    fleet3: Fleet, tmp_path: Path
) -> None:
    inventory = fleet3.write_inventory(tmp_path / "hosts.yml")
    remote = "/srv/app/fleet-smoke.txt"
    try:
        results = run_ansible(
            fleet3, inventory, "sqlite_hosts", "-e", "ansible_ssh_transfer_method=sftp",
            "-m", "ansible.builtin.copy",
            "-a", f"content={{{{ inventory_hostname }}}} dest={remote} mode=0600",
        )
        assert {status for status, _ in results.values()} == {"CHANGED"}, results
        for host in fleet3:
            assert host.path(remote).read_text() == host.name
        assert not Path(remote).exists()
    finally:
        for host in fleet3:
            host.path(remote).unlink(missing_ok=True)


# ------------------------------------------------------------------------- (d)


def test_link_counters_down_up_and_shaping(make_fleet: Callable[..., Fleet]) -> None:
    (host,) = make_fleet(1).hosts
    rx_before, tx_before = host.link_bytes()
    sent = host.ssh(["sh", "-c", "cat > /dev/null"], input=os.urandom(ONE_MIB), text=False)
    assert sent.returncode == 0, sent.stderr
    rx_after, _ = host.link_bytes()
    assert rx_after - rx_before >= ONE_MIB

    pulled = host.ssh(["head", "-c", str(ONE_MIB), "/dev/urandom"], text=False)
    assert len(pulled.stdout) == ONE_MIB
    assert host.link_bytes()[1] - tx_before >= ONE_MIB

    host.link_down()
    started = time.monotonic()
    down = host.ssh(["true"])
    assert down.returncode == 255
    assert time.monotonic() - started < 3, "link_down should make ssh fail fast"
    host.link_up()
    assert host.ssh(["true"]).returncode == 0

    host.shape(rate="4mbit", burst="32kb", latency="400ms")  # ~0.5 MB/s from the host
    started = time.monotonic()
    slow = host.ssh(["head", "-c", str(ONE_MIB // 2), "/dev/urandom"], text=False)
    assert len(slow.stdout) == ONE_MIB // 2
    assert time.monotonic() - started >= 0.7, "tbf did not slow the host's egress"
    host.unshape()
    assert "tbf" not in subprocess.run(
        ["tc", "-n", host.ns, "qdisc", "show", "dev", host.ifname],
        capture_output=True, text=True).stdout


def test_add_and_remove_host(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(1)
    pi2 = fleet.add_host()
    assert pi2.name == "pi2" and pi2.ssh(["hostname"]).stdout.strip() == "pi2"
    fleet.remove_host("pi1")
    assert [host.name for host in fleet] == ["pi2"]
    assert pi2.ssh(["true"]).returncode == 0
    assert pi2.address in fleet.known_hosts.read_text()


# ------------------------------------------------------------------------- (e)


def test_teardown_leaves_nothing(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(2)
    namespaces = {host.ns for host in fleet}
    sshd_pids = [host.sshd_pid for host in fleet]
    writer = fleet["pi1"].popen(["sleep", "600"])
    workdir = fleet.workdir
    assert namespaces <= our_namespaces()

    fleet.close()

    assert not namespaces & our_namespaces()
    live = {host.ns for open_fleet in fleet_lib._LIVE_FLEETS for host in open_fleet}
    ours = {ns for ns in our_namespaces() if ns.startswith(fleet_lib.run_prefix())}
    assert ours <= live, "namespaces with this run's prefix outlive their fleet"
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    assert not namespaces & {link["ifname"] for link in json.loads(links)}
    assert all(process_gone(pid) for pid in sshd_pids)
    assert writer.poll() is not None
    assert not workdir.exists()
    assert not any(fleet_lib._claim_path(ns).exists() for ns in namespaces)


def test_cleanup_stale_removes_a_crashed_runs_hosts(make_fleet: Callable[..., Fleet]) -> None:
    make_fleet(0)  # skips (or fails in CI) when no fleet can be built
    script = (
        "import sys, time; import fleet\n"
        "f = fleet.Fleet(1).start()\n"
        "print(f[0].ns, f[0].sshd_pid, f.workdir, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests")}
    crashed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        ns, sshd_pid, workdir = crashed.stdout.readline().split()
    finally:
        crashed.send_signal(signal.SIGKILL)
        crashed.wait()
    assert ns in our_namespaces()

    removed = fleet_lib.cleanup_stale()

    assert ns in removed
    assert ns not in our_namespaces()
    assert process_gone(int(sshd_pid))
    assert not Path(workdir).exists()
