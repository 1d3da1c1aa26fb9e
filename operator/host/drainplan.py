"""Host drain, the pure part: how each Instance on a draining host is moved
(live or cold), what became of a move the drain started, why an Instance is
left, and the Host's ``status.drain`` and ``Drained`` condition.  The
controller (:mod:`.drain`) reads the cluster and writes what these decide."""

from __future__ import annotations

from dataclasses import dataclass, field

from kova import actions
from kova.conditions import get_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import ActionResult, DrainPhase, DrainPolicy, InstancePhase

Key = tuple[str, str]


@dataclass
class Attempt:
    """A move the drain started: its request id, live or cold, when."""

    req: str
    live: bool
    at: float


@dataclass
class Left:
    reason: str
    message: str
    at: float


@dataclass
class DrainState:
    """What the leader remembers of one host's drain (rebuilt from the
    cluster after a restart or a change of leader: see :mod:`.drain`)."""

    start: str
    #: (drainPolicy, drainParallel) the Instances in ``left`` were tried
    #: with: a change tries them again at once
    spec: tuple = ()
    attempts: dict[Key, Attempt] = field(default_factory=dict)
    left: dict[Key, Left] = field(default_factory=dict)
    #: Instances whose live migration failed and that are now tried cold
    cold_tried: set[Key] = field(default_factory=set)
    moved: int = 0
    drained_reported: bool = False


#: Phases an Instance does not leave on its own: a drain leaves it
#: (NotMovable) until it does.
STUCK_PHASES = (InstancePhase.PAUSED, InstancePhase.ERROR, InstancePhase.UNKNOWN)


def policy_of(host: dict) -> str:
    return str(ob.spec(host).get("drainPolicy") or DrainPolicy.LIVE)


def how_to_move(inst: dict, policy: str, cold_tried: bool) -> tuple[bool | None, Left | None]:
    """``(live, None)`` for an Instance the drain may move now, ``(None,
    None)`` for one in a passing phase (being built, moved by someone
    else, deleted: its turn comes), else ``(None, why it is left)`` (its
    ``at`` is filled in by the caller)."""
    status = ob.status(inst)
    phase = status.get("phase")
    if phase not in STUCK_PHASES and phase not in (InstancePhase.RUNNING,
                                                   InstancePhase.STOPPED):
        return None, None
    if phase in STUCK_PHASES:
        return None, Left(names.DRAIN_LEFT_NOT_MOVABLE,
                          f"the instance is {phase or 'not placed yet'}: only a Running or "
                          "Stopped instance can be migrated", 0.0)
    running = status.get("powerState") == names.PowerState.RUNNING
    if not running or policy == DrainPolicy.COLD or cold_tried:
        return False, None
    return True, None


def outcome(inst: dict, req: str) -> str | None:
    """The result of the move with request id ``req`` (Success or Error),
    None while it is under way (or not yet seen)."""
    entry = actions.find(ob.status(inst).get("actions"), req)
    if entry is None or entry.get("result") == ActionResult.IN_PROGRESS:
        return None
    return str(entry.get("result"))


def failure(inst: dict) -> Left:
    """Why the Instance's last move failed, from its Resized condition; a
    move no host could take because of the Instance's server group is
    reported as such (reason ServerGroupPolicy)."""
    cond = get_condition(inst, names.COND_RESIZED) or {}
    reason = str(cond.get("reason") or "NotMoved")
    message = str(cond.get("message") or "the move failed")
    group = ob.ref_name(inst, "serverGroupRef")
    if group and reason == names.REASON_NO_VALID_HOST and "server group" in message:
        return Left(names.DRAIN_LEFT_SERVER_GROUP,
                    f"server group {group}: no other host keeps its policy ({message})", 0.0)
    return Left(reason, message, 0.0)


def falls_back_cold(attempt: Attempt, left: Left, policy: str) -> bool:
    """A failed live migration tried again cold (drainPolicy LiveThenCold)."""
    return (attempt.live and policy == DrainPolicy.LIVE_THEN_COLD
            and left.reason == names.REASON_LIVE_MIGRATION_FAILED)


def phase(on_host: int, moving: int, waiting: int) -> str:
    """Drained when nothing is on the host or moving off it; Draining while
    something moves or waits its turn; Stuck when only the Instances left
    (each with its reason) remain."""
    if on_host == 0 and moving == 0:
        return DrainPhase.DRAINED
    if moving or waiting:
        return DrainPhase.DRAINING
    return DrainPhase.STUCK


def drain_status(state: DrainState, on_host: list[Key], moving: int) -> dict:
    """``status.drain`` of the Host."""
    left = [{"namespace": k[0], "name": k[1], "reason": v.reason, "message": v.message[:1024]}
            for k, v in sorted(state.left.items()) if k in on_host]
    waiting = sum(1 for k in on_host if k not in state.left)
    return {"phase": str(phase(len(on_host), moving, waiting)), "startTime": state.start,
            "instances": len(on_host), "moving": moving, "moved": state.moved,
            "left": left or None}


def drained_condition(drain: dict) -> tuple[str, str, str]:
    """``(status, reason, message)`` of the Host's Drained condition."""
    p, left = drain["phase"], drain.get("left") or []
    if p == DrainPhase.DRAINED:
        return "True", names.HOST_REASON_DRAINED, (
            f"no instance is left on the host ({drain['moved']} moved away)")
    if p == DrainPhase.STUCK:
        which = ", ".join(f"{e['namespace']}/{e['name']} ({e['reason']})" for e in left[:10])
        return "False", names.HOST_REASON_DRAIN_STUCK, (
            f"{len(left)} instance(s) cannot be moved: {which}; tried again every now and "
            "then, or set spec.drain to false")
    return "False", names.HOST_REASON_DRAINING, (
        f"{drain['instances']} instance(s) left on the host, {drain['moving']} moving, "
        f"{drain['moved']} moved")
