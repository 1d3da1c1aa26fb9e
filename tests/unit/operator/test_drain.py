"""A host drain's pure rules (kova.operator.host.drainplan and the records
of kova.operator.instance.moves): how each Instance is moved, what a
finished move means, why one is left, the phase, status.drain and the
Drained condition; and the records pass the Instance CRD's schema (the
operator's drain tests against the API server: tests/integration/operator/
test_drain.py)."""

from __future__ import annotations

import pytest

from kova.crds import names
from kova.crds.models import Host, Instance
from kova.crds.names import DrainPhase, DrainPolicy
from kova.operator.host import drainplan as dp
from kova.operator.instance import moves


def inst(phase: str = "Running", power: str = "Running", **status) -> dict:
    return {"metadata": {"name": "vm", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"flavorRef": {"name": "small"}, "imageRef": {"name": "img"}},
            "status": {"host": "a", "phase": phase, "powerState": power,
                       "resources": {"vcpus": 1, "memoryMiB": 256, "diskGiB": 1}, **status}}


@pytest.mark.parametrize(("phase", "power", "policy", "want"), [
    ("Running", "Running", DrainPolicy.LIVE, True),
    ("Running", "Running", DrainPolicy.LIVE_THEN_COLD, True),
    ("Running", "Running", DrainPolicy.COLD, False),
    ("Stopped", "Shutdown", DrainPolicy.LIVE, False),  # stopped: always cold
])
def test_how_to_move(phase, power, policy, want) -> None:
    assert dp.how_to_move(inst(phase, power), policy, False) == (want, None)


def test_after_a_failed_live_migration_it_is_cold() -> None:
    assert dp.how_to_move(inst(), DrainPolicy.LIVE_THEN_COLD, True) == (False, None)


@pytest.mark.parametrize("phase", ["Building", "Scheduled", "Resizing", "Deleting"])
def test_a_passing_phase_waits(phase) -> None:
    assert dp.how_to_move(inst(phase), DrainPolicy.LIVE, False) == (None, None)


@pytest.mark.parametrize("phase", ["Error", "Paused", "Unknown"])
def test_a_phase_that_stays_is_left(phase) -> None:
    live, left = dp.how_to_move(inst(phase), DrainPolicy.LIVE, False)
    assert live is None and left is not None
    assert left.reason == names.DRAIN_LEFT_NOT_MOVABLE and phase in left.message


def test_outcome_from_the_action_history() -> None:
    started = {"action": "migrate", "requestId": "drain-1", "result": "InProgress"}
    assert dp.outcome(inst(actions=[started]), "drain-1") is None
    assert dp.outcome(inst(actions=[]), "drain-1") is None  # not seen yet
    done = {**started, "result": "Error"}
    assert dp.outcome(inst(actions=[done]), "drain-1") == "Error"


