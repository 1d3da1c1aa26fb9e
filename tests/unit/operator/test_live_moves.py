"""A live migration's pure rules, through each component's decisions:
instances/migrate?live=true and ?abort=true (kova.api.moves), the
operator's plan and records (kova.operator.instance.plan / moves), and the
agents' steps and records (kova.agents.instance.decisions / live)."""

from __future__ import annotations

import pytest

from kova.agents.instance import decisions
from kova.agents.instance import live as agent_live
from kova.agents.instance.decisions import Step
from kova.api import moves as api_moves
from kova.crds import names
from kova.crds.names import MigrationDecision, MigrationStep
from kova.operator.instance import moves
from kova.operator.instance.plan import Action, Facts, HostFacts, next_step

S = MigrationStep


def running(host: str = "a", mig: dict | None = None, phase: str = "Running") -> dict:
    status: dict = {"host": host, "phase": phase, "powerState": "Running",
                    "resources": {"vcpus": 1, "memoryMiB": 256, "diskGiB": 1},
                    "actions": [{"action": "migrate", "requestId": "req-1",
                                 "result": "InProgress"}]}
    if mig is not None:
        status["migration"] = mig
    return {"metadata": {"name": "vm", "namespace": "ns", "uid": "u-1", "generation": 1,
                         "finalizers": [names.FINALIZER_OPERATOR],
                         "labels": {names.LABEL_HOST: host}},
            "spec": {}, "status": status}


def live(step: str, **kw) -> dict:
    return {"uuid": "m-1", "type": "migrate", "mode": "live", "step": step,
            "sourceHost": "a", "destHost": "b", "requestId": "req-1",
            "oldResources": {"vcpus": 1, "memoryMiB": 256, "diskGiB": 1}, **kw}


# ---------------------------------------------------------------- the API
def test_a_live_migration_is_recorded_and_keeps_the_phase():
    patch = api_moves.new_migration(running(), "alice", None, "req-1", live=True)
    assert patch is not None and "phase" not in patch  # stays Running
    assert patch["migration"]["mode"] == "live" and patch["migration"]["step"] == S.CLAIMING
    cold = api_moves.new_migration(running(), "alice", None, "req-1")
    assert cold["phase"] == "Resizing" and cold["migration"]["mode"] == "cold"


def test_only_a_running_guest_is_live_migrated():
    stopped = running(phase="Stopped")
    stopped["status"]["powerState"] = "Shutoff"
    refusal = api_moves.migrate_refusal(stopped, None, live=True)
    assert refusal is not None and (refusal.code, refusal.reason) == (409, "NotRunning")
    assert "cold" in refusal.message
    assert api_moves.migrate_refusal(stopped, None) is None  # cold is fine


@pytest.mark.parametrize("mig,reason", [
    (None, "NotLiveMigrating"),
    ({**live(S.CLAIMING), "mode": "cold"}, "NotLiveMigrating"),
    (live(S.MIGRATED), "TooLate"),
    (live(S.FAILED), "TooLate"),
])
def test_abort_refused_with_a_reason(mig, reason):
    refusal = api_moves.abort_refusal(running(mig=mig))
    assert refusal is not None and refusal.code == 409 and refusal.reason == reason


@pytest.mark.parametrize("step", [S.CLAIMING, S.PREPARING, S.LIVE_MIGRATING])
def test_abort_is_recorded_once(step):
    inst = running(mig=live(step))
    refusal, change, mig_uuid = api_moves.request_change(inst, "migrate", "bob", None, "r",
                                                         abort=True)
    assert refusal is None and mig_uuid == "m-1"
    patch = change(inst)
    assert patch["status"]["migration"]["decision"] == MigrationDecision.ABORT
    assert patch["status"]["migration"]["decidedBy"] == "bob"
    inst["status"]["migration"] = patch["status"]["migration"]
    assert change(inst) is None  # already asked


# ---------------------------------------------------------------- the operator's plan
@pytest.mark.parametrize("mig,action", [
    (live(S.CLAIMING), Action.CLAIM_MOVE),
    (live(S.CLAIMING, decision="Abort"), Action.FAIL_LIVE),
    (live(S.PREPARING), Action.NOTHING),
    (live(S.PREPARING, decision="Abort"), Action.FAIL_LIVE),
    (live(S.LIVE_MIGRATING), Action.NOTHING),
    (live(S.LIVE_MIGRATING, decision="Abort"), Action.NOTHING),  # the source aborts it
    (live(S.MIGRATED), Action.FINISH_LIVE),
    (live(S.FAILED), Action.FAIL_LIVE),
])
def test_operator_steps_of_a_live_migration(mig, action):
    plan = next_step(running(mig=mig), Facts(host=HostFacts(exists=True)))
    assert [s.action for s in plan.steps] == [action]


def test_the_claim_goes_to_preparing_and_keeps_running():
    inst = running(mig=live(S.CLAIMING, destHost=None))
    out = moves.claimed(inst, "m-1", "b", inst["status"]["resources"], "claimed")
    assert "phase" not in out
    assert out["migration"]["step"] == S.PREPARING and out["migration"]["mode"] == "live"
    assert out["migration"]["destHost"] == "b"


