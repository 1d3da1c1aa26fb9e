"""Status conditions, as Kubernetes conventions (``metav1.Condition``) define
them: ``type``, ``status``, ``reason``, ``message``, ``lastTransitionTime``
(changed only when the status changes) and ``observedGeneration``.

Pure functions over object dicts; the operator writes whole condition lists
(merge patch), the agent single conditions (server-side apply).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

#: The API's limit on a condition message (crds/common.py MAX_MESSAGE).
MAX_MESSAGE = 32768

Condition = dict[str, Any]


def now_rfc3339(micro: bool = False) -> str:
    """Now in UTC as RFC 3339 (``2026-01-02T03:04:05Z``); with ``micro`` the
    microseconds too, as a Lease's MicroTime fields want them."""
    now = dt.datetime.now(dt.timezone.utc)
    if micro:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def get_condition(obj: dict, type_: str) -> Condition | None:
    """The condition ``type_`` of ``obj``'s status, or None."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def condition_is(obj: dict, type_: str, status: str, reason: str | None = None) -> bool:
    """``obj`` has condition ``type_`` with ``status`` (and ``reason``)."""
    c = get_condition(obj, type_)
    return bool(c and c.get("status") == status and (reason is None or c.get("reason") == reason))


def new_condition(previous: Condition | None, type_: str, status: str, reason: str,
                  message: str, generation: int | None = None,
                  now: str | None = None) -> Condition:
    """Condition ``type_`` replacing ``previous``: its lastTransitionTime is
    kept while the status holds; observedGeneration is ``generation`` (or the
    previous one when None)."""
    same = previous is not None and previous.get("status") == status
    ltt = previous.get("lastTransitionTime") if same and previous else None
    cond: Condition = {"type": type_, "status": status, "reason": reason,
                       "message": message[:MAX_MESSAGE],
                       "lastTransitionTime": ltt or now or now_rfc3339()}
    if generation is None and previous is not None:
        generation = previous.get("observedGeneration")
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def set_condition(conditions: list[Condition] | None, type_: str, status: str, reason: str,
                  message: str, generation: int | None = None,
                  now: str | None = None) -> list[Condition]:
    """A new conditions list with ``type_`` set (see :func:`new_condition`);
    the others are kept as they are."""
    out: list[Condition] = []
    found = False
    for c in conditions or []:
        if c.get("type") == type_ and not found:
            out.append(new_condition(c, type_, status, reason, message, generation, now))
            found = True
        else:
            out.append(dict(c))
    if not found:
        out.append(new_condition(None, type_, status, reason, message, generation, now))
    return out


def condition_for(obj: dict, type_: str, status: str, reason: str, message: str,
                  now: str | None = None) -> Condition:
    """Condition ``type_`` for ``obj`` as its controller would apply it:
    observedGeneration is the object's metadata.generation."""
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    return new_condition(get_condition(obj, type_), type_, status, reason, message,
                         generation, now)


def same_condition(a: Condition | None, b: Condition | None) -> bool:
    """Equal but for lastTransitionTime (what a status write would change)."""
    def essence(c: Condition | None) -> tuple:
        if not c:
            return ()
        return (c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))

    return essence(a) == essence(b)
