"""A test fleet of real SSH hosts, built from Linux namespaces.

Each host is a network namespace joined to the root namespace by a veth pair
(``10.213.<i>.1`` on the root side, ``10.213.<i>.2`` inside, interface ``eth0``),
running its own ``sshd`` inside a private mount (and UTS) namespace where a
per-host directory is bind-mounted over every path in ``mounts``. All hosts see
``/var/backups/sqlite`` and friends, but each has its own files, like a fleet of
Raspberry Pis. Host keys are checked everywhere: the fleet writes a
``known_hosts`` file with every host's key and never turns checking off.

Usage::

    with Fleet(3) as fleet:
        pi1 = fleet["pi1"]
        pi1.path("/srv/app/gym.db")        # that host's copy, seen from here
        pi1.ssh(["hostname"])              # real ssh, key + known_hosts
        fleet.write_inventory(tmp / "hosts.yml")

Needs root, iproute2 (``ip netns``), util-linux (``unshare``, ``nsenter``) and
openssh-server. ``fleet_unavailable_reason()`` says why a fleet cannot be built.
No pytest import here: bench scripts use this module too.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import Any

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PI_PYTHON = "/root/.pyenv/versions/3.9.18/bin/python3"
SYSTEM_PYTHON = "/usr/bin/python3"

DEFAULT_MOUNTS: tuple[str, ...] = (
    "/var/backups/sqlite",
    "/srv/app",
    "/opt/sqlite-backup",
    "/etc/cron.d",
    "/var/lib/node_exporter",
    "/var/log/sqlite-backup",
)
# Always private per host: Ansible's remote tmp (~/.ansible/tmp for root).
PRIVATE_MOUNTS: tuple[str, ...] = ("/root/.ansible",)

NAME_PREFIX = "sqlf"
# Namespace (and root-side veth) names: sqlf<pid % 10000>h<subnet index>, <= 12 chars.
NAME_PATTERN = re.compile(rf"^{NAME_PREFIX}(\d{{1,4}})h(\d{{1,3}})$")
SUBNET_PREFIX = "10.213"
MAX_SUBNETS = 254
HOST_IFNAME = "eth0"
SSH_PORT = 22
# Fallback route per subnet: while a host's link is down its traffic fails at once
# (ENETUNREACH) instead of leaking to the default gateway.
UNREACHABLE_METRIC = "4242"
STATE_DIR = Path("/run/sqlite-fleet")
DEFAULT_START_TIMEOUT = 10.0


class FleetError(RuntimeError):
    """A fleet could not be built, used or torn down."""


# --------------------------------------------------------------------------- helpers


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run argv, capture text output; raise FleetError with stderr on failure."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FleetError(f"{shlex.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise FleetError(f"{shlex.join(argv)} failed (exit {proc.returncode}): {detail}")
    return proc


def _process_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of pid, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of proc(5); fields[0] is field 3


def _kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def _ssh_public_key(path: Path) -> str:
    """'<type> <base64>' of an OpenSSH public key file (comment dropped)."""
    key_type, key_b64 = path.read_text().split()[:2]
    return f"{key_type} {key_b64}"


def _generate_key(path: Path, comment: str) -> None:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _ensure_dir(path: Path, mode: int = 0o755) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


def _is_under(path: PurePosixPath, mount: PurePosixPath) -> bool:
    return path == mount or mount in path.parents


# ------------------------------------------------------------- cross-process state
# One claim file per namespace, written under a lock before the namespace exists,
# records the owning process. It lets concurrent fleets (other pytest runs) pick
# distinct subnets and lets cleanup_stale() tell leftovers from live hosts.


@contextmanager
def _state_lock() -> Iterator[None]:
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _claim_path(ns: str) -> Path:
    return STATE_DIR / f"{ns}.json"


def _write_claim(ns: str, workdir: Path, owns_workdir: bool) -> None:
    claim = {
        "pid": os.getpid(),
        "start_time": _process_start_time(os.getpid()),
        "workdir": str(workdir),
        "owns_workdir": owns_workdir,
    }
    _claim_path(ns).write_text(json.dumps(claim))


def _read_claim(ns: str) -> dict[str, Any] | None:
    try:
        return json.loads(_claim_path(ns).read_text())
    except (OSError, ValueError):
        return None


def _drop_claim(ns: str) -> None:
    _claim_path(ns).unlink(missing_ok=True)


def _claim_owner_alive(claim: Mapping[str, Any] | None) -> bool:
    if not claim:
        return False
    start = _process_start_time(int(claim["pid"]))
    return start is not None and start == claim.get("start_time")


def _our_namespaces() -> list[str]:
    """Names of existing network namespaces that match our naming pattern."""
    out = _run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    names = [entry["name"] for entry in json.loads(out or "[]")]
    return [name for name in names if NAME_PATTERN.match(name)]


def _our_root_links() -> list[str]:
    out = _run(["ip", "-j", "link", "show"], check=False).stdout.strip()
    names = [entry["ifname"] for entry in json.loads(out or "[]")]
    return [name for name in names if NAME_PATTERN.match(name)]


def _subnets_in_use() -> set[int]:
    """Subnet indices taken by any fleet (ours, another process's, or stale)."""
    used: set[int] = set()
    for name in _our_namespaces() + _our_root_links():
        match = NAME_PATTERN.match(name)
        if match:
            used.add(int(match.group(2)))
    for claim in STATE_DIR.glob(f"{NAME_PREFIX}*.json"):
        match = NAME_PATTERN.match(claim.stem)
        if match:
            used.add(int(match.group(2)))
    out = _run(["ip", "-j", "-4", "addr", "show"], check=False).stdout.strip()
    for link in json.loads(out or "[]"):
        for addr in link.get("addr_info", []):
            used.update(_subnet_index(addr.get("local", "")))
    out = _run(["ip", "-j", "-4", "route", "show", "table", "all"], check=False).stdout.strip()
    for route in json.loads(out or "[]"):
        used.update(_subnet_index(route.get("dst", "")))
    return used


def _subnet_index(address: str) -> set[int]:
    """{i} when address (or a.b.c.d/len) lies in 10.213.i.0/24, else {}."""
    parts = address.split("/")[0].split(".")
    if len(parts) == 4 and ".".join(parts[:2]) == SUBNET_PREFIX and parts[2].isdigit():
        return {int(parts[2])}
    return set()


def _our_unreachable_routes() -> set[int]:
    """Subnet indices that have our fallback 'unreachable' route."""
    argv = ["ip", "-j", "-4", "route", "show", "type", "unreachable"]
    out = _run(argv, check=False).stdout.strip()
    indices: set[int] = set()
    for route in json.loads(out or "[]"):
        if str(route.get("metric")) == UNREACHABLE_METRIC:
            indices.update(_subnet_index(route.get("dst", "")))
    return indices


_next_subnet = 1  # rotate through indices so a freed subnet is not reused at once


def _allocate_subnet() -> int:
    """Pick a free 10.213.<i>.0/24 index. Call with _state_lock() held."""
    global _next_subnet
    used = _subnets_in_use()
    for offset in range(MAX_SUBNETS):
        index = (_next_subnet - 1 + offset) % MAX_SUBNETS + 1
        if index not in used:
            _next_subnet = index % MAX_SUBNETS + 1
            return index
    raise FleetError(f"no free subnet left in {SUBNET_PREFIX}.0.0/16")


def run_prefix() -> str:
    """Name prefix of this process's namespaces and links: sqlf<pid % 10000>h."""
    return f"{NAME_PREFIX}{os.getpid() % 10000}h"


def _namespace_name(index: int) -> str:
    return f"{run_prefix()}{index}"


# ----------------------------------------------------------------- network plumbing


def _subnet(index: int) -> str:
    return f"{SUBNET_PREFIX}.{index}.0/24"


def _remove_unreachable_route(index: int) -> None:
    _run(["ip", "route", "del", "unreachable", _subnet(index),
          "metric", UNREACHABLE_METRIC], check=False)


def _create_link(ns: str, root_if: str, index: int) -> None:
    """Namespace + veth pair; root side .1, host side (eth0) .2, lo up."""
    root_addr = f"{SUBNET_PREFIX}.{index}.1/24"
    host_addr = f"{SUBNET_PREFIX}.{index}.2/24"
    _run(["ip", "netns", "add", ns])
    _run(["ip", "route", "replace", "unreachable", _subnet(index),
          "metric", UNREACHABLE_METRIC])
    _run(["ip", "link", "add", root_if, "type", "veth",
          "peer", "name", HOST_IFNAME, "netns", ns])
    _run(["ip", "addr", "add", root_addr, "dev", root_if])
    _run(["ip", "link", "set", root_if, "up"])
    _run(["ip", "-n", ns, "addr", "add", host_addr, "dev", HOST_IFNAME])
    _run(["ip", "-n", ns, "link", "set", HOST_IFNAME, "up"])
    _run(["ip", "-n", ns, "link", "set", "lo", "up"])


def _namespace_pids(ns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(pid) for pid in out.split()]


def _kill_namespace_processes(ns: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pids := _namespace_pids(ns):
        if time.monotonic() > deadline:
            raise FleetError(f"processes {pids} in namespace {ns} survive SIGKILL")
        for pid in pids:
            _kill(pid)
        time.sleep(0.05)


def _remove_namespace(ns: str, root_if: str) -> None:
    """Kill every process in ns, delete the veth pair and the namespace."""
    if ns in _our_namespaces():
        _kill_namespace_processes(ns)
    _run(["ip", "link", "del", root_if], check=False)
    _run(["ip", "netns", "del", ns], check=False)
    match = NAME_PATTERN.match(ns)
    if match:
        _remove_unreachable_route(int(match.group(2)))


def _close_control_masters(control_dir: Path) -> None:
    """Ask lingering ssh ControlPersist masters (Ansible's) to exit."""
    if not control_dir.is_dir():
        return
    for sock in control_dir.iterdir():
        if sock.is_socket():
            _run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}",
                  "-O", "exit", "fleet-control-master"], check=False, timeout=5)


