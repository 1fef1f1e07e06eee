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
author:
  - Sqlite Fleet Backup authors (@sqlite-fleet-backup)
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

import contextlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet import (
    CORE_VERSION,
    KIND_BAD_INPUT,
    KIND_CORRUPT,
    KIND_IO,
    TMP_PREFIX,
    BackupError,
    apply_delta,
    apply_retention,
    check_pull_space,
    check_transfers,
    core_sha256,
    ensure_private_dir,
    import_backup,
    parse_backup_filename,
    retention_options,
    retention_policy,
    settle_bases,
    validate_abs_path,
    validate_name,
)

INCOMING_PREFIX = TMP_PREFIX + "incoming."
NOT_STAGED = "/not-staged-in-check-mode"


def import_pulled(params, folder):
    incoming = validate_abs_path(params["incoming"], "incoming file")
    if os.path.dirname(incoming) != folder or not os.path.basename(incoming).startswith(INCOMING_PREFIX):
        raise BackupError("incoming file %s must lie in %s and start with %s" % (incoming, folder, INCOMING_PREFIX),
                          KIND_BAD_INPUT)
    if not os.path.isfile(incoming) or os.path.islink(incoming):
        raise BackupError("incoming file %s is missing or not a regular file" % incoming, KIND_BAD_INPUT)
    if params["mode"] == "full":
        return import_backup(incoming, params["manifest"], folder, source_host=params["host"],
                             integrity=params["integrity"], lock_timeout=params["lock_timeout"])
    base = params["base"] or ""
    rebuilt = incoming + ".rebuilt"
    applied = None
    try:
        if os.path.basename(base) != base or parse_backup_filename(base) is None:
            raise BackupError("base %r is not a backup file name" % base, KIND_BAD_INPUT)
        applied = apply_delta(os.path.join(folder, base), incoming, rebuilt)
    except FileNotFoundError:
        raise BackupError("the delta's base %s is not in the archive" % base, KIND_BAD_INPUT) from None
    finally:
        # the fetched delta is consumed either way; a half-rebuilt file never waits for the next run
        for leftover in (incoming,) if applied else (incoming, rebuilt):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    result = import_backup(rebuilt, params["manifest"], folder, source_host=params["host"],
                           integrity=params["integrity"], lock_timeout=params["lock_timeout"])
    result["pages_changed"] = applied["pages_changed"]
    return result


def offered_transfers(transfers, check_mode):
    """In check mode the host staged nothing: its transfers have no fetch_path to check yet."""
    if not check_mode:
        return transfers
    return [dict(t, fetch_path=NOT_STAGED) if isinstance(t, dict) and t.get("fetch_path") is None else t
            for t in transfers]


def import_all(module, host_dir, transfers):
    """Import every fetched transfer, in order; one result each (a failure does not stop the others)."""
    params = module.params
    results = []
    for transfer in transfers:
        folder = os.path.join(host_dir, transfer["name"])
        entry = {"name": transfer["name"], "file": transfer["file"], "mode": transfer["mode"]}
        if module.check_mode:
            results.append(dict(entry, changed=True, failed=False, msg="would import %s" % transfer["file"]))
            continue
        one = dict(params, name=transfer["name"], incoming=os.path.join(folder, INCOMING_PREFIX + transfer["file"]),
                   mode=transfer["mode"], base=transfer["base"], manifest=transfer["manifest"])
        try:
            entry.update(import_pulled(one, folder), failed=False)
            if entry.get("disputed"):
                entry.update(failed=True, kind=KIND_CORRUPT)
            elif entry.get("verified") is False:
                module.warn(entry["msg"])
        except BackupError as exc:
            entry.update(changed=False, failed=True, msg=str(exc), kind=exc.kind)
        except OSError as exc:
            entry.update(changed=False, failed=True, kind=KIND_IO,
                         msg="archive import of %s from %s failed: %s" % (transfer["file"], params["host"], exc))
        outdated = None if entry["failed"] else outdated_runner(transfer["manifest"])
        if outdated:
            entry["outdated_runner"] = outdated
            module.warn(outdated)
        results.append(entry)
    return results


def archive_diff(host_dir, name, imported, pruned, check_mode):
    """What --diff shows for one database: its archived backups before and after this import and prune."""
    present = [d["file"] for d in pruned["decisions"]]
    new = [e["file"] for e in imported if e["name"] == name and not e["failed"]]
    before = [f for f in present if f not in new] if not check_mode else present
    after = pruned["kept"] + (new if check_mode else [])
    header = "%s (archived backups)" % os.path.join(host_dir, name)
    return {"before_header": header, "after_header": header, "before": "".join("%s\n" % f for f in sorted(before)),
            "after": "".join("%s\n" % f for f in sorted(set(after)))}


