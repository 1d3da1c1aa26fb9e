"""Conditions and the attempt history: pure helpers over object dicts."""

from __future__ import annotations

import json
from typing import Any

from kova.operator import contract
from kova.operator.kube import now_rfc3339


def get_condition(obj: dict, type_: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def set_condition(conditions: list[dict] | None, type_: str, status: str, reason: str,
                  message: str, generation: int | None = None) -> list[dict]:
    """A new conditions list with ``type_`` set; lastTransitionTime changes only
    when the status does."""
    out = [dict(c) for c in conditions or []]
    for c in out:
        if c.get("type") == type_:
            if c.get("status") != status:
                c["lastTransitionTime"] = now_rfc3339()
            c.update(status=status, reason=reason, message=message[:32768])
            if generation is not None:
                c["observedGeneration"] = generation
            return out
    new = {"type": type_, "status": status, "reason": reason, "message": message[:32768],
           "lastTransitionTime": now_rfc3339()}
    if generation is not None:
        new["observedGeneration"] = generation
    out.append(new)
    return out


def condition_is(obj: dict, type_: str, status: str, reason: str | None = None) -> bool:
    c = get_condition(obj, type_)
    return bool(c and c.get("status") == status and (reason is None or c.get("reason") == reason))


def attempts_history(obj: dict) -> list[dict[str, Any]]:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(contract.ANNOTATION_ATTEMPTS)
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
    return condition_is(obj, contract.COND_BUILT, "False", contract.REASON_BUILD_FAILED)


def with_kstatus(status: dict, current: dict) -> dict:
    """``status`` (a patch that sets the phase) with the kstatus conditions
    Reconciling and Stalled for that phase (kova.kstatus); an Error is
    explained by the Scheduled condition the same patch sets."""
    from kova.kstatus import conditions as kstatus_conditions

    if "phase" not in status:
        return status
    conds = status.get("conditions")
    if conds is None:
        conds = (current.get("status") or {}).get("conditions")
    generation = (current.get("metadata") or {}).get("generation")
    why = next((c for c in conds or [] if c.get("type") == contract.COND_SCHEDULED), {})
    for type_, st, reason, message in kstatus_conditions(
            status["phase"], why.get("reason", ""), why.get("message", "")):
        conds = set_condition(conds, type_, st, reason, message, generation)
    return {**status, "conditions": conds}


#: The scheduler's decisions as the actions of an Instance's history.
PLACEMENT_ACTIONS = {contract.REASON_SCHEDULED: "create",
                     contract.REASON_RESCHEDULED: "reschedule",
                     contract.REASON_EVACUATED: "evacuate"}


def placement_action(history: list[dict] | None, reason: str, message: str) -> list[dict] | None:
    """status.actions with the scheduling decision ``reason`` added (create,
    reschedule, evacuate), done by the operator itself: Kubernetes keeps no
    record of who created an Instance (the API server's audit log does)."""
    from kova import actions

    name = PLACEMENT_ACTIONS.get(reason)
    if name is None:
        return history
    entry = actions.started(name, "kova-operator", actions.request_id())
    return actions.append(history, {**entry, "result": "Success", "message": message[:1024],
                                     "finishTime": entry["startTime"]})
