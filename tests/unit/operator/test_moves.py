"""Resize and cold migration in the operator's pure decisions: when
next_step starts, refuses, claims, confirms (asked for or after the confirm
window) and reverts a move, and the status records of :mod:`moves`."""

from __future__ import annotations

import pytest

from kova.crds import names
from kova.crds.names import MigrationDecision, MigrationStep
from kova.operator.instance import moves
from kova.operator.instance.plan import Action, Facts, HostFacts, next_step

from .instances import HOST, instance

A = Action
UP = HostFacts(exists=True)
DOWN = HostFacts(exists=True, down=True)
SMALL = {"vcpus": 1, "memoryMiB": 256, "diskGiB": 1}
LARGE = {"vcpus": 2, "memoryMiB": 512, "diskGiB": 2}
T0 = 1_800_000_000.0
T0_RFC = "2027-01-15T08:00:00Z"  # == T0


def placed(phase: str = names.InstancePhase.RUNNING, *, resources: dict | None = None,
           migration: dict | None = None, conditions: list[dict] | None = None) -> dict:
    body = instance(host=HOST, phase=phase, conditions=conditions)
    body["status"]["resources"] = dict(resources or SMALL)
    body["status"]["powerState"] = names.PowerState.RUNNING
    if migration is not None:
        body["status"]["migration"] = migration
    return body


def mig(step: str, **extra) -> dict:
    return {"uuid": "0f0e0d0c-0b0a-4908-8706-050403020100", "type": "resize", "step": step,
            "sourceHost": HOST, "destHost": HOST, "oldResources": SMALL,
            "newResources": LARGE, "requestId": "req-1", "startTime": T0_RFC, **extra}


def facts(want: dict | None = None, window: float = 0.0, now: float = T0,
          host: HostFacts = UP) -> Facts:
    return Facts(host=host, wanted_size=want, confirm_window=window, now=now)


def resized_false(generation: int = 2, reason: str = names.REASON_RESIZE_REFUSED) -> dict:
    return {"type": names.COND_RESIZED, "status": "False", "reason": reason, "message": "x",
            "observedGeneration": generation, "lastTransitionTime": T0_RFC}


