"""The agent's pure decisions (kova.agents.instance.decisions): what to do
next with an Instance, run strategies and power, restarts, phases and status,
build-failure classification, stale domains and leftovers, back-off; and the
seed contents (kova.agents.instance.userdata)."""

from __future__ import annotations

import libvirt
import pytest

from kova.agents.instance import decisions as st
from kova.agents.instance.userdata import meta_data, network_config
from kova.agents.virt.driver import DomainState

RUNNING = DomainState(libvirt.VIR_DOMAIN_RUNNING, 1)
PAUSED = DomainState(libvirt.VIR_DOMAIN_PAUSED, 1)
CLEAN_OFF = DomainState(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN)
CRASHED_OFF = DomainState(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED)
DESTROYED = DomainState(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED)
NEVER = DomainState(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN)


@pytest.mark.parametrize(
    "strategy,state,first,ann,want",
    [
        # first start: everything but Halted starts
        ("Always", NEVER, True, None, "start"),
        ("Manual", NEVER, True, None, "start"),
        ("Once", NEVER, True, None, "start"),
        ("RerunOnFailure", NEVER, True, None, "start"),
        ("Halted", NEVER, True, None, None),
        ("Always", RUNNING, True, None, None),
        # Always keeps it running, whatever stopped it
        ("Always", CLEAN_OFF, False, None, "start"),
        ("Always", CRASHED_OFF, False, None, "start"),
        ("Always", RUNNING, False, None, None),
        ("Always", PAUSED, False, None, None),
        # RerunOnFailure: only failures
        ("RerunOnFailure", CLEAN_OFF, False, None, None),
        ("RerunOnFailure", CRASHED_OFF, False, None, "start"),
        ("RerunOnFailure", DESTROYED, False, None, "start"),
        # Once and Manual: never again by themselves
        ("Once", CRASHED_OFF, False, None, None),
        ("Once", CLEAN_OFF, False, None, None),
        ("Manual", CLEAN_OFF, False, None, None),
        ("Manual", RUNNING, False, None, None),
        # Halted stops
        ("Halted", RUNNING, False, None, "stop"),
        ("Halted", PAUSED, False, None, "stop"),
        ("Halted", CLEAN_OFF, False, None, None),
        # Manual follows the power annotation
        ("Manual", CLEAN_OFF, False, "on", "start"),
        ("Manual", RUNNING, False, "off", "stop"),
        ("Manual", NEVER, True, "off", None),
        ("Manual", RUNNING, False, "on", None),
        # other strategies ignore it
        ("Always", RUNNING, False, "off", None),
        ("Halted", CLEAN_OFF, False, "on", None),
    ],
)
def test_power_action(strategy, state, first, ann, want):
    assert st.power_action(strategy, state, first_start=first, power_annotation=ann) == want


def test_phase_and_ready():
    assert st.phase_and_ready(RUNNING)[:3] == ("Running", "True", "Running")
    assert st.phase_and_ready(PAUSED)[:3] == ("Paused", "False", "Paused")
    assert st.phase_and_ready(CLEAN_OFF)[:3] == ("Stopped", "False", "Stopped")
    assert st.phase_and_ready(CRASHED_OFF)[:3] == ("Stopped", "False", "Crashed")
    assert st.phase_and_ready(None)[0] == "Building"


def test_condition_keeps_transition_time_while_status_holds():
    obj = {"metadata": {"generation": 3}, "status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Running", "message": "",
         "lastTransitionTime": "2020-01-01T00:00:00Z"}]}}
    same = st.condition(obj, "Ready", "True", "Running", "still", now="2030-01-01T00:00:00Z")
    assert same["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert same["observedGeneration"] == 3
    flipped = st.condition(obj, "Ready", "False", "Stopped", "", now="2030-01-01T00:00:00Z")
    assert flipped["lastTransitionTime"] == "2030-01-01T00:00:00Z"


def test_status_changed():
    obj = {"metadata": {"generation": 1}, "status": {
        "phase": "Running", "powerState": "Running",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                        "message": "m", "observedGeneration": 1,
                        "lastTransitionTime": "2020-01-01T00:00:00Z"}]}}
    cond = st.condition(obj, "Ready", "True", "Running", "m")
    assert not st.status_changed(obj, {"phase": "Running", "conditions": [cond]})
    assert st.status_changed(obj, {"phase": "Stopped"})
    assert st.status_changed(obj, {"conditions": [st.condition(obj, "Built", "True", "Built", "")]})
    assert st.status_changed(obj, {"addresses": []})


def test_meta_data():
    md = meta_data("uid-1", "vm", ['ssh-ed25519 AAAAC3Nza me@x', 'ssh-rsa AAAA "q"'])
    assert md.startswith("instance-id: uid-1\nlocal-hostname: vm\npublic-keys:\n")
    assert '  - "ssh-ed25519 AAAAC3Nza me@x"' in md
    assert '\\"q\\"' in md
    assert meta_data("u", "h", None) == "instance-id: u\nlocal-hostname: h\n"


def test_network_config_matches_mac():
    nc = network_config("52:54:00:aa:bb:cc")
    assert "version: 2" in nc and '"52:54:00:aa:bb:cc"' in nc and "dhcp4: true" in nc
