"""``kubectl kova eject``: what the API component does with the request."""

from __future__ import annotations

import pytest

from kova.api.media import plan_eject


def _inst(**status) -> dict:
    return {"metadata": {"name": "vm", "namespace": "ns"},
            "spec": {"imageRef": {"name": "installer"}},
            "status": {"host": "h1", "powerState": "Running", **status}}


ISO = {"metadata": {"name": "installer"}, "spec": {"format": "iso"}}


@pytest.mark.parametrize("power", ["Running", "Paused", "Shutdown"])
def test_an_iso_booted_instance_is_ejected_by_its_agent(power):
    plan = plan_eject(_inst(powerState=power), ISO)
    assert plan.kind == "agent" and plan.target is None


@pytest.mark.parametrize("inst, image, reason, text", [
    (_inst(), {"metadata": {"name": "installer"}, "spec": {"format": "qcow2"}},
     "NoCdrom", "format qcow2, not iso"),
    (_inst(), {"metadata": {"name": "installer"}, "spec": {}}, "NoCdrom", "format qcow2"),
    (_inst(), None, "NoCdrom", "does not exist"),
    (_inst(cdrom={"ejected": True}), ISO, "AlreadyEjected", "ejected already"),
    (_inst(host=None), ISO, "NotPlaced", "not placed"),
    (_inst(migration={"step": "Moving"}), ISO, "Moving", "step Moving"),
    ({**_inst(), "metadata": {"name": "vm", "deletionTimestamp": "x"}}, ISO, "Deleting",
     "being deleted"),
])
def test_refusals(inst, image, reason, text):
    plan = plan_eject(inst, image)
    assert (plan.kind, plan.code, plan.reason) == ("refuse", 409, reason)
    assert text in plan.message
