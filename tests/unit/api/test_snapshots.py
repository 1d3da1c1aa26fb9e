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


def _of(kind: str | None = None, name: str = "debian-12") -> dict:
    ref = {"name": name, **({"kind": kind} if kind else {})}
    return {"metadata": {"name": "web", "namespace": "team-a"}, "spec": {"imageRef": ref},
            "status": {"phase": "Running", "host": "h1"}}


def _image(require: bool | None) -> dict:
    props = {"architecture": "x86_64"}
    if require is not None:
        props["requireQuiesce"] = require
    return {"spec": {"properties": props}}


@pytest.mark.parametrize("kind,named", [(None, "Image debian-12"),
                                        ("Image", "Image debian-12"),
                                        ("TenantImage", "TenantImage debian-12")])
def test_an_image_requiring_quiescing_makes_a_snapshot_without_quiesce_required(
        kind, named) -> None:
    from kova.api.snapshots import Quiesce, quiesce

    got = quiesce(_of(kind), None, _image(True))
    assert got == Quiesce("required", named) and got.by_image
    assert got.note() == f"quiesce required by {named} (properties.requireQuiesce)"
    # Asking for what the image requires is the same thing.
    assert quiesce(_of(kind), "required", _image(True)) == Quiesce("required", named)


@pytest.mark.parametrize("asked", ["auto", "off"])
def test_less_than_required_is_refused_naming_the_property_and_the_image(asked) -> None:
    from kova.api.moves import Refusal
    from kova.api.snapshots import quiesce

    got = quiesce(_of("TenantImage", "golden"), asked, _image(True))
    assert isinstance(got, Refusal) and (got.code, got.reason) == (409, "QuiesceRequired")
    assert got.message.startswith(
        "TenantImage golden requires quiescing (properties.requireQuiesce, Glance's "
        f"os_require_quiesce): a snapshot of instance web with quiesce {asked} is refused")


@pytest.mark.parametrize("require", [None, False])
def test_an_image_that_does_not_require_quiescing_leaves_it_to_the_request(require) -> None:
    from kova.api.snapshots import Quiesce, quiesce

    assert quiesce(_of(), None, _image(require)) == Quiesce("auto", "default")
    assert quiesce(_of(), None, _image(require)).note() == "quiesce auto by default"
    for asked in ("required", "auto", "off"):
        got = quiesce(_of(), asked, _image(require))
        assert got == Quiesce(asked, "request") and not got.by_image
        assert got.note() == f"quiesce {asked} as asked"


def test_an_image_that_is_gone_requires_nothing_and_the_action_says_so() -> None:
    from kova.api.snapshots import Quiesce, quiesce

    got = quiesce(_of(), None, None)
    assert got == Quiesce("auto", "default (Image debian-12 not found)") and not got.by_image
    assert quiesce(_of(), "off", None) == Quiesce("off", "request")


def test_the_snapshots_tenant_image_keeps_the_source_images_properties() -> None:
    """As a Nova snapshot inherits its instance's image properties:
    requireQuiesce, and the disk bus, NIC model, firmware the copy boots with."""
    from kova.api import placeholders

    inst = {"metadata": {"namespace": "team-a", "name": "web-1", "uid": "i-1"}}
    props = {"architecture": "x86_64", "diskBus": "sata", "nicModel": "e1000",
             "firmware": "uefi", "osType": "windows", "requireQuiesce": True}
    body = placeholders.body(inst, "golden", "req-1", "alice", {"spec": {"properties": props}})
    assert body["spec"] == {"saving": True, "format": "qcow2", "properties": props}
    assert body["spec"]["properties"] is not props
    # The source gone, or without properties: none.
    assert "properties" not in placeholders.body(inst, "golden", "req-1", "alice", None)["spec"]
    assert "properties" not in placeholders.body(inst, "golden", "req-1", "alice",
                                                 {"spec": {}})["spec"]


def test_the_image_of_a_newer_in_progress_message() -> None:
    from kova.api.snapshot_tasks import _image_of

    action = {"requestId": "req-1",
              "message": "snapshot to TenantImage web.v2, quiesce required by Image x"}
    assert _image_of(action, {}) == "web.v2"
