"""The agent against a real kube-apiserver, with libvirt's test:///default
driver standing in for QEMU (fast: no guest boots here; see test_boot_e2e)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path

import pytest

from kova.agents.virt.seed import read_nocloud_seed
from kova.crds import names as contract
from tests.fixtures.agents import domain_by_uuid as _domain
from tests.fixtures.agents import free_port, wait_for


def test_build_to_running(harness, small_image, libvirt_conn, tmp_path):
    harness.image("small", small_image)
    agent = harness.agent()
    obj = harness.instance("vm1", "small", user_data="#cloud-config\nhello: KOVA-TEST\n",
                           hostname="guest1")
    uid = obj["metadata"]["uid"]
    got = harness.wait_phase("vm1", "Running")
    st = got["status"]
    assert st["powerState"] == "Running"
    assert harness.cond("vm1", "Built")["status"] == "True"
    assert harness.cond("vm1", "Ready")["reason"] == "Running"
    assert contract.FINALIZER_AGENT in got["metadata"]["finalizers"]
    d = tmp_path / "instances" / uid
    assert st["console"]["logPath"] == str(d / "console.log")
    # The domain: uuid = Instance uid, name namespace.name, running.
    dom = _domain(libvirt_conn, uid)
    assert dom is not None and dom.name() == f"{harness.ns}.vm1" and dom.isActive()
    # Overlay over the cached image, seed with meta-data and user-data.
    assert (d / "disk.qcow2").exists()
    seed = read_nocloud_seed(d / "seed.iso")
    assert seed["user-data"] == b"#cloud-config\nhello: KOVA-TEST\n"
    assert f"instance-id: {uid}".encode() in seed["meta-data"]
    assert b"local-hostname: guest1" in seed["meta-data"]
    assert agent.metrics.build_seconds._sum.get() > 0
    reasons = wait_for(lambda: {e.reason for e in harness.core.list_namespaced_event(
        harness.ns, field_selector="involvedObject.name=vm1").items} or None, 5, what="events")
    assert "Started" in reasons


def test_host_registration_and_lease(harness, small_image):
    agent = harness.agent()
    host = wait_for(lambda: (h := harness.host_obj()) and h.get("status") and h,
                    what="host status")
    st = host["status"]
    assert st["capacity"]["vcpus"] > 0 and st["capacity"]["memoryMiB"] > 0
    assert st["capacity"]["diskGiB"] >= 1
    assert st["hypervisor"]["type"] == "QEMU"
    assert "COMPUTE_NODE" in st["traits"]
    lease = harness.coord.read_namespaced_lease(harness.host, contract.LEASE_NAMESPACE)
    assert lease.spec.holder_identity == harness.host
    first = lease.spec.renew_time
    wait_for(lambda: harness.coord.read_namespaced_lease(
        harness.host, contract.LEASE_NAMESPACE).spec.renew_time > first, 5, what="lease renewal")
    wait_for(lambda: agent.healthy()[0], 5, what="healthy")


def _token(claims: dict) -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


def test_lease_owner_from_the_service_account_token():
    from kova.agents.heartbeat import lease_owner

    claims = {"kubernetes.io": {"namespace": "kova-system",
                                "serviceaccount": {"name": "kova-agent", "uid": "u-1"},
                                "pod": {"name": "kova-agent-x", "uid": "p-1"}}}
    assert lease_owner(_token(claims), "kova-system") == {
        "apiVersion": "v1", "kind": "ServiceAccount", "name": "kova-agent", "uid": "u-1"}
    # an owner is never in another namespace than the Lease
    assert lease_owner(_token(claims), "kova-leases") is None
    assert lease_owner(_token({"sub": "system:serviceaccount:a:b"}), "kova-system") is None
    assert lease_owner("not-a-token", "kova-system") is None
    assert lease_owner("a.!!!.c", "kova-system") is None


def test_lease_is_owned_by_the_service_account_and_goes_with_it(harness, small_image):
    """Uninstalling the chart deletes the agent's ServiceAccount; the Lease it
    owns is then removed by the API server's garbage collector (real
    kube-controller-manager), while a restart keeps it."""
    import uuid

    from kubernetes.client import ApiException

    ns = contract.LEASE_NAMESPACE
    # A Lease written before the owner was known (older agent) ...
    first = harness.agent()
    wait_for(lambda: harness.coord.read_namespaced_lease(harness.host, ns), 10, what="lease")
    first.stop()
    harness.agents.remove(first)
    assert not harness.coord.read_namespaced_lease(harness.host, ns).metadata.owner_references
    sa = harness.core.create_namespaced_service_account(
        ns, {"metadata": {"name": f"agent-{uuid.uuid4().hex[:6]}"}})
    owner = {"apiVersion": "v1", "kind": "ServiceAccount", "name": sa.metadata.name,
             "uid": sa.metadata.uid}
    # ... gets its owner at the next renewal.
    second = harness.agent(lease_owner=owner)
    refs = wait_for(lambda: harness.coord.read_namespaced_lease(
        harness.host, ns).metadata.owner_references, 10, what="owner reference")
    assert [(r.kind, r.name, r.uid) for r in refs] == [("ServiceAccount", sa.metadata.name,
                                                       sa.metadata.uid)]
    second.stop()
    harness.agents.remove(second)
    harness.core.delete_namespaced_service_account(sa.metadata.name, ns)

    def gone() -> bool:
        try:
            harness.coord.read_namespaced_lease(harness.host, ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, 60, what="the Lease garbage-collected with its ServiceAccount")


def test_placement_provider(harness, placement):
    # A Host created by an admin first, with its own ratios and reservations.
    harness.custom.create_cluster_custom_object(contract.GROUP, contract.VERSION, "hosts", {
        "apiVersion": contract.API_VERSION, "kind": "Host", "metadata": {"name": harness.host},
        "spec": {"allocationRatios": {"vcpu": 8.0, "memory": 1.5, "disk": 1.0},
                 "reserved": {"vcpus": 1, "memoryMiB": 256, "diskGiB": 0},
                 "traits": ["CUSTOM_KOVA_TEST"]}})
    # The operator owns COMPUTE_STATUS_DISABLED; the agent must keep it.
    rp = placement.http.post("/resource_providers", json={"name": harness.host}).json()
    gen = placement.http.get(f"/resource_providers/{rp['uuid']}").json()["generation"]
    placement.http.put(f"/resource_providers/{rp['uuid']}/traits",
                       json={"resource_provider_generation": gen,
                             "traits": ["COMPUTE_STATUS_DISABLED"]})
    harness.agent(placement_url=placement.url)
    host = wait_for(lambda: (h := harness.host_obj()) and (h.get("status") or {}).get(
        "resourceProviderUUID") and h, what="provider uuid")
    assert host["status"]["resourceProviderUUID"] == rp["uuid"]
    inv = placement.http.get(f"/resource_providers/{rp['uuid']}/inventories").json()["inventories"]
    assert inv["VCPU"]["allocation_ratio"] == 8.0 and inv["VCPU"]["reserved"] == 1
    assert inv["MEMORY_MB"]["allocation_ratio"] == 1.5 and inv["MEMORY_MB"]["reserved"] == 256
    assert inv["VCPU"]["total"] == host["status"]["capacity"]["vcpus"]
    assert set(inv) == {"VCPU", "MEMORY_MB", "DISK_GB"}
    traits = placement.http.get(f"/resource_providers/{rp['uuid']}/traits").json()["traits"]
    assert {"CUSTOM_KOVA_TEST", "COMPUTE_STATUS_DISABLED", "COMPUTE_NODE",
            "COMPUTE_IMAGE_TYPE_QCOW2"} <= set(traits)
    # A second agent start (restart) finds the same provider.
    harness.agents.pop().stop()
    harness.agent(placement_url=placement.url)
    rps = placement.http.get("/resource_providers", params={"name": harness.host}).json()
    assert [r["uuid"] for r in rps["resource_providers"]] == [rp["uuid"]]


def test_placement_not_reachable_yet_is_one_warning_line(harness, caplog):
    """At a fresh install the agent starts before Placement answers: a
    warning without a traceback, and the Host registers once it does."""
    import logging
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    caplog.set_level(logging.INFO, logger="kova.agents")
    harness.agent(placement_url=f"http://127.0.0.1:{port}", placement_token="t",
                  placement_retry_seconds=1.0)
    rec = wait_for(lambda: [r for r in caplog.records if "with Placement failed" in
                            r.getMessage()], 20, what="the registration attempt")
    assert rec[0].levelno == logging.WARNING and rec[0].exc_info is None
    assert "Placement is not reachable yet" in rec[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_halted_then_always_then_halted(harness, small_image, libvirt_conn):
    harness.image("small", small_image)
    harness.agent()
    obj = harness.instance("vm2", "small", run_strategy="Halted")
    uid = obj["metadata"]["uid"]
    got = harness.wait_phase("vm2", "Stopped")
    assert got["status"]["powerState"] == "Shutdown"
    assert harness.cond("vm2", "Built")["status"] == "True"
    assert not _domain(libvirt_conn, uid).isActive()
    harness.patch("vm2", {"spec": {"runStrategy": "Always"}})
    harness.wait_phase("vm2", "Running")
    harness.patch("vm2", {"spec": {"runStrategy": "Halted"}})
    harness.wait_phase("vm2", "Stopped")
    assert not _domain(libvirt_conn, uid).isActive()


def test_always_restarts_a_stopped_domain(harness, small_image, libvirt_conn):
    harness.image("small", small_image)
    agent = harness.agent()
    uid = harness.instance("vm3", "small")["metadata"]["uid"]
    harness.wait_phase("vm3", "Running")
    _domain(libvirt_conn, uid).destroy()  # behind the agent's back
    wait_for(lambda: _domain(libvirt_conn, uid).isActive(), 10, what="restart")
    wait_for(lambda: agent.metrics.power_actions.labels("start")._value.get() >= 2, 5,
             what="start counted")


def test_rerun_on_failure(harness, small_image, libvirt_conn):
    harness.image("small", small_image)
    harness.agent()
    uid = harness.instance("vm4", "small", run_strategy="RerunOnFailure")["metadata"]["uid"]
    harness.wait_phase("vm4", "Running")
    _domain(libvirt_conn, uid).destroy()  # a failure: restarted
    wait_for(lambda: _domain(libvirt_conn, uid).isActive(), 10, what="restart after failure")
    harness.wait_phase("vm4", "Running")
    _domain(libvirt_conn, uid).shutdown()  # a clean guest shutdown: left off
    harness.wait_phase("vm4", "Stopped")
    time.sleep(3)  # a resync or two
    assert not _domain(libvirt_conn, uid).isActive()


def test_once_is_not_restarted(harness, small_image, libvirt_conn):
    harness.image("small", small_image)
    harness.agent()
    uid = harness.instance("vm5", "small", run_strategy="Once")["metadata"]["uid"]
    harness.wait_phase("vm5", "Running")
    _domain(libvirt_conn, uid).destroy()
    got = harness.wait_phase("vm5", "Stopped")
    assert harness.cond("vm5", "Ready")["reason"] == "Crashed"
    time.sleep(3)
    assert not _domain(libvirt_conn, uid).isActive()
    assert got["status"]["powerState"] == "Shutdown"


def test_manual_power_annotation_and_restart(harness, small_image, libvirt_conn):
    harness.image("small", small_image)
    harness.agent()
    uid = harness.instance("vm6", "small", run_strategy="Manual",
                           annotations={contract.ANNOTATION_RESTART: "0"})["metadata"]["uid"]
    harness.wait_phase("vm6", "Running")
    dom = _domain(libvirt_conn, uid)
    dom.shutdown()
    harness.wait_phase("vm6", "Stopped")  # Manual: not restarted
    harness.patch("vm6", {"metadata": {"annotations": {contract.ANNOTATION_POWER: "on"}}})
    harness.wait_phase("vm6", "Running")
    harness.patch("vm6", {"metadata": {"annotations": {contract.ANNOTATION_POWER: "off"}}})
    harness.wait_phase("vm6", "Stopped")
    harness.patch("vm6", {"metadata": {"annotations": {contract.ANNOTATION_POWER: "on"}}})
    harness.wait_phase("vm6", "Running")
    first_id = _domain(libvirt_conn, uid).ID()
    harness.patch("vm6", {"metadata": {"annotations": {contract.ANNOTATION_RESTART: "1"}}})
    wait_for(lambda: _domain(libvirt_conn, uid).ID() != first_id, 10, what="restart")
    harness.wait_phase("vm6", "Running")


def test_delete_removes_everything(harness, small_image, libvirt_conn, tmp_path):
    harness.image("small", small_image)
    harness.agent()
    uid = harness.instance("vm7", "small")["metadata"]["uid"]
    harness.wait_phase("vm7", "Running")
    assert (tmp_path / "instances" / uid).exists()
    harness.delete("vm7")
    wait_for(lambda: harness.get("vm7") is None, 15, what="instance gone")
    assert _domain(libvirt_conn, uid) is None
    assert not (tmp_path / "instances" / uid).exists()
    # The cached image stays for the next instance.
    assert list((tmp_path / "instances" / "_base").glob("*.qcow2"))


@pytest.mark.parametrize("case", ["checksum", "missing-file", "missing-image",
                                  "outside-image-dir"])
def test_build_failures_are_conditions(harness, small_image, libvirt_conn, tmp_path, case):
    if case == "checksum":
        harness.image("bad", small_image, sha256="0" * 64)
        code = contract.ERROR_IMAGE_CHECKSUM
    elif case == "missing-file":
        harness.image("bad", tmp_path / "images" / "nope.qcow2", sha256=None)
        code = contract.ERROR_IMAGE_NOT_FOUND
    elif case == "outside-image-dir":
        # The agent's own environment (its credentials) is no image.
        harness.image("bad", Path("/proc/self/environ"), sha256=None)
        code = contract.ERROR_IMAGE_INVALID
    else:
        code = contract.ERROR_IMAGE_NOT_FOUND
    agent = harness.agent()
    uid = harness.instance("bad1", "bad")["metadata"]["uid"]
    built = harness.wait_cond("bad1", "Built", "False")
    assert built["reason"] == contract.REASON_BUILD_FAILED
    assert built["message"].startswith(code + ":")
    ready = harness.cond("bad1", "Ready")
    assert ready["status"] == "False" and ready["reason"] == code
    obj = harness.get("bad1")
    assert contract.FINALIZER_AGENT not in (obj["metadata"].get("finalizers") or [])
    assert _domain(libvirt_conn, uid) is None
    assert not (tmp_path / "instances" / uid).exists()
    # No retry loop: resyncs come and go, one failure is counted.
    time.sleep(4.5)
    assert agent.metrics.build_failures.labels(code)._value.get() == 1
    # Deleting it does not wait for the agent.
    harness.delete("bad1")
    wait_for(lambda: harness.get("bad1") is None, 10, what="deleted")


def test_user_data_from_secret(harness, small_image, tmp_path):
    harness.image("small", small_image)
    harness.core.create_namespaced_secret(harness.ns, {
        "metadata": {"name": "ud"},
        "data": {"cfg": base64.b64encode(b"#!/bin/sh\necho from-secret\n").decode()}})
    harness.agent()
    uid = harness.instance("vm8", "small", secret=("ud", "cfg"))["metadata"]["uid"]
    harness.wait_phase("vm8", "Running")
    seed = read_nocloud_seed(tmp_path / "instances" / uid / "seed.iso")
    assert seed["user-data"] == b"#!/bin/sh\necho from-secret\n"
    # A missing Secret is waited for (as a pod waits for its Secret): nothing
    # built, Ready=False naming the Secret, one Event; then it is created and
    # the Instance is built.
    uid9 = harness.instance("vm9", "small", secret=("nope", "cfg"))["metadata"]["uid"]
    ready = wait_for(lambda: (c := harness.cond("vm9", "Ready")) and c["reason"] ==
                     contract.ERROR_USER_DATA and c, 20, what="vm9 waiting for its Secret")
    assert "Secret" in ready["message"] and "nope" in ready["message"], ready
    assert harness.cond("vm9", "Built")["status"] == "Unknown"
    assert not (tmp_path / "instances" / uid9).exists()
    assert contract.FINALIZER_AGENT not in (harness.get("vm9")["metadata"].get("finalizers") or [])
    harness.core.create_namespaced_secret(harness.ns, {
        "metadata": {"name": "nope"}, "data": {"cfg": base64.b64encode(b"late\n").decode()}})
    harness.wait_phase("vm9", "Running", 90)
    assert read_nocloud_seed(tmp_path / "instances" / uid9 / "seed.iso")["user-data"] == b"late\n"


def test_waits_for_status_host(harness, small_image, libvirt_conn):
    harness.image("small", small_image)
    harness.agent()
    uid = harness.instance("vm10", "small", schedule=False)["metadata"]["uid"]
    harness.patch("vm10", {"metadata": {"labels": {contract.LABEL_HOST: harness.host}}})
    time.sleep(1.5)
    assert _domain(libvirt_conn, uid) is None
    harness.schedule("vm10")
    harness.wait_phase("vm10", "Running")


def test_restart_readopts_without_touching_domains(harness, small_image, libvirt_conn):
    harness.image("small", small_image)
    first = harness.agent()
    uid = harness.instance("vm11", "small")["metadata"]["uid"]
    harness.wait_phase("vm11", "Running")
    dom_id = _domain(libvirt_conn, uid).ID()
    first.stop()
    harness.agents.remove(first)
    # While no agent runs, the status goes stale.
    harness.custom.patch_namespaced_custom_object_status(
        contract.GROUP, contract.VERSION, harness.ns, "instances", "vm11",
        {"status": {"phase": "Stopped", "powerState": "Shutdown"}},
        _content_type="application/merge-patch+json")
    t0 = time.monotonic()
    second = harness.agent()
    harness.wait_phase("vm11", "Running", timeout=10)
    assert time.monotonic() - t0 < 10
    assert _domain(libvirt_conn, uid).ID() == dom_id
    assert second.metrics.power_actions.labels("start")._value.get() == 0
    assert second.metrics.builds.labels("ok")._value.get() == 0


def test_orphan_domain_is_removed(harness, small_image, libvirt_conn, tmp_path):
    harness.image("small", small_image)
    agent = harness.agent()
    uid = harness.instance("vm12", "small")["metadata"]["uid"]
    harness.wait_phase("vm12", "Running")
    agent.stop()
    harness.agents.remove(agent)
    # The finalizer is force-removed while the agent is down.
    harness.patch("vm12", {"metadata": {"finalizers": None}})
    harness.delete("vm12")
    wait_for(lambda: harness.get("vm12") is None, 10, what="deleted")
    assert _domain(libvirt_conn, uid) is not None
    harness.agent()
    wait_for(lambda: _domain(libvirt_conn, uid) is None, 10, what="orphan removed")
    wait_for(lambda: not (tmp_path / "instances" / uid).exists(), 10, what="dir removed")


def test_metrics_and_healthz(harness, small_image):
    harness.image("small", small_image)
    port = free_port()
    harness.agent(metrics_port=port, metrics_bind="127.0.0.1")
    harness.instance("vm13", "small")
    harness.wait_phase("vm13", "Running")

    def fetch(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    code, body = wait_for(lambda: (r := fetch("/healthz"))[0] == 200 and r, 10, what="healthz")
    assert json.loads(body)["ok"] is True
    wait_for(lambda: 'kova_agent_domains{state="Running"}' in fetch("/metrics")[1], 10,
             what="domain gauge")
    _, text = fetch("/metrics")
    assert "kova_agent_build_duration_seconds_count 1.0" in text
    assert "kova_agent_image_cache_misses_total 1.0" in text


def test_nic_and_addresses(harness, small_image, libvirt_conn, tmp_path):
    from kova.agents.virt.domain import mac_for
    from kova.agents.virt.seed import read_nocloud_seed

    harness.image("small", small_image)
    harness.agent(network="default")  # test:///default's network hands out fake leases
    uid = harness.instance("vm14", "small")["metadata"]["uid"]
    got = wait_for(lambda: (o := harness.get("vm14")) and (o.get("status") or {}).get(
        "addresses") and o, 15, what="addresses")
    addr = got["status"]["addresses"][0]
    assert addr["family"] == "IPv4" and addr["address"].startswith("192.168.122.")
    xml = _domain(libvirt_conn, uid).XMLDesc(0)
    assert "<source network='default'" in xml and mac_for(uid) in xml
    nc = read_nocloud_seed(tmp_path / "instances" / uid / "seed.iso")["network-config"]
    assert mac_for(uid).encode() in nc


def test_guest_vcpu_scheduler_reaches_the_domain(harness, small_image, libvirt_conn):
    harness.image("small", small_image)
    harness.agent(guest_vcpu_scheduler="idle")
    uid = harness.instance("vm15", "small", resources={"vcpus": 2, "memoryMiB": 128,
                                                       "diskGiB": 1})["metadata"]["uid"]
    harness.wait_phase("vm15", "Running")
    import xml.etree.ElementTree as ET

    root = ET.fromstring(_domain(libvirt_conn, uid).XMLDesc(0))
    # libvirt writes one <vcpusched> per vCPU back.
    assert sorted((s.get("vcpus"), s.get("scheduler"))
                  for s in root.findall("cputune/vcpusched")) == [("0", "idle"), ("1", "idle")]


def test_image_firmware_reaches_the_domain(harness, small_image, libvirt_conn, tmp_path):
    """An Image with properties.firmware: uefi gives a domain with the EFI
    firmware and a variable store in the Instance's directory; a BIOS Image
    neither."""
    import xml.etree.ElementTree as ET

    harness.image("uefi", small_image, properties={"firmware": "uefi"})
    harness.image("bios", small_image)
    harness.agent()
    uefi = harness.instance("vm-uefi", "uefi")["metadata"]["uid"]
    bios = harness.instance("vm-bios", "bios")["metadata"]["uid"]
    harness.wait_phase("vm-uefi", "Running")
    harness.wait_phase("vm-bios", "Running")
    os_el = ET.fromstring(_domain(libvirt_conn, uefi).XMLDesc(0)).find("os")
    assert os_el.get("firmware") == "efi"
    assert os_el.findtext("nvram") == str(tmp_path / "instances" / uefi / "nvram.fd")
    assert os_el.find("firmware/feature").attrib == {"enabled": "no", "name": "secure-boot"}
    os_el = ET.fromstring(_domain(libvirt_conn, bios).XMLDesc(0)).find("os")
    assert os_el.get("firmware") is None and os_el.find("nvram") is None


def test_domains_of_other_hosts_are_never_touched(harness, libvirt_conn, make_spec):
    from kova.agents.virt.domain import DomainMetadata, build_domain_xml

    # Another agent (another host name) on the same libvirtd, whose Instance
    # this cluster does not know.
    spec = make_spec(meta=DomainMetadata(uid="6c1f0e43-0000-4000-8000-00000000abcd",
                                         namespace=harness.ns, name="theirs",
                                         host="some-other-host"))
    dom = libvirt_conn.defineXML(build_domain_xml(spec))
    dom.create()
    try:
        harness.agent()
        time.sleep(4.5)  # two resyncs
        assert _domain(libvirt_conn, spec.meta.uid).isActive()
    finally:
        dom.destroy()
        dom.undefine()


def test_unused_images_are_pruned(harness, small_image, tmp_path):
    import os

    harness.image("small", small_image)
    agent = harness.agent(image_cache_ttl=3600)
    harness.instance("vm15", "small")
    harness.wait_phase("vm15", "Running")
    cached = list((tmp_path / "instances" / "_base").glob("*.qcow2"))
    assert len(cached) == 1
    old = time.time() - 7200
    os.utime(cached[0].with_suffix(".qcow2.json"), (old, old))
    agent._last_prune = 0.0
    agent.resync()
    assert cached[0].exists()  # vm15's overlay uses it
    harness.delete("vm15")
    wait_for(lambda: harness.get("vm15") is None, 15, what="deleted")
    agent._last_prune = 0.0
    agent.resync()
    assert not cached[0].exists()


def test_half_built_instance_is_finished(harness, small_image, libvirt_conn, tmp_path):
    """A crash after the overlay was written and before the domain was
    defined: the next agent finishes the build with the same overlay."""
    import subprocess

    harness.image("small", small_image)
    obj = harness.instance("vm16", "small", schedule=False)
    uid = obj["metadata"]["uid"]
    d = tmp_path / "instances" / uid
    d.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(small_image), str(d / "disk.qcow2"), "1G"], check=True)
    marker = (d / "disk.qcow2").stat().st_ino
    harness.schedule("vm16")
    harness.agent()
    harness.wait_phase("vm16", "Running")
    assert (d / "disk.qcow2").stat().st_ino == marker  # the guest's disk was kept
    assert (d / "seed.iso").exists()


def test_leftover_directories_are_swept(harness, small_image, tmp_path):
    import json as _json
    import uuid as _uuid

    base = tmp_path / "instances"
    stray = base / str(_uuid.uuid4())
    stray.mkdir(parents=True)
    (stray / "instance.json").write_text(_json.dumps(
        {"uid": stray.name, "namespace": harness.ns, "name": "gone", "host": harness.host}))
    (stray / "disk.qcow2").write_bytes(b"x")
    agent = harness.agent()
    agent.resync()
    assert not stray.exists()
    assert (base / "_base").exists()


def test_host_instance_count_follows_instances_without_waiting_for_a_resync(
        harness, small_image):
    """The Host's instanceCount (printer column INSTANCES) is refreshed when an
    Instance arrives or goes, not only at the periodic resync."""
    harness.image("small", small_image)
    harness.agent(resync_seconds=600.0)
    wait_for(lambda: (h := harness.host_obj()) and (h.get("status") or {}).get(
        "instanceCount") == 0, 20, what="registered with 0 instances")
    harness.instance("count1", "small")
    harness.wait_phase("count1", "Running")
    wait_for(lambda: harness.host_obj()["status"].get("instanceCount") == 1, 10,
             what="instanceCount 1 long before the 600 s resync")
    harness.delete("count1")
    wait_for(lambda: harness.get("count1") is None, 15, what="instance gone")
    wait_for(lambda: harness.host_obj()["status"].get("instanceCount") == 0, 10,
             what="instanceCount back to 0")
