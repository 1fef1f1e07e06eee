# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sqlite-fleet: run this repository's playbooks on the fleet, with progress, summary and run record.

``sqlite-fleet COMMAND [-i INVENTORY] [--limit ...] [--check] [--diff] [-e ...] [--json]`` runs the
command's playbook of this repository through ansible-runner, from any working
directory, and ends with the summary and the run record (docs/cli.md). Exit codes: 0 all good,
1 some host or database failed, 2 bad input, 3 some host unreachable, 130 interrupted
(75 with --log: the previous scheduled run still holds the lock; ``status``: 4 stale, 5 drill failed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from .paths import PLAYBOOKS, RUNS_DIR
from .record import EXIT_BAD_INPUT
from .report_page import add_report_arguments, run_report
from .runner import DEFAULT_KEEP_RUNS, Request, run_playbook
from .schedule import EX_TEMPFAIL, ScheduledLog
from .status import add_status_arguments, run_status

# Commands that read what the runs left (archive, run records, drill log) and run no playbook.
READERS = {
    "status": ("per host and database: newest verified backups, their age, last run and drill; exit code for "
               "monitors; writes the Prometheus textfile", add_status_arguments, run_status),
    "report": ("one self-contained HTML page of the fleet's history (freshness, sizes, bytes sent, drills)",
               add_report_arguments, run_report),
}

HELP = {
    "backup": "snapshot, verify and prune every database, pull into the archive and verify again",
    "sync": "a fresh backup of every database, pulled and installed as a working copy",
    "stats": "database and backup statistics of every host and the archive (changes nothing)",
    "pre-upgrade": "labelled backup, pull and verify of everything; fails when any host fails",
    "restore": "restore a chosen backup (-e restore_hosts=... -e restore_database=...)",
    "drill": "restore the newest archived backups into scratch space and check them",
    "provision": "install the on-host runner and the controller's schedule",
    "offsite": "offsite init: create the offsite restic repository (sqlite_offsite_repository) unless it exists",
}

# Commands whose first argument names what to do; each action runs the command's playbook.
ACTIONS = {"offsite": ["init"]}


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (bad input), as the record's codes say
        raise UsageError("%s: %s (see %s --help)" % (self.prog, message, self.prog))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sqlite-fleet", description=__doc__.split("\n\n")[0].strip().split(": ", 1)[1],
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="Exit codes: 0 ok, 1 a host or database failed, 2 bad input, 3 a host unreachable, "
                           "4 status: a database is stale, 5 status: the last drill failed, "
                           "75 --log: the previous run still holds the lock, 130 interrupted. See docs/cli.md.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for command in PLAYBOOKS:
        sub = commands.add_parser(command, help=HELP[command], description="%s (%s)" % (HELP[command],
                                                                                        PLAYBOOKS[command]))
        if command in ACTIONS:
            sub.add_argument("action", choices=ACTIONS[command], help="what to do")
        sub.add_argument("-i", "--inventory", action="append", default=[], metavar="INVENTORY",
                         help="inventory file or folder (repeatable); default: the one ansible.cfg names")
        sub.add_argument("-l", "--limit", help="only these hosts (an Ansible host pattern)")
        sub.add_argument("-C", "--check", action="store_true", help="check mode: show what would be done")
        sub.add_argument("-D", "--diff", action="store_true", help="show the changes (folder listings)")
        sub.add_argument("-e", "--extra-vars", action="append", default=[], metavar="VARS",
                         help="extra variables as for ansible-playbook (secret ones never reach argv or a record)")
        sub.add_argument("-v", "--verbose", action="count", default=0, help="more Ansible detail in the artifacts")
        sub.add_argument("--json", action="store_true", help="print the run record as JSON on stdout")
        shown = sub.add_mutually_exclusive_group()
        shown.add_argument("--progress", dest="progress", action="store_true", default=None,
                           help="one line per host, database and step, and the pulls' progress "
                                "(default on a terminal)")
        shown.add_argument("--quiet", dest="progress", action="store_false", help="only the summary")
        sub.add_argument("--keep-runs", type=int, default=int(os.environ.get("SQLITE_FLEET_KEEP_RUNS",
                                                                                DEFAULT_KEEP_RUNS)),
                         help="run folders (artifacts) kept in var/runs/ (default %(default)s)")
        sub.add_argument("--log", metavar="FILE",
                         help="for cron/launchd: one run at a time (lock FILE.lock, exit 75 when busy), "
                              "everything appended to FILE, rotated past 5 MiB")
    for command, (help_text, add_arguments, _run) in READERS.items():
        add_arguments(commands.add_parser(command, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options = build_parser().parse_args(argv)
        if options.command in READERS:
            return READERS[options.command][2](options)
        for source in options.inventory:
            if not os.path.exists(source) and "," not in source:
                raise UsageError("sqlite-fleet: inventory %s does not exist" % source)
        if options.keep_runs < 1:
            raise UsageError("sqlite-fleet: --keep-runs must be 1 or more")
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    if options.log:  # scheduled: progress, summary (and --json) into the log, one run at a time
        with ScheduledLog(options.log) as log:
            if log.busy:
                return EX_TEMPFAIL
            code = run(options, argv, log.write, options.progress is not False, log.write,
                       pull_progress=options.progress is True)
            log.write("%s finished with exit code %d" % (options.command, code))
            return code
    out = sys.stderr if options.json else sys.stdout
    terminal = out.isatty()
    progress = options.progress if options.progress is not None else terminal
    return run(options, argv, lambda line: print(line, file=out, flush=True), progress,
               lambda text: print(text, flush=True), pull_progress=progress and (terminal or options.progress is True),
               terminal=out if terminal else None)


def run(options: argparse.Namespace, argv: list[str], say: Callable[[str], None], progress: bool,
        print_json: Callable[[str], None], pull_progress: bool = False, terminal: TextIO | None = None) -> int:
    """Run the command's playbook; ``say`` shows progress (when asked) and the summary; the pulls'
    progress (``pull_progress``) is redrawn in place on ``terminal``, else shown as lines."""
    request = Request(
        command=options.command, argv=["sqlite-fleet", *argv], inventories=options.inventory, limit=options.limit,
        check=options.check, diff=options.diff, extra_vars=options.extra_vars, verbosity=options.verbose,
        keep_runs=options.keep_runs, progress=progress, runs_dir=os.environ.get("SQLITE_FLEET_RUNS_DIR", RUNS_DIR),
        pull_progress=pull_progress, terminal=terminal)
    outcome = run_playbook(request, say)
    for line in outcome.lines:
        say(line)
    if outcome.record_path and not options.check:
        refresh_metrics(os.path.dirname(os.path.dirname(outcome.record_path)), options.inventory, say)
    if options.json:
        print_json(json.dumps(outcome.record, indent=2))
    return outcome.record["exit_code"]


def refresh_metrics(archive_dir: str, inventories: list[str], say: Callable[[str], None]) -> None:
    """After a run, the Prometheus textfile as ``status`` writes it; a failure is one warning line."""
    from .fleet_inventory import load_fleet
    from .metrics import write_metrics

    try:
        write_metrics(archive_dir, None, fleet=load_fleet(inventories or None))
    except Exception as exc:  # the run's outcome stands; the metrics are a view of it
        say("warning: the metrics were not updated: %s" % exc)


if __name__ == "__main__":
    sys.exit(main())
