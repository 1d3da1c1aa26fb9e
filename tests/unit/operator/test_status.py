"""The pure builders of an Instance's status patches and messages, and the
build-attempt history helpers."""

from __future__ import annotations

import pytest

from kova.conditions import get_condition
from kova.crds import names
from kova.operator.instance import status as st

from .instances import HOST, build_failed, instance

NOW = "2026-02-03T04:05:06Z"
SIZE = {"vcpus": 1, "memoryMiB": 512, "diskGiB": 1}


def cond(status: dict, type_: str) -> dict:
    return get_condition({"status": status}, type_) or {}


def scheduled(current: dict, **kw) -> dict | None:
    args = dict(host=HOST, alternates=["compute-2"], attempts=1, size=SIZE,
                reason=names.REASON_SCHEDULED, message="Scheduled to host compute-1", now=NOW)
    return st.scheduled(current, **{**args, **kw})


def test_scheduled_records_host_attempts_size_and_condition():
    out = scheduled(instance())
    assert out["phase"] == names.InstancePhase.SCHEDULED
    assert (out["host"], out["alternateHosts"], out["attempts"], out["resources"]) == \
        (HOST, ["compute-2"], 1, SIZE)
    assert out["observedGeneration"] == 2
    c = cond(out, names.COND_SCHEDULED)
    assert (c["status"], c["reason"], c["lastTransitionTime"], c["observedGeneration"]) == \
        ("True", names.REASON_SCHEDULED, NOW, 2)
    assert cond(out, names.COND_BUILT) == {}


def test_scheduled_without_alternates_clears_them():
    assert scheduled(instance(), alternates=[])["alternateHosts"] is None


def test_scheduled_is_none_when_already_recorded():
    current = instance(host=HOST, attempts=1, conditions=[
        {"type": names.COND_SCHEDULED, "status": "True", "reason": names.REASON_SCHEDULED,
         "message": "m", "lastTransitionTime": NOW}])
    assert scheduled(current) is None
    assert scheduled(current, attempts=2) is not None  # a reschedule is new
    assert scheduled(current, host="compute-2") is not None


def test_rescheduled_resets_built_and_keeps_other_conditions():
    current = instance(host=HOST, attempts=1, built=build_failed(), conditions=[
        {"type": names.COND_READY, "status": "False", "reason": "Building", "message": ""}])
    out = scheduled(current, host="compute-2", attempts=2, reason=names.REASON_RESCHEDULED,
                    message="Rescheduled", reset_built="build failed on compute-1: x")
    built = cond(out, names.COND_BUILT)
    assert (built["status"], built["reason"], built["message"]) == \
        ("Unknown", names.REASON_RESCHEDULED, "build failed on compute-1: x")
    assert cond(out, names.COND_READY)["reason"] == "Building"
    assert [c["type"] for c in out["conditions"]] == [
        names.COND_READY, names.COND_BUILT, names.COND_SCHEDULED]


def test_waiting_is_pending_with_the_reason():
    out = st.waiting(instance(), names.REASON_NO_VALID_HOST, "no room", now=NOW)
    assert out["phase"] == names.InstancePhase.PENDING
    c = cond(out, names.COND_SCHEDULED)
    assert (c["status"], c["reason"], c["message"]) == ("False", names.REASON_NO_VALID_HOST,
                                                        "no room")


def test_waiting_never_puts_a_placed_instance_back_to_pending():
    assert st.waiting(instance(host=HOST), names.REASON_NO_VALID_HOST, "no room") is None


def test_waiting_recorded():
    out = st.waiting(instance(), names.REASON_FLAVOR_NOT_FOUND, "flavor small not found")
    current = instance()
    current["status"] = out
    assert st.waiting_recorded(current, names.REASON_FLAVOR_NOT_FOUND, "flavor small not found")
    assert not st.waiting_recorded(current, names.REASON_FLAVOR_NOT_FOUND, "other message")
    assert not st.waiting_recorded(current, names.REASON_NO_VALID_HOST,
                                   "flavor small not found")
    assert not st.waiting_recorded(instance(), names.REASON_FLAVOR_NOT_FOUND, "x")


