"""What a power action on an Instance means, given its runStrategy and power
state: a pure function, :func:`plan`.

Whether a VM should run is part of the Instance's desired state (its
runStrategy, and with runStrategy Manual the power annotation,
``names.ANNOTATION_POWER``), which the agent enforces.  So ``start`` and
``stop`` change that state where anything else would be undone -- as
``virtctl start/stop`` does with a KubeVirt VM's runStrategy:

=================  =====================================  ==================================
runStrategy        start                                  stop
=================  =====================================  ==================================
Always             (stopped only transiently) the agent   spec.runStrategy := Halted
                   starts it
RerunOnFailure     the agent starts it                    spec.runStrategy := Halted
Halted             spec.runStrategy := Always             (already stopped)
Manual             power annotation := on                 power annotation := off
Once               refused: it ran once                   the agent stops it
=================  =====================================  ==================================

``restart`` (hard), ``reboot`` (ACPI, powered off after a grace period),
``pause`` and ``unpause`` are acts, not states: the agent does them at once
and the runStrategy keeps holding (a paused VM is not restarted by Always).
Asking for the state the VM is already in succeeds and changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kova.crds.names import ANNOTATION_POWER as POWER_ANNOTATION
from kova.crds.names import PowerState, RunStrategy

RUNNING = PowerState.RUNNING
PAUSED = PowerState.PAUSED
SHUTDOWN = PowerState.SHUTDOWN
STOPPED_STATES = (PowerState.SHUTDOWN, PowerState.CRASHED, PowerState.NO_STATE)


@dataclasses.dataclass(frozen=True)
class Plan:
    """``kind``: ``noop`` (already there), ``patch`` (change the Instance:
    ``patch`` is a merge patch), ``agent`` (ask the host's agent) or
    ``refuse`` (``code`` and ``reason``).  ``target``: the powerState that
    confirms it."""

    kind: str
    message: str
    target: str | None = None
    patch: dict[str, Any] | None = None
    code: int = 200
    reason: str = ""


def _refuse(reason: str, message: str, code: int = 409) -> Plan:
    return Plan("refuse", message, code=code, reason=reason)


def plan(action: str, instance: dict) -> Plan:
    spec = instance.get("spec") or {}
    status = instance.get("status") or {}
    strategy = spec.get("runStrategy") or RunStrategy.ALWAYS
    power = status.get("powerState") or PowerState.NO_STATE
    name = (instance.get("metadata") or {}).get("name", "")
    if (instance.get("metadata") or {}).get("deletionTimestamp"):
        return _refuse("Deleting", f"instance {name} is being deleted")
    if action == "start":
        return _plan_start(strategy, power, status, name)
    if action == "stop":
        return _plan_stop(strategy, power, name)
    return _plan_act(action, power, status, name)


def _plan_start(strategy: str, power: str, status: dict, name: str) -> Plan:
    if power == RUNNING:
        return Plan("noop", "already running", RUNNING)
    if power == PAUSED:
        return _refuse("Paused", f"instance {name} is paused: unpause it "
                       f"(kubectl kova unpause {name})")
    if strategy == RunStrategy.HALTED:
        return Plan("patch", "runStrategy Halted -> Always", RUNNING,
                    {"spec": {"runStrategy": RunStrategy.ALWAYS}})
    if strategy == RunStrategy.MANUAL:
        return Plan("patch", f"{POWER_ANNOTATION}=on", RUNNING,
                    {"metadata": {"annotations": {POWER_ANNOTATION: "on"}}})
    if strategy == RunStrategy.ONCE:
        return _refuse("RunStrategyOnce", f"instance {name} has runStrategy Once: it ran once "
                       "and is not started again; set runStrategy Manual or Always to start it")
    if not status.get("host"):
        return _refuse("NotPlaced", f"instance {name} is not placed on a host yet "
                       f"(phase {status.get('phase') or 'Pending'})")
    return Plan("agent", "start", RUNNING)


def _plan_stop(strategy: str, power: str, name: str) -> Plan:
    if strategy in (RunStrategy.ALWAYS, RunStrategy.RERUN_ON_FAILURE):
        return Plan("patch", f"runStrategy {strategy} -> Halted", SHUTDOWN,
                    {"spec": {"runStrategy": RunStrategy.HALTED}})
    if strategy == RunStrategy.MANUAL:
        return Plan("patch", f"{POWER_ANNOTATION}=off", SHUTDOWN,
                    {"metadata": {"annotations": {POWER_ANNOTATION: "off"}}})
    if power in STOPPED_STATES:
        return Plan("noop", "already stopped", power)
    if strategy == RunStrategy.HALTED:
        return Plan("noop", "runStrategy Halted: the agent is stopping it", SHUTDOWN)
    return Plan("agent", "stop", SHUTDOWN)  # Once


def _plan_act(action: str, power: str, status: dict, name: str) -> Plan:
    if not status.get("host"):
        return _refuse("NotPlaced", f"instance {name} is not placed on a host yet "
                       f"(phase {status.get('phase') or 'Pending'})")
    if action == "pause":
        if power == PAUSED:
            return Plan("noop", "already paused", PAUSED)
        if power != RUNNING:
            return _not_running(action, power, name)
        return Plan("agent", "pause", PAUSED)
    if action == "unpause":
        if power == RUNNING:
            return Plan("noop", "already running", RUNNING)
        if power != PAUSED:
            return _not_running(action, power, name)
        return Plan("agent", "unpause", RUNNING)
    if action == "reboot" and power == PAUSED:
        return _refuse("Paused", f"instance {name} is paused: unpause it first, or restart "
                       "it (hard)")
    if power not in (RUNNING, PAUSED):
        return _not_running(action, power, name)
    return Plan("agent", action, RUNNING)  # restart, reboot


def _not_running(action: str, power: str, name: str) -> Plan:
    return _refuse("NotRunning", f"cannot {action} instance {name}: it is {power}, not "
                   f"Running (kubectl kova start {name})")


def console_refusal(instance: dict, what: str) -> tuple[str, str] | None:
    """(reason, message) when the console or VNC display cannot be reached
    now, else None."""
    status = instance.get("status") or {}
    name = (instance.get("metadata") or {}).get("name", "")
    power = status.get("powerState")
    if not status.get("host"):
        return "NotPlaced", f"instance {name} is not placed on a host yet"
    if power not in (RUNNING, PAUSED):
        return "NotRunning", (f"instance {name} is {status.get('phase') or power or 'not running'}:"
                              f" its {what} is there while it runs (kubectl kova start {name})")
    return None
