"""What to do next with an Instance: :func:`next_step`, a pure function of
the Instance as watched and of what the operator knows beside it
(:class:`Facts`: its own claims, the state of the Instance's host, the
Image's identity).  Nova spreads these decisions over the conductor, the
compute manager and the evacuate API; here they are one function, and the
code that acts on them (:mod:`.controller`) is thin.

The answer is a :class:`Plan`: the steps to take in order (usually one), and
whether the Instance stops waiting for a host.  The cases:

* deleted: release the agent's finalizer when the host is fenced (its agent
  cannot tear down), wait for the agent, or free the claim and let go;
* phase Error: nothing -- unless it failed with an Image that changed since
  (start over);
* placed on a fenced host: evacuate; on a Down host: mark it Unknown (it is
  left where it is: the host may only be cut off);
* placed and the build failed: reschedule to another host, or fail for good
  (a terminal code, or no attempt left);
* placed: keep the host label and the operator's finalizer; and move it
  (:mod:`.moves`): start a resize when the spec asks for another size (or
  refuse it), claim the new size, confirm or revert (asked for, or confirmed
  after the confirm window), give the old allocation back after a revert;
* not placed: build (schedule, claim, record);
* a stale copy (the watch has not caught up with this process's own write):
  nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import MigrationDecision, MigrationMode, MigrationStep
from kova.operator.host.view import parse_time
from kova.operator.instance import moves
from kova.operator.instance import status as st

#: The Image an Instance names does not exist (:attr:`Facts.image_identity`).
MISSING_IMAGE = "missing"


class Action(StrEnum):
    NOTHING = "Nothing"
    BUILD = "Build"                    # schedule a new Instance: claim, record
    RESCHEDULE = "Reschedule"          # the build failed: claim on another host
    FAIL_BUILD = "FailBuild"           # the build failed for good: free the claim, Error
    EVACUATE = "Evacuate"              # the host is fenced: move the claim, rebuild elsewhere
    MARK_UNKNOWN = "MarkUnknown"       # the host is Down: phase Unknown, left in place
    ENSURE_LABEL = "EnsureLabel"       # the host label the agent watches by
    ENSURE_FINALIZER = "EnsureFinalizer"
    RETRY_IMAGE = "RetryImage"         # in Error for an Image that changed since: start over
    RELEASE_AGENT = "ReleaseAgent"     # deleted on a fenced host: drop the agent's finalizer
    WAIT_FOR_AGENT = "WaitForAgent"    # deleted: the agent tears the domain down first
    DELETE = "Delete"                  # deleted: free the claim, drop our finalizer
    START_RESIZE = "StartResize"       # the spec asks for another size: record a migration
    REFUSE_RESIZE = "RefuseResize"     # ... that cannot be (a smaller disk): say why
    CLAIM_MOVE = "ClaimMove"           # step Claiming: migration consumer + new claim
    CONFIRM_MOVE = "ConfirmMove"       # step Verify, confirmed: free the old allocation
    REVERT_MOVE = "RevertMove"         # step Verify, revert asked: the agent's turn
    FINISH_REVERT = "FinishRevert"     # step Reverted: the old allocation back
    HAND_OVER = "HandOver"             # step Copied: status.host and label -> destination
    HAND_BACK = "HandBack"             # step Returning: status.host and label -> source
    FINISH_LIVE = "FinishLive"         # live, step Migrated: hand over, free the source
    FAIL_LIVE = "FailLive"             # live, step Failed (or aborted early): claim back


#: The actions that claim resources (schedule).
PLACING = frozenset({Action.BUILD, Action.RESCHEDULE, Action.EVACUATE})
#: The actions of a resize or cold migration (:class:`~.mover.Mover`).
MOVING = frozenset({Action.START_RESIZE, Action.REFUSE_RESIZE, Action.CLAIM_MOVE,
                    Action.CONFIRM_MOVE, Action.REVERT_MOVE, Action.FINISH_REVERT,
                    Action.HAND_OVER, Action.HAND_BACK, Action.FINISH_LIVE,
                    Action.FAIL_LIVE})
#: The actions of a deleted Instance.
DELETING = frozenset({Action.RELEASE_AGENT, Action.WAIT_FOR_AGENT, Action.DELETE})


@dataclass(frozen=True)
class HostFacts:
    """The Instance's recorded host (``status.host``) as the operator sees it."""

    exists: bool = False       # a Host object of that name exists
    fenced: str | None = None  # why it is fenced (a Fenced condition reason), or None
    down: bool = False         # its heartbeat Lease expired


