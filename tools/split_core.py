#!/usr/bin/env python3
"""Split the single-file core module_utils/sqlite_fleet.py into the package module_utils/sqlite_fleet/.

    tools/split_core.py [--dry-run] [--repo DIR]

Reads the monolith with ``ast`` (its text is kept byte for byte, comments included) and writes
one file per part: every top-level statement goes to the part of its banner section (SECTIONS),
unless OVERRIDES names another part for it. Each part imports, from the standard library and
from the other parts (relative imports only: the on-host runner has no Ansible), exactly the
names it uses. ``__init__.py`` maps the parts (PARTS, bottom up; ``core_sha256`` hashes those
files) and re-exports what the faces use (library/, action_plugins/, runner/, bin/,
sqlite_fleet_cli/, callback_plugins/, bench/, tools/). The single file is then removed.
``--dry-run`` prints each part's size and imports and writes nothing.

It refuses, changing nothing, when:
- a banner section is in no row of SECTIONS: add the section there (its part);
- a part would import from a part that imports from it (a cycle): the message names the
  names that make the cycle; move one of them with OVERRIDES (or move its section in SECTIONS);
- a name that a function rebinds (``global``) is used in another part: move the users with OVERRIDES;
- a part would exceed MAX_LINES: split the section (a new part in PARTS and SECTIONS) or move
  names with OVERRIDES.
A new function needs nothing: it goes to its banner section's part. A new banner section needs a
row in SECTIONS. Names moved by OVERRIDES keep their old banner unless BANNERS names a new one.

Re-run on main after merging work that changed the single file (the lead's procedure):
    git checkout main && git merge <the other branches>  # module_utils/sqlite_fleet.py holds it all
    git merge split~1      # this tool, the hand changes (role, core_sha256, tests, docs); not the
                           # generated commit (merging it too: keep the merged single file on the
                           # modify/delete conflict of module_utils/sqlite_fleet.py, drop its package)
    .venv/bin/python tools/split_core.py --dry-run      # refused? extend SECTIONS / OVERRIDES / PARTS
    .venv/bin/python tools/split_core.py                # writes module_utils/sqlite_fleet/, removes the file
    .venv/bin/ruff check module_utils
    CI=true .venv/bin/pytest -q tests/unit tests/modules tests/collection tests/integration/test_provision.py
    git rm -q --cached module_utils/sqlite_fleet.py && git add module_utils/sqlite_fleet/*.py
    git commit -m "Split the core into module_utils/sqlite_fleet/ (tools/split_core.py)"
The package is output until that commit, the source after it: edit the parts from then on. A
branch that still changes the single file after the split: apply its change to the single file
of the commit before the split and run the tool again (it replaces the package), or port it by
hand to the part that holds the function (``grep -n "def NAME" module_utils/sqlite_fleet/*.py``).
Tests that patch the core (``monkeypatch.setattr(core, "X", ...)``) keep working through
tests/core_parts.py; tests that read module_utils/sqlite_fleet.py by path use its core_files().
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = Path("module_utils") / "sqlite_fleet.py"
TARGET = Path("module_utils") / "sqlite_fleet"
MAX_LINES = 500
HEADER = ("# Copyright: (c) 2026, the sqlite-fleet-backup authors\n"
          "# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)\n")
PART_NOTE = "Made by tools/split_core.py from the former single-file core; edit it here (the map: __init__.py)."
BANNER_RE = re.compile(r"^# -{10,} (?P<section>\S.*?)\s*$")

# The parts, bottom up (a part imports only from parts above it), with what each holds.
PARTS = {
    "errors": "The kinds of failure (the runner's exit codes) and BackupError.",
    "names": "Names the core gives and reads: backup file names, UTC times, hidden files, the pending marker.",
    "inputs": "Checks of what users pass in: names, labels, paths, timeouts, database files, identifiers.",
    "files": "Files and folders: fsync, hashing, atomic writes, owners, private folders, free space, "
             "the folder lock, the kernel copy, work in the background.",
    "progress": "Progress of a pull: the files the controller's fetch writes while it copies, and their reader.",
    "sqlitedb": "SQLite connections, checks, facts and checkpoints.",
    "catalog": "Manifests, .sha256 sidecars, the listing of a backup folder, unfinished files, and the "
               "commit protocol shared by snapshots and archive imports.",
    "pinned": "The pinned copy: the database file's bytes copied in the kernel while a read transaction "
              "pins the WAL, with that snapshot's WAL pages laid over them.",
    "snapshots": "Taking a backup: the copy (pinned copy, backup API or VACUUM INTO), its checks and its commit.",
    "verify": "Verifying finished backups: checksum, integrity, foreign keys and row counts against the manifest.",
    "retention": "Retention: the policy, the pure selection, the prune under the lock, folder statistics.",
    "delta": "Delta files: the pages that changed between two backups of one database, and their application.",
    "export": "The host side of a pull: the plan, the staging folders and what the fetch user may read.",
    "archive": "The archive side of a pull: vetting transfers and manifests, delta bases, space, imports.",
    "pull": "A pull on the controller, step by step: the offered transfers checked, fetched files imported, "
            "the archive pruned (the sqlite_archive module and the sqlite_backup action plugin call these).",
    "restore": "Restores (choosing a backup, the target plan, live or replace) and working copies.",
    "drills": "Restore drills: a backup restored into scratch space, checked and probed.",
    "present": "Presentation helpers: sizes and ages for people.",
}

# Banner section of the single file -> part. "(top)" is what comes before the first banner.
SECTIONS = {
    "(top)": "names",
    "inputs": "inputs",
    "names": "names",
    "files": "files",
    "lock": "files",
    "pull progress": "progress",
    "sqlite helpers": "sqlitedb",
    "facts": "sqlitedb",
    "manifests": "catalog",
    "listing": "catalog",
    "commit": "catalog",
    "snapshot": "snapshots",
    "pinned copy": "pinned",
    "verify": "verify",
    "retention": "retention",
    "stats": "retention",
    "delta pulls": "delta",
    "archive side": "archive",
    "archive": "archive",
    "host side of a pull": "export",
    "export": "export",
    "working copies": "restore",
    "restore": "restore",
    "restore drills": "drills",
    "drills": "drills",
    "presentation": "present",
}

# Top-level names that belong to another part than their banner section's.
OVERRIDES = {
    # the top of the file: kinds of failure and the error
    "KIND_BAD_INPUT": "errors", "KIND_LOCKED": "errors", "KIND_NO_SPACE": "errors", "KIND_CORRUPT": "errors",
    "KIND_IO": "errors", "BackupError": "errors",
    "RETENTION_RULES": "retention", "retention_options": "retention",
    "INTEGRITY_LEVELS": "sqlitedb", "CHECKPOINT_MODES": "sqlitedb", "METHODS": "snapshots",
    "SQLITE_HEADER": "inputs",
    # the snapshot section's tools that verify, delta and export use too
    "Background": "files", "fsync_and_hash": "files", "run_at_priority": "files", "BACKUP_NICE": "files",
    # the kernel copy
    "open_held": "files", "copy_file_bytes": "files", "COPY_STEP_BYTES": "files",
    # the commit protocol, written once for snapshots and archive imports, and the core's own checksum
    "commit_backup": "catalog", "commit_file": "catalog", "check_sidecars": "catalog",
    "_CORE_SHA256": "catalog", "core_files": "catalog", "core_sha256": "catalog",
    # checking a copy before its commit
    "inspect_copy": "snapshots", "count_rows_in": "snapshots", "check_backup_database": "verify",
    # the archive layout, shared by imports, drills and restores
    "drill_targets": "archive", "archived_backups": "archive",
    # the controller's steps of a pull, built on the archive's checks and imports
    "NOT_STAGED": "pull", "offered_transfers": "pull", "prepare_pull": "pull", "import_pulled": "pull",
    "outdated_runner": "pull", "import_all": "pull", "archive_diff": "pull", "import_and_prune": "pull",
    # the clock rule that restores, drills and exports share
    "CLOCK_SKEW": "names", "dated_in_future": "names", "future_warning": "names",
    # the words of a drill's status, shown by the presentation helpers
    "DRILL_STATUS_WORD": "present",
}

# The banner of names OVERRIDES moved, in their new part: (part, section they came from) -> banner.
# Without a row here they keep their old section's banner.
BANNERS = {
    ("files", "snapshot"): "background work, flushing and hashing",
    ("files", "pinned copy"): "the kernel copy",
    ("catalog", "pinned copy"): "commit",
    ("snapshots", "pinned copy"): "checking a copy",
}

# Files whose uses of the core __init__ re-exports (the faces, and the tests: their scripts run in a
# process of their own import the package as the runner does).
FACES = ("library/*.py", "action_plugins/*.py", "runner/*.py", "bin/*", "sqlite_fleet_cli/**/*.py",
         "callback_plugins/*.py", "bench/*.py", "tools/*.py", "tests/**/*.py")


class Refused(Exception):
    """The split cannot be made as the tables say; the message says which table to extend."""


@dataclass
class Chunk:
    """One top-level statement of the single file, with the comments and blank lines above it."""
    first: int  # first line (1-based) of its text, comments included
    last: int
    text: str
    section: str
    defines: list[str]
    node: ast.stmt
    part: str = ""
    runtime: set[str] = field(default_factory=set)  # top-level names it uses when it runs
    typing: set[str] = field(default_factory=set)  # names it uses in annotations only
    globals: set[str] = field(default_factory=set)  # names it rebinds with ``global``


def defined_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    names = []
    for target in targets:
        names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    if not names and not isinstance(node, ast.Expr):
        names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    return names


def annotation_nodes(node: ast.AST) -> set[int]:
    """ids of every node inside an annotation (strings at run time: ``from __future__ import annotations``)."""
    inside: set[int] = set()
    for sub in ast.walk(node):
        roots: list[ast.AST | None] = []
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = sub.args
            roots = [sub.returns] + [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs]
            roots += [args.vararg.annotation if args.vararg else None, args.kwarg.annotation if args.kwarg else None]
        elif isinstance(sub, ast.AnnAssign):
            roots = [sub.annotation]
        for root in roots:
            if root is not None:
                inside.update(id(n) for n in ast.walk(root))
    return inside


def uses(node: ast.stmt) -> tuple[set[str], set[str], set[str]]:
    """(names loaded at run time, names loaded in annotations only, names declared global)."""
    typing_ids = annotation_nodes(node)
    runtime, typing, rebinds = set(), set(), set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (typing if id(sub) in typing_ids else runtime).add(sub.id)
        elif isinstance(sub, ast.Global):
            rebinds.update(sub.names)
    return runtime, typing - runtime, rebinds


def import_lines(node: ast.Import | ast.ImportFrom) -> dict[str, tuple[str, str]]:
    """name bound -> (module key, alias text) for a stdlib import statement."""
    bound = {}
    for alias in node.names:
        if isinstance(node, ast.Import):
            name = alias.asname or alias.name.split(".")[0]
            bound[name] = ("import", "import %s" % alias.name + (" as %s" % alias.asname if alias.asname else ""))
        else:
            text = alias.name + (" as %s" % alias.asname if alias.asname else "")
            bound[alias.asname or alias.name] = (node.module or "", text)
    return bound


def read_chunks(source: str) -> tuple[str, list[Chunk], dict[str, tuple[str, str]]]:
    """(module docstring, chunks in source order, stdlib imports by the name they bind)."""
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    banners = {i + 1: m.group("section") for i, line in enumerate(lines) if (m := BANNER_RE.match(line))}
    docstring = ast.get_docstring(tree, clean=False) or ""
    imports: dict[str, tuple[str, str]] = {}
    chunks: list[Chunk] = []
    section = "(top)"
    start = 1
    for node in tree.body:
        first_line = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        for number in sorted(banners):
            if start <= number < first_line:
                section = banners[number]
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
                if isinstance(node, ast.ImportFrom) and node.level:
                    raise Refused("line %d: the single file imports relatively: %s" % (node.lineno, ast.unparse(node)))
                imports.update(import_lines(node))
            start = node.end_lineno + 1
            continue
        body = [line for number, line in enumerate(lines[start - 1:node.end_lineno], start)
                if number not in banners]
        text = "".join(body)  # comments above a statement stay with it; the banner does not
        runtime, typing, rebinds = uses(node)
        chunks.append(Chunk(start, node.end_lineno, text, section, defined_names(node), node,
                            runtime=runtime, typing=typing, globals=rebinds))
        start = node.end_lineno + 1
    tail = "".join(lines[start - 1:]).strip()
    if tail and chunks:
        chunks[-1].text += "\n" + tail + "\n"
    return docstring, chunks, imports


def assign_parts(chunks: list[Chunk]) -> dict[str, str]:
    """Each chunk's part; the part of every top-level name."""
    missing = sorted({c.section for c in chunks if c.section not in SECTIONS})
    if missing:
        raise Refused("banner section(s) %s in no row of SECTIONS (tools/split_core.py): add each with its part"
                      % ", ".join(repr(s) for s in missing))
    unknown = sorted({p for p in list(SECTIONS.values()) + list(OVERRIDES.values()) if p not in PARTS})
    if unknown:
        raise Refused("part(s) %s used in SECTIONS or OVERRIDES but not in PARTS" % ", ".join(unknown))
    owner: dict[str, str] = {}
    for chunk in chunks:
        parts = {OVERRIDES.get(name, SECTIONS[chunk.section]) for name in chunk.defines} or {SECTIONS[chunk.section]}
        if len(parts) > 1:
            raise Refused("line %d defines %s, which OVERRIDES sends to different parts %s"
                          % (chunk.first, ", ".join(chunk.defines), sorted(parts)))
        chunk.part = parts.pop()
        for name in chunk.defines:
            if name in owner and owner[name] != chunk.part:
                raise Refused("%s is defined twice, in parts %s and %s" % (name, owner[name], chunk.part))
            owner[name] = chunk.part
    return owner


