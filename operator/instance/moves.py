"""Pure parts of moving an Instance (resize and cold migration, Nova's
``resize_instance`` / ``migrate_server`` with confirm and revert): the size
a spec asks for, whether and why a resize is refused, the migration record
(``status.migration``) at each step, and the messages.

The steps (``status.migration.step``) and whose turn each is::

    Claiming  (operator) the migration's UUID is recorded before Placement is
              touched; then one POST /allocations gives the old allocation to
              the migration consumer and the new one to the Instance
    Moving    (agent)    stop, keep or copy the disk, grow it, start
    Verify    (operator) wait for confirm / revert / the confirm window
    Reverting (agent)    stop, old disk back, old size, start
    Reverted  (operator) the old allocation goes back to the Instance

A confirm deletes the migration consumer's allocation and drops the record.
Every builder takes the Instance as the API server has it now and returns
the ``status`` to merge-patch, or None when there is nothing to write.
"""

from __future__ import annotations

import uuid
from typing import Any

from kova import actions
from kova.conditions import get_condition, now_rfc3339, set_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import MigrationMode, MigrationStep, MigrationType

Status = dict[str, Any]

SIZE_KEYS = ("vcpus", "memoryMiB", "diskGiB")


def size_of(res: dict | None) -> dict[str, int] | None:
    if not res:
        return None
    return {k: int(res[k]) for k in SIZE_KEYS}


def wanted_size(spec: dict, flavor: dict | None) -> dict[str, int] | None:
    """The size the spec asks for: the Flavor's (its spec, None when it does
    not exist) or the inline resources."""
    if ob.ref_name({"spec": spec}, "flavorRef"):
        return size_of(flavor)
    return size_of(spec.get("resources"))


def resize_wanted(body: dict, wanted: dict[str, int] | None) -> bool:
    """The spec asks for another size than the one claimed."""
    have = size_of(ob.status(body).get("resources"))
    return bool(wanted and have and wanted != have)


def size_field(body: dict) -> str:
    return "spec.flavorRef" if ob.ref_name(body, "flavorRef") else "spec.resources"


def refusal(body: dict, wanted: dict[str, int]) -> str | None:
    """Why a resize to ``wanted`` is refused (None: it is not)."""
    have = size_of(ob.status(body).get("resources")) or wanted
    if wanted["diskGiB"] < have["diskGiB"]:
        what = (f"Flavor {ob.ref_name(body, 'flavorRef')}" if ob.ref_name(body, "flavorRef")
                else "resources")
        return (f"{size_field(body)}: {what} has diskGiB {wanted['diskGiB']}, less than the "
                f"{have['diskGiB']} GiB root disk; a resize can only grow the disk. "
                "Set it back or choose a size with a disk at least as big")
    return None


def settled_for_generation(body: dict) -> bool:
    """A refusal, a resize that found no host, or a revert is recorded for
    this very generation of the spec: no resize is started again until the
    spec changes (a reverted Instance keeps its old size while its spec
    still names the new one)."""
    cond = get_condition(body, names.COND_RESIZED) or {}
    return ((cond.get("status") == "False" or cond.get("reason") == names.REASON_REVERTED)
            and cond.get("observedGeneration") == ob.meta(body).get("generation"))


def describe(size: dict | None) -> str:
    if not size:
        return "?"
    return f"{size['vcpus']} vCPU, {size['memoryMiB']} MiB, {size['diskGiB']} GiB"


# ============================================================ records
def new_migration(body: dict, kind: str, *, user: str, requested_host: str | None = None,
                  request_id: str | None = None, now: str | None = None) -> dict:
    """The migration record of a move about to start (step Claiming, a new
    UUID: recorded before Placement is touched)."""
    status = ob.status(body)
    mig = {
        "uuid": str(uuid.uuid4()),
        "type": kind,
        "step": MigrationStep.CLAIMING,
        "sourceHost": status.get("host"),
        "oldResources": size_of(status.get("resources")),
        "requestId": request_id or actions.request_id(),
        "user": user,
        "startTime": now or now_rfc3339(),
    }
    if requested_host:
        mig["requestedHost"] = requested_host
    return {k: v for k, v in mig.items() if v is not None}


