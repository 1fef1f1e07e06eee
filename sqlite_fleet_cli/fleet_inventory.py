"""The fleet as the inventory describes it: hosts of ``sqlite_hosts``, their databases, the archive.

Read in-process with Ansible's own inventory and variable managers, and the few variables
used here templated as a play would template them (the demo inventory builds
``sqlite_archive_dir`` from ``inventory_dir``; ``ansible-inventory --list`` would print the
raw ``{{ ... }}``). Nothing connects to a host.

Variables read, per host of ``sqlite_hosts``:
- ``sqlite_backup_databases``: the databases (their ``name``) a host should have in the archive;
- ``sqlite_archive_dir``: the archive (the first host's, as restore_drill.yml takes it);
- ``sqlite_app_sqlite_version``: the SQLite version the host's app links (optional), a version
  such as ``3.45.1`` or a mapping of database name to version;
- ``sqlite_drill_max_age_hours``: the freshness threshold (the first host's; default 36);
- ``sqlite_fleet_metrics_file``: where the controller writes its Prometheus textfile (optional).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .history import SQLITE_VERSION_RE

REPO_ROOT = Path(__file__).resolve().parents[1]
HOSTS_GROUP = "sqlite_hosts"
DEFAULT_ARCHIVE_DIR = "~/sqlite-archive"  # the sqlite_archive role's default: $HOME/sqlite-archive
DEFAULT_MAX_AGE_HOURS = 36.0  # the sqlite_drill role's default: one late daily run allowed
VARIABLES = ("sqlite_backup_databases", "sqlite_archive_dir", "sqlite_app_sqlite_version",
             "sqlite_drill_max_age_hours", "sqlite_fleet_metrics_file")
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 3600}


class BadInput(Exception):
    """Bad input (a missing inventory, a malformed variable): a one-line message, exit code 2."""


@dataclass
class FleetHost:
    name: str
    databases: list[str]
    archive_dir: str | None
    app_sqlite: dict[str, str] = field(default_factory=dict)  # database name ("*" for all) -> version

    def app_sqlite_version(self, database: str) -> str | None:
        return self.app_sqlite.get(database) or self.app_sqlite.get("*")


@dataclass
class Fleet:
    inventory: list[str]
    hosts: dict[str, FleetHost]  # in inventory order
    max_age_hours: float | None = None
    metrics_file: str | None = None

    def archive_dir(self) -> str:
        """The archive: the first host's ``sqlite_archive_dir``; hosts naming another one are bad input."""
        named = {host.name: host.archive_dir for host in self.hosts.values() if host.archive_dir}
        chosen = next(iter(named.values()), None) or os.path.expanduser(DEFAULT_ARCHIVE_DIR)
        others = sorted(name for name, path in named.items() if path != chosen)
        if others:
            raise BadInput("the hosts of %s name more than one sqlite_archive_dir (%s: %s, %s: %s): pass "
                           "--archive-dir" % (HOSTS_GROUP, next(iter(named)), chosen, others[0], named[others[0]]))
        return chosen


def default_inventory() -> list[str]:
    """The inventory plain ansible-playbook would load from the repository root (ansible.cfg, or
    ANSIBLE_INVENTORY)."""
    from ansible import constants

    return [str(source) for source in constants.DEFAULT_HOST_LIST]