def part_dependencies(chunks: list[Chunk], owner: dict[str, str]) -> dict[str, dict[str, dict[str, set[str]]]]:
    """part -> other part -> {"runtime": names, "typing": names} it imports from it."""
    deps: dict[str, dict[str, dict[str, set[str]]]] = {part: {} for part in PARTS}
    for chunk in chunks:
        for kind, names in (("runtime", chunk.runtime), ("typing", chunk.typing)):
            for name in names:
                part = owner.get(name)
                if part and part != chunk.part:
                    deps[chunk.part].setdefault(part, {"runtime": set(), "typing": set()})[kind].add(name)
    for part in deps.values():
        for names in part.values():
            names["typing"] -= names["runtime"]
    return deps


def check_cycles(deps: dict[str, dict[str, dict[str, set[str]]]]) -> list[str]:
    """The parts in an import order (each after the parts it imports at run time); refuses a cycle."""
    graph = {part: sorted(p for p, names in others.items() if names["runtime"]) for part, others in deps.items()}
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(part: str, path: list[str]) -> None:
        if state.get(part) == "done":
            return
        if state.get(part) == "open":
            cycle = path[path.index(part):] + [part]
            why = "; ".join("%s uses %s.%s" % (a, b, ", %s.".join(sorted(deps[a][b]["runtime"])) % (
                (b,) * (len(deps[a][b]["runtime"]) - 1))) for a, b in zip(cycle, cycle[1:]))
            raise Refused("import cycle between parts %s (%s): move one of these names to another part "
                          "with OVERRIDES in tools/split_core.py" % (" -> ".join(cycle), why))
        state[part] = "open"
        for other in graph[part]:
            visit(other, path + [part])
        state[part] = "done"
        order.append(part)

    for part in PARTS:
        visit(part, [])
    return order


