#!/usr/bin/env python3
"""The AnsiballZ payload Ansible builds for a module of library/, and what its zip holds.

    python tests/ansiballz.py [--repo DIR] MODULE [MODULE ...]    -> JSON on stdout

Per module: ``bytes`` (the payload a task sends to the host: the wrapper with the base64 zip),
``zip_bytes``, and ``files``: every file of the zip with its size and its compressed size, or
``payload: null`` for a module that is only an action plugin's documentation. Built by Ansible's
own ``modify_module`` with the repository's ansible.cfg (module_utils, compression), for
/usr/bin/python3. Run as a script (a separate process): it sets up Ansible's plugin loader and
config, which a test process must not inherit. Used by tests/modules/test_core_shipping.py and
bench/bench_payload.py.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import sys
import zipfile

ZIP_DATA = re.compile(rb"zip_data='([^']*)'")


def payload_of(module: str, repo: str) -> dict:
    """What Ansible sends to the host to run ``module`` (library/<module>.py of ``repo``)."""
    from ansible import constants
    from ansible.executor.module_common import modify_module
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    built = modify_module(module_name=module, module_path=os.path.join(repo, "library", module + ".py"),
                          module_args={}, templar=Templar(loader=DataLoader()),
                          task_vars={"ansible_python_interpreter": "/usr/bin/python3"},
                          module_compression=constants.DEFAULT_MODULE_COMPRESSION)
    found = ZIP_DATA.search(built.b_module_data)
    if not found:
        return {"bytes": len(built.b_module_data), "payload": None}
    data = base64.b64decode(found.group(1))
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    files = {info.filename: [info.file_size, info.compress_size] for info in infos}
    return {"bytes": len(built.b_module_data), "payload": True, "zip_bytes": len(data), "files": files}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("modules", nargs="+")
    args = parser.parse_args(argv)
    repo = os.path.abspath(args.repo)
    os.chdir(repo)
    os.environ["ANSIBLE_CONFIG"] = os.path.join(repo, "ansible.cfg")
    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader()
    json.dump({module: payload_of(module, repo) for module in args.modules}, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
