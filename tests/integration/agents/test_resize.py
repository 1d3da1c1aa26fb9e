"""Resize through its public interfaces, without QEMU: ``kubectl kova resize``
(the spec's flavorRef, then instances/resize-confirm and resize-revert
through the real API server's aggregation layer and Kova's API component),
the real operator and Placement, the agent on libvirt's test driver with
real qcow2 overlays.  After each step: the domain's definition, the disk's
virtual size, Placement's allocations (the migration consumer holding the
old size while the move waits), the action history, the Resized condition.
(A resize of a real QEMU guest: tests/e2e/test_moves.py.)"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from kova.crds import names
from tests.fixtures.agents import operator_process, wait_for
from tests.fixtures.vm import plugin

GiB = 1 << 30
SMALL = {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}
BIG = {"vcpus": 2, "memoryMiB": 256, "diskGiB": 2}
BIGGER = {"vcpus": 3, "memoryMiB": 384, "diskGiB": 3}
RC = {"vcpus": "VCPU", "memoryMiB": "MEMORY_MB", "diskGiB": "DISK_GB"}


@pytest.fixture
def operator(harness, placement, tmp_path):
    with operator_process(harness, placement, tmp_path, "--backoff-max", "3",
                          "--resize-confirm-window", "0") as proc:
        yield proc


def _allocs(placement, consumer: str) -> dict:
    return placement.http.get(f"/allocations/{consumer}").json()["allocations"]


def _resources(size: dict) -> dict:
    return {RC[k]: v for k, v in size.items()}


def _disk_size(path) -> int:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(json.loads(out)["virtual-size"])


def _domain_size(conn, uid: str) -> tuple[int, int]:
    dom = conn.lookupByUUIDString(uid)
    _state, max_kib, _mem, vcpus, _t = dom.info()
    return vcpus, max_kib // 1024


def _resized(obj: dict) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == names.COND_RESIZED)


def test_resize_confirm_revert_and_a_refused_shrink(
        harness, placement, operator, small_image, kova_api, make_user, namespace,
        libvirt_conn, tmp_path):
    pki = kova_api.pki
    harness.agent(placement_url=placement.url, stream_cert_file=str(pki.agent_crt),
                  stream_key_file=str(pki.agent_key), stream_client_ca_file=str(pki.ca_crt),
                  stream_port=0, stream_bind="127.0.0.1")
    wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get("streamEndpoint")
             and harness.host_obj()["status"].get("resourceProviderUUID"), 30,
             what="provider and stream endpoint")
    rp = harness.host_obj()["status"]["resourceProviderUUID"]
    sfx = harness.host[-6:]
    for name, size in (("small", SMALL), ("big", BIG), ("bigger", BIGGER)):
        harness.flavor(f"{name}-{sfx}", **size)
    harness.image(f"img-{sfx}", small_image)
    uid = harness.instance("vm", f"img-{sfx}", flavor=f"small-{sfx}",
                           schedule=False)["metadata"]["uid"]
    harness.wait_phase("vm", "Running", timeout=60)
    disk = tmp_path / "instances" / uid / "disk.qcow2"
    kept = disk.with_name("disk.pre-move.qcow2")
    editor = make_user("editor", "kova-edit", namespace)

    # ---- resize up: ResizeVerify at the new size; the migration consumer
    # holds the old allocation, the Instance's own the new one.
    out = plugin(editor, "resize", "vm", "--flavor", f"big-{sfx}", "--timeout", "90")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "step Verify" in out.stderr and "confirm with" in out.stdout, out
    obj = harness.get("vm")
    st = obj["status"]
    mig = st["migration"]
    assert st["phase"] == "ResizeVerify" and mig["step"] == "Verify", st
    assert (mig["type"], mig["sourceHost"], mig["destHost"]) == ("resize", harness.host,
                                                                harness.host)
    assert mig["oldResources"] == SMALL and mig["newResources"] == BIG
    assert st["resources"] == BIG and mig["wasRunning"] is True
    assert _domain_size(libvirt_conn, uid) == (2, 256)
    assert libvirt_conn.lookupByUUIDString(uid).isActive()
    assert _disk_size(disk) == 2 * GiB and _disk_size(kept) == 1 * GiB
    assert _allocs(placement, uid)[rp]["resources"] == _resources(BIG)
    assert _allocs(placement, mig["uuid"])[rp]["resources"] == _resources(SMALL)
    assert st["actions"][-1]["action"] == "resize"
    assert st["actions"][-1]["result"] == "InProgress"

    # ---- confirm: the old allocation and the kept disk go.
    out = plugin(editor, "resize", "vm", "--confirm")
    assert out.returncode == 0, (out.stdout, out.stderr)
    obj = harness.get("vm")
    assert "migration" not in obj["status"], obj["status"]
    assert _resized(obj)["reason"] == names.REASON_CONFIRMED
    assert editor.username in _resized(obj)["message"]
    assert _allocs(placement, mig["uuid"]) == {}
    assert _allocs(placement, uid)[rp]["resources"] == _resources(BIG)
    assert obj["status"]["actions"][-1]["result"] == "Success"
    harness.wait_phase("vm", "Running")
    wait_for(lambda: not kept.exists(), 15, what="kept disk removed after the confirm")

    # ---- confirm again: nothing to confirm, a clear 409 through the plugin.
    out = plugin(editor, "resize", "vm", "--confirm")
    assert out.returncode != 0 and "has no resize or migration to confirm" in out.stderr, out

    # ---- resize again, then revert: the old size, disk and allocation.
    out = plugin(editor, "resize", "vm", "--flavor", f"bigger-{sfx}", "--timeout", "90")
    assert out.returncode == 0, (out.stdout, out.stderr)
    mig2 = harness.get("vm")["status"]["migration"]
    assert _domain_size(libvirt_conn, uid) == (3, 384) and _disk_size(disk) == 3 * GiB
    out = plugin(editor, "resize", "vm", "--revert")
    assert out.returncode == 0, (out.stdout, out.stderr)
    obj = harness.wait_phase("vm", "Running")
    assert "migration" not in obj["status"] and obj["status"]["resources"] == BIG
    assert _resized(obj)["reason"] == names.REASON_REVERTED
    assert _domain_size(libvirt_conn, uid) == (2, 256) and _disk_size(disk) == 2 * GiB
    assert libvirt_conn.lookupByUUIDString(uid).isActive()
    assert _allocs(placement, uid)[rp]["resources"] == _resources(BIG)
    assert _allocs(placement, mig2["uuid"]) == {}
    usages = placement.http.get(f"/resource_providers/{rp}/usages").json()["usages"]
    assert usages == _resources(BIG), usages
    # the spec still names "bigger": the revert stands until the spec changes
    time.sleep(2)
    assert "migration" not in harness.get("vm")["status"]

    # ---- shrinking the disk is refused, naming the field; nothing moves.
    harness.patch("vm", {"spec": {"flavorRef": {"name": f"small-{sfx}"}}})
    cond = wait_for(lambda: (c := harness.cond("vm", names.COND_RESIZED))
                    and c["status"] == "False" and c, 20, what="Resized=False")
    assert cond["reason"] == names.REASON_RESIZE_REFUSED
    assert cond["message"].startswith("spec.flavorRef:") and "diskGiB 1" in cond["message"]
    events = harness.core.list_namespaced_event(
        harness.ns, field_selector="involvedObject.name=vm").items
    assert any(e.reason == names.REASON_RESIZE_REFUSED for e in events)
    assert harness.get("vm")["status"]["resources"] == BIG
    assert _allocs(placement, uid)[rp]["resources"] == _resources(BIG)
    history = [(a["action"], a["result"]) for a in harness.get("vm")["status"]["actions"]]
    assert history[-2:] == [("resize", "Success"), ("resize", "Success")], history

    # ---- a resize over the namespace's quota is refused before anything
    # moves: 3 vCPUs asked, 2 allowed (the Instance's own claim not counted).
    harness.core.create_namespaced_resource_quota(harness.ns, {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "kova"},
        "spec": {"hard": {names.QUOTA_VCPUS: "2"}}})
    harness.patch("vm", {"spec": {"flavorRef": {"name": f"bigger-{sfx}"}}})
    cond = wait_for(lambda: (c := harness.cond("vm", names.COND_RESIZED))
                    and c["reason"] == names.REASON_QUOTA_EXCEEDED and c, 20,
                    what="Resized=False QuotaExceeded")
    assert cond["status"] == "False" and "vCPUs: requested 3, 0 in use of 2" in cond["message"]
    obj = harness.get("vm")
    assert "migration" not in obj["status"] and obj["status"]["resources"] == BIG
    assert _allocs(placement, uid)[rp]["resources"] == _resources(BIG)
    assert _domain_size(libvirt_conn, uid) == (2, 256)


def test_a_restarted_operator_goes_on_from_the_recorded_step(
        harness, placement, small_image, libvirt_conn, tmp_path):
    """The operator died right after its POST /allocations and before it
    recorded step Moving (made here by hand, with no operator running): the
    next operator finds the migration consumer holding the old allocation,
    takes the destination from Placement instead of claiming again, and the
    resize goes on to ResizeVerify; the confirm window (8 s here) confirms it
    on its own and leaves exactly the new allocation; deleting the Instance
    then frees everything."""
    harness.agent(placement_url=placement.url)
    wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get(
        "resourceProviderUUID"), 30, what="provider registered")
    rp = harness.host_obj()["status"]["resourceProviderUUID"]
    sfx = harness.host[-6:]
    harness.flavor(f"small-{sfx}", **SMALL)
    harness.flavor(f"big-{sfx}", **BIG)
    harness.image(f"img-{sfx}", small_image)
    uid = harness.instance("vm", f"img-{sfx}", flavor=f"small-{sfx}",
                           schedule=False)["metadata"]["uid"]
    with operator_process(harness, placement, tmp_path, "--resize-confirm-window", "0"):
        harness.wait_phase("vm", "Running", timeout=60)
    # ---- what a crash after the POST leaves: the record at step Claiming,
    # Placement already moved (the spec asks for "big").
    mig_uuid = "5e1f0c2a-7b1d-4c3e-9f00-000000000001"
    harness.patch("vm", {"spec": {"flavorRef": {"name": f"big-{sfx}"}}})
    project = names.project_id(harness.ns)
    gen = placement.http.get(f"/allocations/{uid}").json()["consumer_generation"]
    resp = placement.http.post("/allocations", json={
        mig_uuid: {"allocations": {rp: {"resources": _resources(SMALL)}},
                   "project_id": project, "user_id": "kova", "consumer_generation": None,
                   "consumer_type": "MIGRATION"},
        uid: {"allocations": {rp: {"resources": _resources(BIG)}}, "project_id": project,
              "user_id": "kova", "consumer_generation": gen, "consumer_type": "INSTANCE"}})
    assert resp.status_code == 204, resp.text
    harness.custom.patch_namespaced_custom_object_status(
        names.GROUP, names.VERSION, harness.ns, "instances", "vm", {"status": {
            "phase": "Resizing", "migration": {
                "uuid": mig_uuid, "type": "resize", "step": "Claiming",
                "sourceHost": harness.host, "oldResources": SMALL, "requestId": "req-crash",
                "user": "kova-operator", "startTime": "2026-01-01T00:00:00Z"}}},
        _content_type="application/merge-patch+json")

    with operator_process(harness, placement, tmp_path, "--resize-confirm-window", "8"):
        obj = harness.wait_phase("vm", "ResizeVerify", timeout=60)
        assert obj["status"]["migration"]["uuid"] == mig_uuid
        assert obj["status"]["migration"]["destHost"] == harness.host
        assert _domain_size(libvirt_conn, uid) == (2, 256)
        consumers = placement.http.get(f"/resource_providers/{rp}/allocations").json()
        assert set(consumers["allocations"]) == {uid, mig_uuid}  # nothing claimed twice
        obj = wait_for(lambda: "migration" not in (o := harness.get("vm"))["status"] and o,
                       60, what="confirmed by the window")
        assert "automatically after the confirm window" in _resized(obj)["message"]
        assert _allocs(placement, mig_uuid) == {}
        usages = placement.http.get(f"/resource_providers/{rp}/usages").json()["usages"]
        assert usages == _resources(BIG), usages
        harness.delete("vm")
        wait_for(lambda: harness.get("vm") is None, 30, what="vm deleted")
    usages = placement.http.get(f"/resource_providers/{rp}/usages").json()["usages"]
    assert not any(usages.values()), usages
