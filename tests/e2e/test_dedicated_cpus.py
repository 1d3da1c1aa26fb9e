"""Dedicated CPUs (Nova's cpu_dedicated_set and hw:cpu_policy=dedicated) with
the real agent, operator and Placement.

With libvirt's test:///default (16 CPUs): the Host's cpuDedicatedSet becomes
PCPU inventory and the rest VCPU; two dedicated Instances are pinned to
different dedicated CPUs with their emulator threads on the shared ones, a
shared Instance floats over the shared CPUs, and a third dedicated one waits
with NoValidHost naming PCPU.  With the real libvirtd (QEMU): the pinning is
read back from the running domain and from QEMU's threads' affinity."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from kova.crds import names as contract
from tests.fixtures.agents import G, V, domain_by_uuid, operator_process, remove_domain, wait_for


@pytest.fixture
def operator(harness, placement, tmp_path):
    with operator_process(harness, placement, tmp_path, "--backoff-max", "2") as proc:
        yield proc
    # Placement outlives the test (module scope): the host's provider goes, so
    # that its free PCPU is not offered to the next test's Instances.
    found = placement.http.get("/resource_providers", params={"name": harness.host}).json()
    for rp in found["resource_providers"]:
        placement.http.delete(f"/resource_providers/{rp['uuid']}")


def _host_with_dedicated_cpus(harness, cpuset: str) -> None:
    harness.custom.create_cluster_custom_object(G, V, "hosts", {
        "apiVersion": contract.API_VERSION, "kind": "Host", "metadata": {"name": harness.host},
        "spec": {"cpuDedicatedSet": cpuset}})


def _cputune(conn, uid: str) -> tuple[dict[str, str], str | None, str | None]:
    """(vcpu -> cpuset of its pin, the emulator pin, the <vcpu cpuset>) of the domain."""
    root = ET.fromstring(domain_by_uuid(conn, uid).XMLDesc(0))
    pins = {p.get("vcpu"): p.get("cpuset") for p in root.findall("cputune/vcpupin")}
    emu = root.find("cputune/emulatorpin")
    return pins, emu.get("cpuset") if emu is not None else None, root.find("vcpu").get("cpuset")


def _waits_for_pcpu(harness, name: str, flavor: str) -> None:
    cond = wait_for(lambda: (c := harness.cond(name, contract.COND_SCHEDULED))
                    and c["reason"] == contract.REASON_NO_VALID_HOST and c, 15,
                    what=f"{name} NoValidHost")
    assert (f"no host has 1 PCPU free (from Flavor {flavor} vcpus with "
            "extraSpecs.cpuPolicy: dedicated)") in cond["message"], cond
    assert harness.get(name)["status"]["phase"] == "Pending"


def test_dedicated_instances_get_cpus_of_their_own(
        harness, placement, operator, small_image, libvirt_conn):
    _host_with_dedicated_cpus(harness, "2-3")
    harness.agent(placement_url=placement.url)
    rp = wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get(
        "resourceProviderUUID"), 20, what="provider registered")
    inv = placement.http.get(f"/resource_providers/{rp}/inventories").json()["inventories"]
    assert inv["PCPU"]["total"] == 2 and inv["PCPU"]["allocation_ratio"] == 1.0
    assert inv["VCPU"]["total"] == 14

    pinned, shared = f"pinned-{harness.host}", f"shared-{harness.host}"
    harness.flavor(pinned, vcpus=1, memoryMiB=128, diskGiB=1,
                   extraSpecs={"cpuPolicy": "dedicated"})
    harness.flavor(shared, vcpus=1, memoryMiB=128, diskGiB=1)
    harness.image("img", small_image)
    uids = {name: harness.instance(name, "img", flavor=flavor, schedule=False)["metadata"]["uid"]
            for name, flavor in (("p1", pinned), ("p2", pinned), ("s1", shared))}
    for name in uids:
        harness.wait_phase(name, "Running", timeout=60)
    (p1, emu1, _), (p2, emu2, _) = (_cputune(libvirt_conn, uids[n]) for n in ("p1", "p2"))
    assert {p1["0"], p2["0"]} == {"2", "3"}
    assert emu1 == emu2 == "0-1,4-15"
    pins, emu, floating = _cputune(libvirt_conn, uids["s1"])
    assert pins == {} and emu is None and floating == "0-1,4-15"
    allocs = placement.http.get(f"/allocations/{uids['p1']}").json()["allocations"]
    assert allocs[rp]["resources"]["PCPU"] == 1 and "VCPU" not in allocs[rp]["resources"]

    harness.instance("p3", "img", flavor=pinned, schedule=False)
    _waits_for_pcpu(harness, "p3", pinned)
    # p1's CPU, once freed, goes to p3.
    cpu_of_p1 = p1["0"]
    harness.delete("p1")
    wait_for(lambda: harness.get("p1") is None, 30, what="p1 deleted")
    p3 = harness.wait_phase("p3", "Running", timeout=60)
    assert _cputune(libvirt_conn, p3["metadata"]["uid"])[0] == {"0": cpu_of_p1}
    for name in ("p2", "p3", "s1"):
        harness.delete(name)
    for name in ("p2", "p3", "s1"):
        wait_for(lambda n=name: harness.get(n) is None, 30, what=f"{name} deleted")


def test_pinning_on_the_running_qemu_domain(harness, placement, operator, small_image,
                                            libvirt_qemu_conn, tmp_path):
    """On the real libvirtd (this machine has 2 CPUs): CPU 1 dedicated, CPU 0
    shared.  The dedicated Instance's running domain has its vCPU on CPU 1
    and its emulator on CPU 0, as QEMU's threads' affinity shows; a second
    dedicated Instance waits for a PCPU."""
    _host_with_dedicated_cpus(harness, "1")
    harness.agent(placement_url=placement.url, libvirt_uri="qemu:///system",
                  domain_type="qemu")
    flavor = f"pinned-{harness.host}"
    harness.flavor(flavor, vcpus=1, memoryMiB=128, diskGiB=1,
                   extraSpecs={"cpuPolicy": "dedicated"})
    harness.image("img", small_image)
    name = f"p-{uuid.uuid4().hex[:6]}"
    try:
        uid = harness.instance(name, "img", flavor=flavor, schedule=False)["metadata"]["uid"]
        harness.wait_phase(name, "Running", timeout=90)
        dom = domain_by_uuid(libvirt_qemu_conn, uid)
        assert dom.isActive()
        pins, emu, _ = _cputune(libvirt_qemu_conn, uid)
        assert pins == {"0": "1"} and emu == "0"
        # What the running QEMU's threads are allowed on (libvirt asks the kernel).
        assert dom.vcpuPinInfo(0) == [(False, True)]
        assert dom.emulatorPinInfo(0) == (True, False)
        harness.instance("second", "img", flavor=flavor, schedule=False)
        _waits_for_pcpu(harness, "second", flavor)
    finally:
        for n in (name, "second"):
            if harness.get(n) is not None:
                harness.delete(n)
        for n in (name, "second"):
            wait_for(lambda n=n: harness.get(n) is None, 60, what=f"{n} deleted")
        remove_domain(libvirt_qemu_conn, f"{harness.ns}.{name}")
