"""The compute agent's decisions, as pure functions: what to do next with an
Instance, what to do with its domain's power, which status to write, which
errors fail a build, which domains and directories are stale.

Nothing here does I/O: the reconciler reads the Instance (from the watch
cache) and the domain (from libvirt), asks these functions, and hands the
answers to the modules that act (build, power, report, teardown).  Each is
unit-tested on its own (tests/unit/agents/).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

import libvirt

from kova.agents.virt.domain import DomainMetadata, DomainSpecError
from kova.agents.virt.driver import DomainState, DriverError
from kova.agents.virt.images import ImageError
from kova.conditions import condition_for as condition
from kova.conditions import condition_is, get_condition, same_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import InstancePhase, PowerState, RunStrategy
from kova.kube import KubeError

START, STOP = "start", "stop"


class BuildError(Exception):
    """A build failed for a reason the Instance's user should see: ``code``
    is one of the ``names.ERROR_*`` codes (the Ready reason and the metric's
    label), ``message`` the detail."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ----------------------------------------------------------------------
# What to do next with an Instance


class Step(enum.Enum):
    CLEAN_UP = "clean-up"          # not (or no longer) this host's: remove its domains
    DELETE = "delete"              # being deleted: remove the domain and disks, the finalizer
    REMOVE_STALE = "remove-stale"  # placed on another host while a domain of it is here
    WAIT = "wait"                  # labelled for this host, not (yet) placed here
    LEAVE_FAILED = "leave-failed"  # its build failed: the operator reschedules it
    BUILD = "build"                # no domain yet: build one, then power it
    POWER = "power"                # the domain exists: power it and report
    MOVE = "move"                  # a resize / migration's Moving step is this host's
    REVERT = "revert"              # ... its Reverting step
    # A move to another host (kova.agents.instance.migrate):
    SEND = "send"                  # Moving, on the source: stop, send the disk
    FINISH = "finish"              # Finishing, on the destination: define, start
    DROP = "drop"                  # Reverting, on the destination: stop, remove its copy
    RESTORE = "restore"            # Restoring, on the source: start the kept domain
    # A live migration (kova.agents.instance.live):
    PREPARE_LIVE = "prepare-live"  # Preparing, on the source: the destination prepares
    LIVE_MIGRATE = "live-migrate"  # LiveMigrating, on the source: libvirt's live migration


def next_step(obj: dict | None, host: str, domain_defined: bool) -> Step:
    """The step for Instance ``obj`` (None: gone from this host's watch
    cache) on ``host``, where its domain is (``domain_defined``) or is not
    defined."""
    if obj is None:
        return Step.CLEAN_UP
    if ob.deleting(obj):
        return Step.DELETE
    live = live_step(obj, host)
    if live is not None:
        return live
    placed = ob.placed_host(obj)
    if placed != host:
        # Placed on another host (evacuated away, being placed here again):
        # the domain left from before is stale.  status.host unset with our
        # label: the operator is recording a first placement here.
        return Step.REMOVE_STALE if placed and domain_defined else Step.WAIT
    if build_failed(obj):
        return Step.LEAVE_FAILED
    move = move_step(obj, host)
    if move is not None and (domain_defined or across_hosts(ob.status(obj)["migration"])):
        return move
    return Step.POWER if domain_defined else Step.BUILD


def live_step(obj: dict, host: str) -> Step | None:
    """The step of a live migration of ``obj`` on ``host``; None when there
    is none or this host has nothing special to do (the source keeps the
    guest running and reported as usual until it has left)."""
    mig = ob.status(obj).get("migration") or {}
    if mig.get("mode") != names.MigrationMode.LIVE or not mig.get("destHost"):
        return None
    step = mig.get("step")
    if host == mig["destHost"]:
        # The guest arrives here: nothing to build, power or remove until the
        # operator hands the Instance over.
        return Step.WAIT
    if host == mig.get("sourceHost"):
        turn = {_S.PREPARING: Step.PREPARE_LIVE, _S.LIVE_MIGRATING: Step.LIVE_MIGRATE,
                _S.MIGRATED: Step.WAIT}  # Migrated: gone from here, not to be built again
        return turn.get(step)
    return None


def across_hosts(mig: dict) -> bool:
    """The move goes to another host (its disk is copied there)."""
    return bool(mig.get("destHost")) and mig.get("destHost") != mig.get("sourceHost")


