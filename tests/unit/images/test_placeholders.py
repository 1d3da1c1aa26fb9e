"""The image store's fill of a snapshot's saving TenantImage: the JSON
patch it sends (kova.images.placeholders.fill_ops).  The patch against a
real API server -- admission, a deleted or re-created object -- is tested in
tests/integration/api/test_snapshot.py."""

from __future__ import annotations

from kova.images.placeholders import fill_ops

SPEC = {"source": {"url": "https://store/v1/namespaces/a/images/x"}, "format": "qcow2",
        "sha256": "a" * 64, "minDiskGiB": 1}
NOTES = {"kova.dev/uploaded-by": "system:serviceaccount:kova:agent",
         "kova.dev/snapshot-time": "2026-12-07T05:00:00Z"}
FINALIZER = "kova.dev/image-store"


def _placeholder(**md) -> dict:
    return {"metadata": {"uid": "u-1", **md}, "spec": {"saving": True, "format": "qcow2"}}


def test_the_fill_is_tested_against_the_uid_and_saving_first() -> None:
    ops = fill_ops(_placeholder(annotations={"kova.dev/snapshot-of": "a/vm"}), "u-1", SPEC,
                   NOTES, FINALIZER)
    assert ops[:3] == [{"op": "test", "path": "/metadata/uid", "value": "u-1"},
                       {"op": "test", "path": "/spec/saving", "value": True},
                       {"op": "remove", "path": "/spec/saving"}]
    assert {"op": "add", "path": "/spec/sha256", "value": "a" * 64} in ops
    assert {"op": "add", "path": "/spec/source", "value": SPEC["source"]} in ops
    # Annotations added one by one (the API component's stay), keys escaped.
    assert {"op": "add", "path": "/metadata/annotations/kova.dev~1snapshot-time",
            "value": NOTES["kova.dev/snapshot-time"]} in ops
    assert {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]} in ops


def test_the_fill_adds_to_what_the_object_has() -> None:
    ops = fill_ops(_placeholder(finalizers=["example.com/keep"]), "u-1", SPEC, NOTES,
                   FINALIZER)
    assert {"op": "add", "path": "/metadata/annotations", "value": NOTES} in ops
    assert {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER} in ops
    ops = fill_ops(_placeholder(finalizers=[FINALIZER]), "u-1", SPEC, NOTES, FINALIZER)
    assert not [op for op in ops if op["path"].startswith("/metadata/finalizers")]
