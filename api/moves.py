"""What the move subresources mean (pure): ``instances/resize-confirm`` and
``instances/resize-revert`` answer a resize or cold migration waiting in
ResizeVerify (the decision goes into ``status.migration``, the operator acts
on it); ``instances/migrate`` asks for a cold migration (a new migration
record at step Claiming, the operator claims a host for it) -- cold, or
live with ``live=true`` -- and, with ``abort=true``, the abort of a live
migration under way.  See docs/moving.md."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kova import actions
from kova.conditions import now_rfc3339
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import (
    InstancePhase,
    MigrationDecision,
    MigrationMode,
    MigrationStep,
    MigrationType,
)

DECISIONS = {"resize-confirm": MigrationDecision.CONFIRM,
             "resize-revert": MigrationDecision.REVERT}
SUBRESOURCES = (*DECISIONS, "migrate")


@dataclasses.dataclass(frozen=True)
class Refusal:
    code: int
    reason: str
    message: str


def decision_refusal(inst: dict, decision: str) -> Refusal | None:
    """Why ``decision`` (Confirm or Revert) cannot be recorded now."""
    mig = ob.status(inst).get("migration") or {}
    name = inst["metadata"]["name"]
    if not mig:
        return Refusal(409, "NotResized", f"instance {name} has no resize or migration to "
                       f"{decision.lower()}")
    if mig.get("step") != MigrationStep.VERIFY:
        return Refusal(409, "NotVerifying", f"the {mig.get('type')} of {name} is at step "
                       f"{mig.get('step')}; it can be confirmed or reverted once it is in "
                       "ResizeVerify")
    if mig.get("decision") and mig["decision"] != decision:
        return Refusal(409, "AlreadyDecided", f"the {mig.get('type')} of {name} was already "
                       f"answered with {mig['decision']} by {mig.get('decidedBy')}")
    return None


def with_decision(current: dict, mig_uuid: str, decision: str, user: str) -> dict | None:
    """The status patch recording ``decision`` on migration ``mig_uuid``;
    None when that migration is no longer waiting for one."""
    mig = ob.status(current).get("migration") or {}
    if mig.get("uuid") != mig_uuid or mig.get("step") != MigrationStep.VERIFY:
        return None
    if mig.get("decision") == decision:
        return None
    return {"migration": {**mig, "decision": decision, "decidedBy": user[:1024]}}


def decided(current: dict | None, mig_uuid: str) -> bool:
    """The operator finished the move the decision was about."""
    mig = ob.status(current or {}).get("migration") or {}
    return mig.get("uuid") != mig_uuid


def host_refusal(host_obj: dict | None, host: str, role: str) -> Refusal | None:
    """Why a move cannot start with ``host`` as its ``role`` (source or
    destination): it is not registered, Down, fenced or draining (None: it
    can)."""
    if host_obj is None:
        return Refusal(404 if role == "destination" else 409, "HostNotFound",
                       f"the {role} host {host} is not registered")
    status, spec = host_obj.get("status") or {}, host_obj.get("spec") or {}
    if status.get("state") == names.HostState.DOWN:
        return Refusal(409, "HostDown", f"the {role} host {host} is Down (its agent stopped "
                       "renewing its heartbeat): a cold migration needs both agents")
    if spec.get("fenced"):
        return Refusal(409, "HostFenced", f"the {role} host {host} is fenced"
                       + ("; its Instances are evacuated" if role == "source" else ""))
    if role == "destination" and (spec.get("enabled") is False or spec.get("drain")):
        return Refusal(409, "HostDisabled", f"the destination host {host} takes no new "
                       "Instances (disabled or draining)")
    return None


def host_forbidden(user: str) -> Refusal:
    """The refusal of ``--host`` to a user who may not name a host."""
    return Refusal(403, "Forbidden", f'user "{user}" cannot schedule resource "instances" in '
                   f'API group "{names.GROUP}": only an administrator may name the '
                   "destination (--host)")


async def hosts_refusal(inst: dict, host: str | None,
                        get_host: Callable[[str], Awaitable[dict | None]]) -> Refusal | None:
    """A migration needs its source, and the destination asked for,
    registered, Up and not fenced (:func:`host_refusal`)."""
    source = ob.status(inst).get("host") or ""
    for role, name in (("source", source), ("destination", host)):
        if name:
            refusal = host_refusal(await get_host(name), name, role)
            if refusal is not None:
                return refusal
    return None


def answer(current: dict, sub: str, req: str, user: str, message: str) -> dict[str, Any]:
    """The InstanceAction a move's subresource answers with."""
    md, status = current["metadata"], ob.status(current)
    return {
        "kind": "InstanceAction", "apiVersion": names.SUBRESOURCE_API_VERSION,
        "namespace": md["namespace"], "name": md["name"], "action": sub,
        "requestId": req, "user": user, "result": names.ActionResult.SUCCESS,
        "message": message, "phase": status.get("phase"), "host": status.get("host"),
        "resources": status.get("resources"), "migration": status.get("migration"),
    }


