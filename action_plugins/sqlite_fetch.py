# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind the sqlite_fetch task (documented in library/sqlite_fetch.py).

Fetches the files a host staged for a pull with the connection's own file transfer
(``fetch_file``: sftp/scp as the login user, a plain copy for the local connection) and then
removes the host's staging folders with one ``rm -rf`` (with become when the task has it).
No module is sent to the host: no stat, no slurp, no checksum run. The sha256 in the host's
manifest is checked when the archive imports the files. With $SQLITE_FLEET_PROGRESS_DIR set (the
CLI sets it), each file's growth is reported there while it is copied (the core's PullProgress).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import resource
import shlex
import signal

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

try:  # the collection (the build rewrites this import to the collection's module_utils)
    from ansible.module_utils.sqlite_fleet.export import EXPORT_PREFIX, STAGING_HOME_PREFIX
    from ansible.module_utils.sqlite_fleet.names import INCOMING_PREFIX
    from ansible.module_utils.sqlite_fleet.progress import PullProgress
except ImportError:  # the playbook repository: see core_on_the_controller
    import ansible.module_utils
    from ansible import constants

    def core_on_the_controller():
        """Make ansible.cfg's module_utils folders importable here, as ansible.module_utils.<name>.

        They serve modules only: Ansible ships them to hosts inside each module (AnsiballZ) but
        does not add them to the controller's own ansible.module_utils package. Appended after
        Ansible's own folder, so they never shadow one of its module_utils.
        """
        for folder in constants.config.get_config_value("DEFAULT_MODULE_UTILS_PATH"):
            if folder not in ansible.module_utils.__path__:
                ansible.module_utils.__path__.append(folder)

    core_on_the_controller()
    from ansible.module_utils.sqlite_fleet.export import EXPORT_PREFIX, STAGING_HOME_PREFIX
    from ansible.module_utils.sqlite_fleet.names import INCOMING_PREFIX
    from ansible.module_utils.sqlite_fleet.progress import PullProgress

ARGUMENT_SPEC = dict(
    transfers=dict(type="list", elements="dict", default=[]),
    dest=dict(type="path", required=True),
    incoming_prefix=dict(type="str", default=INCOMING_PREFIX),
    backup_dir=dict(type="str", required=True),
    staging_dirs=dict(type="list", elements="str", default=[]),
)


def host_path(path, what):
    """An absolute, normalised POSIX path on the host (no NUL, no newline), else AnsibleActionFail."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path or "\n" in path:
        raise AnsibleActionFail("%s must be an absolute path on the host, got %r" % (what, path))
    return posixpath.normpath(path)


def staging_home(backup_dir):
    """The core's staging_home: the folder beside backup_dir for a login user that cannot enter it."""
    parent, base = posixpath.split(backup_dir)
    return posixpath.join(parent, STAGING_HOME_PREFIX + base) if base else None


def staging_folder(path, backup_dir):
    """A staging folder the core makes: named with its prefix, directly in backup_dir or in its staging home."""
    folder = host_path(path, "staging folder")
    name = posixpath.basename(folder)
    home = staging_home(backup_dir)
    if posixpath.dirname(folder) not in (backup_dir, home) or not name.startswith(EXPORT_PREFIX) \
            or name == EXPORT_PREFIX:
        raise AnsibleActionFail("refusing to touch %s: it is not a staging folder (%s*) directly in %s%s"
                                % (path, EXPORT_PREFIX, backup_dir, " or %s" % home if home else ""))
    return folder


