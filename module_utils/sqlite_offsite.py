# Copyright: sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The offsite copy: the archive's verified backups sent to a restic repository.

restic does the encryption, the deduplication, the storage protocols and the verification; this
file only drives the ``restic`` binary. Stdlib-only and independent of the rest of the core, so
it also runs alone. The repository password reaches restic through its environment
(RESTIC_PASSWORD_FILE, or RESTIC_PASSWORD from a vault variable), never a command line.

A snapshot holds, relative to the archive's root, ``<host>/<database>/<backup>.db`` with its
``.sha256`` and manifest (``.json``) for every verified backup of the hosts sent: the archive's
own layout, so a restored snapshot is an archive again.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

TAG_TOOL = "sqlite-fleet"
SNAPSHOT_HOST = "sqlite-fleet"
BACKUP_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)_backup_\d{8}_\d{6}(?:_\d+)?\.db$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KEEP_RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly", "within")
DURATION_RE = re.compile(r"^(?:\d+[ymdh])+$")
SUBSET_RE = re.compile(r"^(?:\d+/\d+|\d+(?:\.\d+)?%|\d+[kKmMgGtT]?)$")
MANIFEST_MAX_BYTES = 1 << 20


# What restic or ssh print when the back end cannot be reached (or stops answering).
UNREACHABLE_SIGNS = ("ssh command exited", "connection refused", "connection reset", "connection closed",
                     "connection lost", "no route to host", "network is unreachable", "i/o timeout", "timed out",
                     "not responding", "broken pipe", "dial tcp", "unable to start the sftp session",
                     "could not resolve", "no such host", "host key verification failed",
                     "permission denied (publickey")


class OffsiteError(Exception):
    """A failure with a one-line message for the operator (never the password)."""


class ResticEnv(dict):
    """restic's environment (secrets included), plus its extended options (``-o key=value``, no secrets)."""

    options: list[str]


# --------------------------------------------------------------------------- environment


def check_password_file(path: str) -> None:
    """Refuse a password file that is missing, empty, not a regular file or readable by others."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise OffsiteError("offsite password file %s: %s" % (path, exc.strerror)) from None
    if not stat.S_ISREG(st.st_mode):
        raise OffsiteError("offsite password file %s is not a regular file" % path)
    if st.st_mode & 0o077:
        raise OffsiteError("offsite password file %s is mode %04o: make it 0600 (chmod 600 %s)"
                           % (path, stat.S_IMODE(st.st_mode), path))
    if st.st_size == 0:
        raise OffsiteError("offsite password file %s is empty" % path)


def restic_env(repository: str, password_file: str | None = None, password: str | None = None,
               backend_env: Mapping[str, str] | None = None, cache_dir: str | None = None,
               options: Sequence[str] = ()) -> ResticEnv:
    """The environment restic runs with: the repository, its password (file or value) and the
    back end's credentials; the caller's own RESTIC_* variables are dropped. ``options`` are
    restic's extended options (e.g. ``sftp.command=ssh -p 2222 backup@host -s sftp``)."""
    if not repository or not isinstance(repository, str):
        raise OffsiteError("no offsite repository given (sqlite_offsite_repository)")
    env = ResticEnv((k, v) for k, v in os.environ.items() if not k.startswith("RESTIC_"))
    env.options = []
    for option in options or ():
        if not isinstance(option, str) or not re.fullmatch(r"[a-z0-9]+(?:\.[a-z0-9-]+)+=.*", option, re.S):
            raise OffsiteError("restic option %r is not key=value (e.g. sftp.command=...)" % (option,))
        env.options += ["-o", option]
    env.update({"RESTIC_REPOSITORY": repository, "LC_ALL": "C"})
    if password_file:
        check_password_file(password_file)
        env["RESTIC_PASSWORD_FILE"] = password_file
    elif password:
        env["RESTIC_PASSWORD"] = password
    else:
        raise OffsiteError("no offsite repository password: set sqlite_offsite_password_file (0600) "
                           "or sqlite_offsite_password (from Ansible Vault)")
    for key, value in (backend_env or {}).items():
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", str(key)):
            raise OffsiteError("back-end variable name %r is not an environment variable name" % (key,))
        env[str(key)] = str(value)
    if cache_dir:
        env["RESTIC_CACHE_DIR"] = cache_dir
    return env