CASES = [
    ("same size: nothing", placed(), facts(SMALL), (A.NOTHING,)),
    ("flavor missing: nothing", placed(), facts(None), (A.NOTHING,)),
    ("bigger: start", placed(), facts(LARGE), (A.START_RESIZE,)),
    ("stopped, bigger: start", placed(names.InstancePhase.STOPPED), facts(LARGE),
     (A.START_RESIZE,)),
    ("more vCPU, same disk: start", placed(), facts({**SMALL, "vcpus": 4}),
     (A.START_RESIZE,)),
    ("smaller disk: refused", placed(resources=LARGE), facts(SMALL), (A.REFUSE_RESIZE,)),
    ("refusal recorded for this generation: nothing",
     placed(resources=LARGE, conditions=[resized_false()]), facts(SMALL), (A.NOTHING,)),
    ("refusal of an older generation: refused again",
     placed(resources=LARGE, conditions=[resized_false(generation=1)]), facts(SMALL),
     (A.REFUSE_RESIZE,)),
    ("reverted at this generation: not started again",
     placed(conditions=[{**resized_false(), "status": "True",
                         "reason": names.REASON_REVERTED}]), facts(LARGE), (A.NOTHING,)),
    ("building: no resize yet", placed(names.InstancePhase.BUILDING), facts(LARGE),
     (A.NOTHING,)),
    ("host Down: no move", placed(), facts(LARGE, host=DOWN), (A.MARK_UNKNOWN,)),
    ("Claiming: claim", placed(names.InstancePhase.RESIZING, migration=mig("Claiming")),
     facts(LARGE), (A.CLAIM_MOVE,)),
    ("Moving: the agent's turn", placed(names.InstancePhase.RESIZING,
                                        migration=mig("Moving")), facts(LARGE), (A.NOTHING,)),
    ("Reverting: the agent's turn", placed(names.InstancePhase.RESIZING,
                                           migration=mig("Reverting")), facts(LARGE),
     (A.NOTHING,)),
    ("Reverted: finish", placed(names.InstancePhase.RESIZING, migration=mig("Reverted")),
     facts(LARGE), (A.FINISH_REVERT,)),
    ("Copied: hand it over to the destination",
     placed(names.InstancePhase.RESIZING, migration=mig("Copied")), facts(LARGE),
     (A.HAND_OVER,)),
    ("Finishing: the destination agent's turn",
     placed(names.InstancePhase.RESIZING, migration=mig("Finishing")), facts(LARGE),
     (A.NOTHING,)),
    ("Returning: hand it back to the source",
     placed(names.InstancePhase.RESIZING, migration=mig("Returning")), facts(LARGE),
     (A.HAND_BACK,)),
    ("Restoring: the source agent's turn",
     placed(names.InstancePhase.RESIZING, migration=mig("Restoring")), facts(LARGE),
     (A.NOTHING,)),
    ("Verify, confirmed", placed(names.InstancePhase.RESIZE_VERIFY,
                                 migration=mig("Verify", decision="Confirm")),
     facts(LARGE), (A.CONFIRM_MOVE,)),
    ("Verify, revert asked", placed(names.InstancePhase.RESIZE_VERIFY,
                                    migration=mig("Verify", decision="Revert")),
     facts(LARGE), (A.REVERT_MOVE,)),
    ("Verify, no window: waits", placed(names.InstancePhase.RESIZE_VERIFY,
                                        migration=mig("Verify", verifyTime=T0_RFC)),
     facts(LARGE, window=0), (A.NOTHING,)),
    ("Verify, window not over: waits",
     placed(names.InstancePhase.RESIZE_VERIFY, migration=mig("Verify", verifyTime=T0_RFC)),
     facts(LARGE, window=60, now=T0 + 59), (A.NOTHING,)),
    ("Verify, window over: confirmed",
     placed(names.InstancePhase.RESIZE_VERIFY, migration=mig("Verify", verifyTime=T0_RFC)),
     facts(LARGE, window=60, now=T0 + 60), (A.CONFIRM_MOVE,)),
]


