# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fold: the events of one playbook run -> one row per host and database.

An event is what ansible-runner hands its event handler (and writes to job_events/):
``{"event": "runner_on_ok", "event_data": {"host", "task", "task_action", "resolved_action",
"task_path", "res", ...}}``. The callback plugin builds the same dicts from Ansible's callbacks,
so a plain ``ansible-playbook`` run folds the same way.

Only what the events say is claimed: a backup is "taken" when the module said so, "sent" are
the bytes the fetch reported, "verified in the archive" means the import returned it without a
failure. In check mode every step is a "would".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

RUN_FACT = "sqlite_fleet_run"  # set by playbooks/guard.yml: command, hosts, targets, archive and runs folders
INPUT_CHECKS = ("assert", "validate_argument_spec")  # a failure of these is bad input
UNREACHED = "unreachable"
OFFSITE_FACT = "sqlite_offsite_report"  # set by roles/sqlite_offsite (tasks/main.yml): the offsite copy's outcome
OFFSITE_VERDICT_TASK = "Fail the run when the offsite copy failed"  # roles/sqlite_offsite/tasks/verdict.yml
OFFSITE_FIELDS = ("outcome", "snapshot_id", "bytes_added", "files_sent", "backups", "message")

DATABASE_ROW: dict[str, Any] = {
    "outcome": None, "backup": None, "label": None, "created": None, "size_bytes": None, "seconds": None,
    "bytes_sent": None, "verified_on_host": None, "archived": [], "verified_in_archive": None,
    "deleted_on_host": [], "deleted_in_archive": [], "newest_verified_on_host": None,
    "newest_verified_in_archive": None, "newest_verified_in_archive_created": None, "offsite": None,
    "restore": None, "drill": None, "message": None,
}


def one_line(text: Any, limit: int = 400) -> str:
    """The first non-empty line of a message, cut to ``limit`` characters."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    line = lines[0] if lines else "failed"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def action_of(data: Mapping[str, Any]) -> str:
    """The task's module or action plugin, without its collection (sqlite_backup, assert ...)."""
    name = data.get("resolved_action") or data.get("task_action") or ""
    return str(name).rsplit(".", 1)[-1]


def item_name(res: Mapping[str, Any]) -> str | None:
    """The database a loop item stands for (the loop is over sqlite_backup_databases)."""
    item = res.get("item")
    if isinstance(item, Mapping) and isinstance(item.get("item"), Mapping):
        item = item["item"]
    if isinstance(item, Mapping) and isinstance(item.get("name"), str):
        return item["name"]
    return None


def module_args(res: Mapping[str, Any]) -> Mapping[str, Any]:
    invocation = res.get("invocation")
    args = invocation.get("module_args") if isinstance(invocation, Mapping) else None
    return args if isinstance(args, Mapping) else {}