def restic_binary(path: str | None = None) -> str:
    found = shutil.which(path or "restic")
    if not found:
        raise OffsiteError("restic is not installed on the controller (apt-get install restic, brew install restic)")
    return found


# --------------------------------------------------------------------------- errors


# Invariant: every failure of restic becomes one line that names the cause, never the password.
def restic_error(stderr: str, repository: str, doing: str, secrets: Sequence[str] = ()) -> str:
    """One line for a failed restic run, from its error output."""
    text = stderr or ""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    low = text.lower()
    where = redact_url(repository)
    if "wrong password" in low or "no key found" in low:
        cause = "wrong password for the offsite repository %s" % where
    elif "is there a repository at the following location" in low or \
            ("config" in low and "no such file" in low) or "repository does not exist" in low:
        cause = ("no restic repository at %s: create it with sqlite-fleet offsite init or "
                 "ansible-playbook backup.yml -e sqlite_offsite_init=true (once; see docs/offsite.md)" % where)
    elif "already locked" in low:
        lock_line = first_line(text, ("locked", "lock was created"))
        cause = "the offsite repository %s is locked (%s): another run is using it; if none is, run " \
                "`restic unlock`" % (where, lock_line)
    elif any(sign in low for sign in UNREACHABLE_SIGNS):
        cause = "offsite back end %s unreachable: %s" % (where, first_line(text, ("subprocess ssh", "timeout")))
    elif "ignoring error for " in low:  # restore: restic names each file whose data did not decrypt
        damaged = re.findall(r"ignoring error for (\S+?): (.*)", text)
        cause = "damaged data in the offsite repository %s: %s could not be restored (%s); the archive's " \
                "copies are untouched, run restic check --read-data to name the damaged packs" % (
                    where, ", ".join(path for path, _ in damaged[:5]) + (" and more" if len(damaged) > 5 else ""),
                    damaged[0][1].strip()[:120])
    elif "no space left" in low:
        cause = "the offsite repository %s is full: %s" % (where, first_line(text, ("no space",)))
    else:
        cause = "restic failed on %s: %s" % (where, first_line(text, ()) or "no error output")
    return "offsite %s failed: %s" % (doing, cause)


def first_line(text: str, wanted: Sequence[str]) -> str:
    """The most telling line of an error output: one that names a wanted word, else the first
    Fatal/error line, else the first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for word in wanted:
        for line in lines:
            if word in line.lower():
                return line[:300]
    for line in lines:
        if line.lower().startswith(("fatal", "error", "subprocess ssh")):
            return line[:300]
    return lines[0][:300] if lines else ""


def redact_url(repository: str) -> str:
    """A repository URL without a password that may be written in it (rest:https://u:p@host/)."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", repository)


# ssh's own words when an SFTP back end's connection is gone: restic 0.14 never opens a new one in
# the same run and would retry against the dead one for many minutes.
SSH_GONE_RE = re.compile(r"subprocess ssh: .*(timeout|not responding|connection (closed|reset|refused|timed out)|"
                         r"broken pipe|no route to host|network is unreachable)", re.I)


# Invariant: restic gets its secrets from the environment only; its argv holds none.
def run_restic(args: Sequence[str], env: Mapping[str, str], doing: str, *, cwd: str | None = None,
               timeout: float | None = None, ok_codes: Sequence[int] = (0,), binary: str | None = None
               ) -> subprocess.CompletedProcess:
    """Run restic; a failure raises OffsiteError with one clear line. When its ssh (SFTP back end)
    reports the link gone, restic is stopped at once instead of retrying a dead connection."""
    argv = [restic_binary(binary), *getattr(env, "options", []), *args]
    secrets = [env.get("RESTIC_PASSWORD", "")]
    proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stderr_lines: list[str] = []
    stopped = {"why": None}

    def stop(why: str) -> None:
        if stopped["why"] is None and proc.poll() is None:
            stopped["why"] = why
            proc.terminate()  # restic removes its lock when it can, then exits
            threading.Timer(10.0, lambda: proc.poll() is None and proc.kill()).start()

    def read_stderr() -> None:
        for line in proc.stderr:
            stderr_lines.append(line)
            if SSH_GONE_RE.search(line):
                stop("link")

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, stop, ("timeout",)) if timeout else None
    if timer:
        timer.start()
    try:
        stdout = proc.stdout.read()
        proc.wait()
        reader.join(15)
    finally:
        if timer:
            timer.cancel()
    if stopped["why"] == "timeout":
        raise OffsiteError("offsite %s failed: restic did not finish within %s s (back end %s too slow or "
                           "unreachable)" % (doing, timeout, redact_url(env["RESTIC_REPOSITORY"])))
    if proc.returncode not in ok_codes or stopped["why"]:
        raise OffsiteError(restic_error("".join(stderr_lines), env["RESTIC_REPOSITORY"], doing, secrets))
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, "".join(stderr_lines))