def import_and_prune(module, host_dir):
    """state=import with transfers and/or retention: one run for the whole pull of a host."""
    params = module.params
    policy = retention_policy(params["retention"]) if params["retention"] is not None else None
    if policy is not None and params["databases"] is None:
        raise BackupError("retention needs databases: the archive folders to prune", KIND_BAD_INPUT)
    transfers = check_transfers(offered_transfers(params["transfers"] or [], module.check_mode),
                                params["databases"])
    imported = import_all(module, host_dir, transfers)
    for dropped in params["dropped"] or []:  # deltas whose base failed in state=prepare: reported, not imported
        imported.append({"name": str(dropped.get("name")), "file": str(dropped.get("file")), "mode": "delta",
                         "changed": False, "failed": True, "kind": KIND_CORRUPT, "msg": str(dropped.get("msg"))})
    failures = [entry for entry in imported if entry["failed"]]
    result = dict(changed=any(entry["changed"] for entry in imported), imported=imported, folder=host_dir)
    if failures:
        module.fail_json(msg="; ".join(entry["msg"] for entry in failures), kind=failures[0]["kind"], **result)
    messages = ["%d backup(s) %simported" % (len(imported), "would be " if module.check_mode else "")]
    if policy is not None:
        result["pruned"] = []
        for name in params["databases"]:
            fresh = [entry["file"] for entry in imported if entry["name"] == name and entry.get("verified")]
            try:
                pruned = apply_retention(os.path.join(host_dir, validate_name(name)), name, policy,
                                         timezone=params["retention"]["timezone"], check_mode=module.check_mode,
                                         lock_timeout=params["lock_timeout"], trusted=fresh)
            except (BackupError, OSError) as exc:
                module.fail_json(msg="pruning the archive of %s failed: %s" % (name, exc),
                                 kind=getattr(exc, "kind", KIND_IO), **result)
            for flagged in pruned["flagged"]:
                module.warn("the archive's %s of %s fails its checksum (%s): flagged unverified, never deleted "
                            "as the newest verified backup" % (flagged["file"], name, flagged["why"]))
            result["pruned"].append(dict(pruned, name=name))
            if module._diff:
                result.setdefault("diff", []).append(archive_diff(host_dir, name, imported, pruned, module.check_mode))
            result["changed"] = result["changed"] or pruned["changed"]
            messages.append(pruned["msg"])
    module.exit_json(msg="; ".join(messages), **result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive_dir=dict(type="path", required=True),
            host=dict(type="str", required=True),
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
            lock_timeout=dict(type="float", default=600),
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
            transfers = check_transfers(offered_transfers(params["transfers"], module.check_mode), params["databases"])
            for transfer in transfers:
                if transfer["fetch_path"] == NOT_STAGED:
                    transfer["fetch_path"] = None
            settled = settle_bases(host_dir, transfers, check_mode=module.check_mode)
            transfers = settled["transfers"]
            for problem in settled["flagged"]:
                module.warn("the archive's %s of %s fails its checksum (%s): flagged unverified"
                            % (problem["file"], problem["name"], problem["why"]))
            for transfer in transfers:
                if transfer.get("fallback"):
                    module.warn(transfer["fallback"])
            space = check_pull_space(host_dir, transfers, params["host"])
            created = False
            for name in sorted({transfer["name"] for transfer in transfers}):  # where the files are fetched to
                for level in (archive_dir, host_dir, os.path.join(host_dir, name)):
                    created = ensure_private_dir(level, None, check_mode=module.check_mode) or created
            result = dict(changed=created or bool(settled["flagged"] and not module.check_mode), transfers=transfers,
                          dropped=settled["dropped"], flagged=settled["flagged"], folder=host_dir, **space)
            for dropped in settled["dropped"]:
                module.warn(dropped["msg"])
            module.exit_json(msg="%d transfer(s) checked; %d bytes needed, %d free in the archive"
                             % (len(transfers), space["need_bytes"], space["free_bytes"]), **result)
        if params["state"] == "import" and params["incoming"] is None:
            import_and_prune(module, host_dir)
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


def outdated_runner(manifest):
    """A warning when the host's own runner made this backup with another core than ours."""
    tool = manifest.get("tool") or {}
    if not manifest.get("runner") or not tool.get("core_sha256") or tool["core_sha256"] == core_sha256():
        return None
    return ("%s was made by the on-host runner %s with a core (%s...) that differs from the repository's "
            "(%s, %s...): run provision.yml to update the runner"
            % (manifest.get("file"), tool.get("version"), tool["core_sha256"][:12], CORE_VERSION,
               (core_sha256() or "")[:12]))


if __name__ == "__main__":
    main()