def abort_refusal(inst: dict) -> Refusal | None:
    """Why ``kubectl kova migrate --abort`` cannot be recorded now."""
    mig = ob.status(inst).get("migration") or {}
    name = inst["metadata"]["name"]
    if mig.get("mode") != MigrationMode.LIVE:
        return Refusal(409, "NotLiveMigrating", f"instance {name} has no live migration to "
                       "abort" + (f" (its {mig.get('type')} is {mig.get('mode') or 'in place'})"
                                  if mig else ""))
    if mig.get("step") not in (MigrationStep.CLAIMING, MigrationStep.PREPARING,
                               MigrationStep.LIVE_MIGRATING):
        return Refusal(409, "TooLate", f"the live migration of {name} is at step "
                       f"{mig.get('step')}: it can no longer be aborted")
    return None


def with_abort(current: dict, mig_uuid: str, user: str) -> dict | None:
    """The status patch asking the live migration ``mig_uuid`` to abort."""
    mig = ob.status(current).get("migration") or {}
    if (mig.get("uuid") != mig_uuid or abort_refusal(current) is not None
            or mig.get("decision") == MigrationDecision.ABORT):
        return None
    return {"migration": {**mig, "decision": MigrationDecision.ABORT,
                          "decidedBy": user[:1024]}}


def migrate_refusal(inst: dict, host: str | None, live: bool = False) -> Refusal | None:
    status = ob.status(inst)
    name = inst["metadata"]["name"]
    if status.get("migration"):
        mig = status["migration"]
        return Refusal(409, "MoveInProgress", f"instance {name} already has a {mig.get('type')}"
                       f" at step {mig.get('step')}")
    if status.get("phase") not in (InstancePhase.RUNNING, InstancePhase.STOPPED):
        return Refusal(409, "NotMovable", f"instance {name} is {status.get('phase')}; only a "
                       "Running or Stopped instance can be migrated")
    if live and (status.get("phase") != InstancePhase.RUNNING
                 or status.get("powerState") != names.PowerState.RUNNING):
        return Refusal(409, "NotRunning", f"instance {name} is {status.get('phase')}: only a "
                       "running guest can be live-migrated (migrate it cold instead)")
    if host and host == status.get("host"):
        return Refusal(400, "SameHost", f"instance {name} is already on {host}")
    return None


def new_migration(current: dict, user: str, host: str | None, req: str,
                  now: str | None = None, live: bool = False) -> dict | None:
    """The status patch starting a cold migration (step Claiming, a new UUID,
    phase Resizing, an InProgress action) or a live one (the phase stays
    Running); None when one started meanwhile or the Instance cannot move
    any more."""
    if migrate_refusal(current, host, live) is not None:
        return None
    status = ob.status(current)
    now = now or now_rfc3339()
    message = (f"{'live-' if live else ''}migrating from {status.get('host')}"
               + (f" to {host}" if host else ""))
    mig: dict[str, Any] = {
        "uuid": str(uuid.uuid4()), "type": MigrationType.MIGRATE,
        "mode": MigrationMode.LIVE if live else MigrationMode.COLD,
        "step": MigrationStep.CLAIMING, "sourceHost": status.get("host"),
        "oldResources": status.get("resources"), "requestId": req, "user": user[:1024],
        "startTime": now,
    }
    if host:
        mig["requestedHost"] = host
    entry = actions.started(names.InstanceActionName.MIGRATE, user, req, message, at=now)
    out = {"phase": InstancePhase.RESIZING, "migration": mig,
           "actions": actions.append(status.get("actions"), entry)}
    if live:
        del out["phase"]  # a live migration keeps the Instance Running
    return out


def request_change(inst: dict, sub: str, user: str, host: str | None, req: str, *,
                   live: bool = False, abort: bool = False,
                   ) -> tuple[Refusal | None, Callable[[dict], dict | None], str]:
    """For subresource ``sub`` asked by ``user``: why it is refused now (or
    None), the guarded status patch that records it (None from it: nothing
    to write any more), and the migration it is about ("" for migrate)."""
    uid = inst["metadata"]["uid"]
    if sub == "migrate" and abort:
        live_uuid = (ob.status(inst).get("migration") or {}).get("uuid", "")

        def stop(cur: dict) -> dict | None:
            st = None if cur["metadata"]["uid"] != uid else with_abort(cur, live_uuid, user)
            return None if st is None else {"status": st}
        return abort_refusal(inst), stop, live_uuid
    if sub == "migrate":
        def start(cur: dict) -> dict | None:
            st = (None if cur["metadata"]["uid"] != uid
                  else new_migration(cur, user, host, req, live=live))
            return None if st is None else {"status": st}
        return migrate_refusal(inst, host, live), start, ""
    decision = DECISIONS[sub]
    mig_uuid = (ob.status(inst).get("migration") or {}).get("uuid", "")

    def decide(cur: dict) -> dict | None:
        st = (None if cur["metadata"]["uid"] != uid
              else with_decision(cur, mig_uuid, decision, user))
        return None if st is None else {"status": st}
    return decision_refusal(inst, decision), decide, mig_uuid