def test_error_keeps_or_clears_the_host():
    kept = st.error(instance(host=HOST), names.REASON_INVALID_REQUEST, "bad", now=NOW)
    assert kept["phase"] == names.InstancePhase.ERROR and "host" not in kept
    assert cond(kept, names.COND_SCHEDULED)["reason"] == names.REASON_INVALID_REQUEST
    cleared = st.error(instance(host=HOST), names.REASON_MAX_ATTEMPTS, "3 times",
                       clear_host=True)
    assert cleared["host"] is None and cleared["alternateHosts"] is None


def test_unknown_on_a_down_host():
    out = st.unknown(instance(host=HOST, phase=names.InstancePhase.RUNNING), "Down", now=NOW)
    assert (out["phase"], out["powerState"]) == (names.InstancePhase.UNKNOWN,
                                                 names.PowerState.UNKNOWN)
    ready = cond(out, names.COND_READY)
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "Unknown", names.REASON_HOST_DOWN, "Down")
    assert "host" not in out  # left where it is


def test_evacuation_failed_touches_only_the_scheduled_condition():
    out = st.evacuation_failed(instance(host=HOST), "cannot evacuate", now=NOW)
    assert set(out) == {"conditions"}
    c = cond(out, names.COND_SCHEDULED)
    assert (c["status"], c["reason"]) == ("False", names.REASON_EVACUATION_FAILED)
    current = instance(host=HOST)
    current["status"].update(out)
    assert st.evacuation_failure_recorded(current, "cannot evacuate")
    assert not st.evacuation_failure_recorded(current, "another reason")


def test_retrying_starts_over():
    current = instance(host=HOST, attempts=3, phase=names.InstancePhase.ERROR,
                       built=build_failed("ImageDownloadFailed: x"))
    out = st.retrying(current, "Image changed", now=NOW)
    assert out["phase"] == names.InstancePhase.PENDING
    assert (out["host"], out["alternateHosts"], out["attempts"]) == (None, None, None)
    assert cond(out, names.COND_SCHEDULED)["reason"] == names.REASON_RETRYING
    built = cond(out, names.COND_BUILT)
    assert (built["status"], built["reason"]) == ("Unknown", names.REASON_RETRYING)


def test_deleting():
    assert st.deleting(instance()) == {"phase": names.InstancePhase.DELETING}


def test_transition_time_kept_while_the_status_holds():
    first = st.waiting(instance(), names.REASON_NO_VALID_HOST, "a", now=NOW)
    current = instance()
    current["status"] = first
    again = st.waiting(current, names.REASON_NO_VALID_HOST, "b", now="2030-01-01T00:00:00Z")
    assert cond(again, names.COND_SCHEDULED)["lastTransitionTime"] == NOW
    placed = scheduled(current, now="2030-01-01T00:00:00Z")
    assert cond(placed, names.COND_SCHEDULED)["lastTransitionTime"] == "2030-01-01T00:00:00Z"


def test_builders_do_not_touch_the_instance():
    import copy

    current = instance(host=HOST, attempts=1, built=build_failed())
    before = copy.deepcopy(current)
    scheduled(current, attempts=2, reset_built="x")
    st.waiting(current, "R", "m")
    st.error(current, "R", "m", clear_host=True)
    st.unknown(current, "m")
    st.evacuation_failed(current, "m")
    st.retrying(current, "m")
    assert current == before


# ============================================================ messages
@pytest.mark.parametrize("alternates, adopted, expected", [
    ([], False, "Scheduled to host h1"),
    (["h2", "h3"], False, "Scheduled to host h1 (alternates: h2, h3)"),
    ([], True, "Scheduled to host h1 (claim found in Placement)"),
])
def test_scheduled_message(alternates, adopted, expected):
    assert st.scheduled_message("h1", alternates, adopted) == expected


