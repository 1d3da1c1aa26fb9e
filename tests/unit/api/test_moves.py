"""The move subresources' pure rules (kova.api.moves): when resize-confirm
and resize-revert are refused and what they record; when instances/migrate is refused (a move under way,
a phase that cannot move, the same host, a source or destination Down,
fenced or disabled) and the record it starts."""

from __future__ import annotations

import pytest

from kova.api import moves
from kova.crds.names import MigrationDecision


def inst(step: str | None = "Verify", decision: str | None = None,
         phase: str = "ResizeVerify") -> dict:
    status: dict = {"phase": phase, "host": "h1"}
    if step:
        status["migration"] = {"uuid": "m-1", "type": "resize", "step": step,
                               **({"decision": decision, "decidedBy": "bob"} if decision
                                  else {})}
    return {"metadata": {"name": "vm", "uid": "u-1"}, "status": status}


@pytest.mark.parametrize("body,decision,reason", [
    (inst(step=None, phase="Running"), "Confirm", "NotResized"),
    (inst(step="Moving", phase="Resizing"), "Confirm", "NotVerifying"),
    (inst(step="Claiming", phase="Resizing"), "Revert", "NotVerifying"),
    (inst(decision="Revert"), "Confirm", "AlreadyDecided"),
])
def test_decisions_refused_with_a_reason(body, decision, reason):
    refusal = moves.decision_refusal(body, decision)
    assert refusal is not None and refusal.code == 409 and refusal.reason == reason
    assert "vm" in refusal.message


def test_a_decision_is_recorded_once_on_the_same_migration():
    assert moves.decision_refusal(inst(), "Confirm") is None
    assert moves.decision_refusal(inst(decision="Confirm"), "Confirm") is None  # repeated
    patch = moves.with_decision(inst(), "m-1", MigrationDecision.REVERT, "alice")
    assert patch == {"migration": {"uuid": "m-1", "type": "resize", "step": "Verify",
                                   "decision": "Revert", "decidedBy": "alice"}}
    assert moves.with_decision(inst(), "other", "Revert", "alice") is None
    assert moves.with_decision(inst(decision="Revert"), "m-1", "Revert", "alice") is None
    assert moves.decided(inst(step=None, phase="Running"), "m-1")
    assert not moves.decided(inst(), "m-1")


def test_request_change_guards_the_uid():
    refusal, change, mig = moves.request_change(inst(), "resize-confirm", "alice", None, "r")
    assert refusal is None and mig == "m-1"
    assert change(inst())["status"]["migration"]["decision"] == "Confirm"
    other = inst()
    other["metadata"]["uid"] = "u-2"  # another Instance of the same name
    assert change(other) is None


@pytest.mark.parametrize("body,host,code,reason", [
    (inst(step="Verify"), None, 409, "MoveInProgress"),
    (inst(step=None, phase="Building"), None, 409, "NotMovable"),
    (inst(step=None, phase="Running"), "h1", 400, "SameHost"),
])
def test_migrate_refused_with_a_reason(body, host, code, reason):
    refusal = moves.migrate_refusal(body, host)
    assert refusal is not None and (refusal.code, refusal.reason) == (code, reason)
    assert "vm" in refusal.message


def test_migrate_starts_a_cold_migration_record():
    body = inst(step=None, phase="Running")
    body["status"]["resources"] = {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}
    assert moves.migrate_refusal(body, None) is None
    refusal, change, mig = moves.request_change(body, "migrate", "alice", "h2", "req-1")
    assert refusal is None and mig == ""
    status = change(body)["status"]
    m = status["migration"]
    assert (m["type"], m["mode"], m["step"], m["sourceHost"], m["requestedHost"]) == (
        "migrate", "cold", "Claiming", "h1", "h2")
    assert status["phase"] == "Resizing" and status["actions"][-1]["action"] == "migrate"
    assert change(inst(step="Claiming", phase="Resizing")) is None  # one started meanwhile


@pytest.mark.parametrize("host_obj,role,reason", [
    (None, "destination", "HostNotFound"),
    ({"status": {"state": "Down"}}, "source", "HostDown"),
    ({"spec": {"fenced": True}, "status": {"state": "Up"}}, "destination", "HostFenced"),
    ({"spec": {"enabled": False}, "status": {"state": "Up"}}, "destination", "HostDisabled"),
])
def test_a_host_that_cannot_take_part_refuses_the_migration(host_obj, role, reason):
    refusal = moves.host_refusal(host_obj, "h9", role)
    assert refusal is not None and refusal.reason == reason and "h9" in refusal.message
    assert moves.host_refusal({"spec": {}, "status": {"state": "Up"}}, "h9", role) is None
