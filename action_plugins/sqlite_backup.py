# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin in front of the sqlite_backup module (documented in library/sqlite_backup.py).

Without ``archive`` it only runs the module on the host. With ``archive`` (a dict: archive_dir, host,
databases, integrity, lock_timeout, prune, retention, incoming_prefix) one task does a database's whole
backup and pull, as ``fetch`` and ``template`` do their work in one task: on the controller it checks
the archive's retention policy, lists what the archive holds, runs the module on the host once (with
``export.have`` filled in), checks what the host staged and the archive's room, fetches it over the
task's connection (sqlite_fetch's transfer, the same function), imports it verified against the host's
manifest and prunes the archive. The archive work runs in this worker, with no module process.

With ``archive`` and ``runner`` (a dict: dir, python; the role passes it when sqlite_backup_use_runner),
the host side runs through the on-host runner that roles/sqlite_runner installed there
(``<python> <dir>/sqlite_backup_runner.py task --expect-core <our core_sha256>``, the options on
stdin), which calls the module's own function (backup_task): no module payload goes over the wire.
No runner, another core or output that is not the runner's reply: the module runs, as without
``runner``. The result's ``host_side`` says which ran (runner or module).
"""

from __future__ import annotations

import json
import os
import shlex

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

try:  # the collection
    from ansible_collections.sqlitefleet.sqlite_fleet.plugins.action.sqlite_fetch import ActionModule as PullAction
except ImportError:  # the playbook repository: sqlite_fetch's import makes the core importable too
    from ansible.plugins.loader import action_loader

    PullAction = action_loader.get("sqlite_fetch", class_only=True)
    # Mitogen's strategies hand out every action class with their mixin in front, this one included:
    # ours builds on the plain class, or adorning it too would have no consistent MRO (a TypeError).
    PullAction = next(klass for klass in PullAction.__mro__ if klass.__name__ == "ActionModule")

from ansible.module_utils.sqlite_fleet.archive import (  # noqa: E402 (after the loader made it importable)
    archive_options,
    archived_backups,
)
from ansible.module_utils.sqlite_fleet.backup_task import (  # noqa: E402
    backup_options,
    read_task_reply,
)
from ansible.module_utils.sqlite_fleet.catalog import core_sha256  # noqa: E402
from ansible.module_utils.sqlite_fleet.errors import KIND_IO, BackupError  # noqa: E402
from ansible.module_utils.sqlite_fleet.inputs import validate_abs_path, validate_name  # noqa: E402
from ansible.module_utils.sqlite_fleet.names import INCOMING_PREFIX  # noqa: E402
from ansible.module_utils.sqlite_fleet.pull import import_and_prune, prepare_pull  # noqa: E402
from ansible.module_utils.sqlite_fleet.retention import retention_options, retention_policy  # noqa: E402

ARCHIVE_SPEC = dict(
    archive_options(),
    databases=dict(type="list", elements="str", required=True),
    integrity=dict(type="str", default="full", choices=["quick", "full"]),
    prune=dict(type="bool", default=True),
    retention=dict(type="dict", options=retention_options()),
    incoming_prefix=dict(type="str", default=INCOMING_PREFIX),
)
RUNNER_SPEC = dict(dir=dict(type="str", required=True), python=dict(type="str"))
RUNNER_FILE = "sqlite_backup_runner.py"


class ActionModule(PullAction):
    TRANSFERS_FILES = False
    _requires_connection = True
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = ActionBase.run(self, tmp, task_vars)
        del tmp
        module_args = dict(self._task.args)
        archive = module_args.pop("archive", None)
        runner = module_args.pop("runner", None)
        if not archive:
            result.update(self.run_module(module_args, task_vars))
            return result
        checked = ArgumentSpecValidator(ARCHIVE_SPEC).validate(archive if isinstance(archive, dict) else {})
        if not isinstance(archive, dict) or checked.error_messages:
            raise AnsibleActionFail("archive: %s" % ("; ".join(checked.error_messages) or "must be a dict"))
        archive = checked.validated_parameters
        if not archive["prune"]:
            archive["retention"] = None
        try:
            host_dir, folder = self.archive_folders(archive, module_args)
            if archive["retention"] is not None:  # a bad policy fails before a backup is taken
                retention_policy(archive["retention"])
            listed = archived_backups(folder, clean=not self._task.check_mode, lock_timeout=archive["lock_timeout"])
        except BackupError as exc:
            raise AnsibleActionFail(str(exc), result=dict(kind=exc.kind)) from None
        except OSError as exc:
            raise AnsibleActionFail("listing the archive of %s failed: %s" % (folder, exc)) from None
        module_args["export"] = dict(module_args.get("export") or {}, have=listed["have"])

        result.update(self.run_host_side(module_args, runner, task_vars))
        result["archive"] = pulled = dict(folder=folder, have=listed["have"],
                                          removed_unfinished=listed["removed_unfinished"])
        if result.get("failed") or result.get("unreachable"):
            return result
        if "transfers" not in result:
            raise AnsibleActionFail("the sqlite_backup module staged nothing to pull (its result has no transfers)")
        staging = [result["staging_dir"]] if result.get("staging_dir") else []
        self.pull_into_archive(result, pulled, archive, host_dir, module_args["backup_dir"], staging)
        return result

    def run_module(self, module_args, task_vars):
        return self._execute_module(module_name=self._task.action, module_args=module_args, task_vars=task_vars)

    # Invariant: the module runs exactly when the runner did not reply that it ran the task (with our core).
    def run_host_side(self, module_args, runner, task_vars):
        """The host's backup through its runner when it has ours, else through the module."""
        ran, why = self.run_runner(module_args, runner) if runner else (None, "no runner option")
        if ran is None:
            ran = dict(self.run_module(module_args, task_vars), host_side="module")
            if runner:
                ran["host_side_why"] = why
        return ran

    def run_runner(self, module_args, runner):
        """The runner's ``task`` command with the module's options on stdin: its result, or None and why."""
        checked = ArgumentSpecValidator(RUNNER_SPEC).validate(runner if isinstance(runner, dict) else {})
        if not isinstance(runner, dict) or checked.error_messages:
            raise AnsibleActionFail("runner: %s" % ("; ".join(checked.error_messages) or "must be a dict"))
        options = checked.validated_parameters
        if any(isinstance(module_args.get(key), str) and ("~" in module_args[key] or "$" in module_args[key])
               for key in ("path", "backup_dir")):
            return None, "a path to expand on the host"  # the module's type=path expands it there
        validated = ArgumentSpecValidator(backup_options()).validate(module_args)
        if validated.error_messages:
            return None, "options the module reports on"  # the module gives the one-line error
        expect = core_sha256()
        if not expect:
            return None, "no core_sha256 on the controller"
        script = options["dir"].rstrip("/") + "/" + RUNNER_FILE
        python = options["python"] if options["python"] and options["python"].startswith("/") else None
        argv = ([python] if python else []) + [script, "task", "--expect-core", expect]
        params = validated.validated_parameters
        request = json.dumps(dict(params=params, check_mode=bool(self._task.check_mode), diff=bool(self._task.diff)))
        done = self._low_level_execute_command(" ".join(shlex.quote(arg) for arg in argv), in_data=request.encode())
        result, why = read_task_reply(done["rc"], done.get("stdout") or "")
        if result is not None:  # as a module's result: what ran, and with which options (run records read them)
            result.update(host_side="runner", invocation={"module_args": params})
        return result, why

    @staticmethod
    def archive_folders(archive, module_args):
        archive_dir = validate_abs_path(archive["archive_dir"], "archive folder")
        host_dir = os.path.join(archive_dir, validate_name(archive["host"], "host"))
        return host_dir, os.path.join(host_dir, validate_name(module_args.get("name")))

    def pull_into_archive(self, result, pulled, archive, host_dir, backup_dir, staging):
        """Check, fetch, import and prune; ``result`` fails with the first step that failed."""
        check_mode = self._task.check_mode
        warnings = result.setdefault("warnings", [])
        try:
            prepared = prepare_pull(os.path.dirname(host_dir), archive["host"], result["transfers"],
                                    archive["databases"], check_mode=check_mode, warn=warnings.append)
        except (BackupError, OSError) as exc:
            self.remove(staging, backup_dir)  # nothing fetched: the staging folder goes now
            result.update(failed=True, msg="checking the pull of %s failed: %s" % (archive["host"], exc),
                          kind=getattr(exc, "kind", KIND_IO))
            return
        pulled.update(transfers=prepared["transfers"], dropped=prepared["dropped"], flagged=prepared["flagged"],
                      need_bytes=prepared["need_bytes"], free_bytes=prepared["free_bytes"])
        fetched = self.pull(dict(transfers=prepared["transfers"], dest=host_dir,
                                 incoming_prefix=archive["incoming_prefix"], backup_dir=backup_dir,
                                 staging_dirs=staging), archive["host"])
        pulled.update(fetched=fetched["fetched"], bytes=fetched["bytes"], removed=fetched["removed"])
        if fetched.get("failed"):
            result.update(failed=True, msg=fetched["msg"])
            return
        params = dict(transfers=prepared["transfers"], dropped=prepared["dropped"],
                      databases=[os.path.basename(pulled["folder"])], retention=archive["retention"],
                      host=archive["host"], integrity=archive["integrity"], lock_timeout=archive["lock_timeout"])
        try:
            imported, failure = import_and_prune(params, host_dir, check_mode=check_mode,
                                                 diff=self._task.diff, warn=warnings.append)
        except (BackupError, OSError) as exc:
            imported, failure = {}, {"msg": "archive import for %s failed: %s" % (archive["host"], exc),
                                     "kind": getattr(exc, "kind", KIND_IO)}
        pulled.update(imported=imported.get("imported", []), pruned=imported.get("pruned", []))
        if imported.get("diff"):
            pulled["diff"] = imported["diff"]
        result["changed"] = bool(result.get("changed") or prepared["changed"] or fetched["changed"]
                                 or imported.get("changed"))
        if failure:
            result.update(failed=True, **failure)
        else:
            result["msg"] = "%s; %s; %s" % (result.get("msg") or "backed up", fetched["msg"], imported["msg"])
        if not warnings:
            del result["warnings"]
