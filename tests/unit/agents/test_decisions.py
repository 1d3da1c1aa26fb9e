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
from kova.crds import names

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


# --------------------------------------------------------------------------
# Every run strategy x every domain state (no power annotation)

BLOCKED = DomainState(libvirt.VIR_DOMAIN_BLOCKED, 0)
SHUTTING_DOWN = DomainState(libvirt.VIR_DOMAIN_SHUTDOWN, 0)
FAILED_OFF = DomainState(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED)
CRASHED = DomainState(libvirt.VIR_DOMAIN_CRASHED, 0)
SUSPENDED = DomainState(libvirt.VIR_DOMAIN_PMSUSPENDED, 0)
NOSTATE = DomainState(libvirt.VIR_DOMAIN_NOSTATE, 0)

STRATEGIES = ("Always", "RerunOnFailure", "Once", "Manual", "Halted")
S, T = "start", "stop"

#: After the first start: what each strategy does with a domain in each state.
#  state           Always RerunOnFailure Once  Manual Halted
LATER = {
    "running":       (None, None, None, None, T),
    "blocked":       (None, None, None, None, T),
    "shutting-down": (None, None, None, None, T),
    "paused":        (None, None, None, None, T),
    "clean-off":     (S,    None, None, None, None),
    "never-started": (S,    None, None, None, None),
    "crashed-off":   (S,    S,    None, None, None),
    "destroyed":     (S,    S,    None, None, None),
    "failed-off":    (S,    S,    None, None, None),
    "crashed":       (S,    S,    None, None, None),
    "suspended":     (None, None, None, None, None),
    "nostate":       (None, None, None, None, None),
}
#: The first start (just built, or the strategy changed away from Halted):
#: everything but Halted starts a domain that neither runs nor is paused.
FIRST = {
    "running":       (None, None, None, None, T),
    "blocked":       (None, None, None, None, T),
    "shutting-down": (None, None, None, None, T),
    "paused":        (None, None, None, None, T),
    "clean-off":     (S,    S,    S,    S,    None),
    "never-started": (S,    S,    S,    S,    None),
    "crashed-off":   (S,    S,    S,    S,    None),
    "destroyed":     (S,    S,    S,    S,    None),
    "failed-off":    (S,    S,    S,    S,    None),
    "crashed":       (S,    S,    S,    S,    None),
    "suspended":     (S,    S,    S,    S,    None),
    "nostate":       (S,    S,    S,    S,    None),
}
STATES = {
    "running": RUNNING, "blocked": BLOCKED, "shutting-down": SHUTTING_DOWN, "paused": PAUSED,
    "clean-off": CLEAN_OFF, "never-started": NEVER, "crashed-off": CRASHED_OFF,
    "destroyed": DESTROYED, "failed-off": FAILED_OFF, "crashed": CRASHED,
    "suspended": SUSPENDED, "nostate": NOSTATE,
}


def _matrix(table: dict, first: bool) -> list:
    when = "first" if first else "later"
    return [pytest.param(strategy, state, first, want[i], id=f"{when}-{strategy}-{state}")
            for state, want in table.items() for i, strategy in enumerate(STRATEGIES)]


@pytest.mark.parametrize("strategy,state,first,want",
                         _matrix(LATER, False) + _matrix(FIRST, True))
def test_power_action_for_every_strategy_and_domain_state(strategy, state, first, want):
    assert st.power_action(strategy, STATES[state], first_start=first) == want


@pytest.mark.parametrize("state", sorted(STATES))
@pytest.mark.parametrize("annotation", ["on", "off"])
def test_manual_follows_the_power_annotation_in_every_state(state, annotation):
    s = STATES[state]
    if annotation == "on":
        want = None if s.running else "start"
    else:
        want = "stop" if s.running or s.state == libvirt.VIR_DOMAIN_PAUSED else None
    for first in (False, True):
        assert st.power_action("Manual", s, first_start=first,
                               power_annotation=annotation) == want


@pytest.mark.parametrize("strategy", ["Always", "RerunOnFailure", "Once", "Halted"])
@pytest.mark.parametrize("annotation", ["on", "off", "bogus"])
def test_other_strategies_ignore_the_power_annotation(strategy, annotation):
    for name, s in STATES.items():
        for first in (False, True):
            assert st.power_action(strategy, s, first_start=first,
                                   power_annotation=annotation) == \
                st.power_action(strategy, s, first_start=first), (name, first)


