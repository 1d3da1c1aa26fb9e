"""Pure builders of an Instance's status patches, its messages, the
build-attempt history and the scheduler's entries in the action history
(``status.actions``: :mod:`kova.actions`).

Each builder takes the Instance as the API server has it now (``current``)
and returns the ``status`` to merge-patch -- or None when there is nothing to
write -- so a guarded patch can re-run it on a fresh copy after a conflict.
Conditions are whole lists (a merge patch replaces a list).  ``now`` (RFC
3339) fixes the condition timestamps, for tests; by default it is the clock.
"""

from __future__ import annotations

import json
from typing import Any

from kova import actions
from kova.conditions import condition_is, get_condition, set_condition
from kova.crds import names
from kova.crds import objects as ob

Status = dict[str, Any]


def _generation(current: dict) -> int | None:
    return ob.meta(current).get("generation")


def _conditions(current: dict) -> list | None:
    return ob.status(current).get("conditions")


# ============================================================ status patches
def scheduled(current: dict, *, host: str, alternates: list[str], attempts: int,
              size: dict, reason: str, message: str, reset_built: str | None = None,
              now: str | None = None) -> Status | None:
    """Phase Scheduled on ``host`` (``Scheduled=True``; with ``reset_built``
    the Built condition back to Unknown for a rebuild elsewhere), the decision
    added to status.actions (:func:`placement_action`).  None when exactly
    this placement is already recorded."""
    status = ob.status(current)
    cond = get_condition(current, names.COND_SCHEDULED) or {}
    if (status.get("host") == host and int(status.get("attempts") or 0) == attempts
            and cond.get("status") == "True"):
        return None
    gen = _generation(current)
    conds = set_condition(status.get("conditions"), names.COND_SCHEDULED, "True", reason,
                          message, gen, now)
    if reset_built is not None:
        conds = set_condition(conds, names.COND_BUILT, "Unknown", names.REASON_RESCHEDULED,
                              reset_built, gen, now)
    return {
        "phase": names.InstancePhase.SCHEDULED,
        "host": host,
        "alternateHosts": alternates or None,
        "attempts": attempts,
        "resources": size,
        "observedGeneration": gen,
        "conditions": conds,
        "actions": placement_action(status.get("actions"), reason, message),
    }


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


def waiting(current: dict, reason: str, message: str, now: str | None = None) -> Status | None:
    """Phase Pending with ``Scheduled=False`` (no host yet, or a missing
    Flavor, Image or ServerGroup).  None when it was placed meanwhile (by
    another scheduler, or by this one's claim that the wait raced): a placed
    Instance never goes back to Pending."""
    if ob.placed_host(current):
        return None
    gen = _generation(current)
    return {
        "phase": names.InstancePhase.PENDING,
        "observedGeneration": gen,
        "conditions": set_condition(_conditions(current), names.COND_SCHEDULED, "False",
                                    reason, message, gen, now),
    }


def waiting_recorded(current: dict, reason: str, message: str) -> bool:
    """The Instance already waits for this reason, with this message."""
    cond = get_condition(current, names.COND_SCHEDULED)
    return bool(cond and cond.get("reason") == reason and cond.get("message") == message
                and ob.status(current).get("phase") == names.InstancePhase.PENDING)


def error(current: dict, reason: str, message: str, *, clear_host: bool = False,
          now: str | None = None) -> Status:
    """Phase Error with ``Scheduled=False`` (``clear_host``: the host and the
    alternates are dropped, its claim was freed)."""
    gen = _generation(current)
    out: Status = {
        "phase": names.InstancePhase.ERROR,
        "observedGeneration": gen,
        "conditions": set_condition(_conditions(current), names.COND_SCHEDULED, "False",
                                    reason, message, gen, now),
    }
    if clear_host:
        out.update(host=None, alternateHosts=None)
    return out


def unknown(current: dict, message: str, now: str | None = None) -> Status:
    """Phase Unknown: its host is Down (``Ready=Unknown``, reason HostDown)."""
    return {
        "phase": names.InstancePhase.UNKNOWN,
        "powerState": names.PowerState.UNKNOWN,
        "conditions": set_condition(_conditions(current), names.COND_READY, "Unknown",
                                    names.REASON_HOST_DOWN, message, _generation(current),
                                    now),
    }


