# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The retention policy's options (the core's retention_options), written once.

DOCUMENTATION: the policy as one dict option, O(retention) (sqlite_backup, sqlite_archive; each module
gives its own description of what it prunes). RULES: the same rules as top-level options (sqlite_retention).
"""

from __future__ import annotations

from textwrap import dedent, indent


class ModuleDocFragment:
    # Only literal strings in this class: ansible-test's yamllint reads them without running the file.
    DOCUMENTATION = r"""
options:
  retention:
    description:
      - A retention policy; a backup is kept when any rule keeps it.
    type: dict
    suboptions:
      keep_last:
        description: Keep the newest N verified backups.
        type: int
        default: 0
      keep_days:
        description: Keep every backup taken in the last N days.
        type: int
        default: 0
      keep_hourly:
        description:
          - Keep the newest verified backup of each of the last N hours (of the local clock) that have one.
          - For schedules that back up more often than daily (a smaller recovery point).
        type: int
        default: 0
      keep_daily:
        description: Keep the newest verified backup of each of the last N days that have one.
        type: int
        default: 0
      keep_weekly:
        description: Keep the newest verified backup of each of the last N ISO weeks that have one.
        type: int
        default: 0
      keep_monthly:
        description: Keep the newest verified backup of each of the last N months that have one.
        type: int
        default: 0
      keep_yearly:
        description: Keep the newest verified backup of each of the last N calendar years that have one.
        type: int
        default: 0
      keep_label_days:
        description:
          - Labels mapped to how many days backups with that label are kept.
          - Backups with a label not listed here follow the general rules.
        type: dict
        default: {"pre-upgrade": 30}
      timezone:
        description:
          - Time zone of the calendar buckets (hours, days, ISO weeks, months, years), as an IANA name such as
            V(Europe/Helsinki), or V(local) for the host's zone.
        type: str
        default: local
"""


# The suboptions of O(retention), moved up to top-level options.
_SUBOPTIONS = ModuleDocFragment.DOCUMENTATION.split("    suboptions:\n", 1)[1]
ModuleDocFragment.RULES = "options:\n" + indent(dedent(_SUBOPTIONS), "  ")