def move_step(obj: dict, host: str) -> Step | None:
    """The step of a move of ``obj`` that waits for this host (see
    :mod:`kova.agents.instance.move` and :mod:`~kova.agents.instance.migrate`),
    else None."""
    mig = ob.status(obj).get("migration") or {}
    step = mig.get("step")
    src, dest = mig.get("sourceHost"), mig.get("destHost")
    S = _S
    if mig.get("mode") == names.MigrationMode.LIVE:
        return None  # see live_step
    if across_hosts(mig):
        turn = {(S.MOVING, src): Step.SEND, (S.FINISHING, dest): Step.FINISH,
                (S.REVERTING, dest): Step.DROP, (S.RESTORING, src): Step.RESTORE}
        if (step, host) in turn:
            return turn[(step, host)]
        if step == S.VERIFY and host == dest:
            return None  # it runs here now: powered and reported as any other
        # Another's turn (the operator's, the other agent's): this host
        # neither starts nor builds the guest meanwhile.
        return Step.WAIT
    if step == S.MOVING and dest == host:
        return Step.MOVE
    if step == S.REVERTING and src == host:
        return Step.REVERT
    return None


def kept_for_move(obj: dict | None, uid: str, host: str) -> bool:
    """Instance ``obj`` (as the API server has it now) is ``uid`` and a move
    between this host and another is under way: this host's copy (the
    source's domain and disk until the confirm, the disk a destination
    received) stays even while the Instance is placed on the other host."""
    if obj is None or ob.uid(obj) != uid or ob.deleting(obj):
        return False
    mig = ob.status(obj).get("migration") or {}
    return across_hosts(mig) and host in (mig.get("sourceHost"), mig.get("destHost"))


def move_phase(obj: dict) -> str | None:
    """The phase while a move is recorded: ResizeVerify at step Verify,
    Resizing at every other step; None when there is no move."""
    mig = ob.status(obj).get("migration")
    if not mig or mig.get("mode") == names.MigrationMode.LIVE:
        return None  # a live migration keeps the phase the guest's state gives
    if mig.get("step") == names.MigrationStep.VERIFY:
        return InstancePhase.RESIZE_VERIFY
    return InstancePhase.RESIZING


_S = names.MigrationStep
#: The step an agent's part of a move writes, and the steps it follows: a
#: repeated or late write never takes a move back.
_AFTER = {_S.VERIFY: (_S.MOVING, _S.FINISHING), _S.REVERTED: (_S.REVERTING, _S.RESTORING),
          _S.COPIED: (_S.MOVING,), _S.RETURNING: (_S.REVERTING,)}


def moved_status(obj: dict, mig_uuid: str, *, step: str, was_running: bool,
                 now: str) -> dict[str, Any] | None:
    """The status patch after the agent's part of a move: ``step`` (Verify or
    Reverted), whether the guest ran before; None when the record moved on."""
    mig = ob.status(obj).get("migration") or {}
    if mig.get("uuid") != mig_uuid or mig.get("step") not in _AFTER.get(step, ()):
        return None
    new = {**mig, "step": step, "wasRunning": was_running}
    if step == names.MigrationStep.VERIFY:
        new["verifyTime"] = now
    return {"phase": (InstancePhase.RESIZE_VERIFY if step == names.MigrationStep.VERIFY
                      else InstancePhase.RESIZING), "migration": new}


def build_failed(obj: dict) -> bool:
    """``Built=False/BuildFailed``: the agent leaves the Instance alone (no
    retry loop on the host) until the operator resets ``Built``."""
    return condition_is(obj, names.COND_BUILT, "False", names.REASON_BUILD_FAILED)


def first_start(obj: dict, *, just_built: bool, recorded_strategy: str,
                strategy: str) -> bool:
    """Whether the domain is to be started as after a build: it was just
    built, it never was ``Built=True``, or the run strategy just changed away
    from Halted (``recorded_strategy`` is the one in the domain's metadata)."""
    if just_built:
        return True
    built = get_condition(obj, names.COND_BUILT)
    if not (built and built.get("status") == "True"):
        return True
    return recorded_strategy == RunStrategy.HALTED and strategy != RunStrategy.HALTED


# ----------------------------------------------------------------------
# Power


def power_action(
    strategy: str,
    state: DomainState,
    *,
    first_start: bool,
    power_annotation: str | None = None,
) -> str | None:
    """``start``, ``stop`` or None for a domain in ``state``.

    ``first_start``: the domain was just built, or the strategy just changed
    away from Halted -- every strategy but Halted starts it then.
    ``power_annotation``: the Instance's power annotation (``on``/``off``),
    honoured with runStrategy Manual only.
    """
    running = state.running
    paused = state.state == libvirt.VIR_DOMAIN_PAUSED
    if strategy == RunStrategy.HALTED:
        return STOP if running or paused else None
    if strategy == RunStrategy.MANUAL and power_annotation in ("on", "off"):
        if power_annotation == "on":
            return START if not running else None
        return STOP if running or paused else None
    if first_start:
        return START if not running and not paused else None
    if strategy == RunStrategy.ALWAYS:
        return START if state.shutoff else None
    if strategy == RunStrategy.RERUN_ON_FAILURE:
        return START if state.failed else None
    return None  # Manual, Once: the user's business after the first start