# Invariant: a fetch never writes more than the host announced. The transfer runs with the file
# size limit (RLIMIT_FSIZE) set to the announced size, in this worker process and in the sftp or
# scp it starts: a bigger file gets EFBIG instead of filling the archive's disk. Ansible's last
# fallback ("piped": the whole file read into memory) is never used.
@contextlib.contextmanager
def announced_size_limit(size):
    """While inside, no file written by this process or its children grows past ``size`` bytes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = size if hard == resource.RLIM_INFINITY else min(size, hard)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, nothing dies
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def plain_name(value, what):
    if not isinstance(value, str) or not value or value in (".", "..") or "/" in value or "\x00" in value:
        raise AnsibleActionFail("%s %r is not a plain file name" % (what, value))
    return value


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        host = (task_vars or {}).get("inventory_hostname", self._play_context.remote_addr)
        result.update(self.pull(args, host))
        return result

    # The one transfer of a pull, shared by this task and the sqlite_backup action plugin (one task per
    # host): fetch every checked transfer, then remove the host's staging folders, even when a fetch failed.
    def pull(self, args, host):
        """Fetch ``args["transfers"]`` to ``dest`` and remove ``staging_dirs``: this task's result.
        ``host``: the inventory host, as the progress files name it."""
        backup_dir = host_path(args["backup_dir"], "backup_dir")
        staging_dirs = sorted({staging_folder(path, backup_dir) for path in args["staging_dirs"]})
        plan = self.plan(args, staging_dirs)
        total = sum(entry["bytes"] for entry in plan)
        result = dict(changed=bool(plan or staging_dirs), staging_dirs=staging_dirs)

        if self._task.check_mode:
            result.update(fetched=plan, bytes=0, removed=[],
                          msg="would fetch %d file(s) (%d bytes) and remove %d staging folder(s)"
                          % (len(plan), total, len(staging_dirs)))
            return result

        fetched, failure = [], None
        self.bounded_transfer_method()
        try:
            for entry in plan:
                failure = self.fetch(entry, host)
                if failure:
                    break
                fetched.append(entry)
        except AnsibleConnectionFailure:
            try:  # best effort: the link may be gone (the next run's staging removes what is over a day old)
                self.remove(staging_dirs, backup_dir)
            except AnsibleError:
                pass
            raise
        removal = self.remove(staging_dirs, backup_dir)
        result.update(fetched=fetched, bytes=sum(entry["bytes"] for entry in fetched),
                      removed=staging_dirs if removal is None else [])
        problems = [problem for problem in (failure, removal) if problem]
        if problems:
            result.update(failed=True, msg="; ".join(problems))
        else:
            result["msg"] = "fetched %d file(s) (%d bytes); removed %d staging folder(s)" % (
                len(fetched), result["bytes"], len(staging_dirs))
        return result

    def plan(self, args, staging_dirs):
        """One entry per transfer: where it is on the host (inside a staging folder) and where it goes."""
        plan = []
        for index, transfer in enumerate(args["transfers"]):
            name = plain_name(transfer.get("name"), "database name of transfer #%d" % (index + 1))
            filename = plain_name(transfer.get("file"), "file of transfer #%d" % (index + 1))
            size = transfer.get("bytes")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise AnsibleActionFail("bytes of transfer #%d (%s) is not a size: %r" % (index + 1, filename, size))
            source = transfer.get("fetch_path")
            if source is not None or not self._task.check_mode:
                source = host_path(source, "fetch_path of %s" % filename)
                if posixpath.dirname(source) not in staging_dirs:
                    raise AnsibleActionFail("refusing to fetch %s: it is not in a staging folder of this run (%s)"
                                            % (source, ", ".join(staging_dirs) or "none"))
            dest = os.path.join(args["dest"], name, args["incoming_prefix"] + filename)
            plan.append({"name": name, "file": filename, "src": source, "dest": dest, "bytes": size,
                         "mode": transfer.get("mode")})
        return plan

    def fetch(self, entry, host):
        """Copy one staged file to the controller; a message when it failed (nothing left behind)."""
        try:
            with PullProgress.from_env(host, entry["name"], entry["dest"], entry["bytes"]), \
                    announced_size_limit(entry["bytes"]):
                self._connection.fetch_file(entry["src"], entry["dest"])
            got = os.path.getsize(entry["dest"])
            if got != entry["bytes"]:
                raise AnsibleError("got %d bytes, expected %d" % (got, entry["bytes"]))
            return None
        except AnsibleConnectionFailure:
            self.discard(entry["dest"])
            raise
        except (AnsibleError, OSError) as exc:
            grew = os.path.exists(entry["dest"]) and os.path.getsize(entry["dest"]) >= entry["bytes"]
            self.discard(entry["dest"])
            if grew:
                return ("the host served more than the %d bytes it announced for %s: stopped there, nothing kept (%s)"
                        % (entry["bytes"], entry["src"], " ".join(to_text(exc).split())))
            hint = ""
            if self._connection.become:
                hint = (" (the login user must be able to read the staged files: with become, the role passes it to "
                        "the backup as export.fetch_user - see sqlite_archive_fetch_user)")
            return "fetching %s from the host failed%s: %s" % (entry["src"], hint, " ".join(to_text(exc).split()))

    def bounded_transfer_method(self):
        """sftp (or scp when so configured) for the ssh connection, never "smart"'s piped fallback."""
        with contextlib.suppress(KeyError, AttributeError, AnsibleError):
            if self._connection.get_option("ssh_transfer_method") not in ("sftp", "scp"):
                self._connection.set_option("ssh_transfer_method", "sftp")

    @staticmethod
    def discard(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def remove(self, staging_dirs, backup_dir):
        """Remove the staging folders with one command (and the staging home beside backup_dir once
        empty: another run may still use it); a message when that failed."""
        if not staging_dirs:
            return None
        command = "rm -rf -- %s" % " ".join(shlex.quote(path) for path in staging_dirs)
        homes = sorted({posixpath.dirname(path) for path in staging_dirs} - {backup_dir})
        if homes:
            command += " && { rmdir -- %s 2>/dev/null || true; }" % " ".join(shlex.quote(path) for path in homes)
        done = self._low_level_execute_command(command, sudoable=True)
        if done["rc"] != 0:
            return "removing the staging folders %s on the host failed (rc %d): %s" % (
                ", ".join(staging_dirs), done["rc"], (done["stderr"] or done["stdout"]).strip())
        return None
