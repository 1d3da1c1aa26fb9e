"""The build-attempt history and the Built condition: pure helpers over
Instance dicts (conditions themselves: :mod:`kova.conditions`)."""

from __future__ import annotations

import json
from typing import Any

from kova.conditions import condition_is
from kova.crds import names


def attempts_history(obj: dict) -> list[dict[str, Any]]:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_ATTEMPTS)
    if not raw:
        return []
    try:
        data = json.loads(raw)
    except ValueError:
        return []
    return data if isinstance(data, list) else []


def describe_attempts(history: list[dict]) -> str:
    return "; ".join(
        f"attempt {h.get('attempt')} on {h.get('host')}: {h.get('reason')}: {h.get('message', '')}"
        for h in history
    )


def is_build_failed(obj: dict) -> bool:
    return condition_is(obj, names.COND_BUILT, "False", names.REASON_BUILD_FAILED)
