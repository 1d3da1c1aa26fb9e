"""The build-attempt history, the Built condition and the scheduler's entries
in the action history: pure helpers over Instance dicts (conditions
themselves: :mod:`kova.conditions`; the history: :mod:`kova.actions`)."""

from __future__ import annotations

import json
from typing import Any

from kova import actions
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


#: The scheduler's decisions as the actions of an Instance's history.
PLACEMENT_ACTIONS = {names.REASON_SCHEDULED: names.InstanceActionName.CREATE,
                     names.REASON_RESCHEDULED: names.InstanceActionName.RESCHEDULE,
                     names.REASON_EVACUATED: names.InstanceActionName.EVACUATE}


def placement_action(history: list[dict] | None, reason: str, message: str) -> list[dict] | None:
    """status.actions with the scheduling decision ``reason`` added (create,
    reschedule, evacuate), done by the operator itself: Kubernetes keeps no
    record of who created an Instance (the API server's audit log does)."""
    name = PLACEMENT_ACTIONS.get(reason)
    if name is None:
        return history
    return actions.append(history, actions.done(name, names.COMPONENT_OPERATOR, message))