class Restart(enum.Enum):
    NONE = "none"
    RECORD = "record"    # first start: take the current token as acted on
    RESTART = "restart"  # a new token on a running domain: destroy + start, then record


def restart(annotation: str, recorded: str, *, first_start: bool, running: bool,
            action: str | None) -> Restart:
    """What the restart annotation (``kova.dev/restart``, any new value
    restarts a running domain once) asks, given the token ``recorded`` in
    the domain's metadata.  A power action under way takes precedence."""
    if not annotation:
        return Restart.NONE
    if first_start and not recorded:
        return Restart.RECORD
    if annotation != recorded and running and action is None:
        return Restart.RESTART
    return Restart.NONE


def stop_by_destroy(first_asked: float, now: float, timeout: float) -> bool:
    """A guest asked to shut down at ``first_asked`` that is still running at
    ``now`` is destroyed once ``timeout`` seconds have passed; until then the
    ACPI power button is pressed again (an early press can be lost)."""
    return now - first_asked >= timeout


def recorded_metadata(meta: DomainMetadata, *, strategy: str,
                      restart_token: str | None) -> DomainMetadata:
    """The domain's Kova metadata after a reconcile: the run strategy
    applied, and the restart token acted on (None: unchanged)."""
    out = meta
    if restart_token is not None and restart_token != meta.restart_token:
        out = dataclasses.replace(out, restart_token=restart_token)
    if strategy != meta.run_strategy:
        out = dataclasses.replace(out, run_strategy=str(strategy))
    return out


# ----------------------------------------------------------------------
# Status


def phase_and_ready(state: DomainState | None) -> tuple[str, str, str, str]:
    """(phase, Ready status, Ready reason, message) for a domain state."""
    if state is None:
        return (InstancePhase.BUILDING, "False", names.REASON_BUILDING,
                "the domain is being built")
    if state.running:
        return InstancePhase.RUNNING, "True", names.REASON_RUNNING, "the domain is running"
    if state.state == libvirt.VIR_DOMAIN_PAUSED:
        return InstancePhase.PAUSED, "False", names.REASON_PAUSED, "the domain is paused"
    if state.failed:
        return (InstancePhase.STOPPED, "False", names.REASON_CRASHED,
                "the domain stopped abnormally")
    return InstancePhase.STOPPED, "False", names.REASON_STOPPED, "the domain is shut off"


def observed_status(obj: dict, state: DomainState | None, *, host: str, domain: str,
                    console_log: str, shutting_down: bool) -> dict[str, Any]:
    """The agent's status fields for Instance ``obj`` whose domain (named
    ``domain``) is in ``state``: phase, powerState, the console log, Built and
    Ready.  ``shutting_down``: a clean shutdown was asked for and the guest
    still runs."""
    phase, ready, reason, message = phase_and_ready(state)
    if state is not None and shutting_down and state.running:
        phase, reason, message = (InstancePhase.RUNNING, names.REASON_STOPPING,
                                  "the guest is shutting down")
    phase = move_phase(obj) or phase
    return {
        "phase": phase,
        "powerState": state.power_state if state is not None else PowerState.NO_STATE,
        "console": {"logPath": console_log},
        "conditions": [
            condition(obj, names.COND_BUILT, "True", names.REASON_BUILT,
                      f"domain {domain} defined on {host}"),
            condition(obj, names.COND_READY, ready, reason, message),
        ],
    }


def building_status(obj: dict, host: str) -> dict[str, Any]:
    """The status written when a build starts."""
    return {
        "phase": InstancePhase.BUILDING,
        "powerState": PowerState.NO_STATE,
        "conditions": [
            condition(obj, names.COND_BUILT, "Unknown", names.REASON_BUILDING,
                      f"building on {host}"),
            condition(obj, names.COND_READY, "False", names.REASON_BUILDING,
                      "the domain is being built"),
        ],
    }


def build_failed_status(obj: dict, exc: BuildError) -> dict[str, Any]:
    """The status written when a build failed: ``Built=False/BuildFailed``
    with ``<code>: <detail>``, ``Ready=False`` with the code as its reason."""
    return {
        "powerState": PowerState.NO_STATE,
        "conditions": [
            condition(obj, names.COND_BUILT, "False", names.REASON_BUILD_FAILED,
                      f"{exc.code}: {exc.message}"),
            condition(obj, names.COND_READY, "False", exc.code, exc.message),
        ],
    }