def json_lines(stdout: str) -> list[Any]:
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# --------------------------------------------------------------------------- what is sent


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def backup_problem(path: str) -> tuple[str | None, dict[str, Any]]:
    """Why an archived backup must not go offsite (None when it may), and its manifest.

    Verified means: the manifest says verified, and the bytes match both the manifest's and the
    .sha256's checksum now."""
    base = os.path.basename(path)
    try:
        with open(path + ".json", "rb") as handle:
            manifest = json.loads(handle.read(MANIFEST_MAX_BYTES + 1).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        return "no readable manifest (%s)" % exc, {}
    if not isinstance(manifest, dict) or manifest.get("file") != base:
        return "manifest does not describe %s" % base, {}
    if manifest.get("verified") is not True:
        return "not verified", manifest
    try:
        with open(path + ".sha256", "rb") as handle:
            line = handle.read(4096).decode("ascii", "replace")
    except OSError:
        return "no .sha256 file", manifest
    match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)\n?", line)
    if not match or match.group(2) != base or match.group(1) != manifest.get("sha256"):
        return ".sha256 file does not match the manifest", manifest
    try:
        actual = sha256_file(path)
    except OSError as exc:
        return "cannot be read: %s" % exc.strerror, manifest
    if actual != match.group(1):
        return "bytes no longer match the checksum (sha256 %s)" % actual[:12], manifest
    return None, manifest


