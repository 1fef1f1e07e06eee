"""AnsiballZ ships the whole core package with every module, under each host Python.

A module imports ``ansible.module_utils.sqlite_fleet``; Ansible's dependency finder follows the
package's relative imports and zips every part into the module's payload. A part left out would
fail the import on the host, or change the ``core_sha256`` a backup records from its payload.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from core_parts import MODULE_UTILS, core_files, core_sha256_of
from module_test_helpers import BIN, REPO, ansible_env, make_database, run_module

PROBE = '''#!/usr/bin/python
from __future__ import annotations

import sys
import zipfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sqlite_fleet import core_sha256


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    core = sys.modules["ansible.module_utils.sqlite_fleet"]
    archive = getattr(core.__loader__, "archive", None)
    shipped = sorted(name for name in zipfile.ZipFile(archive).namelist() if "sqlite_fleet" in name) if archive else []
    module.exit_json(changed=False, shipped=shipped, core_sha256=core_sha256(), zipped=bool(archive))


main()
'''


def test_the_payload_holds_every_file_of_the_core(tmp_path: Path, python: str) -> None:
    (tmp_path / "core_probe.py").write_text(PROBE)
    proc = subprocess.run([str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-M", str(tmp_path),
                           "-e", "ansible_python_interpreter=%s" % python, "-m", "core_probe"],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    result = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert not result.get("failed"), result
    assert result["zipped"] is True, "the module did not run from its AnsiballZ payload"
    prefix = "ansible/module_utils/"
    expected = sorted(prefix + str(path.relative_to(MODULE_UTILS)) for path in core_files())
    assert result["shipped"] == expected
    assert result["core_sha256"] == core_sha256_of(core_files())


def test_a_backup_records_the_sha256_of_the_whole_core(tmp_path: Path, python: str) -> None:
    """The real module: what it read of the core on the host is byte for byte the repository's."""
    db = make_database(tmp_path / "app.db")
    taken = run_module("sqlite_backup", {"path": str(db), "name": "app", "backup_dir": str(tmp_path / "backups")},
                       python=python)
    assert taken.get("changed") is True and taken["verified"] is True, taken
    manifest = json.loads(Path(taken["backup"] + ".json").read_text())
    assert manifest["tool"]["core_sha256"] == taken["manifest"]["tool"]["core_sha256"] == core_sha256_of(core_files())