@pytest.mark.parametrize("body,f,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_next_step_of_a_move(body, f, expected):
    assert next_step(body, f).actions == expected


def test_waiting_for_a_confirm_looks_again_when_the_window_ends():
    body = placed(names.InstancePhase.RESIZE_VERIFY, migration=mig("Verify", verifyTime=T0_RFC))
    step = next_step(body, facts(LARGE, window=60, now=T0 + 20)).first
    assert step.action is A.NOTHING and step.after == pytest.approx(40)


def test_auto_confirm_is_marked_as_such_and_a_user_confirm_is_not():
    body = placed(names.InstancePhase.RESIZE_VERIFY, migration=mig("Verify", verifyTime=T0_RFC))
    assert next_step(body, facts(LARGE, window=1, now=T0 + 5)).first.reason
    asked = placed(names.InstancePhase.RESIZE_VERIFY,
                   migration=mig("Verify", decision=MigrationDecision.CONFIRM))
    assert next_step(asked, facts(LARGE)).first.reason == ""


def test_refusal_names_the_field_and_both_sizes():
    body = placed(resources=LARGE)
    why = moves.refusal(body, SMALL)
    assert why is not None and why.startswith("spec.flavorRef:")
    assert "diskGiB 1" in why and "2 GiB" in why
    inline = placed(resources=LARGE)
    inline["spec"] = {"resources": SMALL, "imageRef": {"name": "cirros"}}
    assert moves.refusal(inline, SMALL).startswith("spec.resources:")
    assert moves.refusal(body, {**LARGE, "vcpus": 1}) is None


def test_wanted_size_from_flavor_or_inline():
    assert moves.wanted_size({"flavorRef": {"name": "f"}}, {**LARGE, "extraSpecs": {}}) == LARGE
    assert moves.wanted_size({"flavorRef": {"name": "f"}}, None) is None
    assert moves.wanted_size({"resources": SMALL}, None) == SMALL


def test_started_records_the_migration_before_anything_else():
    body = placed()
    m = moves.new_migration(body, "resize", user="kova-operator", now=T0_RFC)
    assert m["step"] == MigrationStep.CLAIMING and m["oldResources"] == SMALL
    assert m["sourceHost"] == HOST and len(m["uuid"]) == 36
    out = moves.started(body, m, "resizing", now=T0_RFC)
    assert out["phase"] == names.InstancePhase.RESIZING and out["migration"] == m
    assert out["actions"][-1]["action"] == "resize"
    assert out["actions"][-1]["result"] == names.ActionResult.IN_PROGRESS
    # a second start finds the record: nothing is written
    assert moves.started(placed(migration=m), m, "again") is None


def test_claimed_only_from_claiming_of_the_same_migration():
    m = mig("Claiming")
    body = placed(names.InstancePhase.RESIZING, migration=m)
    out = moves.claimed(body, m["uuid"], "other", LARGE, "claimed")
    assert out["migration"]["step"] == MigrationStep.MOVING
    assert out["migration"]["destHost"] == "other" and out["resources"] == LARGE
    assert moves.claimed(body, "another-uuid", "other", LARGE, "x") is None
    assert moves.claimed(placed(migration=mig("Moving")), m["uuid"], "o", LARGE, "x") is None


def test_finished_confirm_keeps_the_new_size_and_revert_restores_the_old():
    body = placed(names.InstancePhase.RESIZE_VERIFY, resources=LARGE,
                  migration={**mig("Verify"), "sourceHost": "a", "destHost": "b"})
    body["status"]["host"] = "b"
    body["status"]["actions"] = [{"action": "resize", "requestId": "req-1", "user": "u",
                                  "startTime": T0_RFC, "result": "InProgress"}]
    confirmed = moves.finished(body, mig("x")["uuid"], reverted=False, message="ok")
    assert confirmed["migration"] is None and "resources" not in confirmed
    assert confirmed["actions"][-1]["result"] == names.ActionResult.SUCCESS
    assert confirmed["phase"] == names.InstancePhase.RUNNING
    reverted = moves.finished(body, mig("x")["uuid"], reverted=True, message="back")
    assert reverted["resources"] == SMALL and reverted["host"] == "a"
    cond = next(c for c in reverted["conditions"] if c["type"] == names.COND_RESIZED)
    assert cond["reason"] == names.REASON_REVERTED


def test_aborted_drops_the_record_and_refuses_this_generation():
    m = mig("Claiming")
    body = placed(names.InstancePhase.RESIZING, migration=m)
    out = moves.aborted(body, m["uuid"], names.REASON_NO_VALID_HOST, "no room")
    assert out["migration"] is None
    cond = next(c for c in out["conditions"] if c["type"] == names.COND_RESIZED)
    assert cond["status"] == "False" and cond["observedGeneration"] == 2
    # once claimed, a move is never aborted this way
    assert moves.aborted(placed(migration=mig("Moving")), m["uuid"], "r", "m") is None


def test_claimed_on_another_host_is_a_cold_move_and_hands_over_once():
    m = mig("Claiming")
    body = placed(names.InstancePhase.RESIZING, migration=m)
    out = moves.claimed(body, m["uuid"], "other", SMALL, "claimed")
    assert out["migration"]["mode"] == "cold"
    assert "mode" not in moves.claimed(body, m["uuid"], HOST, LARGE, "x")["migration"]
    copied = placed(names.InstancePhase.RESIZING,
                    migration={**m, "step": "Copied", "destHost": "other"})
    out = moves.handed(copied, m["uuid"], "Copied", "other", "Finishing", "handed")
    assert out["host"] == "other" and out["migration"]["step"] == "Finishing"
    assert moves.handed(copied, m["uuid"], "Returning", HOST, "Restoring", "x") is None
    assert moves.handed(copied, "another-uuid", "Copied", "other", "Finishing", "x") is None
