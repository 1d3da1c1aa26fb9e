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


def test_the_image_of_a_snapshot_action_is_its_own_field_else_older_places() -> None:
    from kova.api.snapshot_tasks import _image_of

    action = {"requestId": "req-1", "image": "golden", "message": "attempt 2: lost"}
    assert _image_of(action, {"requestId": "req-1", "image": "other"}) == "golden"
    older = {"requestId": "req-1", "message": "snapshot to TenantImage web.v2"}
    assert _image_of(older, {"requestId": "req-1", "image": "from-progress"}) == "from-progress"
    assert _image_of(older, {"requestId": "req-0", "image": "not-this"}) == "web.v2"
    assert _image_of({"requestId": "req-1"}, {}) == ""


def test_an_in_progress_entry_is_updated_and_an_ended_one_left_alone() -> None:
    from kova.api.snapshot_tasks import _update

    acts = [{"requestId": "a", "result": "Success", "message": "done"},
            {"requestId": "b", "result": "InProgress", "attempt": 1}]
    got = _update(acts, "b", attempt=2, message="x" * 2000)
    assert got is not None and got[0] == acts[0]
    assert got[1]["attempt"] == 2 and len(got[1]["message"]) == 1024
    assert _update(acts, "a", attempt=2) is None  # ended: nothing to write
    assert _update(acts, "gone", attempt=2) is None


def test_the_attempts_of_a_lost_snapshot_in_words() -> None:
    from kova.api.snapshots import attempts_text

    assert attempts_text(1) == "taken once"
    assert attempts_text(3) == "taken 3 times, lost each time"


@pytest.mark.parametrize("quiesce", ["required", "auto", "off"])
def test_each_quiesce_mode_is_accepted(quiesce) -> None:
    assert refusal(_inst(), "golden", quiesce) is None


def test_an_unknown_quiesce_mode_is_refused_naming_the_field() -> None:
    got = refusal(_inst(), "golden", "always")
    assert got is not None and (got.code, got.reason) == (400, "BadRequest")
    assert got.message.startswith("quiesce: 'always' is not one of required, auto, off")


def test_a_snapshots_tenant_image_at_its_request() -> None:
    """The TenantImage the API component creates at a snapshot's request:
    saving, no source, annotated with the Instance and the request; its
    status Saving, then SnapshotFailed with the reason and what to do."""
    from kova.api import placeholders

    inst = {"metadata": {"namespace": "team-a", "name": "web-1", "uid": "i-1"}}
    body = placeholders.body(inst, "golden", "req-1", "alice")
    assert body["spec"] == {"saving": True, "format": "qcow2"}
    assert body["metadata"]["annotations"] == {
        "kova.dev/snapshot-of": "team-a/web-1", "kova.dev/snapshot-request": "req-1",
        "kova.dev/requested-by": "alice"}
    assert "ownerReferences" not in body["metadata"]
    obj = {**body, "metadata": {**body["metadata"], "uid": "t-1", "generation": 1}}
    assert placeholders.is_placeholder_of(obj, "req-1")
    assert not placeholders.is_placeholder_of(obj, "req-2")
    assert not placeholders.is_placeholder_of({**obj, "spec": {"sha256": "a" * 64}}, "req-1")
    (cond,) = placeholders.saving_status(obj, inst, "req-1")["status"]["conditions"]
    assert (cond["status"], cond["reason"]) == ("False", "Saving") and "req-1" in cond["message"]
    (cond,) = placeholders.failed_status(obj, inst, "req-1", "NoImageStore: none")[
        "status"]["conditions"]
    assert (cond["status"], cond["reason"]) == ("False", "SnapshotFailed")
    assert cond["message"] == ("the snapshot of instance team-a/web-1 failed (req-1): "
                               "NoImageStore: none; no file was stored: delete this "
                               "TenantImage to use its name again")
