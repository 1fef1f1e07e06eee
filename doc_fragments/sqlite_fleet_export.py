# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The export options (staging on the host what the controller's archive lacks), written once.

DOCUMENTATION: as one dict option, O(export) (sqlite_backup; the module gives its own description).
OPTIONS: the same as top-level options (sqlite_export).
"""

from __future__ import annotations

from textwrap import dedent, indent


class ModuleDocFragment:
    # Only literal strings in this class: ansible-test's yamllint reads them without running the file.
    DOCUMENTATION = r"""
options:
  export:
    description:
      - Stage in a private folder what the controller's archive lacks, for the pull.
    type: dict
    suboptions:
      have:
        description:
          - The archive's backups of this database, as
            RV(sqlitefleet.sqlite_fleet.sqlite_archive_info#module:have) returns them.
        type: list
        elements: dict
        default: []
      delta:
        description: Send deltas against a shared older backup when possible.
        type: bool
        default: true
      max_backups:
        description: Send at most this many of the newest missing backups (V(0) means all).
        type: int
        default: 0
      fetch_user:
        description:
          - The user that fetches the staged files without privileges (the SSH login user when the module
            runs with become). The staging folder (C(0700)) and its files then belong to it; a backup it
            could not read is copied rather than hard-linked (the backup keeps its owner).
          - When it cannot enter O(backup_dir) (the backups belong to root or to the app's user), the staging
            folder goes beside it instead, in C(<parent>/.sqlite-fleet-staging-<folder name>/) (made C(0711),
            owned by the user the module runs as, removed once empty); O(backup_dir) is left as it is. When it
            cannot reach the parent folder either, staging is refused.
          - Empty or unset when the fetching user is root or the user the module runs as.
        type: str
"""


# The suboptions of O(export), moved up to top-level options.
_SUBOPTIONS = ModuleDocFragment.DOCUMENTATION.split("    suboptions:\n", 1)[1]
ModuleDocFragment.OPTIONS = "options:\n" + indent(dedent(_SUBOPTIONS), "  ")
