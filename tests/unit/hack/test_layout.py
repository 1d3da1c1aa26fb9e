"""The test tree has one axis: tests/unit/<component>/, tests/integration/<component>/,
tests/e2e/ and tests/reliability/; a module's directory is its tier."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import tier_of

TESTS = Path(__file__).resolve().parents[2]
# a tier set by the module itself: a decorator or its pytestmark line
OWN_TIER = re.compile(r"^(?:@pytest\.mark\.(?:unit|integration|e2e)\b"
                      r"|pytestmark = .*pytest\.mark\.(?:unit|integration|e2e)\b)", re.M)


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "gabbits" not in p.parts)


def test_every_module_sits_on_the_axis():
    misplaced = []
    for path in _modules():
        parts = path.relative_to(TESTS).parts
        if parts[0] not in ("unit", "integration", "e2e", "reliability"):
            misplaced.append("/".join(parts))
        elif parts[0] in ("unit", "integration") and len(parts) < 3:
            misplaced.append("/".join(parts))  # no <component> directory
    assert not misplaced, (
        "test modules outside unit/<component>, integration/<component>, e2e/, reliability/: "
        f"{misplaced}")


def test_the_directory_is_the_tier():
    assert tier_of(TESTS / "unit" / "kova" / "test_log.py") == "unit"
    assert tier_of(TESTS / "integration" / "operator" / "test_basic.py") == "integration"
    assert tier_of(TESTS / "e2e" / "test_access.py") == "e2e"
    assert tier_of(TESTS / "reliability" / "test_render.py") is None
    own = [str(p.relative_to(TESTS)) for p in _modules()
           if tier_of(p) and OWN_TIER.search(p.read_text())]
    assert not own, f"modules setting a tier their directory already gives: {own}"
