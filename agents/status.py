"""Pure decisions of the agent: what to do with a domain's power, and what
to write into an Instance's status.  No I/O here; ``kova.agents.agent``
applies the results."""

from __future__ import annotations

import datetime as dt
from typing import Any

import libvirt

from kova.agents import contract
from kova.agents.driver import DomainState

ALWAYS, HALTED, MANUAL, RERUN_ON_FAILURE, ONCE = (
    "Always", "Halted", "Manual", "RerunOnFailure", "Once"
)
RUN_STRATEGIES = (ALWAYS, HALTED, MANUAL, RERUN_ON_FAILURE, ONCE)

START, STOP = "start", "stop"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    ``power_annotation``: the Instance's ``kova.dev/power`` (``on``/``off``),
    honoured with runStrategy Manual only.
    """
    running = state.running
    paused = state.state == libvirt.VIR_DOMAIN_PAUSED
    if strategy == HALTED:
        return STOP if running or paused else None
    if strategy == MANUAL and power_annotation in ("on", "off"):
        if power_annotation == "on":
            return START if not running else None
        return STOP if running or paused else None
    if first_start:
        return START if not running and not paused else None
    if strategy == ALWAYS:
        return START if state.shutoff else None
    if strategy == RERUN_ON_FAILURE:
        return START if state.failed else None
    return None  # Manual, Once: the user's business after the first start


def phase_and_ready(state: DomainState | None) -> tuple[str, str, str, str]:
    """(phase, Ready status, Ready reason, message) for a domain state."""
    if state is None:
        return "Building", "False", contract.REASON_BUILDING, "the domain is being built"
    if state.running:
        return "Running", "True", contract.REASON_RUNNING, "the domain is running"
    if state.state == libvirt.VIR_DOMAIN_PAUSED:
        return "Paused", "False", contract.REASON_PAUSED, "the domain is paused"
    if state.failed:
        return "Stopped", "False", contract.REASON_CRASHED, "the domain stopped abnormally"
    return "Stopped", "False", contract.REASON_STOPPED, "the domain is shut off"


def get_condition(obj: dict, ctype: str) -> dict | None:
    for c in ((obj.get("status") or {}).get("conditions") or []):
        if c.get("type") == ctype:
            return c
    return None


def condition(
    obj: dict, ctype: str, status: str, reason: str, message: str, now: str | None = None
) -> dict[str, Any]:
    """A condition for ``obj``; lastTransitionTime kept while status holds."""
    old = get_condition(obj, ctype)
    ltt = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": ltt or now or now_rfc3339(),
        "observedGeneration": int((obj.get("metadata") or {}).get("generation") or 0),
    }


def _cond_key(c: dict | None) -> tuple:
    if not c:
        return ()
    return (c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))


def status_changed(obj: dict, wanted: dict) -> bool:
    """Whether applying ``wanted`` (the agent's status fields) changes ``obj``."""
    cur = obj.get("status") or {}
    for key, value in wanted.items():
        if key == "conditions":
            for c in value:
                if _cond_key(get_condition(obj, c["type"])) != _cond_key(c):
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
