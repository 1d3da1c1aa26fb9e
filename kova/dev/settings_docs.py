"""The settings tables of docs/operator.md, docs/agent.md,
docs/placement.md and docs/api-component.md, generated from the components' settings dataclasses
(:func:`kova.settings.reference`).

``python -m kova.dev.settings_docs`` rewrites them (between the markers
``<!-- settings:<component> -->`` and ``<!-- /settings -->``);
``--check`` exits 1 when a table is stale (a unit test runs the check).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from kova.settings import reference

ROOT = Path(__file__).resolve().parents[2]


def tables() -> dict[str, tuple[Path, str]]:
    """component -> (its doc, the generated table)."""
    from kova.agents.settings import PREFIX as AGENT
    from kova.agents.settings import AgentSettings
    from kova.api.settings import PREFIX as API
    from kova.api.settings import ApiSettings
    from kova.operator.settings import PREFIX as OPERATOR
    from kova.operator.settings import Settings
    from kova.placement.settings import PREFIX as PLACEMENT
    from kova.placement.settings import PlacementSettings

    docs = ROOT / "docs"
    return {
        "operator": (docs / "operator.md", reference(Settings, OPERATOR)),
        "agent": (docs / "agent.md", reference(AgentSettings, AGENT)),
        "placement": (docs / "placement.md", reference(PlacementSettings, PLACEMENT)),
        "api": (docs / "api-component.md", reference(ApiSettings, API)),
    }


def _block(component: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- settings:{component} -->\n)(.*?)(<!-- /settings -->)", re.S)


def render() -> dict[Path, str]:
    """Each doc with its table replaced (docs without the markers are skipped)."""
    out: dict[Path, str] = {}
    for component, (path, table) in tables().items():
        text = out.get(path, path.read_text())
        def fill(m: re.Match[str], t: str = table) -> str:
            return m.group(1) + t + m.group(3)

        new, n = _block(component).subn(fill, text)
        if n:
            out[path] = new
    return out


def check() -> list[str]:
    """The docs whose tables are stale or missing."""
    rendered = render()
    problems = [f"{path.name}: no <!-- settings:{c} --> block" for c, (path, _) in
                tables().items() if path not in rendered]
    problems += [f"{path.name}: stale settings table" for path, text in rendered.items()
                 if path.read_text() != text]
    return problems


def main(argv: list[str]) -> int:
    if "--check" in argv:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    for path, text in render().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
