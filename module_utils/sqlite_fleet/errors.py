# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kinds of failure (the runner's exit codes) and BackupError.

Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py).
"""

from __future__ import annotations

# Exit-code-like kinds of failure, shared by the modules and the runner.
KIND_BAD_INPUT = "bad_input"
KIND_LOCKED = "locked"
KIND_NO_SPACE = "no_space"
KIND_CORRUPT = "corrupt"
KIND_IO = "io"


class BackupError(Exception):
    """A failure with a message meant for an operator; ``kind`` says which sort."""

    def __init__(self, message: str, kind: str = KIND_IO) -> None:
        super().__init__(message)
        self.kind = kind


# A core task's outcome reaches Ansible once: its failure's message and kind over the result, or the result.
def finish_module(module, task) -> None:
    """Run ``task(params, check_mode, diff, warn) -> (result, failure)`` for an AnsibleModule and end it."""
    result, failure = task(module.params, check_mode=module.check_mode, diff=module._diff, warn=module.warn)
    if failure:
        module.fail_json(**dict(result, **failure))
    module.exit_json(**result)
