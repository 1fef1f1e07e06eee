"""A module's documentation is data: ``library/<module>.yml`` beside ``library/<module>.py``.

The file holds the three keys Ansible reads for a module (ansible-doc and ansible-test validate-modules
find it beside a .py without them): DOCUMENTATION and RETURN as mappings, EXAMPLES as one block string
of tasks. The .py holds only code. tools/build_collection.py ships the file next to each module, and
the tests read the documentation through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "library"
DOC_SUFFIX = ".yml"
KEYS = ("DOCUMENTATION", "EXAMPLES", "RETURN")


def module_names(library: Path = LIBRARY) -> list[str]:
    """The modules of a library folder (or of a collection's plugins/modules): one .py each."""
    return sorted(path.stem for path in library.glob("*.py"))


def doc_path(module: str, library: Path = LIBRARY) -> Path:
    """Where the documentation of a module lives: <library>/<module>.yml."""
    return library / (module + DOC_SUFFIX)


def load_docs(module: str, library: Path = LIBRARY) -> dict[str, Any]:
    """The module's DOCUMENTATION and RETURN (mappings) and EXAMPLES (text); ValueError when one is missing."""
    path = doc_path(module, library)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing = [key for key in KEYS if not isinstance(data, dict) or not data.get(key)]
    if missing:
        raise ValueError("%s: no %s" % (path, ", ".join(missing)))
    return data