def check_globals(chunks: list[Chunk], owner: dict[str, str]) -> None:
    for chunk in chunks:
        for name in chunk.globals:
            if owner.get(name) != chunk.part:
                raise Refused("%s rebinds %s (global) but that name lives in part %s: move them together with "
                              "OVERRIDES" % ("/".join(chunk.defines), name, owner.get(name)))
            users = [c for c in chunks if name in c.runtime and c.part != chunk.part]
            if users:
                raise Refused("%s is rebound at run time in part %s but used in part %s (%s): a copy imported "
                              "elsewhere would go stale; move them together with OVERRIDES"
                              % (name, chunk.part, users[0].part, "/".join(users[0].defines)))


def sort_names(names: set[str]) -> list[str]:
    """isort's order-by-type: CONSTANTS, then Classes, then functions and variables."""
    def key(name: str) -> tuple[int, str]:
        if name.isupper() or (name.upper() == name and "_" in name):
            return (0, name)
        if name[:1].isupper() or name.lstrip("_")[:1].isupper():
            return (1, name)
        return (2, name)
    return sorted(names, key=key)


def from_import(module: str, names: set[str], indent: str = "") -> str:
    ordered = sort_names(names)
    line = "%sfrom %s import %s" % (indent, module, ", ".join(ordered))
    if len(line) <= 120:
        return line + "\n"
    return "%sfrom %s import (\n%s%s)\n" % (indent, module, "".join("%s    %s,\n" % (indent, n) for n in ordered),
                                           indent)