def newest(entries: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    dated = [e for e in entries if isinstance(e.get("created"), str) and isinstance(e.get("file"), str)]
    return max(dated, key=lambda e: (e["created"], e["file"])) if dated else None


def newest_kept_verified(decisions: Any) -> Mapping[str, Any] | None:
    """The newest verified backup a prune kept (its decisions are newest first)."""
    for decision in decisions or []:
        if isinstance(decision, Mapping) and decision.get("keep") and decision.get("verified"):
            return decision
    return None


def is_loop_result(res: Mapping[str, Any]) -> bool:
    """A loop task's closing result (its items came as events of their own), not a module's own list."""
    results = res.get("results")
    return isinstance(results, list) and all(isinstance(r, Mapping) and "ansible_loop_var" in r for r in results)


class Fold:
    """What a run did, host by host and database by database, built from its events in order.

    ``feed`` returns the steps the event completed, ``(host, database or None, text)``, for the
    live progress; ``hosts`` holds the rows; ``run`` is the guard's fact (command, hosts, targets,
    archive and runs folders) once seen; ``message`` a run-level failure (guard, request check).
    """

    def __init__(self, command: str | None = None, check_mode: bool = False) -> None:
        self.command = command
        self.check_mode = check_mode
        self.run: dict[str, Any] = {}
        self.hosts: dict[str, dict[str, Any]] = {}
        self.message: str | None = None
        self.bad_input = False
        self.stats: dict[str, Any] | None = None
        self.offsite: dict[str, Any] | None = None  # the record's "offsite" section, once the role reported
        self._offsite_newest: dict[str, Any] = {}
        self._verdict_failures: dict[str, int] = {}  # host -> failures of the offsite verdict (not the host's)
        self.started_tasks: dict[str, dict[str, Any]] = {}  # host -> the task it runs now
        self._have: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        self._pruned_in_archive: set[tuple[str, str]] = set()
        self._pruned_on_host: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ rows

    def host(self, name: str) -> dict[str, Any]:
        if name not in self.hosts:
            self.hosts[name] = {"outcome": None, "message": None, "sqlite_version": None, "databases": {}}
        return self.hosts[name]

    def database(self, host: str, name: str) -> dict[str, Any]:
        databases = self.host(host)["databases"]
        if name not in databases:
            databases[name] = copy.deepcopy(DATABASE_ROW)
        return databases[name]

    def fail_host(self, host: str, message: str, database: str | None = None, bad_input: bool = False) -> None:
        row = self.host(host)
        if row["outcome"] != UNREACHED:
            row["outcome"] = "failed"
        row["message"] = row["message"] or message
        self.bad_input = self.bad_input or bad_input
        if database is not None:
            db = self.database(host, database)
            db["outcome"] = "failed"
            db["message"] = db["message"] or message

    # ------------------------------------------------------------------ events

    def feed(self, event: Mapping[str, Any]) -> list[tuple[str, str | None, str]]:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            self.stats = {key: data.get(key) or {} for key in ("ok", "failures", "dark", "skipped", "changed",
                                                               "processed", "rescued", "ignored")}
            return []
        host = data.get("host")
        if not isinstance(host, str) or not kind or not kind.startswith("runner_"):
            return []
        if kind == "runner_on_start":
            self.started_tasks[host] = dict(data)
            return []
        res = data.get("res") if isinstance(data.get("res"), Mapping) else {}
        if kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            self.started_tasks.pop(host, None)
        if kind == "runner_on_unreachable":
            row = self.host(host)
            row["outcome"] = UNREACHED
            items = [item for item in res.get("results") or [] if isinstance(item, Mapping) and item.get("msg")]
            first = next((item for item in items if item.get("unreachable")), items[0] if items else res)
            row["message"] = one_line(first.get("msg") or "unreachable")  # a loop's own msg says "All items completed"
            return [(host, None, "UNREACHABLE: %s" % row["message"])]
        if kind.endswith("_skipped"):
            return []
        if is_loop_result(res) and kind in ("runner_on_ok", "runner_on_failed"):
            # a loop's closing event: its items came one by one already
            if kind == "runner_on_failed" and not self._item_failure_seen(host):
                self.fail_host(host, one_line(res.get("msg")), bad_input=action_of(data) in INPUT_CHECKS)
            return []
        failed = kind in ("runner_on_failed", "runner_item_on_failed")
        ignored = bool(data.get("ignore_errors"))
        return self._fold(host, data, res, failed and not ignored, failed)

    def _item_failure_seen(self, host: str) -> bool:
        return self.hosts.get(host, {}).get("outcome") == "failed"

    def _fold(self, host: str, data: Mapping[str, Any], res: Mapping[str, Any], failed: bool,
              failed_ignored: bool) -> list[tuple[str, str | None, str]]:
        action = action_of(data)
        facts = res.get("ansible_facts") if isinstance(res.get("ansible_facts"), Mapping) else {}
        if isinstance(facts.get(RUN_FACT), Mapping):
            self.run = dict(facts[RUN_FACT])
            listed = self.run.get("databases") if isinstance(self.run.get("databases"), Mapping) else {}
            if self.run.get("command") not in ("backup", "pre-upgrade", "sync"):
                listed = {}  # a restore or drill lists only the databases it acts on
            for member, names in listed.items():  # the run backs up every database: known before its tasks ran
                for name in names if isinstance(names, list) else []:
                    if isinstance(member, str) and isinstance(name, str):
                        self.database(member, name)
        steps_first = self._on_offsite_report(host, facts[OFFSITE_FACT]) if isinstance(facts.get(OFFSITE_FACT),
                                                                                          Mapping) else []
        handler = getattr(self, "_on_" + action, None)
        if action == "sqlite_archive_info":
            handler = self._on_sqlite_archive
        steps = steps_first + (handler(host, res, failed or failed_ignored) if handler else [])
        if failed:
            steps += self._on_failure(host, data, res, action)
        return steps

    def _on_failure(self, host: str, data: Mapping[str, Any], res: Mapping[str, Any],
                    action: str) -> list[tuple[str, str | None, str]]:
        bad_input = action in INPUT_CHECKS or (action == "fail" and "Validation of arguments failed" in
                                                str(res.get("msg")))
        message = one_line(res.get("msg") or (res.get("argument_errors") or ["failed"])[0])
        if action == "validate_argument_spec" and res.get("argument_errors"):
            message = "bad variable: %s" % "; ".join(one_line(e) for e in res["argument_errors"])
        if action == "sqlite_drill":
            return []  # the drill's results say which databases failed
        if str(data.get("task") or "").endswith(OFFSITE_VERDICT_TASK):  # "<role> : <name>" under include_role
            # the run fails for the offsite copy (its section says why): not the host that ran the verdict
            self._verdict_failures[host] = self._verdict_failures.get(host, 0) + 1
            if self.offsite is None:
                self.offsite = {**dict.fromkeys(OFFSITE_FIELDS), "outcome": "failed",
                                "message": message.replace("offsite FAILED: ", "", 1)}
            return []
        if str(data.get("play_pattern") or "").startswith("localhost") or \
                (self.run and host not in self.run.get("hosts", [host])):
            # a play of the controller (the guard, the restore request, the pre-upgrade gate): the whole run
            self.message = self.message or message
            self.bad_input = self.bad_input or bad_input
            return [(host, None, "FAILED: %s" % message)]
        database = item_name(res) or (module_args(res).get("name") if action.startswith("sqlite_") else None)
        if database is not None and not isinstance(database, str):
            database = None
        self.fail_host(host, message, database, bad_input)
        return [(host, database, "FAILED: %s" % message)]

    # ------------------------------------------------------------------ one handler per step

    def _on_sqlite_archive(self, host: str, res: Mapping[str, Any], failed: bool) -> list:
        name = item_name(res)
        if "have" in res and name:  # the listing before the backup: what the archive held
            self._have[(host, name)] = [h for h in res.get("have") or [] if isinstance(h, Mapping)]
            self.database(host, name)
            return []
        if "need_bytes" in res or (isinstance(res.get("transfers"), list) and "folder" in res):
            return []  # the pull's preparation: its steps come from the staging and the fetch
        steps = []
        for entry in res.get("imported") or []:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                continue
            db = self.database(host, entry["name"])
            if entry.get("failed"):
                db["outcome"] = "failed"
                db["message"] = db["message"] or one_line(entry.get("msg"))
                db["verified_in_archive"] = False
            elif self.check_mode:
                self._would(db).setdefault("archived", []).append(entry.get("file"))
            else:
                db["archived"].append(entry.get("file"))
                if entry.get("file") == db["backup"]:
                    db["verified_in_archive"] = True
                steps.append((host, entry["name"], "verified in the archive: %s" % entry.get("file")))
        for pruned in res.get("pruned") or []:
            if not isinstance(pruned, Mapping) or not isinstance(pruned.get("name"), str):
                continue
            db = self.database(host, pruned["name"])
            deleted = [d for d in pruned.get("deleted") or [] if isinstance(d, str)]
            self._pruned_in_archive.add((host, pruned["name"]))
            kept = newest_kept_verified(pruned.get("decisions"))
            if kept:
                db["newest_verified_in_archive"] = kept.get("file")
                db["newest_verified_in_archive_created"] = kept.get("created")
            if self.check_mode:
                self._would(db)["deleted_in_archive"] = deleted
                steps.append((host, pruned["name"], "would delete %d of %d in the archive"
                              % (len(deleted), len(pruned.get("decisions") or []))))
            else:
                db["deleted_in_archive"] = deleted
                steps.append((host, pruned["name"], "archive pruned: %d deleted" % len(deleted)))
        return steps

    def _on_sqlite_backup(self, host: str, res: Mapping[str, Any], failed: bool) -> list:
        name = item_name(res) or module_args(res).get("name")
        if not isinstance(name, str):
            return []
        db = self.database(host, name)
        manifest = res.get("manifest") if isinstance(res.get("manifest"), Mapping) else {}
        db["label"] = manifest.get("label") or module_args(res).get("label") or db["label"]
        if manifest.get("sqlite_version"):
            self.host(host)["sqlite_version"] = manifest["sqlite_version"]
        steps = []
        if self.check_mode:
            if res.get("file"):
                self._would(db)["backup"] = res.get("file")
                steps.append((host, name, "would take a snapshot (%s)" % res.get("file")))
        elif res.get("file") and res.get("manifest"):
            db.update(backup=res["file"], created=manifest.get("created"), size_bytes=res.get("size_bytes"),
                      seconds=res.get("duration_seconds"), verified_on_host=res.get("verified"))
            steps.append((host, name, "snapshot taken: %s, %s in %.2f s%s" % (
                res["file"], human_bytes(res.get("size_bytes")), res.get("duration_seconds") or 0,
                "" if res.get("verified") else " (NOT verified)")))
        retention = res.get("retention") if isinstance(res.get("retention"), Mapping) else None
        if retention is not None:
            deleted = [d for d in retention.get("deleted") or [] if isinstance(d, str)]
            self._pruned_on_host.add((host, name))
            kept = newest_kept_verified(retention.get("decisions"))
            db["newest_verified_on_host"] = kept.get("file") if kept else None
            if self.check_mode:
                self._would(db)["deleted_on_host"] = deleted
                steps.append((host, name, "would delete %d of %d on the host" % (
                    len(deleted), len(retention.get("decisions") or []))))
            else:
                db["deleted_on_host"] = deleted
                steps.append((host, name, "pruned on the host: %d deleted" % len(deleted)))
        elif not self.check_mode and res.get("verified") and db["backup"]:
            db["newest_verified_on_host"] = db["backup"]
        transfers = [t for t in res.get("transfers") or [] if isinstance(t, Mapping)]
        steps += self._pulled_in_task(host, name, res, transfers, failed)
        return steps

    def _pulled_in_task(self, host: str, name: str, res: Mapping[str, Any], transfers: list, failed: bool) -> list:
        """What the backup's task staged and, with the action plugin's ``archive``, pulled and imported."""
        db = self.database(host, name)
        steps = []
        if transfers:
            total = sum(t.get("bytes") or 0 for t in transfers)
            what = "%d file(s), %s (%s)" % (len(transfers), human_bytes(total),
                                            ", ".join(sorted({str(t.get("mode")) for t in transfers})))
            if self.check_mode:
                self._would(db).update(send_files=[t.get("file") for t in transfers], send_bytes=total)
                steps.append((host, name, "would stage %s for the pull" % what))
            else:
                steps.append((host, name, "staged %s for the pull" % what))
        pulled = res.get("archive") if isinstance(res.get("archive"), Mapping) else None
        if pulled is not None:  # one task per database: the listing, the fetch and the import are in it
            self._have[(host, name)] = [h for h in pulled.get("have") or [] if isinstance(h, Mapping)]
            if "fetched" in pulled:
                steps += self._on_sqlite_fetch(host, pulled, failed)
            steps += self._on_sqlite_archive(host, {"imported": pulled.get("imported"),
                                                    "pruned": pulled.get("pruned")}, failed)
        return steps

    def _on_sqlite_fetch(self, host: str, res: Mapping[str, Any], failed: bool) -> list:
        fetched = [f for f in res.get("fetched") or [] if isinstance(f, Mapping) and isinstance(f.get("name"), str)]
        if self.check_mode:
            return [(host, f["name"], "would pull %s (%s)" % (f.get("file"), human_bytes(f.get("bytes"))))
                    for f in fetched]
        sent: dict[str, int] = {}
        for entry in fetched:
            sent[entry["name"]] = sent.get(entry["name"], 0) + (entry.get("bytes") or 0)
        for name in self.host(host)["databases"]:
            sent.setdefault(name, 0)
        steps = []
        for name, total in sent.items():
            db = self.database(host, name)
            db["bytes_sent"] = (db["bytes_sent"] or 0) + total
            db.setdefault("pulled", []).extend({"file": f.get("file"), "mode": f.get("mode"), "bytes": f.get("bytes")}
                                               for f in fetched if f["name"] == name)
            count = sum(1 for f in fetched if f["name"] == name)
            if count:
                steps.append((host, name, "pulled: %s in %d file(s)" % (human_bytes(total), count)))
        return steps

    def _on_sqlite_working_copy(self, host: str, res: Mapping[str, Any], failed: bool) -> list:
        name = item_name(res)
        if not name or failed or not res.get("dest"):
            return []
        self.database(host, name)["working_copy"] = res["dest"]
        return [(host, name, "working copy installed: %s" % res["dest"])]

    def _on_sqlite_restore(self, host: str, res: Mapping[str, Any], failed: bool) -> list:
        args = module_args(res)
        name = args.get("name")
        if not isinstance(name, str) or failed:
            return []
        db = self.database(host, name)
        db["label"] = res.get("label") or db["label"]
        if args.get("state") == "selected" or "available" in res:
            db["restore"] = {"restored": None, "chosen": res.get("backup"), "created": res.get("created"),
                             "safety_backup": None, "mode": res.get("mode") or args.get("mode")}
            return [(host, name, "chose %s (taken %s), verified" % (res.get("backup"), res.get("created")))]
        restore = db["restore"] or {"chosen": None}
        chosen = restore.get("chosen") or basename(res.get("backup"))
        if self.check_mode:
            restore.update(restored=None, would_restore=chosen, mode=res.get("mode") or args.get("mode"))
            db["restore"] = restore
            return [(host, name, "would restore %s onto %s" % (chosen, res.get("target") or args.get("path")))]
        restore.update(restored=chosen, safety_backup=basename(res.get("safety_backup")),
                       mode=res.get("mode") or args.get("mode"), target=res.get("target") or args.get("path"),
                       seconds=res.get("duration_seconds"))
        db["restore"] = restore
        return [(host, name, "restored %s onto %s (%s)%s" % (
            chosen, restore["target"], restore["mode"],
            ", safety backup %s" % restore["safety_backup"] if restore["safety_backup"] else ""))]

    def _on_sqlite_drill(self, host: str, res: Mapping[str, Any], failed: bool) -> list:
        steps = []
        for result in res.get("results") or []:
            if not isinstance(result, Mapping) or not isinstance(result.get("host"), str):
                continue
            drilled_host = result["host"]
            name = result.get("database") if isinstance(result.get("database"), str) else None
            problems = [one_line(p) for p in result.get("problems") or []]
            if name is None:
                self.fail_host(drilled_host, "; ".join(problems) or "nothing to drill")
                steps.append((drilled_host, None, "drill FAILED: %s" % self.host(drilled_host)["message"]))
                continue
            db = self.database(drilled_host, name)
            db["drill"] = {"ok": result.get("drill_ok"), "backup": result.get("backup"),
                           "rto_seconds": result.get("seconds"), "problems": problems, "source": "archive",
                           "stale": result.get("stale"), "age_seconds": result.get("age_seconds")}
            db["created"] = db["created"] or result.get("newest_created")
            if self.check_mode:
                db["outcome"] = "would"
                steps.append((drilled_host, name, "would drill %s" % result.get("backup")))
            elif result.get("ok") and not result.get("stale"):
                db["outcome"] = "ok"
                steps.append((drilled_host, name, "drill passed: %s in %.2f s" % (result.get("backup"),
                                                                               result.get("seconds") or 0)))
            else:
                db["outcome"] = "failed"
                db["message"] = "; ".join(problems) or ("stale: the newest backup is %s old"
                                                        % human_age(result.get("age_seconds")))
                self.fail_host(drilled_host, db["message"])
                steps.append((drilled_host, name, "drill FAILED: %s" % db["message"]))
        return steps

    def _on_sqlite_info(self, host: str, res: Mapping[str, Any], failed: bool) -> list:
        name = item_name(res)
        if not name:
            return []
        db = self.database(host, name)
        stats = db.setdefault("stats", {})
        if failed:
            db["outcome"] = "failed"
            db["message"] = one_line(res.get("msg"))
            return [(host, name, "FAILED: %s" % db["message"])]
        facts = res.get("database") if isinstance(res.get("database"), Mapping) else None
        backups = res.get("backups") if isinstance(res.get("backups"), Mapping) else {}
        if facts is not None:
            if facts.get("sqlite_version"):
                self.host(host)["sqlite_version"] = facts["sqlite_version"]
            stats.update(database=dict(facts), host_backups=dict(backups))
            return [(host, name, "read: %s, %s backup(s) on the host" % (human_bytes(facts.get("size_bytes")),
                                                                         backups.get("count")))]
        stats["archive_backups"] = dict(backups)
        return [(host, name, "read the archive: %s backup(s)" % backups.get("count"))]

    def _on_offsite_report(self, host: str, report: Mapping[str, Any]) -> list:
        """The offsite role's report (no secret in it): the record's "offsite" section."""
        section = {key: (None if report.get(key) in ("", None) else report.get(key)) for key in OFFSITE_FIELDS}
        for key in ("bytes_added", "files_sent", "backups"):
            try:
                section[key] = None if section[key] is None else int(section[key])
            except (TypeError, ValueError):
                section[key] = None
        section["outcome"] = section["outcome"] if section["outcome"] in ("ok", "failed", "would") else "failed"
        if section["outcome"] == "failed":
            section["message"] = one_line(section["message"])
        newest = report.get("newest")
        self._offsite_newest = dict(newest) if isinstance(newest, Mapping) and section["outcome"] == "ok" else {}
        self.offsite = section
        return [(host, None, offsite_line(section))]

    def _would(self, db: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(db.get("would"), dict):
            db["would"] = {}
        return db["would"]

    # ------------------------------------------------------------------ the end

    def finish(self, interrupted: bool = False) -> None:
        """Settle every row: outcomes from what was seen, hosts that never answered, the newest backups."""
        targets = self.run.get("targets")
        everyone = list(self.run.get("hosts") or []) or [h for h in self.hosts if h not in self._controller_only()]
        for name in everyone:
            self.host(name)
        for name, row in self.hosts.items():
            in_run = targets is None or name in targets
            for db_name, db in row["databases"].items():
                self._settle_newest(name, db_name, db)
                self._settle_offsite(name, db_name, db)
                if db["outcome"] is None:
                    db["outcome"] = self._database_outcome(row, db, in_run)
                if db["outcome"] == "failed" and not db["message"]:
                    db["message"] = ("unreachable: %s" if row["outcome"] == UNREACHED else "%s") % row["message"]
            if row["outcome"] is None:
                row["outcome"] = self._host_outcome(name, row, in_run, interrupted)
            if row["outcome"] == "failed" and not row["message"]:
                failed = [db for db in row["databases"].values() if db["outcome"] == "failed"]
                row["message"] = failed[0]["message"] if failed else "failed"
        for name in self._controller_only():
            self.hosts.pop(name, None)

    def _controller_only(self) -> list[str]:
        """Hosts outside sqlite_hosts (the controller's own plays): not rows of the record."""
        members = self.run.get("hosts")
        return [h for h in self.hosts if members is not None and h not in members]

    def _settle_newest(self, host: str, name: str, db: dict[str, Any]) -> None:
        if (host, name) in self._pruned_in_archive:
            return
        archived_now = [{"file": db["backup"], "created": db["created"]}] if db["verified_in_archive"] else []
        best = newest([*self._have.get((host, name), []), *archived_now])
        if best:
            db["newest_verified_in_archive"] = best["file"]
            db["newest_verified_in_archive_created"] = best["created"]

    def _settle_offsite(self, host: str, name: str, db: dict[str, Any]) -> None:
        """The newest backup of this database that this run's offsite snapshot holds."""
        of_host = self._offsite_newest.get(host)
        entry = of_host.get(name) if isinstance(of_host, Mapping) else None
        if isinstance(entry, Mapping) and isinstance(entry.get("file"), str) and self.offsite:
            db["offsite"] = {"file": entry["file"], "created": entry.get("created"),
                             "snapshot_id": self.offsite.get("snapshot_id")}

    def _database_outcome(self, row: Mapping[str, Any], db: Mapping[str, Any], in_run: bool) -> str:
        if not in_run:
            return "skipped"
        if row["outcome"] in ("failed", UNREACHED):
            return "failed"
        if self.check_mode:
            return "would"
        return "ok"

    def _host_outcome(self, name: str, row: Mapping[str, Any], in_run: bool, interrupted: bool) -> str:
        if not in_run:
            row_message = "not in --limit" if self.run.get("limit") else "not a target of this run"
            self.hosts[name]["message"] = row_message
            return "skipped"
        stats = self.stats or {}
        if name in (stats.get("dark") or {}):
            return UNREACHED
        failures = (stats.get("failures") or {}).get(name) or 0
        if failures > self._verdict_failures.get(name, 0):
            return "failed"
        if any(db["outcome"] == "failed" for db in row["databases"].values()):
            return "failed"
        seen = name in (stats.get("processed") or {}) or bool(row["databases"])
        if not seen:
            self.hosts[name]["message"] = "not run" + (" (interrupted)" if interrupted else
                                                       " (the run stopped before this host)" if self.message else "")
            return "skipped"
        return "ok"


def offsite_line(section: Mapping[str, Any]) -> str:
    """One line for the offsite copy: sent, would send, or FAILED and why."""
    if section.get("outcome") == "failed":
        return "offsite FAILED: %s" % (section.get("message") or "failed")
    if section.get("outcome") == "would":
        return "offsite: would send %s verified backup(s) (check mode)" % section.get("backups")
    if not section.get("snapshot_id"):  # offsite init reports its message (created, exists) and sends nothing
        return "offsite: %s" % (section.get("message") or "nothing to send")
    return "offsite: sent %s files, %s added, snapshot %s" % (
        section.get("files_sent") or 0, human_bytes(section.get("bytes_added") or 0),
        str(section["snapshot_id"])[:8])


def basename(path: Any) -> str | None:
    return str(path).rsplit("/", 1)[-1] if path else None


def human_bytes(value: Any) -> str:
    from .paths import core

    return core().human_bytes(value)


def human_age(value: Any) -> str:
    from .paths import core

    return core().human_age(value)
