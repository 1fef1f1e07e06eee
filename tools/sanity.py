#!/usr/bin/env python3
"""Run ``ansible-test sanity`` on the collection built from this repository (what ``make sanity`` runs).

    tools/sanity.py [--only TEST ...]

1. Assembles the collection (tools/build_collection.py) in var/collection/ansible_collections/...; its own
   ``git init`` makes ansible-test list its files (var/ is ignored by the repository's git).
2. Runs ansible-test with HOME=var/ansible-test, so its virtual environments (one per sanity test and
   Python, built from the package index once) and its pip bootstrap script are cached under var/.
   ansible-test bootstraps pip in each new environment with a get-pip script it downloads from
   ci-files.testing.ansible.com; where that host is out of reach, tools/ansible_test_get_pip.py
   (ensurepip, then pip from the package index) stands in for it.
3. Runs every sanity test on the controller's Python (pep8 and pylint excepted: see SKIP), and the
   tests for the hosts' Python (compile, import) on Python 3.9 as well (PYTHON39, or the first of
   /root/.pyenv/versions/3.9.*, or python3.9 on PATH).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_collection  # noqa: E402

ROOT = build_collection.ROOT
VAR = ROOT / "var"
HOME = VAR / "ansible-test"
CONTROLLER = "%d.%d" % sys.version_info[:2]
HOST_PYTHON = "3.9"
HOST_TESTS = ("compile", "import")
# Style checks of the core and the modules' code, not of the collection's packaging: they report findings
# in code this build only copies (pep8: continuation-line indents; pylint: "_" as a name, ...). ruff lints it.
SKIP = ("pep8", "pylint")


def ansible_test() -> str:
    found = shutil.which("ansible-test", path=str(Path(sys.executable).parent)) or shutil.which("ansible-test")
    if not found:
        raise SystemExit("ansible-test not found: it comes with ansible-core (requirements.txt)")
    return found


def pip_version_wanted() -> str:
    """The pip version ansible-test bootstraps into its environments (its get_pip_<version>.py)."""
    import ansible_test

    source = Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
    match = re.search(r"pip='([0-9.]+)'", source.read_text())
    if not match:
        raise SystemExit("cannot tell which pip version %s bootstraps" % source)
    return match.group(1)


def install_get_pip() -> None:
    cache = HOME / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / ("get_pip_%s.py" % pip_version_wanted().replace(".", "_"))
    shutil.copyfile(Path(__file__).resolve().parent / "ansible_test_get_pip.py", target)


def host_python() -> str:
    candidates = [os.environ.get("PYTHON39", "")]
    candidates += sorted(glob.glob("/root/.pyenv/versions/%s.*/bin/python%s" % (HOST_PYTHON, HOST_PYTHON)))
    candidates.append(shutil.which("python" + HOST_PYTHON) or "")
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == HOST_PYTHON:
            return candidate
    raise SystemExit("Python %s (the hosts' Python) not found: set PYTHON39 to its interpreter" % HOST_PYTHON)


def run(coll: Path, args: list[str], env: dict[str, str]) -> int:
    command = [ansible_test(), "sanity", "--venv", "--color", "no", *args]
    print("+ (cd %s && ansible-test %s)" % (coll.relative_to(ROOT), " ".join(command[1:])), flush=True)
    return subprocess.run(command, cwd=coll, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="TEST",
                        help="run only this sanity test (repeatable), on the controller's Python")
    args = parser.parse_args(argv)

    # ansible-test keeps its own controller environment in tests/output/.tmp/delegation: keep it across builds.
    coll = build_collection.collection_dir(VAR / "collection")
    kept = HOME / "tests-output"
    if (coll / "tests" / "output").is_dir():
        shutil.rmtree(kept, ignore_errors=True)
        HOME.mkdir(parents=True, exist_ok=True)
        (coll / "tests" / "output").rename(kept)
    build_collection.assemble(VAR / "collection")
    if kept.is_dir():
        (coll / "tests").mkdir(exist_ok=True)
        kept.rename(coll / "tests" / "output")
    subprocess.run(["git", "init", "-q", str(coll)], check=True)
    (coll / ".git" / "info" / "exclude").write_text("/tests/output/\n")
    install_get_pip()

    # ansible-test finds each Python as pythonX.Y on PATH: put the hosts' Python there.
    bin_dir = HOME / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / ("python" + HOST_PYTHON)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(host_python())
    # Nothing of the repository's Ansible configuration (make exports ANSIBLE_CONFIG): the collection alone.
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(HOME=str(HOME), PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                                      os.environ.get("PATH", "")]))

    if args.only:
        return run(coll, ["--python", CONTROLLER, *(arg for test in args.only for arg in ("--test", test))], env)
    status = run(coll, ["--python", CONTROLLER, *(arg for test in SKIP for arg in ("--skip-test", test))], env)
    status = run(coll, ["--python", HOST_PYTHON, *(arg for test in HOST_TESTS for arg in ("--test", test))],
                 env) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