def stdlib_imports(used: set[str], imports: dict[str, tuple[str, str]], extra_typing: bool) -> str:
    """The part's standard library imports, in isort's order (``import x`` lines, then ``from x import``)."""
    plain = sorted((text for name, (module, text) in imports.items() if name in used and module == "import"),
                   key=lambda t: t.split()[1].lower())
    froms: dict[str, dict[str, str]] = {}
    for name, (module, text) in imports.items():
        if name in used and module != "import":
            froms.setdefault(module, {})[text.split(" as ")[0]] = text
    if extra_typing:
        froms.setdefault("typing", {})["TYPE_CHECKING"] = "TYPE_CHECKING"
    lines = [text + "\n" for text in plain]
    for module in sorted(froms):
        texts = [froms[module][n] for n in sort_names(set(froms[module]))]
        line = "from %s import %s" % (module, ", ".join(texts))
        lines.append(line + "\n" if len(line) <= 120
                     else "from %s import (\n%s)\n" % (module, "".join("    %s,\n" % t for t in texts)))
    return "".join(lines)


def part_text(part: str, chunks: list[Chunk], deps: dict[str, dict[str, set[str]]],
              imports: dict[str, tuple[str, str]]) -> str:
    """One part's file: header, docstring, imports, then its chunks in the single file's order."""
    mine = [c for c in chunks if c.part == part]
    used = set().union(*(c.runtime | c.typing for c in mine))
    typing_only = {other: names["typing"] for other, names in deps.items() if names["typing"]}
    out = [HEADER, '"""%s\n\n%s\n"""\n' % (wrap_doc(PARTS[part]), PART_NOTE), "\nfrom __future__ import annotations\n"]
    std = stdlib_imports(used, imports, bool(typing_only))
    if std:
        out.append("\n" + std)
    ours = "".join(from_import(".%s" % other, names["runtime"]) for other, names in sorted(deps.items())
                   if names["runtime"])
    if ours:
        out.append("\n" + ours)
    if typing_only:
        out.append("\nif TYPE_CHECKING:\n" + "".join(from_import(".%s" % other, names, "    ")
                                                      for other, names in sorted(typing_only.items())))
    sections = list(dict.fromkeys(c.section for c in mine))
    previous: Chunk | None = None
    body: list[str] = []
    for chunk in mine:
        if previous is not None and previous.last + 1 == chunk.first and previous.section == chunk.section:
            body.append(chunk.text)  # next to each other in the single file: its spacing
        elif len(sections) > 1 and chunk.section != "(top)" and (previous is None or previous.section != chunk.section):
            body.append("\n\n" + banner(BANNERS.get((part, chunk.section), chunk.section)) + "\n\n"
                        + chunk.text.lstrip("\n"))
        else:
            body.append("\n\n" + chunk.text.lstrip("\n"))
        previous = chunk
    text = "".join(body).lstrip("\n")
    # isort's blank lines after the imports: two before a def or class, one before anything else
    out.append("\n\n" if re.match(r"(@|def |class )", text) else "\n")
    out.append(text)
    return "".join(out)


