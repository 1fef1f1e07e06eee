#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

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
