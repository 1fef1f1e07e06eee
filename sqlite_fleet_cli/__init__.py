# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's command line, ``sqlite-fleet``: runs this repository's playbooks through
ansible-runner, shows their progress, and writes the run record of every run.

The parts:

* ``paths`` -- where the repository, its playbooks and the core are;
* ``events`` -- the fold: Ansible's events (ansible-runner's, or the callback plugin's) ->
  one row per host and database;
* ``record`` -- the run record (format 2, docs/cli.md), its secrets left out, written atomically;
* ``summary`` -- the lines a person reads: progress steps and the closing summary;
* ``stats`` -- the table of a stats run;
* ``runner`` -- one playbook run through ansible-runner (private data dir, artifacts by count);
* ``pull_progress`` -- the progress of the pulls while they run, from the fetch's progress files;
* ``cli`` -- the command line itself.

The callback plugin ``callback_plugins/sqlite_fleet_record.py`` uses ``events``, ``record`` and
``summary`` too, so that a plain ``ansible-playbook`` run leaves the same summary and record.
"""