@dataclass(frozen=True)
class Facts:
    """What the operator knows beside the Instance."""

    #: The host this process last claimed for the Instance (None: none).
    own_host: str | None = None
    #: This process put the Instance in phase Error (a stale copy may not say so).
    errored: bool = False
    #: The failed-image identity this process already retried after.
    retried_image: str | None = None
    #: The identity (uid/generation) of the Instance's Image now.
    image_identity: str = MISSING_IMAGE
    host: HostFacts = field(default_factory=HostFacts)
    max_attempts: int = 3
    #: The size the spec asks for now (None: its Flavor does not exist).
    wanted_size: dict | None = None
    #: Seconds since the epoch, and the confirm window (0: never on its own).
    now: float = 0.0
    confirm_window: float = 0.0


@dataclass(frozen=True)
class Step:
    action: Action
    #: NOTHING: why; FAIL_BUILD: the Error reason (a terminal build code or
    #: MaxAttemptsExceeded).
    reason: str = ""
    #: RETRY_IMAGE: the Image identity the build failed with, and the one now.
    image_from: str = ""
    image_to: str = ""
    #: NOTHING: look again after this many seconds (0: no need).
    after: float = 0.0


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    #: The Instance no longer waits for a host (drop it from the pending set).
    settled: bool = False
    #: Reset its back-off (it is placed and its host is usable).
    reset_backoff: bool = False

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(s.action for s in self.steps)

    @property
    def first(self) -> Step:
        return self.steps[0]


def nothing(why: str, settled: bool = False) -> Plan:
    return Plan((Step(Action.NOTHING, reason=why),), settled=settled)


# Reasons of NOTHING (for logs and tests).
GONE = "gone"
NOT_OURS = "deleted, without the operator's finalizer"
IN_ERROR = "in phase Error"
STALE_ERRORED = "stale copy: this process put it in Error"
STALE_MOVED = "stale copy: this process moved it to another host"
STALE_SCHEDULED = "stale copy: this process claimed a host for it"
IN_PLACE = "placed, nothing to change"
AGENTS_TURN = "a move is under way: the agent's turn"
AWAITING_CONFIRM = "waiting for a confirm or revert"
AUTO_CONFIRM = "the confirm window passed"


def next_step(body: dict | None, facts: Facts) -> Plan:
    """What to do next with the Instance ``body`` (None: it is gone)."""
    if body is None:
        return nothing(GONE, settled=True)
    if ob.deleting(body):
        return _deletion(body, facts)
    status = ob.status(body)
    if status.get("phase") == names.InstancePhase.ERROR:
        return _in_error(body, facts)
    if facts.errored:
        return nothing(STALE_ERRORED)
    host = status.get("host")
    if host:
        if facts.own_host is not None and facts.own_host != host:
            return nothing(STALE_MOVED)
        return _placed(body, host, facts)
    if facts.own_host is not None:
        return nothing(STALE_SCHEDULED)
    return Plan((Step(Action.BUILD),))


def _deletion(body: dict, facts: Facts) -> Plan:
    fins = ob.finalizers(body)
    if names.FINALIZER_OPERATOR not in fins:
        return nothing(NOT_OURS, settled=True)
    steps = []
    agent = names.FINALIZER_AGENT in fins
    if agent and ob.placed_host(body) and facts.host.fenced is not None:
        # The fenced host's agent cannot clean up now; it removes the domain
        # of a vanished Instance when it comes back (Nova's local delete of an
        # instance on a down compute host).
        steps.append(Step(Action.RELEASE_AGENT, reason=facts.host.fenced))
        agent = False
    steps.append(Step(Action.WAIT_FOR_AGENT if agent else Action.DELETE))
    return Plan(tuple(steps), settled=True)


def _in_error(body: dict, facts: Facts) -> Plan:
    failed = ob.annotations_of(body).get(names.ANNOTATION_FAILED_IMAGE)
    now = facts.image_identity
    if (failed is not None and facts.retried_image != failed
            and now not in (MISSING_IMAGE, failed)):
        return Plan((Step(Action.RETRY_IMAGE, image_from=failed, image_to=now),),
                    settled=True)
    return nothing(IN_ERROR, settled=True)