def verified_backups(archive_dir: str, hosts: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The archive's backups that may go offsite (``send``), and the ones held back (``held``).

    Only folders shaped like the archive (<host>/<database>/<name>_backup_*.db) are looked at;
    symbolic links are never followed."""
    send: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    if not os.path.isdir(archive_dir):
        raise OffsiteError("the archive %s does not exist" % archive_dir)
    for host in sorted(os.listdir(archive_dir)):
        host_dir = os.path.join(archive_dir, host)
        if (hosts is not None and host not in hosts) or not NAME_RE.fullmatch(host) or host == "runs" \
                or os.path.islink(host_dir) or not os.path.isdir(host_dir):
            continue
        for name in sorted(os.listdir(host_dir)):
            db_dir = os.path.join(host_dir, name)
            if not NAME_RE.fullmatch(name) or os.path.islink(db_dir) or not os.path.isdir(db_dir):
                continue
            for entry in sorted(os.listdir(db_dir)):
                match = BACKUP_RE.fullmatch(entry)
                path = os.path.join(db_dir, entry)
                if not match or match.group("name") != name or os.path.islink(path) or not os.path.isfile(path):
                    continue
                problem, manifest = backup_problem(path)
                item = {"host": host, "name": name, "file": entry, "label": manifest.get("label"),
                        "created": manifest.get("created"), "size_bytes": os.path.getsize(path),
                        "relpath": "%s/%s/%s" % (host, name, entry)}
                if problem:
                    held.append(dict(item, why=problem))
                else:
                    send.append(item)
    return {"send": send, "held": held}


def snapshot_tags(backups: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()) -> list[str]:
    """The tags of a run's snapshot: the tool, then host:<h>, db:<h>/<name>, label:<l> of what it holds."""
    tags = [TAG_TOOL]
    for item in backups:
        for tag in ("host:%s" % item["host"], "db:%s/%s" % (item["host"], item["name"])) + \
                (("label:%s" % item["label"],) if item.get("label") else ()):
            if tag not in tags:
                tags.append(tag)
    for tag in extra:
        if tag and "," not in tag and tag not in tags:
            tags.append(tag)
    return tags


def newest_sent(backups: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """host -> database -> the newest backup (``file``, ``created``) among those a snapshot holds."""
    newest: dict[str, dict[str, dict[str, Any]]] = {}
    for item in backups:
        best = newest.setdefault(item["host"], {}).get(item["name"])
        key = (str(item.get("created") or ""), item["file"])
        if best is None or key > (str(best.get("created") or ""), best["file"]):
            newest[item["host"]][item["name"]] = {"file": item["file"], "created": item.get("created")}
    return newest


# Invariant: one snapshot per run, holding only backups verified just before it is taken.
def send(archive_dir: str, env: Mapping[str, str], *, hosts: Sequence[str] | None = None,
         snapshot_host: str = SNAPSHOT_HOST, limit_upload_kib: int = 0, tags: Sequence[str] = (),
         check_mode: bool = False, timeout: float | None = None) -> dict[str, Any]:
    """Send the archive's verified backups (with .sha256 and manifest) as one restic snapshot.

    restic reads only what changed since the last snapshot and uploads only new chunks, so
    ``data_added`` is what this run sent (before compression on the wire)."""
    if check_mode and not os.path.isdir(archive_dir):
        chosen: dict[str, list[dict[str, Any]]] = {"send": [], "held": []}  # the first run's pull would make it
    else:
        chosen = verified_backups(archive_dir, hosts)
    result: dict[str, Any] = {"backups": [b["relpath"] for b in chosen["send"]], "held_back": chosen["held"],
                              "snapshot_id": None, "data_added": 0, "files_new": 0, "files_changed": 0,
                              "changed": False}
    if not chosen["send"]:
        result["msg"] = "no verified backup in the archive to send"
        return result
    snapshot_tags_list = snapshot_tags(chosen["send"], tags)
    args = ["backup", "--json", "--host", snapshot_host, "--tag", ",".join(snapshot_tags_list)]
    # The file list changes every run, so restic would find no parent by its paths: name it, so
    # that files already sent (same size, time and inode) are not even read again.
    try:
        previous = list_snapshots(env, snapshot_host, timeout, doing="upload")
    except OffsiteError as exc:
        if not (check_mode and "no restic repository" in str(exc)):
            raise
        # check mode before the repository is created (sqlite_offsite_init): all of it would be sent
        result.update(tags=snapshot_tags_list, data_added=sum(b["size_bytes"] for b in chosen["send"]),
                      msg="the repository does not exist yet: everything would be sent")
        return result
    if previous:
        args += ["--parent", previous[-1]["id"]]
    if limit_upload_kib:
        args += ["--limit-upload", str(int(limit_upload_kib))]
    if check_mode:
        args.append("--dry-run")
    with tempfile.NamedTemporaryFile("w", prefix=".sqlite-offsite-files.", dir=None, delete=False) as listing:
        for item in chosen["send"]:
            for suffix in ("", ".sha256", ".json"):
                listing.write(item["relpath"] + suffix + "\n")
    try:
        args += ["--files-from-verbatim", listing.name]
        proc = run_restic(args, env, "upload", cwd=archive_dir, timeout=timeout, ok_codes=(0,))
    finally:
        os.unlink(listing.name)
    summary = next((m for m in json_lines(proc.stdout) if isinstance(m, dict) and m.get("message_type") == "summary"),
                   {})
    result.update({
        "snapshot_id": None if check_mode else summary.get("snapshot_id"),
        "data_added": int(summary.get("data_added") or 0),
        "files_new": int(summary.get("files_new") or 0),
        "files_changed": int(summary.get("files_changed") or 0),
        "tags": snapshot_tags_list,
        "newest": newest_sent(chosen["send"]),
        "changed": not check_mode,
    })
    return result


# --------------------------------------------------------------------------- repository


def init_repository(env: Mapping[str, str], check_mode: bool = False, timeout: float | None = None) -> dict[str, Any]:
    """Create the repository unless it exists (a repository is never created twice)."""
    try:
        run_restic(["cat", "config"], env, "repository check", timeout=timeout)
        return {"changed": False, "created": False, "msg": "the offsite repository exists"}
    except OffsiteError as exc:
        if "no restic repository" not in str(exc):
            raise
    if check_mode:
        return {"changed": True, "created": False, "msg": "would create the offsite repository"}
    run_restic(["init"], env, "init", timeout=timeout)
    return {"changed": True, "created": True, "msg": "created the offsite repository"}


def list_snapshots(env: Mapping[str, str], snapshot_host: str | None = None,
                   timeout: float | None = None, doing: str = "listing") -> list[dict[str, Any]]:
    """The tool's snapshots, oldest first."""
    args = ["snapshots", "--json", "--tag", TAG_TOOL]
    if snapshot_host:
        args += ["--host", snapshot_host]
    proc = run_restic(args, env, doing, timeout=timeout)
    try:
        snapshots = json.loads(proc.stdout or "[]") or []
    except ValueError:
        raise OffsiteError("offsite listing failed: restic's output is not JSON") from None
    return sorted(snapshots, key=lambda s: s.get("time", ""))


def newest_per_database(snapshots: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """For every db:<host>/<name> tag, the newest snapshot that holds it."""
    newest: dict[str, dict[str, Any]] = {}
    for snap in sorted(snapshots, key=lambda s: s.get("time", "")):
        for tag in snap.get("tags") or []:
            if tag.startswith("db:"):
                newest[tag[3:]] = dict(snap)
    return newest


# Invariant: only locks of dead processes on this machine (or older than restic's stale limit) go.
def remove_stale_locks(env: Mapping[str, str], timeout: float | None = None) -> None:
    """``restic unlock`` (without --remove-all): a run cut off mid-upload leaves its lock behind,
    and the next run's forget or check (which need the repository alone) would fail on it forever."""
    run_restic(["unlock"], env, "unlock", timeout=timeout)


# --------------------------------------------------------------------------- retention


def forget_args(policy: Mapping[str, Any]) -> list[str]:
    """restic forget's --keep-* flags for sqlite_offsite_keep_*; an empty policy is refused."""
    args: list[str] = []
    for rule in KEEP_RULES:
        value = policy.get(rule)
        if value in (None, "", 0, "0"):
            continue
        if rule == "within":
            if not isinstance(value, str) or not DURATION_RE.fullmatch(value):
                raise OffsiteError("sqlite_offsite_keep_within %r is not a duration such as 30d or 1y6m" % (value,))
            args += ["--keep-within", value]
        else:
            try:
                count = int(value)
            except (TypeError, ValueError):
                raise OffsiteError("sqlite_offsite_keep_%s %r is not a whole number" % (rule, value)) from None
            if count < 0:
                raise OffsiteError("sqlite_offsite_keep_%s must not be negative" % rule)
            args += ["--keep-%s" % rule, str(count)]
    if not args:
        raise OffsiteError("the offsite retention keeps nothing: set at least one sqlite_offsite_keep_*")
    return args


# Invariant: the newest snapshot holding each host/database is never forgotten.
def forget(env: Mapping[str, str], policy: Mapping[str, Any], *, snapshot_host: str = SNAPSHOT_HOST,
           prune: bool = True, check_mode: bool = False, timeout: float | None = None) -> dict[str, Any]:
    """Forget the snapshots the policy does not keep (and prune their data), except the newest of
    every host/database; check mode lists what would be forgotten."""
    keep = forget_args(policy)
    if not check_mode:
        remove_stale_locks(env, timeout)
    snapshots = list_snapshots(env, snapshot_host, timeout, doing="retention")
    protected = {s["id"] for s in newest_per_database(snapshots).values()}
    proc = run_restic(["forget", "--dry-run", "--json", "--tag", TAG_TOOL, "--host", snapshot_host,
                       "--group-by", "host", *keep], env, "retention", timeout=timeout)
    groups = next((m for m in json_lines(proc.stdout) if isinstance(m, list)), [])
    removable = [s for g in groups for s in (g.get("remove") or [])]
    forgotten = [s for s in removable if s.get("id") not in protected]
    spared = [s["short_id"] for s in removable if s.get("id") in protected]
    result = {"forgotten": [{"id": s.get("short_id"), "time": s.get("time"), "tags": s.get("tags")} for s in forgotten],
              "spared_newest": spared, "kept": len(snapshots) - len(forgotten), "changed": False}
    if forgotten and not check_mode:
        args = ["forget", *[s["id"] for s in forgotten]]
        if prune:
            args.append("--prune")
        run_restic(args, env, "retention", timeout=timeout)
        result["changed"] = True
    elif forgotten:
        result["changed"] = True
    return result


# --------------------------------------------------------------------------- verification


def check(env: Mapping[str, str], read_data_subset: str = "", timeout: float | None = None,
          check_mode: bool = False) -> dict[str, Any]:
    """restic check (with --read-data-subset when given): names the damaged packs on failure.
    It only reads; outside check mode the stale locks of dead runs go first."""
    args = ["check"]
    if read_data_subset:
        if not SUBSET_RE.fullmatch(str(read_data_subset)):
            raise OffsiteError("sqlite_offsite_check_read_data_subset %r is not n/t, x%% or a size such as 500M"
                               % (read_data_subset,))
        args += ["--read-data-subset", str(read_data_subset)]
    if not check_mode:
        remove_stale_locks(env, timeout)
    proc = run_restic(args, env, "check", timeout=timeout, ok_codes=(0, 1))
    if proc.returncode == 0:
        return {"ok": True, "read_data_subset": read_data_subset or None, "damaged_packs": []}
    damaged = sorted(set(re.findall(r"(?:[Pp]ack |[Pp]ack ID does not match, want )([0-9a-f]{8,64})",
                                         proc.stdout + proc.stderr)))
    if damaged:
        raise OffsiteError("offsite check failed: the repository %s has damaged pack(s) %s: the archive still "
                           "holds the backups; see docs/offsite.md, a damaged pack"
                           % (redact_url(env["RESTIC_REPOSITORY"]), ", ".join(d[:16] for d in damaged)))
    raise OffsiteError(restic_error(proc.stderr or proc.stdout, env["RESTIC_REPOSITORY"], "check",
                                    [env.get("RESTIC_PASSWORD", "")]))


# --------------------------------------------------------------------------- restore


def restore(env: Mapping[str, str], target_dir: str, *, snapshot: str = "latest", hosts: Sequence[str] | None = None,
            snapshot_host: str | None = SNAPSHOT_HOST, timeout: float | None = None) -> dict[str, Any]:
    """Restore a snapshot (the newest by default) into ``target_dir``, laid out like the archive.

    The restored files are then checked by the same code as the archive's (checksum against the
    manifest, integrity_check, row counts) before anything uses them."""
    if snapshot != "latest" and not re.fullmatch(r"[0-9a-f]{8,64}", snapshot):
        raise OffsiteError("offsite snapshot %r is not latest or a snapshot id" % (snapshot,))
    os.makedirs(target_dir, mode=0o700, exist_ok=True)
    os.chmod(target_dir, 0o700)
    args = ["restore", snapshot, "--target", target_dir, "--tag", TAG_TOOL]
    if snapshot_host:
        args += ["--host", snapshot_host]
    for host in hosts or ():
        if not NAME_RE.fullmatch(host):
            raise OffsiteError("host name %r is not an archive folder name" % (host,))
        args += ["--include", "/%s" % host]
    run_restic(args, env, "restore", timeout=timeout)
    restored = verified_backups(target_dir, hosts)
    return {"target_dir": target_dir, "backups": [b["relpath"] for b in restored["send"]],
            "damaged": restored["held"]}


def age_seconds(created: str | None, now: _dt.datetime | None = None) -> float | None:
    if not created:
        return None
    try:
        moment = _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return ((now or _dt.datetime.now(_dt.timezone.utc)) - moment).total_seconds()
