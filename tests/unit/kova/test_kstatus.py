"""kstatus conditions (Reconciling, Stalled) of an Instance as the operator
(whole condition lists) and the agent (its own conditions, server-side
apply) write them: kova.kstatus.with_kstatus."""

from __future__ import annotations

import pytest

from kova.conditions import get_condition
from kova.crds import names
from kova.kstatus import conditions, with_kstatus


def _types(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def _instance(phase: str | None, conds: list[dict], generation: int = 2) -> dict:
    return {"metadata": {"name": "vm", "generation": generation},
            "status": {**({"phase": phase} if phase else {}), "conditions": conds}}


@pytest.mark.parametrize("phase, reconciling, stalled", [
    (None, "True", "False"), ("Pending", "True", "False"), ("Building", "True", "False"),
    ("Running", "False", "False"), ("Stopped", "False", "False"), ("Unknown", "True", "False"),
    ("Error", "False", "True"),
])
def test_conditions_of_each_phase(phase, reconciling, stalled) -> None:
    rows = {t: (s, r) for t, s, r, _m in conditions(phase, "NoValidHost", "no host")}
    assert rows[names.COND_RECONCILING][0] == reconciling
    assert rows[names.COND_STALLED][0] == stalled
    if phase == "Error":
        assert rows[names.COND_STALLED][1] == "NoValidHost"


def test_operator_patch_with_a_phase_explains_an_error_by_scheduled() -> None:
    current = _instance("Pending", [])
    scheduled = {"type": names.COND_SCHEDULED, "status": "False",
                 "reason": names.REASON_NO_VALID_HOST, "message": "no host has 64 vCPUs"}
    out = _types(with_kstatus({"phase": "Error", "conditions": [scheduled]}, current))
    assert out[names.COND_STALLED]["status"] == "True"
    assert out[names.COND_STALLED]["reason"] == names.REASON_NO_VALID_HOST
    assert out[names.COND_STALLED]["message"] == "no host has 64 vCPUs"
    assert out[names.COND_STALLED]["observedGeneration"] == 2
    assert out[names.COND_RECONCILING]["status"] == "False"
    assert out[names.COND_SCHEDULED] == scheduled


def test_a_phase_without_conditions_gets_the_current_list_with_kstatus() -> None:
    built = {"type": names.COND_BUILT, "status": "True", "reason": "Built", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
    current = _instance("Running", [built])
    out = with_kstatus({"phase": "Deleting"}, current)
    assert out["phase"] == "Deleting"
    types = _types(out)
    assert types[names.COND_BUILT] == built
    assert types[names.COND_RECONCILING]["status"] == "True"


def test_no_phase_keeps_the_other_writers_word() -> None:
    """The agent applies conditions without a phase (a build failure): the
    kstatus conditions the operator wrote for its phase stand, unchanged."""
    stalled = {"type": names.COND_STALLED, "status": "True", "reason": "MaxAttemptsExceeded",
               "message": "3 attempts", "lastTransitionTime": "2026-01-01T00:00:00Z",
               "observedGeneration": 1}
    reconciling = {"type": names.COND_RECONCILING, "status": "False", "reason": "Error",
                   "message": "Kova stopped trying: see Stalled",
                   "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}
    current = _instance("Error", [reconciling, stalled], generation=4)
    ready = {"type": names.COND_READY, "status": "False", "reason": "x", "message": "y"}
    out = _types(with_kstatus({"conditions": [ready]}, current))
    assert out[names.COND_STALLED] == stalled
    assert out[names.COND_RECONCILING] == reconciling
    assert out[names.COND_READY] == ready
    # nothing of the kind yet: made from the current phase
    out = _types(with_kstatus({"conditions": [ready]}, _instance("Running", [])))
    assert out[names.COND_RECONCILING]["status"] == "False"


def test_last_transition_time_holds_and_repeating_changes_nothing() -> None:
    reconciling = {"type": names.COND_RECONCILING, "status": "False", "reason": "Stopped",
                   "message": "phase Stopped: as the spec asks",
                   "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}
    current = _instance("Stopped", [reconciling])
    once = with_kstatus({"phase": "Running", "conditions": []}, current)
    rec = get_condition({"status": once}, names.COND_RECONCILING)
    assert rec is not None and rec["status"] == "False" and rec["reason"] == "Running"
    assert rec["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # the status held
    assert with_kstatus(once, current) == once
    # a status write that neither sets a phase nor conditions is left alone
    assert with_kstatus({"actions": []}, current) == {"actions": []}
