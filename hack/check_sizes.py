#!/usr/bin/env python3
"""Size limits of Kova's code: no function over 60 lines, no class over 400
lines (counted from the ``def``/``class`` line to the last line of its body,
nested definitions included), in the packages Kova ships (crds, kova,
operator, agents, api, placement).

Not counted: command-line modules (``*/cli.py``: one function per command
holds its option declarations) and database migrations (generated shapes).

Usage: ``python hack/check_sizes.py [paths...]`` (default: the packages);
exit status 1 with one line per violation.  Run by ``hack/lint.sh``.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("crds", "kova", "operator", "agents", "api", "placement")
MAX_FUNCTION = 60
MAX_CLASS = 400

#: Files allowed to break the limits until they are split into one module per
#: concern.  Every one has been split: the list is empty, and nothing may be
#: added to it (a violation anywhere fails the check).
ALLOWED: dict[str, str] = {
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    kind: str  # "function" or "class"
    name: str
    lines: int
    limit: int

    def __str__(self) -> str:
        return (f"{self.path}:{self.line}: {self.kind} {self.name} is {self.lines} lines "
                f"(limit {self.limit})")


def check_source(source: str, path: str = "<source>") -> list[Violation]:
    """The size violations in one module's source."""
    out = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kind, limit = "function", MAX_FUNCTION
        elif isinstance(node, ast.ClassDef):
            kind, limit = "class", MAX_CLASS
        else:
            continue
        lines = (node.end_lineno or node.lineno) - node.lineno + 1
        if lines > limit:
            out.append(Violation(path, node.lineno, kind, node.name, lines, limit))
    return sorted(out, key=lambda v: v.line)


def exempt(rel: str) -> bool:
    """CLIs and migrations are not counted."""
    return rel.endswith("/cli.py") or rel == "cli.py" or "/migrations/" in rel


def files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out += [f for f in sorted(p.rglob("*.py"))
                    if "__pycache__" not in f.parts and not f.is_symlink()
                    and not any(part.is_symlink() for part in f.parents if part != p.parent)]
        elif p.suffix == ".py":
            out.append(p)
    return out


def check(paths: list[Path], root: Path = ROOT) -> tuple[list[Violation], list[Violation]]:
    """(violations, allowed ones) under ``paths``."""
    failing, allowed = [], []
    for f in files(paths):
        try:
            rel = f.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:  # a file outside the repository
            rel = str(f)
        if exempt(rel):
            continue
        for v in check_source(f.read_text(), rel):
            (allowed if rel in ALLOWED else failing).append(v)
    return failing, allowed


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [ROOT / p for p in PACKAGES]
    failing, allowed = check(paths)
    for v in failing:
        print(v)
    if allowed:
        print(f"check_sizes: {len(allowed)} known violation(s) in the files still to be "
              f"split ({', '.join(sorted({v.path for v in allowed}))})")
    if failing:
        print(f"check_sizes: {len(failing)} violation(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