def _placed(body: dict, host: str, facts: Facts) -> Plan:
    h = facts.host
    if h.exists and h.fenced is not None:
        return Plan((Step(Action.EVACUATE, reason=h.fenced),), settled=True)
    steps = []
    if h.exists and h.down and ob.status(body).get("phase") != names.InstancePhase.UNKNOWN:
        steps.append(Step(Action.MARK_UNKNOWN))
    if st.is_build_failed(body):
        steps.append(_after_build_failure(body, facts))
    else:
        if ob.labelled_host(body) != host:
            steps.append(Step(Action.ENSURE_LABEL))
        if names.FINALIZER_OPERATOR not in ob.finalizers(body):
            steps.append(Step(Action.ENSURE_FINALIZER))
        if not h.down:
            move = _move(body, facts)
            if move is not None:
                steps.append(move)
    if not steps:
        steps.append(Step(Action.NOTHING, reason=IN_PLACE))
    return Plan(tuple(steps), settled=True, reset_backoff=True)


def _after_build_failure(body: dict, facts: Facts) -> Step:
    code = st.failure_code(st.build_failure(body))
    if code in names.TERMINAL_BUILD_CODES:
        return Step(Action.FAIL_BUILD, reason=code)
    if attempts(body) >= facts.max_attempts:
        return Step(Action.FAIL_BUILD, reason=names.REASON_MAX_ATTEMPTS)
    return Step(Action.RESCHEDULE)


def attempts(body: dict) -> int:
    """Build attempts so far (1 for a first placement)."""
    return int(ob.status(body).get("attempts") or 1)


def _move(body: dict, facts: Facts) -> Step | None:
    """The next step of a resize or cold migration (see :mod:`.moves`), or
    None."""
    status = ob.status(body)
    mig = status.get("migration")
    if mig and mig.get("mode") == MigrationMode.LIVE:
        return _live(mig)
    if mig:
        step = mig.get("step")
        if step == MigrationStep.CLAIMING:
            return Step(Action.CLAIM_MOVE)
        if step == MigrationStep.REVERTED:
            return Step(Action.FINISH_REVERT)
        if step == MigrationStep.COPIED:
            return Step(Action.HAND_OVER)
        if step == MigrationStep.RETURNING:
            return Step(Action.HAND_BACK)
        if step != MigrationStep.VERIFY:
            return Step(Action.NOTHING, reason=AGENTS_TURN)
        decision = mig.get("decision")
        if decision == MigrationDecision.REVERT:
            return Step(Action.REVERT_MOVE)
        if decision == MigrationDecision.CONFIRM:
            return Step(Action.CONFIRM_MOVE)
        if facts.confirm_window <= 0:
            return Step(Action.NOTHING, reason=AWAITING_CONFIRM)
        since = parse_time(mig.get("verifyTime"))
        left = (since if since is not None else facts.now) + facts.confirm_window - facts.now
        if left <= 0:
            return Step(Action.CONFIRM_MOVE, reason=AUTO_CONFIRM)
        return Step(Action.NOTHING, reason=AWAITING_CONFIRM, after=left)
    if status.get("phase") not in (names.InstancePhase.RUNNING, names.InstancePhase.STOPPED):
        return None
    want = facts.wanted_size
    if not moves.resize_wanted(body, want) or moves.settled_for_generation(body):
        return None
    assert want is not None
    why = moves.refusal(body, want)
    if why is not None:
        return Step(Action.REFUSE_RESIZE, reason=why)
    return Step(Action.START_RESIZE)



def _live(mig: dict) -> Step:
    """The next step of a live migration: the operator claims, the
    destination agent prepares, the source agent migrates; an abort before
    the source started, a failure and a success are the operator's again."""
    step, abort = mig.get("step"), mig.get("decision") == MigrationDecision.ABORT
    if step == MigrationStep.FAILED or (
            abort and step in (MigrationStep.CLAIMING, MigrationStep.PREPARING)):
        return Step(Action.FAIL_LIVE)
    if step == MigrationStep.CLAIMING:
        return Step(Action.CLAIM_MOVE)
    if step == MigrationStep.MIGRATED:
        return Step(Action.FINISH_LIVE)
    return Step(Action.NOTHING, reason=AGENTS_TURN)
