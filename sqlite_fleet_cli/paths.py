# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where things are: the repository (this package sits at its root), its playbooks, the core."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from types import ModuleType

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSIBLE_CFG = os.path.join(REPO, "ansible.cfg")
CALLBACK_PLUGINS = os.path.join(REPO, "callback_plugins")
RUNS_DIR = os.path.join(REPO, "var", "runs")

# command -> entry playbook at the repository root
PLAYBOOKS = {
    "backup": "backup.yml",
    "sync": "sync.yml",
    "stats": "stats.yml",
    "pre-upgrade": "pre_upgrade.yml",
    "restore": "restore.yml",
    "drill": "restore_drill.yml",
    "provision": "provision.yml",
    "offsite": "offsite_init.yml",  # sqlite-fleet offsite init
}


def command_of_playbook(path: str) -> str | None:
    """The command whose entry playbook (or playbooks/ twin) is ``path``; None for any other playbook."""
    base = os.path.basename(path or "")
    return next((command for command, playbook in PLAYBOOKS.items() if playbook == base), None)


@functools.cache
def core() -> ModuleType:
    """The repository's core (module_utils/sqlite_fleet), imported as ``sqlite_fleet``."""
    folder = os.path.join(REPO, "module_utils")
    if folder not in sys.path:
        sys.path.append(folder)
    return importlib.import_module("sqlite_fleet")