def banner(section: str) -> str:
    return "# " + "-" * 75 + " " + section


def wrap_doc(text: str, width: int = 100) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = (line + " " + word).strip()
    lines.append(line)
    return "\n".join(lines)


def face_names(repo: Path, public: set[str]) -> set[str]:
    """The core's names the faces use (``from ...sqlite_fleet import X`` or ``<core>.X``)."""
    found: set[str] = set()
    for pattern in FACES:
        for path in sorted(repo.glob(pattern)):
            if not path.is_file() or path.name == Path(__file__).name:
                continue
            try:
                tree = ast.parse(path.read_text())
            except (SyntaxError, UnicodeDecodeError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "sqlite_fleet":
                    found.update(a.name for a in node.names if a.name in public)
                elif isinstance(node, ast.Attribute) and node.attr in public:
                    found.add(node.attr)
    return found


def init_text(order: list[str], owner: dict[str, str], exported: set[str], docstring: str) -> str:
    rows = "".join("- ``%s``: %s\n" % (part, wrap_doc(PARTS[part], 96).replace("\n", "\n  ")) for part in order)
    intro = docstring.strip().split("\n\n")[0]
    out = [HEADER, '"""%s\n\nThe parts, bottom up (a part imports only from the parts above it):\n\n%s\n'
           "Relative imports only: the on-host runner imports this package without Ansible. This file\n"
           "re-exports what the modules, the action plugin, the runner and the CLI use (tests reach the\n"
           "parts through tests/core_parts.py). Made by tools/split_core.py from the former single-file core.\n"
           "\"\"\"\n\nfrom __future__ import annotations\n\n"
           % (intro, rows)]
    by_part: dict[str, set[str]] = {}
    for name in exported:
        by_part.setdefault(owner[name], set()).add(name)
    out += [from_import(".%s" % part, names) for part, names in sorted(by_part.items())]
    out.append("\n# The core's files besides this one (core_sha256 hashes them all), bottom up.\nPARTS = (\n%s)\n"
               % "".join('    "%s",\n' % p for p in order))
    out.append("\n__all__ = [\n%s]\n" % "".join('    "%s",\n' % n for n in sorted(exported)))
    return "".join(out)


def split(repo: Path, dry_run: bool) -> dict[str, str]:
    source_path = repo / SOURCE
    if not source_path.is_file():
        raise Refused("%s not found: nothing to split (the package is output; its source is the single file)"
                      % SOURCE)
    source = source_path.read_text()
    docstring, chunks, imports = read_chunks(source)
    owner = assign_parts(chunks)
    check_globals(chunks, owner)
    deps = part_dependencies(chunks, owner)
    order = check_cycles(deps)
    public = {name for name in owner if not name.startswith("_")}
    exported = face_names(repo, public)
    order = [part for part in order if any(c.part == part for c in chunks)]  # a part left empty is not written
    files = {"%s.py" % part: part_text(part, chunks, deps[part], imports) for part in order}
    files["__init__.py"] = init_text(order, owner, exported, docstring)
    too_long = {name: text.count("\n") for name, text in files.items() if text.count("\n") > MAX_LINES}
    if too_long:
        raise Refused("part(s) over %d lines: %s; split a section into a new part (PARTS, SECTIONS) or move names "
                      "with OVERRIDES" % (MAX_LINES, ", ".join("%s (%d)" % kv for kv in sorted(too_long.items()))))
    for part in order:
        wanted = ", ".join("%s (%s)" % (other, len(names["runtime"])) for other, names in sorted(deps[part].items())
                           if names["runtime"])
        print("%-12s %4d lines  imports %s" % (part + ".py", files[part + ".py"].count("\n"), wanted or "-"))
    print("%-12s %4d lines  re-exports %d names" % ("__init__.py", files["__init__.py"].count("\n"), len(exported)))
    if dry_run:
        return files
    target = repo / TARGET
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    os.unlink(source_path)
    print("wrote %s/ (%d files), removed %s" % (TARGET, len(files), SOURCE))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the parts, write nothing")
    parser.add_argument("--repo", type=Path, default=REPO, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    try:
        split(args.repo.resolve(), args.dry_run)
    except Refused as exc:
        print("split_core: refused: %s" % exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