def _resized(reason: str, message: str) -> list[dict]:
    return [{"type": names.COND_RESIZED, "status": "False", "reason": reason,
             "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}]


def test_no_valid_host_of_a_group_member_is_the_group_policy() -> None:
    body = inst(conditions=_resized(names.REASON_NO_VALID_HOST,
                                    "no host: 1 host(s) rejected: b: server group pair "
                                    "anti-affinity"))
    assert dp.failure(body).reason == names.REASON_NO_VALID_HOST  # not a member
    body["spec"]["serverGroupRef"] = {"name": "pair"}
    left = dp.failure(body)
    assert left.reason == names.DRAIN_LEFT_SERVER_GROUP and "pair" in left.message
    # a member that found no host for another reason keeps that reason
    body["status"]["conditions"] = _resized(names.REASON_NO_VALID_HOST, "no host has 1 VCPU")
    assert dp.failure(body).reason == names.REASON_NO_VALID_HOST


def test_cold_fallback_only_with_live_then_cold_after_a_live_failure() -> None:
    failed = dp.Left(names.REASON_LIVE_MIGRATION_FAILED, "x", 0)
    live, cold = dp.Attempt("r", True, 0), dp.Attempt("r", False, 0)
    assert dp.falls_back_cold(live, failed, DrainPolicy.LIVE_THEN_COLD)
    assert not dp.falls_back_cold(live, failed, DrainPolicy.LIVE)
    assert not dp.falls_back_cold(cold, failed, DrainPolicy.LIVE_THEN_COLD)
    no_host = dp.Left(names.REASON_NO_VALID_HOST, "x", 0)
    assert not dp.falls_back_cold(live, no_host, DrainPolicy.LIVE_THEN_COLD)


@pytest.mark.parametrize(("on_host", "moving", "waiting", "want"), [
    (0, 0, 0, DrainPhase.DRAINED),
    (0, 1, 0, DrainPhase.DRAINING),  # a cold move waiting for its confirm
    (2, 0, 1, DrainPhase.DRAINING),
    (1, 0, 0, DrainPhase.STUCK),
])
def test_phase(on_host, moving, waiting, want) -> None:
    assert dp.phase(on_host, moving, waiting) == want


def test_status_and_condition_pass_the_host_schema() -> None:
    state = dp.DrainState(start="2026-01-01T00:00:00Z", moved=2)
    state.left[("ns", "member")] = dp.Left(names.DRAIN_LEFT_SERVER_GROUP, "no", 1.0)
    state.left[("ns", "gone")] = dp.Left("NoValidHost", "no", 1.0)  # no longer on the host
    drain = dp.drain_status(state, [("ns", "member")], 0)
    assert drain["phase"] == DrainPhase.STUCK and drain["instances"] == 1
    assert [e["name"] for e in drain["left"]] == ["member"]
    status, reason, message = dp.drained_condition(drain)
    assert (status, reason) == ("False", names.HOST_REASON_DRAIN_STUCK)
    assert "ns/member (ServerGroupPolicy)" in message
    Host.model_validate({"metadata": {"name": "a"}, "spec": {"drain": True},
                         "status": {"drain": drain}})
    done = dp.drain_status(dp.DrainState(start="2026-01-01T00:00:00Z", moved=3), [], 0)
    assert dp.drained_condition(done)[:2] == ("True", names.HOST_REASON_DRAINED)


def test_the_drain_records_a_migration_as_instances_migrate_does() -> None:
    body = inst()
    out = moves.drain_started(body, True, "drain-1", now="2026-01-01T00:00:00Z")
    assert out is not None and "phase" not in out  # live: stays Running
    mig = out["migration"]
    assert (mig["mode"], mig["step"], mig["user"], mig["requestId"], mig["sourceHost"]) == (
        "live", "Claiming", names.DRAIN_USER, "drain-1", "a")
    assert out["actions"][-1]["result"] == "InProgress"
    Instance.model_validate({**body, "status": {**body["status"], **out}})
    cold = moves.drain_started(inst("Stopped", "Shutdown"), False, "drain-2")
    assert cold is not None and cold["phase"] == "Resizing" and cold["migration"]["mode"] == "cold"
    # nothing when a move is recorded, or live for a guest that is not running
    assert moves.drain_started(inst(migration=mig), True, "drain-3") is None
    assert moves.drain_started(inst("Stopped", "Shutdown"), True, "drain-3") is None


def test_the_drain_confirms_only_a_move_waiting_in_verify() -> None:
    mig = {"uuid": "m-1", "step": "Verify"}
    assert moves.drain_confirmed(inst(migration=mig), "m-1") == {"migration": {
        **mig, "decision": "Confirm", "decidedBy": names.DRAIN_USER}}
    assert moves.drain_confirmed(inst(migration={**mig, "step": "Moving"}), "m-1") is None
    assert moves.drain_confirmed(inst(migration={**mig, "decision": "Revert"}), "m-1") is None
    assert moves.drain_confirmed(inst(migration=mig), "m-2") is None
