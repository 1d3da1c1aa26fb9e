"""The move subresources' pure rules (kova.api.moves): when resize-confirm
and resize-revert are refused and what they record; instances/migrate's
refusal while cold migration between hosts is not available."""

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


def test_migrate_is_refused_while_cold_migration_is_not_available():
    refusal = moves.migrate_refusal(inst(step=None, phase="Running"), None)
    assert refusal is not None and refusal.code == 501 and "kubectl kova resize" in \
        refusal.message