def checked_databases(host: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadInput("host %s: sqlite_backup_databases must be a list of {name, path}" % host)
    found = []
    for index, item in enumerate(value):
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not name:
            raise BadInput("host %s: sqlite_backup_databases[%d] has no name" % (host, index))
        if name not in found:
            found.append(str(name))
    return found


def checked_app_sqlite(host: str, value: Any) -> dict[str, str]:
    """``3.45.1`` -> {"*": "3.45.1"}; {db: version} as it is; raises BadInput otherwise."""
    problem = "host %s: sqlite_app_sqlite_version must be a version such as 3.45.1, or a mapping of " \
              "database name to version" % host
    if value in (None, ""):
        return {}
    pairs = value.items() if isinstance(value, Mapping) else [("*", value)]
    versions = {}
    for database, version in pairs:
        if not isinstance(database, str) or not isinstance(version, str) or not SQLITE_VERSION_RE.fullmatch(version):
            raise BadInput(problem)
        versions[str(database)] = version
    return versions


def checked_hours(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        hours = float(value)
    except (TypeError, ValueError):
        raise BadInput("sqlite_drill_max_age_hours must be a number of hours, got %r" % (value,)) from None
    if not hours > 0:
        raise BadInput("sqlite_drill_max_age_hours must be more than 0, got %r" % (value,))
    return hours


def plain(value: Any) -> Any:
    """Ansible's tagged strings, lists and dicts as plain Python values."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def load_fleet(inventory: str | Sequence[str] | None = None) -> Fleet:
    """The hosts of ``sqlite_hosts`` and the variables above, templated; raises BadInput."""
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO_ROOT / "ansible.cfg"))
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    sources = [inventory] if isinstance(inventory, str) else list(inventory or default_inventory())
    for source in sources:
        if "," not in source and not os.path.exists(source):
            raise BadInput("the inventory %s does not exist" % source)
    loader = DataLoader()
    try:
        manager = InventoryManager(loader=loader, sources=sources)
        variables = VariableManager(loader=loader, inventory=manager)
        members = manager.get_groups_dict().get(HOSTS_GROUP) or []
    except AnsibleError as exc:
        raise BadInput("cannot read the inventory %s: %s" % (", ".join(sources), str(exc).splitlines()[0])) from None
    if not members:
        raise BadInput("the inventory %s has no hosts in %s" % (", ".join(sources), HOSTS_GROUP))
    fleet = Fleet(inventory=sources, hosts={})
    for index, name in enumerate(members):
        host_vars = variables.get_vars(host=manager.get_host(name))
        templar = Templar(loader=loader, variables=host_vars)
        values = {}
        for variable in VARIABLES:
            try:
                values[variable] = plain(templar.template(host_vars[variable])) if variable in host_vars else None
            except AnsibleError as exc:
                raise BadInput("host %s: cannot work out %s: %s" % (name, variable, str(exc).splitlines()[0])) \
                    from None
        archive_dir = values["sqlite_archive_dir"]
        if archive_dir is not None and (not isinstance(archive_dir, str) or not archive_dir.strip()):
            raise BadInput("host %s: sqlite_archive_dir must be a path" % name)
        fleet.hosts[str(name)] = FleetHost(
            name=str(name), databases=checked_databases(name, values["sqlite_backup_databases"]),
            archive_dir=os.path.expanduser(archive_dir) if archive_dir else None,
            app_sqlite=checked_app_sqlite(name, values["sqlite_app_sqlite_version"]))
        if index == 0:
            fleet.max_age_hours = checked_hours(values["sqlite_drill_max_age_hours"])
            metrics = values["sqlite_fleet_metrics_file"]
            if metrics not in (None, "") and not isinstance(metrics, str):
                raise BadInput("sqlite_fleet_metrics_file must be a path")
            fleet.metrics_file = os.path.expanduser(metrics) if metrics else None
    return fleet


# --------------------------------------------------------------------------- command line


def command_main(prog: str, doc: str, add_arguments: Any, run: Any, argv: Sequence[str] | None) -> int:
    """``main_status``/``main_report``: their own parser (the CLI wires add_*_arguments and run_* instead)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_fleet_arguments(parser: Any) -> None:
    """-i, --archive-dir and --max-age, shared by status and report."""
    parser.add_argument("-i", "--inventory", action="append", metavar="INVENTORY",
                        help="inventory file or folder (repeatable); default: the one ansible.cfg names")
    parser.add_argument("--archive-dir", metavar="DIR",
                        help="the archive; default: the inventory's sqlite_archive_dir (else ~/sqlite-archive)")
    parser.add_argument("--max-age", metavar="AGE",
                        help="freshness threshold, e.g. 36h, 90m, 2d (a plain number is hours); default: the "
                             "inventory's sqlite_drill_max_age_hours, else 36h")


def parse_duration(value: str) -> float:
    """``36h``, ``90m``, ``2d``, ``1w``, ``3600s``; a plain number is hours. Raises ValueError."""
    match = DURATION_RE.fullmatch(value)
    if not match or float(match.group(1)) <= 0:
        raise ValueError("%r is not a duration such as 36h, 90m, 2d or 1w" % value)
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


def max_age_seconds(fleet: Fleet | None, given: str | None) -> float:
    """--max-age, else the inventory's sqlite_drill_max_age_hours, else 36 h (as the drill judges)."""
    if given:
        return parse_duration(given)
    hours = fleet.max_age_hours if fleet and fleet.max_age_hours else DEFAULT_MAX_AGE_HOURS
    return hours * 3600


def read_fleet_arguments(args: Any) -> tuple[Fleet, str, float]:
    """What add_fleet_arguments' options name: the fleet of the inventory, the archive to read and
    the freshness threshold in seconds; raises BadInput (ValueError for a bad --max-age)."""
    fleet = load_fleet(args.inventory)
    if args.archive_dir:
        archive_dir = os.path.abspath(os.path.expanduser(args.archive_dir))
        if not os.path.isdir(archive_dir):
            raise BadInput("--archive-dir %s is not a folder" % archive_dir)
    else:
        archive_dir = fleet.archive_dir()  # missing: nothing was ever pulled, every database is "never"
    return fleet, archive_dir, max_age_seconds(fleet, args.max_age)