def action_name(kind: str) -> str:
    return (names.InstanceActionName.RESIZE if kind == MigrationType.RESIZE
            else names.InstanceActionName.MIGRATE)


def started(current: dict, mig: dict, message: str, now: str | None = None) -> Status | None:
    """Phase Resizing with the new migration record, Resized=True (reason
    Resizing or Migrating) and an InProgress entry in status.actions.  None
    when a move is already recorded."""
    status = ob.status(current)
    if status.get("migration"):
        return None
    gen = ob.meta(current).get("generation")
    reason = (names.REASON_RESIZING if mig["type"] == MigrationType.RESIZE
              else names.REASON_MIGRATING)
    entry = actions.started(action_name(mig["type"]), mig.get("user") or
                            names.COMPONENT_OPERATOR, mig["requestId"], message, at=now)
    return {
        "phase": names.InstancePhase.RESIZING,
        "migration": mig,
        "conditions": set_condition(status.get("conditions"), names.COND_RESIZED, "True",
                                    reason, message, gen, now),
        "actions": actions.append(status.get("actions"), entry),
    }


def refused(current: dict, reason: str, message: str, now: str | None = None) -> Status:
    """Resized=False (ResizeRefused, NoValidHost) for this generation."""
    status = ob.status(current)
    return {"conditions": set_condition(status.get("conditions"), names.COND_RESIZED,
                                        "False", reason, message,
                                        ob.meta(current).get("generation"), now)}


def claimed(current: dict, mig_uuid: str, dest: str, new_size: dict,
            message: str, now: str | None = None) -> Status | None:
    """The new size is claimed on ``dest``: step Moving (the agent's turn),
    status.resources the new size.  None when that step is past."""
    mig = ob.status(current).get("migration") or {}
    if mig.get("uuid") != mig_uuid or mig.get("step") != MigrationStep.CLAIMING:
        return None
    status = ob.status(current)
    live = mig.get("mode") == MigrationMode.LIVE
    moved = {**mig, "step": MigrationStep.PREPARING if live else MigrationStep.MOVING,
             "destHost": dest, "newResources": new_size}
    if dest != mig.get("sourceHost") and not live:
        moved["mode"] = MigrationMode.COLD
    out: Status = {
        "phase": names.InstancePhase.RESIZING,
        "resources": new_size,
        "migration": moved,
        "conditions": set_condition(status.get("conditions"), names.COND_RESIZED, "True",
                                    _reason(mig), message, ob.meta(current).get("generation"),
                                    now),
    }
    if live:
        del out["phase"]  # the guest keeps running: the Instance stays Running
    return out


def handed(current: dict, mig_uuid: str, expect: str, host: str, step: str,
           message: str, now: str | None = None) -> Status | None:
    """A move across hosts changes hands: status.host becomes ``host`` (the
    destination after the disk was copied, the source again on a revert) and
    the step ``step`` (that host's agent's turn).  None unless the move is
    at step ``expect``."""
    status = ob.status(current)
    mig = status.get("migration") or {}
    if mig.get("uuid") != mig_uuid or mig.get("step") != expect:
        return None
    return {
        "host": host,
        "migration": {**mig, "step": step},
        "conditions": set_condition(status.get("conditions"), names.COND_RESIZED, "True",
                                    _reason(mig), message, ob.meta(current).get("generation"),
                                    now),
    }


def _reason(mig: dict) -> str:
    return (names.REASON_RESIZING if mig.get("type") == MigrationType.RESIZE
            else names.REASON_MIGRATING)


