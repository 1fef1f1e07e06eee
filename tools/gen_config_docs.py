#!/usr/bin/env python3
"""Generate docs/configuration.md from the roles' meta/argument_specs.yml.

    python3 tools/gen_config_docs.py          # rewrite docs/configuration.md
    python3 tools/gen_config_docs.py --check  # exit 1 when the file is out of date

tests/unit/test_docs.py runs the check, so the documented variables cannot drift from the
roles' argument specs (and those from the roles' defaults).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "docs" / "configuration.md"

HEADER = """# Configuration

Every variable of every role, generated from the roles' `meta/argument_specs.yml` by
`tools/gen_config_docs.py` (do not edit by hand: `make docs` rewrites this file, and the
tests fail when it and the argument specs disagree). Ansible validates these variables
when a role starts. Set them in the inventory (`group_vars/`, `host_vars/`) or with `-e`.
"""


def load_specs() -> dict[str, dict[str, Any]]:
    specs = {}
    for path in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        specs[path.parent.parent.name] = data["argument_specs"]["main"]
    return specs


def cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    if text.endswith("\n...") or text.endswith("..."):
        text = text.rsplit("\n...", 1)[0].rstrip(".").strip()
    return "`%s`" % text.replace("|", "\\|") if text != "" else '`""`'


def describe(option: dict[str, Any]) -> str:
    text = option.get("description", "")
    if isinstance(text, list):
        text = " ".join(text)
    text = " ".join(text.split()).replace("|", "\\|")
    for marker in ("C(", "I(", "B("):
        while marker in text:
            start = text.index(marker)
            end = text.index(")", start)
            inner = text[start + 2:end]
            text = text[:start] + ("`%s`" % inner if marker == "C(" else inner) + text[end + 1:]
    if option.get("choices"):
        text += " Choices: %s." % ", ".join("`%s`" % c if c != "" else '`""`' for c in option["choices"])
    return text


def render(specs: dict[str, dict[str, Any]]) -> str:
    out = [HEADER]
    for role, spec in specs.items():
        out.append("\n## Role `%s`\n" % role)
        out.append(" ".join(spec.get("short_description", "").split()) + ".\n" if spec.get("short_description")
                   else "")
        out.append("| variable | type | default | required | description |")
        out.append("|---|---|---|---|---|")
        for name, option in spec.get("options", {}).items():
            kind = option.get("type", "str")
            if kind == "list" and option.get("elements"):
                kind = "list of %s" % option["elements"]
            default = cell(option["default"]) if "default" in option else ""
            out.append("| `%s` | %s | %s | %s | %s |" % (name, kind, default, "yes" if option.get("required")
                                                         else "", describe(option)))
            for sub_name, sub in (option.get("options") or {}).items():
                out.append("| `%s%s.%s` | %s | %s | %s | %s |" % (
                    name, "[]" if option.get("type") == "list" else "", sub_name, sub.get("type", "str"),
                    cell(sub["default"]) if "default" in sub else "",
                    "yes" if sub.get("required") else "", describe(sub)))
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is out of date")
    args = parser.parse_args()
    text = render(load_specs())
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print("docs/configuration.md is out of date: run python3 tools/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print("wrote %s" % OUTPUT.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