def test_messages():
    assert st.rescheduled_message("h2", "h1", 2, 3) == (
        "Rescheduled to host h2 after the build failed on h1 (attempt 2 of 3)")
    assert st.evacuated_message("h1", "SpecFenced", "h2", False) == (
        "Evacuated from fenced host h1 (SpecFenced) to host h2")
    assert st.evacuated_message("h1", "SpecFenced", "h2", True).endswith(
        "(allocation already moved)")
    assert st.evacuation_failed_message("h1", "no room") == (
        "cannot evacuate from fenced host h1: no room")
    assert "(last renewed 2026-01-01T00:00:00Z)" in st.unknown_message(
        "h1", "2026-01-01T00:00:00Z")
    assert "last renewed" not in st.unknown_message("h1", None)
    assert st.image_retry_message("cirros", "u/1", "u/2") == (
        "Image cirros changed since the build failed (u/1 -> u/2): scheduling again")


# ============================================================ build attempts
def test_attempt_history():
    cond_ = {"reason": names.REASON_BUILD_FAILED, "message": "HypervisorError: x",
             "lastTransitionTime": NOW}
    first = st.with_attempt([], 1, "h1", cond_)
    assert first == [{"attempt": 1, "host": "h1", "reason": names.REASON_BUILD_FAILED,
                      "message": "HypervisorError: x", "time": NOW}]
    assert st.with_attempt(first, 1, "h1", cond_) is None  # once
    second = st.with_attempt(first, 2, "h2", {})
    assert [h["host"] for h in second] == ["h1", "h2"]
    assert second[1]["reason"] == names.REASON_BUILD_FAILED
    assert st.describe_attempts(second) == (
        "attempt 1 on h1: BuildFailed: HypervisorError: x; attempt 2 on h2: BuildFailed: ")
    assert st.attempts_history(instance(history=second)) == second
    assert st.attempts_history(instance()) == []
    broken = instance()
    broken["metadata"]["annotations"] = {names.ANNOTATION_ATTEMPTS: "{not json"}
    assert st.attempts_history(broken) == []


@pytest.mark.parametrize("message, code", [
    ("DiskTooSmall: image 20 GiB", "DiskTooSmall"),
    ("HypervisorError: boom: more", "HypervisorError"),
    ("no code at all", "no code at all"),
    ("", ""),
])
def test_failure_code(message, code):
    assert st.failure_code({"message": message}) == code


def test_is_build_failed():
    assert st.is_build_failed(instance(built=build_failed()))
    assert not st.is_build_failed(instance(built=("False", names.REASON_BUILDING, "")))
    assert not st.is_build_failed(instance())


@pytest.mark.parametrize("reason, action", [
    (names.REASON_SCHEDULED, names.InstanceActionName.CREATE),
    (names.REASON_RESCHEDULED, names.InstanceActionName.RESCHEDULE),
    (names.REASON_EVACUATED, names.InstanceActionName.EVACUATE),
])
def test_scheduled_adds_the_decision_to_the_action_history(reason, action):
    earlier = {"action": "stop", "requestId": "req-1", "user": "alice",
               "startTime": NOW, "finishTime": NOW, "result": "Success"}
    current = instance()
    current["status"] = {"actions": [earlier]}
    out = scheduled(current, reason=reason, message="decided")
    assert out["actions"][0] == earlier
    entry = out["actions"][1]
    assert (entry["action"], entry["user"], entry["message"], entry["result"]) == \
        (action, names.COMPONENT_OPERATOR, "decided", "Success")
    assert entry["requestId"].startswith("req-") and entry["requestId"] != "req-1"
    assert entry["finishTime"] == entry["startTime"]
    assert current["status"]["actions"] == [earlier]  # the Instance is not touched


def test_placement_action_leaves_the_history_alone_for_other_reasons():
    history = [{"action": "create", "requestId": "req-1"}]
    assert st.placement_action(history, names.REASON_NO_VALID_HOST, "m") is history
    assert st.placement_action(None, names.REASON_NO_VALID_HOST, "m") is None
    full = [{"action": "start", "requestId": f"req-{i}"} for i in range(names.MAX_ACTIONS)]
    out = st.placement_action(full, names.REASON_SCHEDULED, "m")
    assert len(out) == names.MAX_ACTIONS
    assert out[0]["requestId"] == "req-1" and out[-1]["action"] == "create"
