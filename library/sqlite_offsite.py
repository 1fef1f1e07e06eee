#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sqlite_offsite
short_description: Send the archive's verified backups to an encrypted restic repository, keep, check and restore them
description:
  - Runs on the controller (delegate to C(localhost)). Drives the C(restic) binary, which encrypts, deduplicates,
    verifies and speaks local, SFTP, REST, S3-compatible, B2, Azure, GCS and rclone back ends.
  - C(state=sent) sends every verified backup of the archive (for O(hosts)) with its C(.sha256) and manifest as
    one restic snapshot, tagged C(sqlite-fleet), C(host:<host>), C(db:<host>/<name>) and C(label:<label>). A backup
    whose manifest is not verified or whose bytes no longer match its checksum is never sent (RV(held_back)).
  - C(state=forgotten) applies the O(keep) policy with C(restic forget --prune); the newest snapshot that holds
    each host/database is never forgotten.
  - C(state=checked) runs C(restic check), reading O(read_data_subset) of the data; a damaged pack is named.
  - C(state=present) creates the repository unless it exists. C(state=restored) restores a snapshot into
    O(dest), laid out like the archive, and lists the backups in it whose checksum still matches.
  - The password comes from O(password_file) (mode 0600) or O(password) (an Ansible Vault variable); restic gets it
    through its environment, never its command line. Use C(no_log) on the task when O(password) or O(backend_env)
    is set.
options:
  repository:
    description: The restic repository, e.g. C(/mnt/usb/restic), C(sftp:backup@friend.example:/srv/restic) or C(s3:...).
    type: str
    required: true
  password_file:
    description: File holding the repository password; must be mode 0600 or stricter.
    type: path
  password:
    description: The repository password itself, from Ansible Vault. Used when O(password_file) is not set.
    type: str
  backend_env:
    description: Environment variables for the back end's credentials (e.g. C(AWS_ACCESS_KEY_ID), C(B2_ACCOUNT_KEY)).
    type: dict
    default: {}
  restic_options:
    description:
      - restic's extended options, each C(key=value) (passed as C(-o key=value)), e.g.
        C(sftp.command=ssh -i /home/admin/.ssh/offsite backup@friend.example -s sftp).
      - They are on restic's command line, so never put a secret here.
    type: list
    elements: str
    default: []
  state:
    description: What to do.
    type: str
    choices: [sent, forgotten, checked, present, restored, listed]
    default: sent
  archive_dir:
    description: The archive on the controller (C(state=sent)).
    type: path
  hosts:
    description: Inventory hosts whose backups are sent or restored (default all in the archive or snapshot).
    type: list
    elements: str
  snapshot_host:
    description: Host name recorded in the snapshots (the same from any controller, so retention follows one series).
    type: str
    default: sqlite-fleet
  limit_upload:
    description: Upload limit in KiB/s (0 means none).
    type: int
    default: 0
  keep:
    description: Retention for C(state=forgotten) - keys C(last), C(hourly), C(daily), C(weekly), C(monthly),
      C(yearly) (counts) and C(within) (a duration such as C(30d)).
    type: dict
    default: {}
  prune:
    description: Remove the data of forgotten snapshots (C(restic forget --prune)).
    type: bool
    default: true
  read_data_subset:
    description:
      - Part of the data C(state=checked) reads back, C(n/t), C(x%) or a size such as C(500M); empty reads none.
    type: str
    default: ""
  dest:
    description: Scratch folder a C(state=restored) snapshot is restored into (created 0700).
    type: path
  snapshot:
    description: Snapshot to restore, C(latest) or an id.
    type: str
    default: latest
  timeout:
    description: Seconds restic may run before it is stopped (0 means no limit).
    type: int
    default: 0
