#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The work is done on the controller by the action plugin action_plugins/sqlite_fetch.py; this file
# documents it (ansible-doc) and lets linters resolve the task, as ansible.builtin.fetch does.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_fetch
short_description: Fetch the files a host staged for a pull, then remove its staging folders
description:
  - Runs on the controller (an action plugin). Copies each file that M(sqlitefleet.sqlite_fleet.sqlite_backup)
    (O(sqlitefleet.sqlite_fleet.sqlite_backup#module:export)) or M(sqlitefleet.sqlite_fleet.sqlite_export) staged
    on the host to C(<dest>/<name>/<incoming_prefix><file>) with the connection's own file transfer (sftp or scp
    as the login user, a plain copy for the local connection), then removes the host's staging folders with one
    C(rm -rf) command (with become when the task has it).
  - No module is sent to the host (no C(stat), no C(slurp), no checksum run), so nothing is read into memory on
    the host, with or without become. The files are not checked here; the archive checks each against the sha256
    of the host's manifest when it imports it (M(sqlitefleet.sqlite_fleet.sqlite_archive) with
    O(sqlitefleet.sqlite_fleet.sqlite_archive#module:state=import)).
  - The login user must be able to read the staged files; with become, give it to the backup as
    O(sqlitefleet.sqlite_fleet.sqlite_backup#module:export.fetch_user) so that the staging folder belongs to it.
  - Every staging folder must be named like the ones the core makes (C(.sqlite-export.*)) and be a direct child
    of O(backup_dir), or of the staging home beside it (C(<parent>/.sqlite-fleet-staging-<folder name>), where
    the core stages for a login user that cannot enter O(backup_dir); removed too once empty). Every file fetched
    must lie directly in one of them. Anything else is refused before anything is fetched or removed.
  - The staging folders are removed even when a fetch fails (the task then fails with the reason), and a file
    that failed to arrive whole is removed from the controller. When the host becomes unreachable, the removal
    is tried and the host is reported unreachable; the staging folder left then is removed by a later run once
    it is a day old.
options:
  transfers:
    description:
      - The checked transfers (RV(sqlitefleet.sqlite_fleet.sqlite_archive#module:transfers) of
        O(sqlitefleet.sqlite_fleet.sqlite_archive#module:state=prepare)), each with C(name), C(file),
        C(fetch_path) and C(bytes) (the size the fetched file must have).
    type: list
    elements: dict
    default: []
  dest:
    description: The host's folder in the archive on the controller, C(<archive_dir>/<inventory_hostname>).
    type: path
    required: true
  incoming_prefix:
    description: Name prefix of the fetched files (temporary names the archive imports from).
    type: str
    default: .sqlite-backup-tmp.incoming.
  backup_dir:
    description: The host's backup folder, where (or beside which) the staging folders are.
    type: str
    required: true
  staging_dirs:
    description:
      - The staging folders to remove after the fetch (RV(sqlitefleet.sqlite_fleet.sqlite_backup#module:staging_dir)
        or RV(sqlitefleet.sqlite_fleet.sqlite_export#module:staging_dir) of each backup or export).
    type: list
    elements: str
    default: []
notes:
  - In check mode nothing is fetched or removed; RV(fetched) lists what would be fetched.
extends_documentation_fragment:
  - sqlite_fleet_attributes
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_backup
  - module: sqlitefleet.sqlite_fleet.sqlite_archive
"""

EXAMPLES = r"""
- name: Fetch what the backup staged, then remove the staging folder on the host
  sqlite_fetch:
    transfers: "{{ prepared.transfers }}"
    dest: "/srv/sqlite-archive/{{ inventory_hostname }}"
    backup_dir: /var/backups/sqlite
    staging_dirs: "{{ taken.results | map(attribute='staging_dir') | select | list }}"
"""

RETURN = r"""
fetched:
  description:
    - One entry per file fetched (in check mode, to fetch) - C(name), C(file), C(src), C(dest), C(bytes), C(mode).
  returned: always
  type: list
  elements: dict
bytes:
  description: Bytes fetched.
  returned: always
  type: int
removed:
  description: The staging folders removed on the host.
  returned: always
  type: list
  elements: str
staging_dirs:
  description: The staging folders named, checked.
  returned: always
  type: list
  elements: str
"""
