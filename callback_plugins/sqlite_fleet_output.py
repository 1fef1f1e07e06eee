# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible's default output, with a bad variable said in one line.

A role's argument validation that fails prints, with the default callback, the error, then the
task's whole argument spec (thousands of characters) and the error again. Here it is one line:
``fatal: [host]: bad variable: argument 'sqlite_backup_keep_last' is of type str ...``.
Everything else is the default callback's. Set as stdout_callback in ansible.cfg (sqlite-fleet
sets it through ansible-runner, whose event callback builds on it).
"""

from __future__ import annotations

from ansible import constants as C
from ansible.plugins.callback.default import CallbackModule as DefaultCallback

DOCUMENTATION = r"""
name: sqlite_fleet_output
type: stdout
short_description: the default output, with failed argument validation in one line
description:
  - The default callback, except that a failed role argument validation prints one line per host
    (the argument errors) instead of the error, the argument spec and the error again.
extends_documentation_fragment:
  - default_callback
  - result_format_callback
requirements:
  - set as stdout_callback in ansible.cfg
author:
  - sqlite-fleet-backup authors
"""

VALIDATION_ACTIONS = ("validate_argument_spec", "ansible.builtin.validate_argument_spec")


def task_and_result(result):
    """(task, result dict) of a callback's task result, ansible-core 2.17 to 2.19."""
    task = getattr(result, "task", None) or result._task
    res = getattr(result, "result", None)
    return task, (res if isinstance(res, dict) else result._result)


class CallbackModule(DefaultCallback):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "sqlite_fleet_output"

    def v2_runner_on_failed(self, result, ignore_errors=False):
        task, res = task_and_result(result)
        if task.action not in VALIDATION_ACTIONS or not res.get("argument_errors"):
            return super().v2_runner_on_failed(result, ignore_errors)
        if self._last_task_banner != task._uuid:
            self._print_task_banner(task)
        errors = "; ".join(str(error).splitlines()[0] for error in res["argument_errors"])
        self._display.display("fatal: [%s]: bad variable: %s" % (self.host_label(result), errors),
                              color=C.COLOR_ERROR, stderr=self.get_option("display_failed_stderr"))
        if ignore_errors:
            self._display.display("...ignoring", color=C.COLOR_SKIP)
        return None