# ----------------------------------------------------------------------- stale runs


def cleanup_stale() -> list[str]:
    """Remove namespaces, links and claims left by dead processes; return ns names."""
    removed: list[str] = []
    with _state_lock():
        live: set[str] = set()
        for ns in _our_namespaces():
            claim = _read_claim(ns)
            if _claim_owner_alive(claim):
                live.add(ns)
                continue
            _remove_namespace(ns, ns)
            _remove_claimed_workdir(claim)
            _drop_claim(ns)
            removed.append(ns)
        for link in _our_root_links():
            if link not in live and not _claim_owner_alive(_read_claim(link)):
                _run(["ip", "link", "del", link], check=False)
        for claim_file in STATE_DIR.glob(f"{NAME_PREFIX}*.json"):
            claim = _read_claim(claim_file.stem)
            if _claim_owner_alive(claim):
                live.add(claim_file.stem)
            else:
                _remove_claimed_workdir(claim)
                claim_file.unlink(missing_ok=True)
        live_indices = {int(m.group(2)) for name in live if (m := NAME_PATTERN.match(name))}
        for index in _our_unreachable_routes() - live_indices:
            _remove_unreachable_route(index)
    return removed


def _remove_claimed_workdir(claim: Mapping[str, Any] | None) -> None:
    if claim and claim.get("owns_workdir"):
        shutil.rmtree(claim["workdir"], ignore_errors=True)


