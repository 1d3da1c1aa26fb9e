"""When ``instances/snapshot`` is refused (kova.api.snapshots.refusal)."""

from __future__ import annotations

import pytest

from kova.api.snapshots import refusal


def _inst(phase: str | None = "Running", host: str | None = "h1", **status) -> dict:
    st = {k: v for k, v in {"phase": phase, "host": host, **status}.items() if v is not None}
    return {"metadata": {"name": "web"}, "status": st}


def test_a_running_or_stopped_placed_instance_may_be_snapshotted() -> None:
    assert refusal(_inst("Running"), "golden") is None
    assert refusal(_inst("Stopped"), "web.golden-2") is None


@pytest.mark.parametrize("image,code,reason,text", [
    ("", 400, "BadRequest", "needs the name of the TenantImage"),
    ("Golden", 400, "BadRequest", "not a valid TenantImage name"),
    ("a_b", 400, "BadRequest", "not a valid TenantImage name"),
    ("x" * 254, 400, "BadRequest", "not a valid TenantImage name"),
])
def test_bad_image_names(image, code, reason, text) -> None:
    got = refusal(_inst(), image)
    assert got is not None and (got.code, got.reason) == (code, reason) and text in got.message


@pytest.mark.parametrize("inst,reason", [
    (_inst("Pending", None), "NotSnapshottable"),
    (_inst("Error"), "NotSnapshottable"),
    (_inst("Running", None), "NotSnapshottable"),
    (_inst("Resizing", migration={"type": "Resize", "step": "Moving"}), "MoveInProgress"),
])
def test_instances_that_cannot_be_snapshotted_now(inst, reason) -> None:
    got = refusal(inst, "golden")
    assert got is not None and got.code == 409 and got.reason == reason, got
