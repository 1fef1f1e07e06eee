# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The summary and the run record of a plain ``ansible-playbook`` run (and of an AWX job).

Every playbook of the repository imports playbooks/guard.yml first, whose first task names the run
(command, hosts, archive); a run without it (ad-hoc commands, other playbooks) is left alone.
Ansible's callbacks are turned into the events ansible-runner would have produced and folded by
the same code as ``sqlite-fleet`` (sqlite_fleet_cli.events, .record, .summary), so every run, failed,
unreachable, limited or in check mode, ends with one line per host and database and leaves
``<sqlite_archive_dir>/runs/<run_id>.json`` with ``"via": "ansible-playbook"``. Under sqlite-fleet
(SQLITE_FLEET_RUN_ID set) it does nothing: the CLI writes the record.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

from ansible import context
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: sqlite_fleet_record
type: notification
short_description: one summary line per host and database, and the run record of every run
description:
  - Folds the run's results into one row per host and database, prints the summary after the
    recap and writes the run record (format 2, docs/cli.md) into <sqlite_archive_dir>/runs/.
  - Off when the run is driven by sqlite-fleet (environment variable SQLITE_FLEET_RUN_ID), which
    writes the record itself.
requirements:
  - enabled in ansible.cfg (callbacks_enabled)
author:
  - sqlite-fleet-backup authors
"""

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from sqlite_fleet_cli import record as records  # noqa: E402
from sqlite_fleet_cli.events import Fold  # noqa: E402
from sqlite_fleet_cli.paths import command_of_playbook  # noqa: E402
from sqlite_fleet_cli.stats import render_json, stats_rows  # noqa: E402
from sqlite_fleet_cli.summary import summary_lines  # noqa: E402

CENSORED = {"censored": "the output has been hidden due to the fact that 'no_log: true' was specified"}


def parts(result):
    """(host name, task, result dict) of a callback's task result, ansible-core 2.17 to 2.19."""
    task = getattr(result, "task", None) or result._task
    res = getattr(result, "result", None)
    res = res if isinstance(res, dict) else result._result
    host = getattr(result, "host", None) or result._host
    return host.get_name(), task, res


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "sqlite_fleet_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super().__init__(display)
        self.disabled = bool(os.environ.get("SQLITE_FLEET_RUN_ID"))
        self.started = dt.datetime.now(dt.timezone.utc)
        self.check_mode = bool(context.CLIARGS.get("check"))
        self.fold = Fold(None, self.check_mode)
        self.playbook = None
        self.play_pattern = ""
        self.extra_vars = {}

    # ------------------------------------------------------------------ callbacks -> events

    def event(self, name, host, task, res=None, **more):
        data = {"host": host, "task": task.get_name(), "task_action": task.action,
                "resolved_action": getattr(task, "resolved_action", None) or task.action,
                "task_path": task.get_path(), "play_pattern": self.play_pattern, **more}
        if res is not None:
            data["res"] = CENSORED if res.get("_ansible_no_log") else res
        self.fold.feed({"event": name, "event_data": data})

    def result_event(self, name, result, **more):
        host, task, res = parts(result)
        self.event(name, host, task, res, **more)

    def v2_playbook_on_start(self, playbook):
        self.playbook = os.path.basename(getattr(playbook, "_file_name", "") or "")
        self.fold.command = command_of_playbook(self.playbook)

    def v2_playbook_on_play_start(self, play):
        hosts = play.hosts if isinstance(play.hosts, list) else [play.hosts]
        self.play_pattern = ",".join(str(h) for h in hosts)
        manager = play.get_variable_manager()
        self.extra_vars = dict(getattr(manager, "extra_vars", None) or {})

    def v2_runner_on_start(self, host, task):
        self.event("runner_on_start", host.get_name(), task)

    def v2_runner_on_ok(self, result):
        self.result_event("runner_on_ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self.result_event("runner_on_failed", result, ignore_errors=ignore_errors)

    def v2_runner_on_unreachable(self, result):
        self.result_event("runner_on_unreachable", result)

    def v2_runner_item_on_ok(self, result):
        self.result_event("runner_item_on_ok", result)

    def v2_runner_item_on_failed(self, result):
        self.result_event("runner_item_on_failed", result)

    # ------------------------------------------------------------------ the end

    def v2_playbook_on_stats(self, stats):
        self.fold.feed({"event": "playbook_on_stats", "event_data": {
            "ok": dict(stats.ok), "failures": dict(stats.failures), "dark": dict(stats.dark),
            "skipped": dict(stats.skipped), "changed": dict(stats.changed), "processed": dict(stats.processed)}})
        if not self.fold.run:
            return  # not a playbook of this repository (no guard ran): nothing of ours to summarise
        self.fold.finish()
        ended = dt.datetime.now(dt.timezone.utc)
        outcome = records.outcome_of(self.fold, None)
        sources = self.fold.run.get("inventory") or list(context.CLIARGS.get("inventory") or [])
        record = records.build_record(
            self.fold, run_id=records.new_run_id(self.started), command=self.fold.command,
            playbook=self.playbook or "", argv=["ansible-playbook", *sys.argv[1:]], via="ansible-playbook",
            inventory=sources[0] if len(sources) == 1 else sources or None, limit=context.CLIARGS.get("subset"),
            check_mode=self.check_mode, started=self.started, ended=ended, outcome=outcome)
        lines = summary_lines(record)
        try:
            notes = records.file_record(record, self.fold, ended)[1]
        except Exception as exc:  # noqa: BLE001 - say it, never hide the summary
            notes = ["the run record could not be written to %s: %s" % (records.runs_folder(self.fold), exc)]
        if record["command"] == "stats" and self.extra_vars.get("sqlite_stats_format") == "json":
            lines = self.stats_json(record) + lines[-1:]
        lines += notes
        self._display.banner("SUMMARY")
        for line in lines:
            self._display.display(line)

    def stats_json(self, record):
        """The statistics as one JSON document, also written to <sqlite_archive_dir>/stats.json."""
        text = render_json(stats_rows(record))
        archive = self.fold.run.get("archive_dir")
        if not archive:
            return [text]
        path = os.path.join(archive, "stats.json")
        try:
            records.core().ensure_private_dir(archive, None)
            records.core().write_file_atomic(path, (text + "\n").encode())
        except Exception as exc:  # noqa: BLE001
            return [text, "stats.json could not be written: %s" % exc]
        return [text, "stats: %s" % path]