# --------------------------------------------------------------------- availability


@functools.cache
def fleet_unavailable_reason() -> str | None:
    """None when this machine can build a fleet, else why not (one line)."""
    if not sys.platform.startswith("linux"):
        return f"test fleet needs Linux namespaces (platform is {sys.platform})"
    if os.geteuid() != 0:
        return "test fleet needs root (network namespaces, veth links, bind mounts)"
    for tool in ("ip", "ssh", "ssh-keygen", "nsenter", "unshare", "tc"):
        if shutil.which(tool) is None:
            return f"test fleet needs the '{tool}' command (not on PATH)"
    for path in (SSHD, SFTP_SERVER):
        if not os.access(path, os.X_OK):
            return f"test fleet needs {path} (apt-get install openssh-server)"
    return _probe_namespaces()


def _probe_namespaces() -> str | None:
    """Create a throw-away netns with a veth pair and a private mount ns in it."""
    probe = f"{NAME_PREFIX}probe{os.getpid()}"
    steps: list[list[str]] = [
        ["ip", "netns", "add", probe],
        ["ip", "-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"],
        ["ip", "netns", "exec", probe, "unshare", "--mount", "--uts",
         "--propagation", "private", "true"],
    ]
    try:
        for argv in steps:
            _run(argv, timeout=10)
    except FleetError as exc:
        return f"test fleet cannot use namespaces here: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


