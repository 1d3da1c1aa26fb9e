"""Pure decisions of the agent: what to do with a domain's power, and what
to write into an Instance's status.  No I/O here; ``kova.agents.agent``
applies the results."""

from __future__ import annotations

import libvirt

from kova.agents.driver import DomainState
from kova.conditions import condition_for as condition  # noqa: F401 - re-exported
from kova.conditions import get_condition, now_rfc3339, same_condition  # noqa: F401
from kova.crds import names
from kova.crds.names import InstancePhase, RunStrategy

START, STOP = "start", "stop"


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


def meta_data(uid: str, hostname: str, ssh_keys: list[str] | None) -> str:
    """NoCloud meta-data (YAML written by hand: keys are fixed, values quoted)."""
    lines = [f"instance-id: {uid}", f"local-hostname: {hostname}"]
    if ssh_keys:
        lines.append("public-keys:")
        for key in ssh_keys:
            escaped = key.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'  - "{escaped}"')
    return "\n".join(lines) + "\n"


def network_config(mac: str) -> str:
    """NoCloud network-config v2: DHCP on the one NIC, matched by MAC."""
    return (
        "version: 2\n"
        "ethernets:\n"
        "  eth0:\n"
        "    match:\n"
        f"      macaddress: \"{mac}\"\n"
        "    set-name: eth0\n"
        "    dhcp4: true\n"
    )