def user_data_wait_status(obj: dict, exc: BuildError) -> dict[str, Any]:
    """The status of an Instance waiting for its user-data Secret: nothing is
    built, ``Built=Unknown`` and ``Ready=False`` name the Secret and key."""
    message = f"waiting for the user data: {exc.message}"
    return {"conditions": [
        condition(obj, names.COND_BUILT, "Unknown", exc.code, message),
        condition(obj, names.COND_READY, "False", exc.code, message),
    ]}


def status_changed(obj: dict, wanted: dict) -> bool:
    """Whether applying ``wanted`` (the agent's status fields) changes ``obj``."""
    cur = obj.get("status") or {}
    for key, value in wanted.items():
        if key == "conditions":
            for c in value:
                if not same_condition(get_condition(obj, c["type"]), c):
                    return True
        elif cur.get(key) != value:
            return True
    return False


def poll_addresses(*, running: bool, addresses: list, waited: float,
                   limit: float = 120.0) -> bool:
    """Look for the guest's address again soon: it runs, has none yet (the
    DHCP lease comes seconds after the start) and has not been waited for
    ``limit`` seconds (the periodic resync looks after that)."""
    return running and not addresses and waited < limit


# ----------------------------------------------------------------------
# Build failures and back-off


def build_failure(exc: BaseException) -> BuildError | None:
    """The build failure ``exc`` stands for, or None when it is no build
    failure (an API-server error: the reconcile is retried instead; an
    unexpected error: a bug, retried and logged with its traceback)."""
    if isinstance(exc, BuildError):
        return exc
    if isinstance(exc, ImageError):
        return BuildError(exc.code, exc.message)
    if isinstance(exc, (DriverError, DomainSpecError)):
        return BuildError(names.ERROR_LIBVIRT, str(exc))
    if isinstance(exc, KubeError):
        return None
    if isinstance(exc, OSError):
        return BuildError(names.ERROR_INTERNAL, str(exc))
    return None


def secret_retry_delay(reads: int) -> float:
    """Seconds before a missing user-data Secret is read again after
    ``reads`` reads: 1 s doubling to 60 s."""
    return min(60.0, 2.0 ** reads)


def reconcile_retry_delay(failures: int) -> float:
    """Seconds before a reconcile that failed ``failures`` times in a row is
    tried again: 0.5 s doubling to 30 s."""
    return min(30.0, 0.5 * 2 ** (failures - 1))


# ----------------------------------------------------------------------
# Stale domains and leftovers


def is_mine(meta: DomainMetadata | None, host: str) -> bool:
    """A domain this agent created: Kova metadata naming this host.  A
    domain another agent (another host name, e.g. a second development
    stack on the same libvirtd) defined is never touched."""
    return meta is not None and meta.host == host


def placed_here(obj: dict | None, uid: str, host: str) -> bool:
    """Whether ``obj`` (as the API server has it now) is Instance ``uid``,
    still placed on ``host``: same uid, labelled for the host, and
    ``status.host`` unset (a first placement being recorded) or the host."""
    if obj is None:
        return False
    return (
        ob.uid(obj) == uid
        and ob.labelled_host(obj) == host
        and ob.placed_host(obj) in (None, host)
    )


@dataclass(frozen=True)
class DomainRef:
    """A Kova domain on the host: its uid and the Instance its metadata names."""

    uid: str
    namespace: str
    name: str


def domains_of(domains: list[DomainRef], key: tuple[str, str]) -> list[str]:
    """The uids of the domains whose metadata names Instance ``key``."""
    return [d.uid for d in domains if (d.namespace, d.name) == key]


def leftover_candidate(entry: str, *, is_dir: bool, known_uids: set[str],
                       domain_uids: set[str]) -> bool:
    """Whether the instance-directory entry ``entry`` may be a leftover of a
    build that crashed half-way: a directory named by no Instance of this
    host and no domain (``_base`` and hidden entries are the agent's own).
    The Instance named in its ``instance.json`` is still asked before it
    goes."""
    if not is_dir or entry.startswith(("_", ".")):
        return False
    return entry not in known_uids and entry not in domain_uids


def stale_removed_message(obj: dict, host: str) -> str:
    """The Event message on an Instance whose stale domain was removed."""
    return (f"{host}: removed the stale copy of the domain (the Instance is "
            f"now on {ob.placed_host(obj)})")