def test_a_finished_live_migration_hands_over_without_a_confirm():
    inst = running(mig=live(S.MIGRATED, progress={"phase": "Completed", "downtimeMs": 40}))
    msg = moves.live_message(inst["status"]["migration"], ok=True)
    assert "downtime 40 ms" in msg
    out = moves.live_ended(inst, "m-1", ok=True, message=msg)
    assert out["migration"] is None and out["host"] == "b" and out["phase"] == "Running"
    cond = out["conditions"][-1]
    assert (cond["status"], cond["reason"]) == ("True", names.REASON_LIVE_MIGRATED)
    assert out["actions"][-1]["result"] == "Success"
    assert moves.live_ended(inst, "other", ok=True, message=msg) is None


def test_a_failed_live_migration_stays_on_the_source_and_says_why():
    inst = running(mig=live(S.FAILED, failure="Timeout: the migration took over 600 s"))
    msg = moves.live_message(inst["status"]["migration"], ok=False)
    assert "Timeout" in msg and "runs on a" in msg
    out = moves.live_ended(inst, "m-1", ok=False, message=msg)
    assert out["migration"] is None and "host" not in out and out["phase"] == "Running"
    cond = out["conditions"][-1]
    assert (cond["status"], cond["reason"]) == ("False", names.REASON_LIVE_MIGRATION_FAILED)
    assert out["actions"][-1]["result"] == "Error"
    aborted = moves.live_message(live(S.PREPARING, decision="Abort", decidedBy="bob"), ok=False)
    assert "aborted by bob" in aborted


# ---------------------------------------------------------------- the agents
@pytest.mark.parametrize("step,host,defined,want", [
    (S.CLAIMING, "a", True, Step.POWER),       # the source runs it as usual
    (S.PREPARING, "a", True, Step.PREPARE_LIVE),
    (S.LIVE_MIGRATING, "a", True, Step.LIVE_MIGRATE),
    (S.LIVE_MIGRATING, "a", False, Step.LIVE_MIGRATE),  # gone: it completed
    (S.MIGRATED, "a", False, Step.WAIT),       # never built again on the source
    (S.FAILED, "a", True, Step.POWER),
    (S.LIVE_MIGRATING, "b", True, Step.WAIT),  # arriving: not removed, not powered
    (S.MIGRATED, "b", True, Step.WAIT),
])
def test_agent_steps_of_a_live_migration(step, host, defined, want):
    inst = running(mig=live(step))
    if host == "b":
        inst["metadata"]["labels"][names.LABEL_HOST] = "b"
    assert decisions.next_step(inst, host, defined) is want


def test_the_phase_stays_what_the_guest_is_during_a_live_migration():
    assert decisions.move_phase(running(mig=live(S.LIVE_MIGRATING))) is None


def test_agent_writes_follow_the_steps():
    inst = running(mig=live(S.PREPARING))
    out = agent_live.step_status(inst, "m-1", S.LIVE_MIGRATING, destUri="qemu+tls://b/system",
                                 destDir="/var/lib/kova/instances/u-1")
    mig = out["status"]["migration"]
    assert mig["step"] == S.LIVE_MIGRATING and mig["destUri"] == "qemu+tls://b/system"
    # a late write never takes the record back
    assert agent_live.step_status(running(mig=live(S.FAILED)), "m-1", S.MIGRATED) is None
    assert agent_live.progress_status(running(mig=live(S.MIGRATED)), "m-1", {}) is None
    assert agent_live.step_status(inst, "m-1", S.FAILED, after=S.PREPARING) is not None


def test_paths_and_host_rewritten_for_the_destination():
    xml = (f'<domain xmlns:kova="{names.DOMAIN_XMLNS}"><metadata><kova:instance>'
           '<kova:host>a</kova:host></kova:instance></metadata>'
           '<os firmware="efi"><nvram template="/fw/VARS.fd">/src/u-1/nvram.fd</nvram></os>'
           '<devices><disk><source file="/src/u-1/disk.qcow2"/></disk>'
           '<disk><source file="/images/other.iso"/></disk>'
           '<serial><log file="/src/u-1/console.log"/></serial></devices></domain>')
    pm = agent_live.path_map(xml, "/src/u-1", "/dst/u-1/")
    assert pm == {"/src/u-1/disk.qcow2": "/dst/u-1/disk.qcow2",
                  "/src/u-1/console.log": "/dst/u-1/console.log",
                  "/src/u-1/nvram.fd": "/dst/u-1/nvram.fd"}
    out = agent_live.with_host(xml, "b")
    assert "<kova:host>b</kova:host>" in out and names.DOMAIN_XMLNS in out


def test_an_iso_guests_cdrom_points_at_the_destinations_cached_copy():
    xml = ('<domain><devices><disk device="disk"><source file="/src/u-1/disk.qcow2"/></disk>'
           '<disk device="cdrom"><source file="/src/_base/abc.iso"/></disk>'
           '<disk device="cdrom"><source file="/src/u-1/seed.iso"/></disk></devices></domain>')
    pm = agent_live.path_map(xml, "/src/u-1", "/dst/u-1",
                             cdrom=("/src/_base/abc.iso", "/cache/b/abc.iso"))
    assert pm == {"/src/u-1/disk.qcow2": "/dst/u-1/disk.qcow2",
                  "/src/u-1/seed.iso": "/dst/u-1/seed.iso",
                  "/src/_base/abc.iso": "/cache/b/abc.iso"}
    # without the destination's copy the source's cache path is never mapped
    assert "/src/_base/abc.iso" not in agent_live.path_map(xml, "/src/u-1", "/dst/u-1")