notes:
  - Check mode - C(sent) runs C(restic backup --dry-run) and reports what would be added; C(forgotten) lists what
    would be forgotten; C(present) says whether it would create the repository; C(checked) and C(listed) only
    read; C(restored) restores nothing.
  - Outside check mode, C(checked) and C(forgotten) first remove the stale locks of runs that died on this
    machine (C(restic unlock), never a live run's lock).
extends_documentation_fragment:
  - sqlite_fleet_attributes
seealso:
  - module: sqlitefleet.sqlite_fleet.sqlite_archive
"""

EXAMPLES = r"""
- name: Send the archive's verified backups offsite
  sqlite_offsite:
    repository: sftp:backup@friend.example:/srv/restic/fleet
    password_file: /home/admin/.config/sqlite-fleet/offsite.pass
    archive_dir: /srv/sqlite-archive
    limit_upload: 2048
  delegate_to: localhost
  run_once: true
  no_log: true

- name: Forget old snapshots offsite
  sqlite_offsite:
    repository: /mnt/usb/restic
    password: "{{ vault_offsite_password }}"
    state: forgotten
    keep: {daily: 14, weekly: 8, monthly: 12}
  no_log: true
"""

RETURN = r"""
backups:
  description: Archive-relative paths of the backups sent (C(sent)) or restored with a matching checksum (C(restored)).
  returned: when state is sent or restored
  type: list
  elements: str
held_back:
  description: Backups not sent, with C(why) (not verified, checksum mismatch).
  returned: when state is sent
  type: list
  elements: dict
snapshot_id:
  description: The snapshot made (none in check mode or when nothing was sent).
  returned: when state is sent
  type: str
data_added:
  description: Bytes of new data this run added to the repository (what the dedup left to send).
  returned: when state is sent
  type: int
newest:
  description: Host -> database -> the newest backup the snapshot holds (C(file), C(created)).
  returned: when state is sent and a snapshot was made
  type: dict
forgotten:
  description: Snapshots forgotten (or that would be, in check mode).
  returned: when state is forgotten
  type: list
  elements: dict
snapshots:
  description: The tool's snapshots, oldest first.
  returned: when state is listed
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_offsite import (
    OffsiteError,
    check,
    forget,
    init_repository,
    list_snapshots,
    newest_per_database,
    restic_env,
    restore,
    send,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            repository=dict(type="str", required=True),
            password_file=dict(type="path", no_log=False),
            password=dict(type="str", no_log=True),
            backend_env=dict(type="dict", default={}, no_log=True),
            restic_options=dict(type="list", elements="str", default=[]),
            state=dict(type="str", default="sent",
                       choices=["sent", "forgotten", "checked", "present", "restored", "listed"]),
            archive_dir=dict(type="path"),
            hosts=dict(type="list", elements="str"),
            snapshot_host=dict(type="str", default="sqlite-fleet"),
            limit_upload=dict(type="int", default=0),
            keep=dict(type="dict", default={}),
            prune=dict(type="bool", default=True),
            read_data_subset=dict(type="str", default=""),
            dest=dict(type="path"),
            snapshot=dict(type="str", default="latest"),
            timeout=dict(type="int", default=0),
        ),
        required_if=[("state", "sent", ["archive_dir"]), ("state", "restored", ["dest"])],
        supports_check_mode=True,
    )
    p = module.params
    timeout = p["timeout"] or None
    state = p["state"]
    try:
        env = restic_env(p["repository"], p["password_file"], p["password"], p["backend_env"],
                         options=p["restic_options"])
        if state == "sent":
            result = send(p["archive_dir"], env, hosts=p["hosts"], snapshot_host=p["snapshot_host"],
                          limit_upload_kib=p["limit_upload"], check_mode=module.check_mode, timeout=timeout)
        elif state == "forgotten":
            result = forget(env, p["keep"], snapshot_host=p["snapshot_host"], prune=p["prune"],
                            check_mode=module.check_mode, timeout=timeout)
        elif state == "checked":
            result = dict(check(env, p["read_data_subset"], timeout, module.check_mode), changed=False)
        elif state == "present":
            result = init_repository(env, module.check_mode, timeout)
        elif state == "listed":
            snapshots = list_snapshots(env, p["snapshot_host"], timeout)
            result = {"changed": False, "snapshots": snapshots,
                      "newest": {db: {"id": s.get("short_id"), "time": s.get("time")}
                                 for db, s in newest_per_database(snapshots).items()}}
        elif module.check_mode:
            result = {"changed": False, "backups": [], "msg": "would restore snapshot %s into %s"
                      % (p["snapshot"], p["dest"])}
        else:
            result = dict(restore(env, p["dest"], snapshot=p["snapshot"], hosts=p["hosts"],
                                  snapshot_host=p["snapshot_host"], timeout=timeout), changed=True)
    except OffsiteError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="offsite %s failed: %s" % (state, exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