# ---------------------------------------------------------------------------- hosts


def _sshd_config(address: str, host_dir: Path, authorized_keys: Path) -> str:
    """sshd_config as on a Pi: port 22, root by key only, sftp subsystem."""
    return "\n".join([
        f"ListenAddress {address}",
        f"Port {SSH_PORT}",
        "AddressFamily inet",
        f"HostKey {host_dir / 'ssh_host_ed25519_key'}",
        f"PidFile {host_dir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "X11Forwarding no",
        "PrintMotd no",
        "AcceptEnv LANG LC_*",
        f"Subsystem sftp {SFTP_SERVER}",
        "",
    ])


class Host:
    """One fleet member: a netns with its own sshd and private mounts."""

    def __init__(
        self, fleet: Fleet, name: str, index: int, python: str, mounts: Sequence[str]
    ) -> None:
        self.fleet = fleet
        self.name = name
        self.index = index
        self.ns = _namespace_name(index)
        self.root_if = self.ns
        self.ifname = HOST_IFNAME
        self.address = f"{SUBNET_PREFIX}.{index}.2"
        self.gateway = f"{SUBNET_PREFIX}.{index}.1"
        self.python = python
        self.mounts = tuple(mounts)
        self.dir = fleet.workdir / name
        self.root = self.dir / "root"
        self.sshd: subprocess.Popen[bytes] | None = None
        self._children: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} ns={self.ns}>"

    # -- files

    def path(self, path: str | os.PathLike[str]) -> Path:
        """Where `path`, as this host sees it, lives in the test process's filesystem.

        Paths under a private mount map into the host's own directory; any other
        path is shared with the controller and returned unchanged.
        """
        posix = PurePosixPath(os.path.normpath(os.fspath(path)))
        if not posix.is_absolute():
            raise ValueError(f"host paths must be absolute: {path!r}")
        for mount in self.mounts:
            if _is_under(posix, PurePosixPath(mount)):
                return self.root / posix.relative_to("/")
        return Path(posix)

    def empty(self, path: str | os.PathLike[str]) -> None:
        """Remove what the folder `path` (as this host sees it) holds; the folder itself stays
        (a private mount is a bind mount: it cannot go)."""
        for entry in self.path(path).iterdir():
            if entry.is_dir() and not entry.is_symlink():
                _run(["rm", "-rf", "--one-file-system", "--", str(entry)], timeout=300)
            else:
                entry.unlink()

    @property
    def host_key(self) -> str:
        """'ssh-ed25519 AAAA...' public host key."""
        return _ssh_public_key(self.dir / "ssh_host_ed25519_key.pub")

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    # -- processes inside the host

    @property
    def sshd_pid(self) -> int:
        if self.sshd is None or self.sshd.poll() is not None:
            raise FleetError(f"{self.name}: sshd is not running (log: {self.sshd_log})")
        return self.sshd.pid

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """argv wrapped to run in this host's network, mount and UTS namespaces."""
        return ["nsenter", "-t", str(self.sshd_pid), "-m", "-n", "-u", "--", *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(argv) inside the host (kwargs passed through)."""
        return subprocess.run(self.nsenter_argv(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen(argv) inside the host; killed at teardown if still alive."""
        proc = subprocess.Popen(self.nsenter_argv(argv), **kwargs)
        self._children.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Pids of every process in the host's network namespace (sshd included)."""
        return _namespace_pids(self.ns)

    # -- ssh

    def ssh_argv(
        self,
        command: str | Sequence[str],
        *,
        known_hosts: str | os.PathLike[str] | None = None,
        connect_timeout: int = 5,
    ) -> list[str]:
        """ssh argv for root@host with the fleet key; host key checking on."""
        remote = command if isinstance(command, str) else shlex.join(command)
        known = os.fspath(known_hosts) if known_hosts is not None else str(self.fleet.known_hosts)
        return [
            "ssh", "-F", "/dev/null",
            "-i", str(self.fleet.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ControlMaster=no",
            "-o", "ControlPath=none",
            "-p", str(SSH_PORT),
            "-l", "root",
            "--", self.address, remote,
        ]

    def ssh(
        self,
        command: str | Sequence[str],
        *,
        known_hosts: str | os.PathLike[str] | None = None,
        connect_timeout: int = 5,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """Run command over real ssh (a list is shell-quoted; a str goes as is).

        Output is captured as text unless stdout/stderr/text are given; a 60 s
        timeout applies unless `timeout` is given. Never raises on exit status
        unless check=True.
        """
        if "stdout" not in kwargs and "stderr" not in kwargs:
            kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        argv = self.ssh_argv(command, known_hosts=known_hosts, connect_timeout=connect_timeout)
        return subprocess.run(argv, **kwargs)

    # -- link

    def link_bytes(self) -> tuple[int, int]:
        """(rx_bytes, tx_bytes) of the host's eth0: rx = sent to it, tx = sent by it."""
        out = _run(["ip", "-n", self.ns, "-s", "-j", "link", "show", "dev", HOST_IFNAME]).stdout
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])

    def link_down(self, *, both_ends: bool = True) -> None:
        """Unplug the cable. both_ends (default) also downs the root side, so the
        route goes away and new connections fail at once (ENETUNREACH); with
        both_ends=False packets are silently lost (connections time out)."""
        _run(["ip", "-n", self.ns, "link", "set", HOST_IFNAME, "down"])
        if both_ends:
            _run(["ip", "link", "set", self.root_if, "down"])

    def link_up(self) -> None:
        """Plug the cable back in (both ends up; addresses and routes return)."""
        _run(["ip", "link", "set", self.root_if, "up"])
        _run(["ip", "-n", self.ns, "link", "set", HOST_IFNAME, "up"])

    def shape(self, rate: str = "20mbit", burst: str = "64kb", latency: str = "200ms") -> None:
        """Token-bucket limit on what the host sends (e.g. a pull from it)."""
        _run(["tc", "-n", self.ns, "qdisc", "replace", "dev", HOST_IFNAME, "root",
              "tbf", "rate", rate, "burst", burst, "latency", latency])

    def unshape(self) -> None:
        """Remove the rate limit (no error when none is set)."""
        _run(["tc", "-n", self.ns, "qdisc", "del", "dev", HOST_IFNAME, "root"], check=False)

    # -- lifecycle (driven by Fleet)

    def _prepare(self) -> None:
        """Create directories, mount sources, host key and sshd_config."""
        _ensure_dir(self.dir)
        for mount in self.mounts:
            if not any(_is_under(PurePosixPath(mount), PurePosixPath(other))
                       for other in self.mounts if other != mount):
                Path(mount).mkdir(parents=True, exist_ok=True)  # mount point in the real root
            _ensure_dir(self.root / mount.lstrip("/"))
        _generate_key(self.dir / "ssh_host_ed25519_key", f"root@{self.name}")
        config = _sshd_config(self.address, self.dir, self.fleet.client_key.with_suffix(".pub"))
        (self.dir / "sshd_config").write_text(config)
        _run([SSHD, "-t", "-f", str(self.dir / "sshd_config")])

    def _launch_argv(self) -> list[str]:
        """ip netns exec NS unshare -m -u sh -c 'mount --bind ...; exec sshd -D'."""
        lines = ["set -e"]
        for mount in sorted(self.mounts, key=lambda m: len(PurePosixPath(m).parts)):
            source = self.root / mount.lstrip("/")
            lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(mount)}")
        lines.append(f"hostname {shlex.quote(self.name)}")
        sshd = [SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")]
        lines.append(f"exec {shlex.join(sshd)}")
        return ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--uts",
                "--propagation", "private", "sh", "-c", "\n".join(lines)]

    def _start_sshd(self) -> None:
        with open(self.sshd_log, "ab") as log:
            self.sshd = subprocess.Popen(
                self._launch_argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def _ready(self) -> bool:
        """True once sshd answers with its banner; FleetError if it died."""
        if self.sshd is None or self.sshd.poll() is not None:
            log = self.sshd_log.read_text(errors="replace") if self.sshd_log.exists() else ""
            raise FleetError(f"{self.name}: sshd exited during start-up:\n{log[-2000:]}")
        try:
            with socket.create_connection((self.address, SSH_PORT), timeout=0.5) as conn:
                return conn.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    def _stop(self) -> None:
        """Stop sshd and everything else in the namespace; delete the link."""
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
        _remove_namespace(self.ns, self.root_if)
        for proc in [*self._children, *([self.sshd] if self.sshd else [])]:
            if proc.poll() is None:
                proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=3)
        _drop_claim(self.ns)


