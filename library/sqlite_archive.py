#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_archive
short_description: Check, import and prune pulled SQLite backups in the controller's archive
description:
  - Runs on the controller (delegate to C(localhost)). The archive holds
    C(<archive_dir>/<host>/<name>/<backup files>), the same files as on the host.
    M(sqlitefleet.sqlite_fleet.sqlite_archive_info) lists what it holds.
  - O(state=prepare) checks, before anything is fetched, the transfers the host offered
    (RV(sqlitefleet.sqlite_fleet.sqlite_export#module:transfers); untrusted input) - each must name one of
    O(databases), a plain backup file of that database and an acceptable manifest - and that the archive has room
    for them - the bytes to fetch plus the files rebuilt from deltas, plus 10% (at least 16 MiB) - and fails, with
    the numbers, when it has not. It creates the folders the files are fetched to and returns RV(transfers),
    rebuilt from the checked fields only; fetch and import those.
  - O(state=import) commits one pulled backup (O(incoming)), or every fetched one of a pull (O(transfers), in
    their order, each fetched to C(<archive_dir>/<host>/<name>/.sqlite-backup-tmp.incoming.<file>)). A delta is
    first applied to its base in the archive. The result must have the sha256 written in the host's manifest,
    pass a full C(integrity_check) and have the manifest's row counts before it gets its final name; then its
    C(.sha256) and, last, its manifest are written, as on the host. Whatever moved the bytes, the checksum decides.
  - With O(retention), O(state=import) then prunes the archive folder of each of O(databases) by that policy,
    as M(sqlitefleet.sqlite_fleet.sqlite_retention) does, unless an import failed. So a pull needs one import run
    per host.
  - The host's manifest is untrusted input. A file name with a path, C(..), or anything but a backup
    name is refused, and nothing is ever written outside C(<archive_dir>/<host>/<name>).
options:
  name:
    description: Database name. Required with O(incoming).
    type: str
  state:
    description: V(prepare) a pull (check the host's transfers and the free space), or V(import) pulled backups.
    type: str
    choices: [prepare, import]
    required: true
  transfers:
    description:
      - With O(state=prepare), the transfers the host offered
        (RV(sqlitefleet.sqlite_fleet.sqlite_backup#module:transfers) or
        RV(sqlitefleet.sqlite_fleet.sqlite_export#module:transfers)).
      - With O(state=import), the checked transfers RV(transfers) that O(state=prepare) returned, once fetched;
        each is checked again.
      - In check mode, transfers the host did not stage (no C(fetch_path)) are checked but for that field.
    type: list
    elements: raw
  dropped:
    description:
      - With O(state=import), the RV(dropped) deltas of O(state=prepare) (their base failed its checksum in the
        archive and the host staged no whole copy); each is reported as a failed import.
    type: list
    elements: dict
  databases:
    description:
      - With O(state=prepare) or O(state=import) with O(transfers), the databases this host backs up; a transfer
        of any other is refused.
      - With O(retention), the databases whose archive folders are pruned.
    type: list
    elements: str
  retention:
    description:
      - With O(state=import), after the imports prune the archive folder of each of O(databases) by this policy,
        as M(sqlitefleet.sqlite_fleet.sqlite_retention) does; skipped when an import failed. A bad policy is
        refused before anything is imported.
  incoming:
    description:
      - With O(state=import), the fetched file (the backup or a delta) of one backup, instead of O(transfers).
        It must lie in the database's archive folder under a temporary name (see RV(incoming_dir)); it is
        consumed. Needs O(name) and O(manifest).
    type: path
  mode:
    description: With O(state=import), whether O(incoming) is the whole backup or a delta against O(base).
    type: str
    choices: [full, delta]
    default: full
  base:
    description: With O(mode=delta), the file name of the archived backup the delta applies to.
    type: str
  manifest:
    description: With O(state=import), the host's manifest of the backup.
    type: dict
  integrity:
    description: Check run on the imported copy.
    type: str
    choices: [quick, full]
    default: full
  lock_timeout:
    description: Seconds to wait for the archive folder's lock.
    type: float
    default: 600
notes:
  - Archive folders are created mode C(0700), files C(0600).
  - In check mode nothing is written.
attributes:
  diff_mode:
    support: partial
    details: with O(state=import) and O(retention), each database's archived backups before and after.
extends_documentation_fragment:
  - sqlite_fleet_archive
  - sqlite_fleet_attributes
  - sqlite_fleet_retention
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_archive_info
  - module: sqlitefleet.sqlite_fleet.sqlite_backup
  - module: sqlitefleet.sqlite_fleet.sqlite_export
  - module: sqlitefleet.sqlite_fleet.sqlite_fetch
  - module: sqlitefleet.sqlite_fleet.sqlite_retention
"""

EXAMPLES = r"""
- name: Check what the host staged and the archive's free space
  sqlite_archive:
    archive_dir: /srv/sqlite-archive
    host: "{{ inventory_hostname }}"
    state: prepare
    transfers: "{{ taken.transfers }}"
    databases: [gym]
  delegate_to: localhost
  become: false
  register: prepared

- name: Import a fetched delta
  sqlite_archive:
    archive_dir: /srv/sqlite-archive
    host: "{{ inventory_hostname }}"
    name: gym
    state: import
    incoming: /srv/sqlite-archive/{{ inventory_hostname }}/gym/.sqlite-backup-tmp.incoming.gym_backup_20261122_030000.db
    mode: delta
    base: gym_backup_20261121_030000.db
    manifest: "{{ transfer.manifest }}"
  delegate_to: localhost
  become: false

- name: Import everything fetched for this host, then prune its archive folders
  sqlite_archive:
    archive_dir: /srv/sqlite-archive
    host: "{{ inventory_hostname }}"
    state: import
    transfers: "{{ prepared.transfers }}"
    databases: [gym]
    retention:
      keep_last: 7
      keep_monthly: 12
  delegate_to: localhost
  become: false
  register: imported
"""

RETURN = r"""
folder:
  description: The database's folder in the archive (with O(transfers), the host's).
  returned: always
  type: str
incoming_dir:
  description: Where to fetch files to before importing them (the database's archive folder).
  returned: state=import with incoming
  type: str
incoming_prefix:
  description: Name prefix for fetched files (temporary names, removed by an interrupted run's successor).
  returned: state=import with incoming
  type: str
transfers:
  description: The checked transfers, rebuilt from their checked fields (C(file), C(name), C(mode), C(base),
    C(fetch_path), C(bytes), C(size_bytes), C(manifest)).
  returned: state=prepare
  type: list
  elements: dict
dropped:
  description: Deltas that cannot be applied (their archive base is missing, unverified or corrupt) and have no
    whole copy staged to fall back to, C(name), C(file), C(msg); pass them to O(state=import) as O(dropped).
  returned: state=prepare
  type: list
  elements: dict
flagged:
  description: Archive backups found corrupt while checking the deltas' bases (C(name), C(file), C(why)), now flagged
    unverified.
  returned: state=prepare
  type: list
  elements: dict
need_bytes:
  description: Free space the pull needs (bytes to fetch and rebuild, plus the margin).
  returned: state=prepare
  type: int
free_bytes:
  description: Free space in the archive (the smallest, when the archive folders lie on several filesystems).
  returned: state=prepare
  type: int
file:
  description: The imported backup's file name.
  returned: state=import with incoming
  type: str
sha256:
  description: Its sha256, equal to the host's manifest.
  returned: state=import with incoming
  type: str
imported:
  description:
    - With O(transfers), one result per transfer, in order - C(name), C(file), C(mode), C(changed), C(failed) and
      C(msg), and when imported C(path), C(sha256) (and C(pages_changed) for a delta).
  returned: state=import with transfers
  type: list
  elements: dict
pruned:
  description:
    - With O(retention), per database what the prune did, as M(sqlitefleet.sqlite_fleet.sqlite_retention)
      returns it, plus C(name).
  returned: state=import with retention, when no import failed
  type: list
  elements: dict
diff:
  description: With O(state=import) and O(retention), per database the archived backups before and after.
  returned: in diff mode
  type: list
  elements: dict
outdated_runner:
  description: Set (and warned) when the host's on-host runner made the backup with another core than the repository's.
  returned: when it differs
  type: str
kind:
  description: Sort of failure.
  returned: failure
  type: str
"""

import os

# This module runs on the controller, and pull.outdated_runner compares a runner's core_sha256 with
# the whole core's: it ships every part (no link carries this payload), so it can hash them all.
import ansible.module_utils.sqlite_fleet.drills  # noqa: F401
import ansible.module_utils.sqlite_fleet.export  # noqa: F401
import ansible.module_utils.sqlite_fleet.progress  # noqa: F401
import ansible.module_utils.sqlite_fleet.restore_task  # noqa: F401
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.archive import archive_options
from ansible.module_utils.sqlite_fleet.errors import KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.files import ensure_private_dir
from ansible.module_utils.sqlite_fleet.inputs import validate_abs_path, validate_name
from ansible.module_utils.sqlite_fleet.names import INCOMING_PREFIX
from ansible.module_utils.sqlite_fleet.pull import import_and_prune, import_pulled, outdated_runner, prepare_pull
from ansible.module_utils.sqlite_fleet.retention import retention_options


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive_options(),
            name=dict(type="str"),
            state=dict(type="str", required=True, choices=["prepare", "import"]),
            transfers=dict(type="list", elements="raw"),
            dropped=dict(type="list", elements="dict"),
            databases=dict(type="list", elements="str"),
            retention=dict(type="dict", options=retention_options()),
            incoming=dict(type="path"),
            mode=dict(type="str", default="full", choices=["full", "delta"]),
            base=dict(type="str"),
            manifest=dict(type="dict"),
            integrity=dict(type="str", default="full", choices=["quick", "full"]),
        ),
        required_if=[("state", "import", ["incoming", "transfers", "retention"], True),
                     ("state", "prepare", ["transfers"]), ("mode", "delta", ["base"])],
        required_by={"incoming": ["name", "manifest"]},
        mutually_exclusive=[("incoming", "transfers")],
        supports_check_mode=True,
    )
    params = module.params
    try:
        archive_dir = validate_abs_path(params["archive_dir"], "archive folder")
        host_dir = os.path.join(archive_dir, validate_name(params["host"], "host"))
        if params["state"] == "prepare":
            result = prepare_pull(archive_dir, params["host"], params["transfers"], params["databases"],
                                  check_mode=module.check_mode, warn=module.warn)
            module.exit_json(**result)
        if params["state"] == "import" and params["incoming"] is None:
            result, failure = import_and_prune(params, host_dir, check_mode=module.check_mode, diff=module._diff,
                                               warn=module.warn)
            if failure:
                module.fail_json(**dict(result, **failure))
            module.exit_json(**result)
        folder = os.path.join(host_dir, validate_name(params["name"]))
        paths = dict(folder=folder, incoming_dir=folder, incoming_prefix=INCOMING_PREFIX)
        for level in (archive_dir, os.path.dirname(folder), folder):
            ensure_private_dir(level, None, check_mode=module.check_mode)
        if module.check_mode:
            module.exit_json(changed=True, msg="would import %s" % params["incoming"], **paths)
        result = import_pulled(params, folder)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind)
    except OSError as exc:
        module.fail_json(msg="archive import for %s failed: %s" % (params["host"], exc), kind=KIND_IO)
    result.update(paths)
    outdated = outdated_runner(params["manifest"])
    if outdated:
        result["outdated_runner"] = outdated
        module.warn(outdated)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