def evacuation_failed(current: dict, message: str, now: str | None = None) -> Status:
    """``Scheduled=False`` reason EvacuationFailed (the host stays recorded:
    the claim is still there)."""
    return {"conditions": set_condition(
        _conditions(current), names.COND_SCHEDULED, "False", names.REASON_EVACUATION_FAILED,
        message, _generation(current), now)}


def evacuation_failure_recorded(current: dict, message: str) -> bool:
    cond = get_condition(current, names.COND_SCHEDULED) or {}
    return (cond.get("reason") == names.REASON_EVACUATION_FAILED
            and cond.get("message") == message)


def retrying(current: dict, message: str, now: str | None = None) -> Status:
    """Back to Pending, host and attempts cleared, ``Scheduled=False`` and
    ``Built=Unknown`` reason Retrying: scheduled again as a new Instance."""
    gen = _generation(current)
    conds = set_condition(_conditions(current), names.COND_SCHEDULED, "False",
                          names.REASON_RETRYING, message, gen, now)
    conds = set_condition(conds, names.COND_BUILT, "Unknown", names.REASON_RETRYING,
                          message, gen, now)
    return {"phase": names.InstancePhase.PENDING, "host": None, "alternateHosts": None,
            "attempts": None, "observedGeneration": gen, "conditions": conds}


def deleting(current: dict) -> Status:
    """Phase Deleting (the agent tears the domain down)."""
    return {"phase": names.InstancePhase.DELETING}


# ============================================================ messages
def scheduled_message(host: str, alternates: list[str], adopted: bool) -> str:
    msg = f"Scheduled to host {host}"
    if alternates:
        msg += f" (alternates: {', '.join(alternates)})"
    if adopted:
        msg += " (claim found in Placement)"
    return msg


def rescheduled_message(new: str, old: str, attempt: int, max_attempts: int) -> str:
    return (f"Rescheduled to host {new} after the build failed on {old} "
            f"(attempt {attempt} of {max_attempts})")


def evacuated_message(old: str, why: str | None, new: str, adopted: bool) -> str:
    return (f"Evacuated from fenced host {old} ({why}) to host {new}"
            + (" (allocation already moved)" if adopted else ""))


def evacuation_failed_message(old: str, why: str) -> str:
    return f"cannot evacuate from fenced host {old}: {why}"


def unknown_message(host: str, renewed: str | None) -> str:
    return (f"host {host} is Down: its heartbeat Lease expired"
            + (f" (last renewed {renewed})" if renewed else "")
            + "; the instance's state is unknown. It is not moved unless the host "
            "is fenced")


def terminal_failure_message(host: str, detail: str) -> str:
    return (f"the build failed on {host} in a way no other host can fix, "
            f"so it is not rescheduled: {detail}")


def max_attempts_message(attempts: int, history: list[dict]) -> str:
    return f"build failed {attempts} time(s): " + describe_attempts(history)


def no_host_left_message(why: str, history: list[dict]) -> str:
    return f"no host left to retry the build: {why}; " + describe_attempts(history)


def image_retry_message(image: str | None, failed: str, now: str) -> str:
    return f"Image {image} changed since the build failed ({failed} -> {now}): scheduling again"


# ============================================================ build attempts
def attempts_history(obj: dict) -> list[dict[str, Any]]:
    raw = ob.annotations_of(obj).get(names.ANNOTATION_ATTEMPTS)
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


def build_failure(obj: dict) -> dict:
    """The Built condition (empty when there is none)."""
    return get_condition(obj, names.COND_BUILT) or {}


def failure_code(cond: dict) -> str:
    """The error code an agent put first in a build failure's message
    (``"DiskTooSmall: ..."``), or the whole first part."""
    return (cond.get("message") or "").split(":", 1)[0].strip()


def with_attempt(history: list[dict], attempt: int, host: str,
                 cond: dict) -> list[dict] | None:
    """``history`` with the failed ``attempt`` on ``host`` added, or None
    when it is already there."""
    if any(h.get("attempt") == attempt and h.get("host") == host for h in history):
        return None
    return history + [{"attempt": attempt, "host": host,
                       "reason": cond.get("reason", names.REASON_BUILD_FAILED),
                       "message": cond.get("message", ""),
                       "time": cond.get("lastTransitionTime")}]