# ---------------------------------------------------------------------------- fleet

_LIVE_FLEETS: list[Fleet] = []


def _close_live_fleets() -> None:
    for fleet in list(_LIVE_FLEETS):
        if fleet.owner_pid == os.getpid():  # not in a forked child
            fleet.close()


atexit.register(_close_live_fleets)


class Fleet:
    """n SSH hosts pi1..pin; a context manager that tears everything down."""

    def __init__(
        self,
        n: int,
        mounts: Sequence[str] = DEFAULT_MOUNTS,
        workdir: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        if n < 0:
            raise ValueError(f"fleet size must be >= 0, got {n}")
        for mount in mounts:
            if not PurePosixPath(mount).is_absolute() or ".." in PurePosixPath(mount).parts:
                raise ValueError(f"mount paths must be absolute and normalised: {mount!r}")
        self.size = n
        normalised = [str(PurePosixPath(mount)) for mount in (*mounts, *PRIVATE_MOUNTS)]
        self.mounts = tuple(dict.fromkeys(normalised))
        self.start_timeout = start_timeout
        self._requested_workdir = Path(workdir) if workdir is not None else None
        self._owns_workdir = False
        self.workdir = Path()
        self.hosts: list[Host] = []
        self.owner_pid = os.getpid()
        self._host_dirs: list[Path] = []
        self._started = False
        self._closed = False

    # -- paths

    @property
    def client_key(self) -> Path:
        """Private key (ed25519, no passphrase) every host accepts for root."""
        return self.workdir / "client" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def control_path_dir(self) -> Path:
        """Where Ansible's ssh ControlPersist sockets for this fleet go."""
        return self.workdir / "cp"

    # -- access

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, key: int | str) -> Host:
        """fleet[0] or fleet["pi1"]."""
        if isinstance(key, int):
            return self.hosts[key]
        for host in self.hosts:
            if host.name == key:
                return host
        raise KeyError(key)

    # -- lifecycle

    def start(self) -> Fleet:
        """Create the workdir, client key and all hosts; wait until every sshd answers."""
        if self._started:
            raise FleetError("fleet already started")
        self._started = True
        _LIVE_FLEETS.append(self)
        try:
            cleanup_stale()
            self._make_workdir()
            self._new_hosts(self.size)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Tear down every host, Ansible's ssh masters and the workdir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        if self._owns_or_has_workdir():
            _close_control_masters(self.control_path_dir)
        for host in reversed(self.hosts):
            try:
                host._stop()
            except FleetError as exc:
                errors.append(str(exc))
        self.hosts.clear()
        self._remove_workdir()
        if self in _LIVE_FLEETS:
            _LIVE_FLEETS.remove(self)
        if errors:
            raise FleetError("fleet teardown incomplete: " + "; ".join(errors))

    def add_host(self) -> Host:
        """Add one more host (named after the highest existing piN) and start it."""
        self._require_running()
        (host,) = self._new_hosts(1)
        return host

    def remove_host(self, host: Host | str) -> None:
        """Stop one host and delete its namespace and directory."""
        self._require_running()
        target = self[host] if isinstance(host, str) else host
        target._stop()
        self.hosts.remove(target)
        shutil.rmtree(target.dir, ignore_errors=True)
        self._host_dirs.remove(target.dir)
        self._write_known_hosts()

    # -- ansible

    def close_control_masters(self) -> None:
        """Ask Ansible's ssh ControlPersist masters to exit: the next run connects afresh (and a
        downed link is noticed at once, not by a master's keep-alives)."""
        _close_control_masters(self.control_path_dir)

    def ssh_common_args(self, known_hosts: str | os.PathLike[str] | None = None) -> str:
        """Value for ansible_ssh_common_args: the fleet's known_hosts, checking on."""
        known = os.fspath(known_hosts) if known_hosts is not None else str(self.known_hosts)
        return shlex.join([
            "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=5",
        ])

    def host_vars(self, host: Host) -> dict[str, Any]:
        """Connection variables for one host."""
        return {
            "ansible_host": host.address,
            "ansible_port": SSH_PORT,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_python_interpreter": host.python,
            "ansible_ssh_common_args": self.ssh_common_args(),
            "ansible_control_path_dir": str(self.control_path_dir),
        }

    def inventory(
        self,
        group: str = "sqlite_hosts",
        host_vars: Mapping[str, Mapping[str, Any]] | None = None,
        group_vars: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Inventory as a dict: all -> children -> group -> hosts (+ vars)."""
        extra = host_vars or {}
        unknown = set(extra) - {host.name for host in self.hosts}
        if unknown:
            raise FleetError(f"host_vars for hosts not in the fleet: {sorted(unknown)}")
        hosts = {h.name: {**self.host_vars(h), **extra.get(h.name, {})} for h in self.hosts}
        body: dict[str, Any] = {"hosts": hosts}
        if group_vars:
            body["vars"] = dict(group_vars)
        return {"all": {"children": {group: body}}}

    def write_inventory(
        self,
        path: str | os.PathLike[str],
        group: str = "sqlite_hosts",
        host_vars: Mapping[str, Mapping[str, Any]] | None = None,
        group_vars: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the inventory as YAML (JSON syntax) to path; return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = self.inventory(group, host_vars, group_vars)
        target.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        return target

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for ansible/ansible-playbook against this fleet.

        base defaults to os.environ; pass {} to get only the fleet's variables.
        """
        merged = dict(os.environ if base is None else base)
        merged.update({
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_path_dir),
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.client_key),
        })
        return merged

    # -- internals

    def _require_running(self) -> None:
        if not self._started or self._closed:
            raise FleetError("fleet is not running (use it inside 'with Fleet(...)')")

    def _owns_or_has_workdir(self) -> bool:
        return self.workdir != Path() and self.workdir.exists()

    def _make_workdir(self) -> None:
        if self._requested_workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="sqlite-fleet-"))
            self._owns_workdir = True
        else:
            self.workdir = self._requested_workdir.resolve()
            self._owns_workdir = not self.workdir.exists()
            self.workdir.mkdir(parents=True, exist_ok=True)
        if self._owns_workdir:
            self.workdir.chmod(0o755)  # hosts' files may belong to non-root owners
        _ensure_dir(self.client_key.parent, 0o700)
        _generate_key(self.client_key, "sqlite-fleet-controller")
        _ensure_dir(self.control_path_dir, 0o700)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep dir

    def _remove_workdir(self) -> None:
        if not self._owns_or_has_workdir():
            return
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        for name in ("client", "cp", "known_hosts"):
            target = self.workdir / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        for host_dir in self._host_dirs:
            shutil.rmtree(host_dir, ignore_errors=True)

    def _python_for(self, number: int) -> str:
        """pi1 gets the Pi-like Python 3.9 when installed; others the system one."""
        if number == 1 and os.access(PI_PYTHON, os.X_OK):
            return PI_PYTHON
        if os.access(SYSTEM_PYTHON, os.X_OK):
            return SYSTEM_PYTHON
        return os.path.realpath(shutil.which("python3") or sys.executable)

    def _next_number(self) -> int:
        numbers = [int(h.name[2:]) for h in self.hosts]
        return max(numbers, default=0) + 1

    def _new_hosts(self, count: int) -> list[Host]:
        """Allocate, plumb and start count hosts in parallel; wait for all sshds."""
        new: list[Host] = []
        for _ in range(count):
            number = self._next_number()
            with _state_lock():
                index = _allocate_subnet()
                host = Host(self, f"pi{number}", index, self._python_for(number), self.mounts)
                _write_claim(host.ns, self.workdir, self._owns_workdir)
                self.hosts.append(host)
                self._host_dirs.append(host.dir)
                _create_link(host.ns, host.root_if, index)
            new.append(host)
        for host in new:
            host._prepare()
            host._start_sshd()
        self._write_known_hosts()
        self._wait_ready(new)
        return new

    def _wait_ready(self, hosts: Sequence[Host]) -> None:
        deadline = time.monotonic() + self.start_timeout
        waiting = list(hosts)
        while waiting:
            waiting = [host for host in waiting if not host._ready()]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(h.name for h in waiting)
                raise FleetError(f"sshd did not answer within {self.start_timeout}s on {names}")
            if waiting:
                time.sleep(0.02)

    def _write_known_hosts(self) -> None:
        lines = [f"{host.address} {host.host_key}\n" for host in self.hosts]
        self.known_hosts.write_text("".join(lines))
