#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_checkpoint
short_description: Checkpoint the write-ahead log of a live SQLite database
description:
  - Runs C(PRAGMA wal_checkpoint) with the chosen mode on a database in WAL mode, copying the pages
    committed in its C(-wal) file back into the database file.
  - A database that is not in WAL mode needs no checkpoint; the module then does nothing
    (RV(skipped=true), C(changed=false)).
  - Backups taken by M(sqlitefleet.sqlite_fleet.sqlite_backup) do not need a checkpoint. A checkpoint from a
    second process while the application writes is one of the conditions of SQLite's WAL-reset bug (fixed in
    3.51.3, backported to 3.44.6 and 3.50.7); the module warns when this host's SQLite may carry it.
options:
  path:
    description:
      - Absolute path of the database file.
    type: path
    required: true
  mode:
    description:
      - V(PASSIVE) checkpoints as much as it can without waiting for readers or writers.
      - V(FULL) waits for writers, then checkpoints everything; V(RESTART) also waits for readers so the
        next writer restarts the log; V(TRUNCATE) also truncates the C(-wal) file to zero bytes.
    type: str
    choices: [PASSIVE, FULL, RESTART, TRUNCATE]
    default: PASSIVE
  busy_timeout_ms:
    description:
      - How long to wait, in milliseconds, for the database's locks.
    type: int
    default: 5000
notes:
  - In check mode nothing is done; C(changed) says whether the C(-wal) file holds anything to checkpoint.
  - C(changed) is true when pages were checkpointed (or, with O(mode=TRUNCATE), when the C(-wal) file was
    truncated).
  - Run it as the database's owner or as root; C(-wal)/C(-shm) files created as root are handed to the
    database's owner.
  - Relative paths are refused.
extends_documentation_fragment:
  - sqlite_fleet_attributes
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_backup
  - name: PRAGMA wal_checkpoint
    description: SQLite's documentation of the checkpoint modes.
    link: https://www.sqlite.org/pragma.html#pragma_wal_checkpoint
"""

EXAMPLES = r"""
- name: Fold the WAL back into the database before copying the whole folder elsewhere
  sqlite_checkpoint:
    path: /srv/gym/gym.db
    mode: TRUNCATE
"""

RETURN = r"""
busy:
  description: 1 when the checkpoint could not finish because of a reader or writer, else 0; null in check mode.
  returned: always
  type: int
  sample: 0
log:
  description: Frames in the C(-wal) file; null in check mode.
  returned: always
  type: int
  sample: 120
checkpointed:
  description: Frames copied back into the database; null in check mode.
  returned: always
  type: int
  sample: 120
journal_mode:
  description: The database's journal mode.
  returned: always
  type: str
  sample: wal
skipped:
  description:
    - True when the database is not in WAL mode and nothing was done; Ansible then reports the task as
      skipped. (Ansible drops a false RV(skipped) from results, so it is absent otherwise.)
  returned: when the database is not in WAL mode
  type: bool
  sample: true
mode:
  description: The checkpoint mode used.
  returned: always
  type: str
  sample: PASSIVE
wal_bytes_before:
  description: Size of the C(-wal) file before the checkpoint.
  returned: when the database is in WAL mode
  type: int
  sample: 4124152
kind:
  description: Sort of failure (V(bad_input), V(locked), V(corrupt), V(io)).
  returned: failure
  type: str
  sample: locked
"""

import sqlite3

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet.errors import KIND_BAD_INPUT, KIND_IO, BackupError
from ansible.module_utils.sqlite_fleet.sqlitedb import CHECKPOINT_MODES, checkpoint


ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    mode=dict(type="str", default="PASSIVE", choices=list(CHECKPOINT_MODES)),
    busy_timeout_ms=dict(type="int", default=5000),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    if params["busy_timeout_ms"] < 0:
        module.fail_json(msg="busy_timeout_ms must be 0 or more, got %d" % params["busy_timeout_ms"],
                         kind=KIND_BAD_INPUT, changed=False)
    try:
        result = checkpoint(params["path"], params["mode"], params["busy_timeout_ms"], check_mode=module.check_mode)
    except BackupError as exc:
        module.fail_json(msg=str(exc), kind=exc.kind, changed=False)
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg="checkpoint of %s failed: %s" % (params["path"], exc), kind=KIND_IO, changed=False)

    warning = result.pop("warning", None)
    if warning and not result["skipped"]:
        module.warn(warning)
    # A top-level "path" makes Ansible add the file's stat to the result, overwriting "mode".
    result.pop("path", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