def reverting(current: dict, mig_uuid: str, message: str,
              now: str | None = None) -> Status | None:
    """A revert was asked for: step Reverting (the agent's turn)."""
    status = ob.status(current)
    mig = status.get("migration") or {}
    if mig.get("uuid") != mig_uuid or mig.get("step") != MigrationStep.VERIFY:
        return None
    return {
        "phase": names.InstancePhase.RESIZING,
        "migration": {**mig, "step": MigrationStep.REVERTING},
        "conditions": set_condition(status.get("conditions"), names.COND_RESIZED, "True",
                                    _reason(mig), message, ob.meta(current).get("generation"),
                                    now),
    }


def finished(current: dict, mig_uuid: str, *, reverted: bool, message: str,
             now: str | None = None) -> Status | None:
    """The move is over (confirmed, or reverted with the old allocation
    back): no migration record; on a revert the old size and host; the
    phase from the power state; the action finished; Resized=True reason
    Confirmed or Reverted."""
    status = ob.status(current)
    mig = status.get("migration") or {}
    if mig.get("uuid") != mig_uuid:
        return None
    out: Status = {
        "migration": None,
        "phase": phase_after_move(status),
        "conditions": set_condition(
            status.get("conditions"), names.COND_RESIZED, "True",
            names.REASON_REVERTED if reverted else names.REASON_CONFIRMED, message,
            ob.meta(current).get("generation"), now),
    }
    if reverted:
        out["resources"] = mig.get("oldResources")
        out["host"] = mig.get("sourceHost")
    finished_actions = actions.finish(status.get("actions"), mig.get("requestId", ""),
                                      names.ActionResult.SUCCESS, message, at=now)
    if finished_actions is not None:
        out["actions"] = finished_actions
    return out


def phase_after_move(status: dict) -> str:
    """The phase an Instance has once no move is recorded: from its power state."""
    return (names.InstancePhase.RUNNING if status.get("powerState") == names.PowerState.RUNNING
            else names.InstancePhase.STOPPED)


def aborted(current: dict, mig_uuid: str, reason: str, message: str,
            now: str | None = None) -> Status | None:
    """A move that could not start (nothing moved in Placement): no record,
    the phase from the power state, Resized=False for this generation, the
    action ended in Error."""
    status = ob.status(current)
    mig = status.get("migration") or {}
    if mig.get("uuid") != mig_uuid or mig.get("step") != MigrationStep.CLAIMING:
        return None
    out: Status = {
        "migration": None,
        "phase": phase_after_move(status),
        **refused(current, reason, message, now),
    }
    done = actions.finish(status.get("actions"), mig.get("requestId", ""),
                          names.ActionResult.ERROR, message, at=now)
    if done is not None:
        out["actions"] = done
    return out


def live_ended(current: dict, mig_uuid: str, *, ok: bool, message: str,
               now: str | None = None) -> Status | None:
    """A live migration is over: no record; on success status.host the
    destination (Resized=True reason LiveMigrated, the action a success),
    else the source still (Resized=False reason LiveMigrationFailed, the
    action in Error).  The phase from the power state.  None when the
    record moved on."""
    status = ob.status(current)
    mig = status.get("migration") or {}
    if mig.get("uuid") != mig_uuid or mig.get("mode") != MigrationMode.LIVE:
        return None
    out: Status = {
        "migration": None,
        "phase": phase_after_move(status),
        "conditions": set_condition(
            status.get("conditions"), names.COND_RESIZED, "True" if ok else "False",
            names.REASON_LIVE_MIGRATED if ok else names.REASON_LIVE_MIGRATION_FAILED,
            message, ob.meta(current).get("generation"), now),
    }
    if ok:
        out["host"] = mig.get("destHost")
    done = actions.finish(status.get("actions"), mig.get("requestId", ""),
                          names.ActionResult.SUCCESS if ok else names.ActionResult.ERROR,
                          message, at=now)
    if done is not None:
        out["actions"] = done
    return out


