"""The action history of an Instance (``status.actions``), like Nova's
instance actions: pure helpers to append an action and to finish it, keeping
the newest :data:`~kova.crds.names.MAX_ACTIONS`.  Whoever writes it (the API
component for the subresource actions, the operator for create, reschedule
and evacuate) merge-patches the whole list, guarded by the Instance's
resourceVersion, and retries on a conflict."""

from __future__ import annotations

import uuid

from kova.conditions import now_rfc3339 as now
from kova.crds.names import MAX_ACTIONS, ActionResult


def request_id() -> str:
    return f"req-{uuid.uuid4()}"


def started(action: str, user: str, req: str, message: str | None = None,
            at: str | None = None) -> dict:
    entry = {"action": str(action), "requestId": req, "user": user[:1024], "startTime": at or now(),
             "result": str(ActionResult.IN_PROGRESS)}
    if message:
        entry["message"] = message[:1024]
    return entry


def append(actions: list[dict] | None, entry: dict) -> list[dict]:
    """``actions`` with ``entry`` added (one with the same requestId replaced),
    the oldest dropped beyond MAX_ACTIONS."""
    out = [a for a in actions or [] if a.get("requestId") != entry["requestId"]]
    out.append(entry)
    return out[-MAX_ACTIONS:]


def finish(actions: list[dict] | None, req: str, result: str, message: str,
           at: str | None = None) -> list[dict] | None:
    """``actions`` with the entry ``req`` finished; None when it is not there
    (dropped meanwhile: nothing to write)."""
    out = []
    found = False
    for a in actions or []:
        if a.get("requestId") == req:
            a = {**a, "result": str(result), "message": message[:1024],
                 "finishTime": at or now()}
            found = True
        out.append(a)
    return out if found else None


def find(actions: list[dict] | None, req: str) -> dict | None:
    for a in actions or []:
        if a.get("requestId") == req:
            return a
    return None


def done(action: str, user: str, message: str,
         result: ActionResult = ActionResult.SUCCESS) -> dict:
    """An entry that finished when it started (a decision such as the
    operator's create, reschedule or evacuate)."""
    entry = started(action, user, request_id(), message)
    return {**entry, "result": str(result), "finishTime": entry["startTime"]}
