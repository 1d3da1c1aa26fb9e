"""The agent and the real operator together (``kova operator run``),
with the real Placement on SQLite and test:///default for libvirt: an
Instance applied by a user is scheduled, built and reported Running; its
allocation is on the agent's provider; a build failure goes back to the
operator (no retry loop on the host); delete leaves no domain, files or
allocation behind."""

from __future__ import annotations

import libvirt
import pytest

from kova.crds import names as contract
from tests.fixtures.agents import operator_process, wait_for


@pytest.fixture
def operator(harness, placement, tmp_path):
    with operator_process(harness, placement, tmp_path, "--backoff-max", "3") as proc:
        yield proc


def _flavor(harness, name):
    from kubernetes.client import ApiException

    try:
        harness.custom.create_cluster_custom_object(contract.GROUP, contract.VERSION, "flavors", {
            "apiVersion": contract.API_VERSION, "kind": "Flavor", "metadata": {"name": name},
            "spec": {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def _create(harness, name, image, flavor):
    return harness.custom.create_namespaced_custom_object(
        contract.GROUP, contract.VERSION, harness.ns, "instances", {
            "apiVersion": contract.API_VERSION, "kind": "Instance",
            "metadata": {"name": name, "namespace": harness.ns},
            "spec": {"flavorRef": {"name": flavor}, "imageRef": {"name": image},
                     "userData": {"inline": "#cloud-config\n"}}})


def test_operator_schedules_agent_builds_delete_frees_everything(
        harness, placement, operator, small_image, libvirt_conn, tmp_path):
    agent = harness.agent(placement_url=placement.url)
    wait_for(lambda: (h := harness.host_obj()) and (h.get("status") or {}).get(
        "resourceProviderUUID"), 20, what="provider registered")
    rp = harness.host_obj()["status"]["resourceProviderUUID"]
    flavor = f"agent-small-{harness.host}"
    _flavor(harness, flavor)
    harness.image(f"img-{harness.host}", small_image)
    uid = _create(harness, "web", f"img-{harness.host}", flavor)["metadata"]["uid"]

    got = harness.wait_phase("web", "Running", timeout=60)
    assert got["status"]["host"] == harness.host
    assert got["metadata"]["labels"][contract.LABEL_HOST] == harness.host
    assert {c["type"] for c in got["status"]["conditions"]} >= {"Scheduled", "Built", "Ready"}
    assert {contract.FINALIZER_AGENT, "kova.dev/operator"} <= set(got["metadata"]["finalizers"])
    allocs = placement.http.get(f"/allocations/{uid}").json()["allocations"]
    assert allocs[rp]["resources"] == {"VCPU": 1, "MEMORY_MB": 128, "DISK_GB": 1}
    assert libvirt_conn.lookupByUUIDString(uid).isActive()
    # The Host status shows the allocation after a resync.
    wait_for(lambda: (harness.host_obj()["status"].get("allocated") or {}).get("vcpus") == 1,
             15, what="Host status allocated")

    # A build failure goes back to the operator; with no other host it ends in
    # Error and the allocation is freed; the agent tried once.
    harness.image(f"bad-{harness.host}", small_image, sha256="0" * 64)
    bad_uid = _create(harness, "bad", f"bad-{harness.host}", flavor)["metadata"]["uid"]
    wait_for(lambda: (o := harness.get("bad")) and (o.get("status") or {}).get("phase") == "Error"
             and o, 60, what="bad in Error")
    wait_for(lambda: placement.http.get(f"/allocations/{bad_uid}").json()["allocations"] == {},
             15, what="bad allocation freed")
    assert agent.metrics.build_failures.labels(contract.ERROR_IMAGE_CHECKSUM)._value.get() == 1
    assert not (tmp_path / "instances" / bad_uid).exists()

    # Delete: both finalizers go, nothing left on the host or in Placement.
    harness.delete("web")
    wait_for(lambda: harness.get("web") is None, 30, what="web deleted")
    with pytest.raises(libvirt.libvirtError):
        libvirt_conn.lookupByUUIDString(uid)
    assert not (tmp_path / "instances" / uid).exists()
    assert placement.http.get(f"/allocations/{uid}").json()["allocations"] == {}
    harness.delete("bad")
    wait_for(lambda: harness.get("bad") is None, 30, what="bad deleted")
    usages = placement.http.get(f"/resource_providers/{rp}/usages").json()["usages"]
    assert not any(usages.values())


def test_untrusted_https_image_ends_in_error_naming_tls(
        harness, placement, operator, https_images, libvirt_conn, tmp_path):
    """An https:// Image whose server the agent does not trust, with the real
    operator: one build attempt on the host, the operator's back-off and
    rescheduling find no other host, the Instance goes to Error with the TLS
    failure in its condition and Event; no allocation is left."""
    agent = harness.agent(placement_url=placement.url, image_ca_file=str(https_images.ca))
    wait_for(lambda: (h := harness.host_obj()) and (h.get("status") or {}).get(
        "resourceProviderUUID"), 20, what="provider registered")
    flavor = f"agent-small-{harness.host}"
    _flavor(harness, flavor)
    image = f"tls-{harness.host}"
    harness.image(image, url=https_images.url(server=https_images.untrusted),
                  sha256=https_images.sha256)
    uid = _create(harness, "tls", image, flavor)["metadata"]["uid"]
    got = wait_for(lambda: (o := harness.get("tls")) and (o.get("status") or {}).get("phase")
                   == "Error" and o, 60, what="tls in Error")
    (sched,) = [c for c in got["status"]["conditions"] if c["type"] == "Scheduled"]
    assert sched["status"] == "False"
    assert "ImageDownloadFailed" in sched["message"], sched
    assert "TLS certificate verification failed" in sched["message"], sched
    events = harness.core.list_namespaced_event(
        harness.ns, field_selector="involvedObject.name=tls").items
    assert any(e.type == "Warning" and "TLS certificate verification failed" in e.message
               for e in events), [(e.reason, e.message) for e in events]
    wait_for(lambda: placement.http.get(f"/allocations/{uid}").json()["allocations"] == {},
             15, what="allocation freed")
    assert agent.metrics.build_failures.labels(contract.ERROR_IMAGE_DOWNLOAD)._value.get() == 1
    assert len(https_images.untrusted.handshake_errors) == 1
    assert https_images.untrusted.requests == []
    harness.delete("tls")
    wait_for(lambda: harness.get("tls") is None, 30, what="tls deleted")