def live_message(mig: dict, ok: bool) -> str:
    progress = mig.get("progress") or {}
    if ok:
        return (f"live-migrated from {mig.get('sourceHost')} to {mig.get('destHost')} "
                f"(migration {mig['uuid']}, downtime {progress.get('downtimeMs', '?')} ms); "
                f"the allocation on {mig.get('sourceHost')} is freed")
    why = mig.get("failure") or (
        f"aborted by {mig.get('decidedBy') or 'a user'}" if mig.get("decision") else "failed")
    return (f"live migration to {mig.get('destHost') or 'another host'} did not happen: {why}; "
            f"the guest runs on {mig.get('sourceHost')}")


# ============================================================ messages
def resize_message(old: dict | None, new: dict | None, flavor: str | None) -> str:
    to = f"Flavor {flavor} ({describe(new)})" if flavor else describe(new)
    return f"resizing from {describe(old)} to {to}"


def migrate_message(source: str, requested: str | None) -> str:
    return f"migrating from {source}" + (f" to {requested}" if requested else "")


def claimed_message(mig: dict, dest: str) -> str:
    what = ("resize" if mig.get("type") == MigrationType.RESIZE else
            "live migration" if mig.get("mode") == MigrationMode.LIVE else "cold migration")
    return (f"{what}: {describe(mig.get('newResources') or mig.get('oldResources'))} "
            f"claimed on {dest} (migration {mig['uuid']} holds the old allocation on "
            f"{mig.get('sourceHost')}); the agent moves the guest")


def confirmed_message(mig: dict, auto: bool, by: str | None) -> str:
    how = "automatically after the confirm window" if auto else f"by {by or 'a user'}"
    return (f"confirmed {how}: {describe(mig.get('newResources'))} on "
            f"{mig.get('destHost')}; the old allocation on {mig.get('sourceHost')} is freed")


def reverted_message(mig: dict, by: str | None) -> str:
    return (f"reverted by {by or 'a user'}: back to {describe(mig.get('oldResources'))} on "
            f"{mig.get('sourceHost')}")


def no_host_message(why: str, kind: str = MigrationType.RESIZE) -> str:
    if kind == MigrationType.MIGRATE:
        return f"no other host can take the instance: {why}"
    return f"no host for the new size: {why}. Set the size back, or free capacity"


# ============================================================ host drain
def drain_started(current: dict, live: bool, req: str, now: str | None = None) -> Status | None:
    """The status patch with which a host drain starts moving an Instance
    off its host (as ``instances/migrate`` does: a migration record at step
    Claiming, live or cold, an InProgress action); None when a move is
    recorded meanwhile or the Instance cannot move now."""
    status = ob.status(current)
    phase = status.get("phase")
    running = (phase == names.InstancePhase.RUNNING
               and status.get("powerState") == names.PowerState.RUNNING)
    if (status.get("migration") or phase not in (names.InstancePhase.RUNNING,
                                                 names.InstancePhase.STOPPED)
            or (live and not running)):
        return None
    mig = new_migration(current, MigrationType.MIGRATE, user=names.DRAIN_USER,
                        request_id=req, now=now)
    mig["mode"] = MigrationMode.LIVE if live else MigrationMode.COLD
    message = (f"{'live-' if live else ''}migrating from {status.get('host')} "
               "(the host is draining)")
    out = started(current, mig, message, now)
    if out is not None and live:
        del out["phase"]  # a live migration keeps the Instance Running
    return out


def drain_confirmed(current: dict, mig_uuid: str) -> Status | None:
    """The decision Confirm on a drain's cold migration waiting in
    ResizeVerify (the guest runs on its new host); None when it is not
    waiting for one any more."""
    mig = ob.status(current).get("migration") or {}
    if (mig.get("uuid") != mig_uuid or mig.get("step") != MigrationStep.VERIFY
            or mig.get("decision")):
        return None
    return {"migration": {**mig, "decision": names.MigrationDecision.CONFIRM,
                          "decidedBy": names.DRAIN_USER}}
