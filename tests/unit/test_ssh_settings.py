"""ansible.cfg's ssh options for the pulls: no ssh compression of incompressible backups.

With ``-C`` every page of a full pull went through zlib on the host and the controller:
a first pull of 256 MiB took ~5x longer (bench/bench_first_pull.py). The deltas are
compressed by the core itself.
"""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ansible_cfg_does_not_compress_the_ssh_connection() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    args = shlex.split(cfg.get("ssh_connection", "ssh_args"))
    assert "-C" not in args and not any(a.startswith("-C") and not a.startswith("-o") for a in args), args
    options = [args[i + 1].lower() for i, a in enumerate(args[:-1]) if a == "-o"]
    assert "compression=yes" not in options, args
    # the connection sharing the fetch relies on is still there
    assert "controlmaster=auto" in options and any(o.startswith("controlpersist=") for o in options), args
