# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a database's folder lies in the controller's archive (sqlite_archive, sqlite_archive_info)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  archive_dir:
    description: Absolute path of the archive on the controller, C(<archive_dir>/<host>/<name>/<backup files>).
    type: path
    required: true
  host:
    description: The host's inventory name; a folder of the archive.
    type: str
    required: true
"""
