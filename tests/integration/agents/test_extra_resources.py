"""Custom inventory declared on a Host (``spec.extraResources``), with the real
agent, the real operator and the real Placement (SQLite), libvirt's
test:///default: the agent writes the class into its provider's inventory
next to its own, an Instance whose Flavor asks for it lands on that host and
consumes it, a second one waits with a NoValidHost condition naming the
resource, and the inventory survives the agent's restart and refreshes.
Admission rejects a name that is not CUSTOM_*, naming the field."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from kova.crds import names as contract
from tests.fixtures.agents import G, V, operator_process, wait_for


@pytest.fixture
def operator(harness, placement, tmp_path):
    with operator_process(harness, placement, tmp_path, "--backoff-max", "2") as proc:
        yield proc


def _other_host(harness, placement) -> str:
    """A second, larger host without the custom resource, registered as its
    agent would (provider, Host with the provider in its status, a fresh
    Lease); it runs nothing, so only the scheduler's choice is observed."""
    name = f"plain-{uuid.uuid4().hex[:6]}"
    rp = placement.http.post("/resource_providers", json={"name": name}).json()["uuid"]
    inv = {rc: {"total": n, "allocation_ratio": 1.0, "reserved": 0}
           for rc, n in (("VCPU", 64), ("MEMORY_MB", 65536), ("DISK_GB", 1000))}
    r = placement.http.put(f"/resource_providers/{rp}/inventories",
                           json={"inventories": inv, "resource_provider_generation": 0})
    assert r.status_code == 200, r.text
    harness.custom.create_cluster_custom_object(G, V, "hosts", {
        "apiVersion": contract.API_VERSION, "kind": "Host", "metadata": {"name": name},
        "spec": {}})
    harness.custom.patch_cluster_custom_object_status(G, V, "hosts", name, {"status": {
        "resourceProviderUUID": rp, "capacity": {"vcpus": 64, "memoryMiB": 65536,
                                                 "diskGiB": 1000}}})
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    harness.coord.create_namespaced_lease(contract.LEASE_NAMESPACE, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": contract.LEASE_NAMESPACE},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 3600, "renewTime": now}})
    return name


def _instance(harness, name: str, flavor: str, image: str) -> str:
    """An Instance the operator places."""
    return harness.instance(name, image, flavor=flavor, schedule=False)["metadata"]["uid"]


def _inventory(placement, rp: str) -> dict:
    return placement.http.get(f"/resource_providers/{rp}/inventories").json()["inventories"]


def test_custom_resource_lands_where_offered_and_survives_agent_restart(
        harness, placement, operator, small_image):
    rc = f"CUSTOM_GPU_{uuid.uuid4().hex[:6].upper()}"
    harness.custom.create_cluster_custom_object(G, V, "hosts", {
        "apiVersion": contract.API_VERSION, "kind": "Host", "metadata": {"name": harness.host},
        "spec": {"extraResources": {rc: {"total": 1}}}})
    agent = harness.agent(placement_url=placement.url)  # (creates the Lease namespace)
    other = _other_host(harness, placement)
    rp = wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get(
        "resourceProviderUUID"), 20, what="provider registered")
    inv = _inventory(placement, rp)
    assert inv[rc]["total"] == 1 and inv[rc]["reserved"] == 0
    assert {"VCPU", "MEMORY_MB", "DISK_GB"} <= set(inv)

    flavor = f"gpu-{harness.host}"
    harness.flavor(flavor, vcpus=1, memoryMiB=128, diskGiB=1,
                   extraSpecs={"resources": {rc: 1}})
    image = f"img-{harness.host}"
    harness.image(image, small_image)
    try:
        uid = _instance(harness, "gpu1", flavor, image)
        got = harness.wait_phase("gpu1", "Running", timeout=60)
        assert got["status"]["host"] == harness.host != other
        allocs = placement.http.get(f"/allocations/{uid}").json()["allocations"]
        assert allocs[rp]["resources"][rc] == 1

        _instance(harness, "gpu2", flavor, image)
        cond = wait_for(lambda: (c := harness.cond("gpu2", contract.COND_SCHEDULED))
                        and c["reason"] == contract.REASON_NO_VALID_HOST and c, 15,
                        what="gpu2 NoValidHost")
        assert f"no host has 1 {rc} free (from Flavor {flavor} extraSpecs.resources.{rc})" \
            in cond["message"], cond
        assert harness.get("gpu2")["status"]["phase"] == "Pending"

        # A restarted agent writes its inventory again: the custom class stays,
        # and stays fully used by gpu1 alone.
        harness.agents.remove(agent)
        agent.stop()
        harness.agent(placement_url=placement.url)
        wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get(
            "instanceCount") == 1, 20, what="the new agent's registration")
        assert _inventory(placement, rp)[rc]["total"] == 1
        usages = placement.http.get(f"/resource_providers/{rp}/usages").json()["usages"]
        assert usages[rc] == 1
        assert harness.get("gpu2")["status"]["phase"] == "Pending"

        # Freeing the GPU lets the waiting Instance in.
        harness.delete("gpu1")
        wait_for(lambda: harness.get("gpu1") is None, 30, what="gpu1 deleted")
        got = harness.wait_phase("gpu2", "Running", timeout=60)
        assert got["status"]["host"] == harness.host

        # Taken out of the spec while gpu2 uses it: kept (Placement refuses to
        # drop inventory in use) while the rest of the spec applies; dropped
        # once gpu2 is gone.
        harness.custom.patch_cluster_custom_object(G, V, "hosts", harness.host, {
            "spec": {"extraResources": None, "reserved": {"memoryMiB": 640}}})
        wait_for(lambda: _inventory(placement, rp)["MEMORY_MB"]["reserved"] == 640, 20,
                 what="the new reserved memory")
        assert _inventory(placement, rp)[rc]["total"] == 1
        harness.delete("gpu2")
        wait_for(lambda: rc not in _inventory(placement, rp), 40, what=f"{rc} removed")
    finally:
        for name in ("gpu1", "gpu2"):
            if harness.get(name) is not None:
                harness.delete(name)
        for name in ("gpu1", "gpu2"):
            wait_for(lambda n=name: harness.get(n) is None, 30, what=f"{name} deleted")
        harness.custom.delete_cluster_custom_object(G, V, "hosts", other)
        harness.coord.delete_namespaced_lease(other, contract.LEASE_NAMESPACE)


@pytest.mark.parametrize("extra, words", [
    ({"GPU": {"total": 1}}, ["extraResources", "CUSTOM_"]),
    ({"CUSTOM_GPU": {"total": 0}}, ["extraResources", "total"]),
    ({"CUSTOM_GPU": {"total": 1, "reserved": 2}}, ["reserved", "must not exceed total"]),
])
def test_admission_rejects_bad_extra_resources(harness, extra, words):
    from kubernetes.client import ApiException

    with pytest.raises(ApiException) as err:
        harness.custom.create_cluster_custom_object(G, V, "hosts", {
            "apiVersion": contract.API_VERSION, "kind": "Host",
            "metadata": {"name": harness.host}, "spec": {"extraResources": extra}})
    assert err.value.status == 422
    for word in words:
        assert word in err.value.body, err.value.body