# --------------------------------------------------------------------------
# What to do next with an Instance

HOST = "node-1"


def inst(*, placed: str | None = HOST, label: str | None = HOST, uid: str = "uid-1",
         built: tuple[str, str] | None = None, deleting: bool = False,
         strategy: str | None = None, generation: int = 1) -> dict:
    md = {"namespace": "ns", "name": "vm", "uid": uid, "generation": generation,
          "labels": {"kova.dev/host": label} if label else {}}
    if deleting:
        md["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    status: dict = {}
    if placed is not None:
        status["host"] = placed
    if built is not None:
        status["conditions"] = [{"type": "Built", "status": built[0], "reason": built[1],
                                 "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]
    spec = {"runStrategy": strategy} if strategy else {}
    return {"metadata": md, "spec": spec, "status": status}


Step = st.Step


@pytest.mark.parametrize("obj,defined,want", [
    pytest.param(None, False, Step.CLEAN_UP, id="gone"),
    pytest.param(None, True, Step.CLEAN_UP, id="gone-domain-left"),
    pytest.param(inst(deleting=True), True, Step.DELETE, id="deleting"),
    pytest.param(inst(deleting=True), False, Step.DELETE, id="deleting-no-domain"),
    pytest.param(inst(deleting=True, placed="node-2"), True, Step.DELETE,
                 id="deleting-placed-elsewhere"),
    pytest.param(inst(deleting=True, built=("False", "BuildFailed")), False, Step.DELETE,
                 id="deleting-after-failed-build"),
    pytest.param(inst(placed="node-2"), True, Step.REMOVE_STALE, id="evacuated-domain-left"),
    pytest.param(inst(placed="node-2", built=("True", "Built")), True, Step.REMOVE_STALE,
                 id="evacuated-was-built"),
    pytest.param(inst(placed="node-2"), False, Step.WAIT, id="elsewhere-nothing-here"),
    pytest.param(inst(placed=None), False, Step.WAIT, id="label-first-placement-pending"),
    pytest.param(inst(placed=None), True, Step.WAIT, id="label-pending-domain-kept"),
    pytest.param(inst(placed=""), True, Step.WAIT, id="empty-host-domain-kept"),
    pytest.param(inst(built=("False", "BuildFailed")), False, Step.LEAVE_FAILED,
                 id="build-failed"),
    pytest.param(inst(built=("False", "BuildFailed")), True, Step.LEAVE_FAILED,
                 id="build-failed-domain-seen"),
    pytest.param(inst(built=("Unknown", "Rescheduled")), False, Step.BUILD,
                 id="rescheduled-here-again"),
    pytest.param(inst(built=("Unknown", "Retrying")), False, Step.BUILD, id="retrying"),
    pytest.param(inst(built=("False", "Other")), False, Step.BUILD, id="built-false-other"),
    pytest.param(inst(), False, Step.BUILD, id="new"),
    pytest.param(inst(built=("True", "Built")), False, Step.BUILD, id="domain-vanished"),
    pytest.param(inst(), True, Step.POWER, id="half-reported"),
    pytest.param(inst(built=("True", "Built")), True, Step.POWER, id="built"),
    pytest.param(inst(built=("Unknown", "Building")), True, Step.POWER, id="defined-not-reported"),
    pytest.param(inst(label="node-2"), True, Step.POWER, id="placed-here-stale-label"),
])
def test_next_step(obj, defined, want):
    assert st.next_step(obj, HOST, defined) is want


@pytest.mark.parametrize("obj,just_built,recorded,strategy,want", [
    (inst(), True, "Always", "Always", True),
    (inst(built=("True", "Built")), True, "", "Always", True),
    (inst(), False, "Always", "Always", True),                          # never Built=True
    (inst(built=("Unknown", "Building")), False, "Always", "Always", True),
    (inst(built=("False", "BuildFailed")), False, "Always", "Always", True),
    (inst(built=("True", "Built")), False, "Always", "Always", False),
    (inst(built=("True", "Built")), False, "", "Always", False),        # before run strategies
    (inst(built=("True", "Built")), False, "Halted", "Always", True),   # Halted -> Always
    (inst(built=("True", "Built")), False, "Halted", "Manual", True),
    (inst(built=("True", "Built")), False, "Halted", "Once", True),
    (inst(built=("True", "Built")), False, "Halted", "Halted", False),
    (inst(built=("True", "Built")), False, "Always", "Halted", False),  # Always -> Halted: stop
])
def test_first_start(obj, just_built, recorded, strategy, want):
    assert st.first_start(obj, just_built=just_built, recorded_strategy=recorded,
                          strategy=strategy) is want


R = st.Restart


@pytest.mark.parametrize("annotation,recorded,first,running,action,want", [
    ("", "", True, False, "start", R.NONE),
    ("", "t1", False, True, None, R.NONE),             # annotation removed: nothing
    ("t1", "", True, False, "start", R.RECORD),        # built with it: no restart
    ("t1", "", True, True, None, R.RECORD),
    ("t2", "t1", True, True, None, R.RESTART),         # first start but a token recorded
    ("t1", "t1", False, True, None, R.NONE),           # acted on already
    ("t2", "t1", False, True, None, R.RESTART),        # a new value: restart once
    ("t1", "", False, True, None, R.RESTART),          # first value on an old domain
    ("t2", "t1", False, False, None, R.NONE),          # not running: nothing to restart
    ("t2", "t1", False, True, "stop", R.NONE),         # stopping wins
    ("t2", "t1", False, False, "start", R.NONE),       # starting anyway
])
def test_restart(annotation, recorded, first, running, action, want):
    assert st.restart(annotation, recorded, first_start=first, running=running,
                      action=action) is want


@pytest.mark.parametrize("first,now,timeout,want", [
    (100.0, 100.0, 60.0, False),
    (100.0, 159.9, 60.0, False),
    (100.0, 160.0, 60.0, True),
    (100.0, 500.0, 60.0, True),
    (100.0, 100.0, 0.0, True),   # --shutdown-timeout 0: destroy at once
])
def test_stop_by_destroy(first, now, timeout, want):
    assert st.stop_by_destroy(first, now, timeout) is want


def test_recorded_metadata():
    from kova.agents.virt.domain import DomainMetadata

    meta = DomainMetadata(uid="u", namespace="ns", name="vm", host=HOST,
                          restart_token="t1", run_strategy="Always")
    assert st.recorded_metadata(meta, strategy="Always", restart_token=None) is meta
    assert st.recorded_metadata(meta, strategy="Always", restart_token="t1") is meta
    assert st.recorded_metadata(meta, strategy="Halted", restart_token=None).run_strategy \
        == "Halted"
    both = st.recorded_metadata(meta, strategy="Manual", restart_token="t2")
    assert (both.run_strategy, both.restart_token, both.host) == ("Manual", "t2", HOST)


# --------------------------------------------------------------------------
# Status


def _conds(status: dict) -> dict:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize("state,shutting_down,phase,power,ready", [
    (RUNNING, False, "Running", "Running", ("True", "Running")),
    (BLOCKED, False, "Running", "Running", ("True", "Running")),
    (RUNNING, True, "Running", "Running", ("True", "Stopping")),
    (SHUTTING_DOWN, True, "Running", "Running", ("True", "Stopping")),
    (PAUSED, False, "Paused", "Paused", ("False", "Paused")),
    (PAUSED, True, "Paused", "Paused", ("False", "Paused")),
    (CLEAN_OFF, False, "Stopped", "Shutdown", ("False", "Stopped")),
    (CLEAN_OFF, True, "Stopped", "Shutdown", ("False", "Stopped")),  # shut down: done
    (CRASHED_OFF, False, "Stopped", "Shutdown", ("False", "Crashed")),
    (DESTROYED, False, "Stopped", "Shutdown", ("False", "Crashed")),
    (CRASHED, False, "Stopped", "Crashed", ("False", "Crashed")),
    (None, False, "Building", "NoState", ("False", "Building")),
])
def test_observed_status(state, shutting_down, phase, power, ready):
    obj = inst(generation=4)
    status = st.observed_status(obj, state, host=HOST, domain="ns.vm",
                                console_log="/x/console.log", shutting_down=shutting_down)
    assert (status["phase"], status["powerState"]) == (phase, power)
    assert _conds(status) == {"Built": ("True", "Built"), "Ready": ready}
    assert status["console"] == {"logPath": "/x/console.log"}
    built = status["conditions"][0]
    assert built["message"] == f"domain ns.vm defined on {HOST}"
    assert built["observedGeneration"] == 4


def test_building_failed_and_waiting_statuses():
    obj = inst()
    building = st.building_status(obj, HOST)
    assert (building["phase"], building["powerState"]) == ("Building", "NoState")
    assert _conds(building) == {"Built": ("Unknown", "Building"), "Ready": ("False", "Building")}
    assert building["conditions"][0]["message"] == f"building on {HOST}"

    exc = st.BuildError("ImageNotFound", "Image img does not exist")
    failed = st.build_failed_status(obj, exc)
    assert "phase" not in failed  # the operator's phase (it reschedules) is left alone
    assert failed["powerState"] == "NoState"
    assert _conds(failed) == {"Built": ("False", "BuildFailed"),
                              "Ready": ("False", "ImageNotFound")}
    assert failed["conditions"][0]["message"] == "ImageNotFound: Image img does not exist"
    assert failed["conditions"][1]["message"] == "Image img does not exist"

    wait = st.user_data_wait_status(obj, st.BuildError("UserDataUnavailable",
                                                       "Secret ns/s does not exist"))
    assert set(wait) == {"conditions"}  # nothing else: no phase, nothing built
    assert _conds(wait) == {"Built": ("Unknown", "UserDataUnavailable"),
                            "Ready": ("False", "UserDataUnavailable")}
    assert all(c["message"] == "waiting for the user data: Secret ns/s does not exist"
               for c in wait["conditions"])


def test_observed_status_is_written_once():
    """A status applied once is not changed by the same observation: the
    reconcile at the next resync writes nothing."""
    obj = inst(built=("Unknown", "Building"))
    wanted = st.observed_status(obj, RUNNING, host=HOST, domain="ns.vm",
                                console_log="/c", shutting_down=False)
    assert st.status_changed(obj, wanted)
    applied = {**obj, "status": {**obj["status"], **wanted}}
    again = st.observed_status(applied, RUNNING, host=HOST, domain="ns.vm",
                               console_log="/c", shutting_down=False)
    assert not st.status_changed(applied, again)
    assert again["conditions"][1]["lastTransitionTime"] == \
        wanted["conditions"][1]["lastTransitionTime"]
    stopped = st.observed_status(applied, CLEAN_OFF, host=HOST, domain="ns.vm",
                                 console_log="/c", shutting_down=False)
    assert st.status_changed(applied, stopped)


@pytest.mark.parametrize("running,addresses,waited,want", [
    (True, [], 0.0, True),
    (True, [], 119.0, True),
    (True, [], 120.0, False),          # the periodic resync looks after that
    (True, [{"address": "192.0.2.4"}], 1.0, False),
    (False, [], 1.0, False),
])
def test_poll_addresses(running, addresses, waited, want):
    assert st.poll_addresses(running=running, addresses=addresses, waited=waited) is want


# --------------------------------------------------------------------------
# Build failures and back-off


def _build_failures():
    from kova.agents.virt.domain import DomainSpecError
    from kova.agents.virt.driver import DriverError
    from kova.agents.virt.images import ImageError
    from kova.kube import KubeError

    same = st.BuildError("UserDataUnavailable", "Secret ns/s does not exist")
    return [
        pytest.param(same, ("UserDataUnavailable", "Secret ns/s does not exist"), id="build"),
        pytest.param(ImageError("ImageChecksumMismatch", "image x: sha256 differs"),
                     ("ImageChecksumMismatch", "image x: sha256 differs"), id="image-checksum"),
        pytest.param(ImageError("DiskTooSmall", "image x is 2 GiB"),
                     ("DiskTooSmall", "image x is 2 GiB"), id="disk-too-small"),
        pytest.param(DriverError("defining the domain failed: boom", 1),
                     ("HypervisorError", "defining the domain failed: boom"), id="libvirt"),
        pytest.param(DomainSpecError("vcpus must be positive"),
                     ("HypervisorError", "vcpus must be positive"), id="domain-spec"),
        pytest.param(FileNotFoundError(2, "No such file"),
                     ("InternalError", "[Errno 2] No such file"), id="os-error"),
        pytest.param(PermissionError(13, "Permission denied"),
                     ("InternalError", "[Errno 13] Permission denied"), id="permission"),
        pytest.param(KubeError(503, {"reason": "ServiceUnavailable"}, "GET /x"), None,
                     id="api-server: retried, not a build failure"),
        pytest.param(KubeError(404, {"reason": "NotFound"}, "GET /x"), None, id="api-404"),
        pytest.param(ValueError("bug"), None, id="bug: retried"),
        pytest.param(KeyError("vcpus"), None, id="key-error"),
    ]


@pytest.mark.parametrize("exc,want", _build_failures())
def test_build_failure_classification(exc, want):
    got = st.build_failure(exc)
    if want is None:
        assert got is None
    else:
        assert isinstance(got, st.BuildError)
        assert (got.code, got.message) == want
    if isinstance(exc, st.BuildError):
        assert got is exc


def test_back_off():
    assert [st.secret_retry_delay(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [st.reconcile_retry_delay(n) for n in range(1, 9)] == \
        [0.5, 1, 2, 4, 8, 16, 30, 30]


# --------------------------------------------------------------------------
# Stale domains and leftovers


@pytest.mark.parametrize("obj,want", [
    pytest.param(None, False, id="gone"),
    pytest.param(inst(), True, id="placed-here"),
    pytest.param(inst(placed=None), True, id="first-placement-being-recorded"),
    pytest.param(inst(placed="node-2"), False, id="evacuated"),
    pytest.param(inst(placed=""), False, id="empty-host"),
    pytest.param(inst(label="node-2"), False, id="relabelled"),
    pytest.param(inst(label=None), False, id="label-removed"),
    pytest.param(inst(uid="uid-2"), False, id="recreated-same-name"),
    pytest.param(inst(deleting=True), True, id="deleting-still-here"),
])
def test_placed_here(obj, want):
    assert st.placed_here(obj, "uid-1", HOST) is want


def test_is_mine_and_domains_of():
    from kova.agents.virt.domain import DomainMetadata

    assert st.is_mine(DomainMetadata(uid="u", namespace="ns", name="vm", host=HOST), HOST)
    assert not st.is_mine(DomainMetadata(uid="u", namespace="ns", name="vm", host="node-2"),
                          HOST)
    assert not st.is_mine(DomainMetadata(uid="u", namespace="ns", name="vm"), HOST)
    assert not st.is_mine(None, HOST)  # no Kova metadata: never touched
    refs = [st.DomainRef("u1", "ns", "vm"), st.DomainRef("u2", "ns", "other"),
            st.DomainRef("u3", "ns", "vm"), st.DomainRef("u4", "other", "vm")]
    assert st.domains_of(refs, ("ns", "vm")) == ["u1", "u3"]
    assert st.domains_of(refs, ("ns", "gone")) == []


@pytest.mark.parametrize("entry,is_dir,want", [
    ("u-leftover", True, True),
    ("u-known", True, False),     # an Instance of this host
    ("u-domain", True, False),    # a domain on the host
    ("_base", True, False),       # the image cache
    (".direct-io-probe.1", True, False),
    ("u-leftover", False, False),  # a file, not an instance directory
])
def test_leftover_candidate(entry, is_dir, want):
    assert st.leftover_candidate(entry, is_dir=is_dir, known_uids={"u-known"},
                                 domain_uids={"u-domain"}) is want


def test_stale_removed_message():
    assert st.stale_removed_message(inst(placed="node-2"), HOST) == (
        f"{HOST}: removed the stale copy of the domain (the Instance is now on node-2)")


# ----------------------------------------------------------------------
# Moves (resize): whose turn, and the phase the agent reports meanwhile


def _moving(step: str, source: str = "h1", dest: str = "h1") -> dict:
    return {"metadata": {"uid": "u", "name": "vm", "namespace": "ns",
                         "labels": {names.LABEL_HOST: source}},
            "spec": {}, "status": {"host": source, "migration": {
                "uuid": "m", "type": "resize", "step": step, "sourceHost": source,
                "destHost": dest}}}


@pytest.mark.parametrize("step,expected", [
    ("Claiming", st.Step.POWER), ("Moving", st.Step.MOVE),
    ("Verify", st.Step.POWER), ("Reverting", st.Step.REVERT),
    ("Reverted", st.Step.POWER)])
def test_move_steps_on_the_host(step, expected):
    assert st.next_step(_moving(step), "h1", True) is expected


def test_a_move_without_a_domain_builds_it_first():
    assert st.next_step(_moving("Moving"), "h1", False) is st.Step.BUILD


def test_move_phase_and_the_status_after_the_agents_part():
    assert st.move_phase(_moving("Moving")) == "Resizing"
    assert st.move_phase(_moving("Verify")) == "ResizeVerify"
    assert st.move_phase({"status": {}}) is None
    out = st.moved_status(_moving("Moving"), "m", step="Verify", was_running=True,
                                 now="2027-01-01T00:00:00Z")
    assert out["phase"] == "ResizeVerify"
    assert out["migration"]["verifyTime"] == "2027-01-01T00:00:00Z"
    assert out["migration"]["wasRunning"] is True
    assert st.moved_status(_moving("Moving"), "other", step="Verify",
                                  was_running=True, now="x") is None


# A move to another host: each step is one host's turn; the other host
# neither starts nor builds the guest meanwhile.
@pytest.mark.parametrize("step,placed_on,host,defined,expected", [
    ("Moving", "a", "a", True, st.Step.SEND),
    ("Copied", "a", "a", True, st.Step.WAIT),         # the operator's turn: not restarted
    ("Finishing", "b", "b", False, st.Step.FINISH),  # built from the copied disk, not the image
    ("Verify", "b", "b", True, st.Step.POWER),       # it runs on b now
    ("Reverting", "b", "b", True, st.Step.DROP),
    ("Reverting", "b", "b", False, st.Step.DROP),    # repeated after its domain went
    ("Returning", "b", "b", False, st.Step.WAIT),    # not built again on b
    ("Restoring", "a", "a", True, st.Step.RESTORE),
    ("Reverted", "a", "a", True, st.Step.WAIT),
    ("Moving", "a", "a", False, st.Step.SEND),       # no domain on the source: an error there
])
def test_move_steps_across_hosts(step, placed_on, host, defined, expected):
    obj = _moving(step, source="a", dest="b")
    obj["status"]["host"] = placed_on
    obj["metadata"]["labels"][names.LABEL_HOST] = placed_on
    assert st.next_step(obj, host, defined) is expected


def test_the_other_hosts_copy_is_kept_while_the_move_names_it():
    obj = _moving("Verify", source="a", dest="b")
    obj["status"]["host"] = "b"
    assert st.kept_for_move(obj, "u", "a") and st.kept_for_move(obj, "u", "b")
    assert not st.kept_for_move(obj, "other-uid", "a")
    assert not st.kept_for_move(obj, "u", "c")
    assert not st.kept_for_move(_moving("Verify"), "u", "h1")  # a resize in place
    obj["metadata"]["deletionTimestamp"] = "2027-01-01T00:00:00Z"
    assert not st.kept_for_move(obj, "u", "a")  # deleted: every copy goes
    assert not st.kept_for_move({"metadata": {"uid": "u"}, "status": {}}, "u", "a")


def test_an_agents_step_never_takes_a_move_back():
    # a late write of Copied (the source's) over Finishing is dropped
    assert st.moved_status(_moving("Finishing", "a", "b"), "m", step="Copied",
                           was_running=True, now="x") is None
    assert st.moved_status(_moving("Moving", "a", "b"), "m", step="Copied",
                           was_running=True, now="x")["migration"]["step"] == "Copied"
    assert st.moved_status(_moving("Reverting", "a", "b"), "m", step="Returning",
                           was_running=True, now="x")["phase"] == "Resizing"
    assert st.moved_status(_moving("Restoring", "a", "b"), "m", step="Reverted",
                           was_running=True, now="x") is not None
