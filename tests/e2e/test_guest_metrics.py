"""Per-Instance guest metrics on the agent's ``/metrics``: a real guest
booted by the agent under QEMU (software emulation) on qemu:///system, with
a NIC on the kova-test network; its series are labelled with the Instance's
namespace and name, its counters grow while it runs, and they are gone once
the Instance is deleted.  The pure parts (libvirt's statistics -> values)
are checked against a record shaped like libvirt's."""

from __future__ import annotations

import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kova.agents.guest_metrics import GUEST_METRICS, guest_values
from tests.fixtures.agents import free_port, remove_domain, wait_for
from tests.helpers import BOOT_TIMEOUT


def guest_samples(port: int, namespace: str, name: str) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("namespace") == namespace and s.labels.get("name") == name \
                    and s.name.startswith("kova_agent_guest_"):
                assert set(s.labels) == {"namespace", "name"}, s  # bounded: no device label
                out[s.name] = s.value
    return out


def test_guest_values_sum_devices_and_convert_units() -> None:
    stats = {"cpu.time": 3_000_000_000, "vcpu.current": 2, "vcpu.maximum": 2,
             "vcpu.0.time": 1_000_000_000, "vcpu.1.time": 500_000_000,
             "balloon.current": 262144, "balloon.rss": 131072,
             "block.count": 2, "block.0.rd.bytes": 100, "block.1.rd.bytes": 20,
             "block.0.wr.bytes": 7, "block.0.rd.reqs": 3, "block.1.wr.reqs": 1,
             "net.count": 1, "net.0.rx.bytes": 1500, "net.0.tx.bytes": 600}
    got = guest_values(stats)
    assert got == {
        "kova_agent_guest_cpu_seconds_total": 3.0,
        "kova_agent_guest_vcpu_seconds_total": 1.5,
        "kova_agent_guest_vcpus": 2.0,
        "kova_agent_guest_memory_bytes": 256 * 1024 * 1024,
        "kova_agent_guest_memory_rss_bytes": 128 * 1024 * 1024,
        "kova_agent_guest_disk_read_bytes_total": 120.0,
        "kova_agent_guest_disk_write_bytes_total": 7.0,
        "kova_agent_guest_disk_read_requests_total": 3.0,
        "kova_agent_guest_disk_write_requests_total": 1.0,
        "kova_agent_guest_network_receive_bytes_total": 1500.0,
        "kova_agent_guest_network_transmit_bytes_total": 600.0,
    }
    assert set(got) == set(GUEST_METRICS)


def test_running_guest_has_its_metrics(harness, libvirtd, libvirt_test_network,
                                       libvirt_qemu_conn, test_image, tmp_path):
    port = free_port()
    image = "kova-metrics-" + uuid.uuid4().hex[:6]
    harness.image(image, test_image)
    harness.agent(libvirt_uri=libvirtd, domain_type="qemu", metrics_port=port,
                  metrics_bind="127.0.0.1", network=libvirt_test_network,
                  instance_dir=tmp_path / "instances")
    domain = f"{harness.ns}.vm"
    try:
        harness.instance("vm", image, resources={"vcpus": 1, "memoryMiB": 192, "diskGiB": 1})
        harness.wait_phase("vm", "Running", timeout=60)
        first = wait_for(lambda: (s := guest_samples(port, harness.ns, "vm"))
                         and s["kova_agent_guest_disk_read_bytes_total"] > 0 and s,
                         BOOT_TIMEOUT, 0.5, "guest series with disk reads")
        assert set(first) == set(GUEST_METRICS)
        assert first["kova_agent_guest_vcpus"] == 1
        assert first["kova_agent_guest_memory_bytes"] == 192 * 1024 * 1024
        assert first["kova_agent_guest_memory_rss_bytes"] > 0
        # the guest runs: its CPU time grows; its NIC sends (DHCP) and receives
        later = wait_for(
            lambda: (s := guest_samples(port, harness.ns, "vm"))
            and s["kova_agent_guest_cpu_seconds_total"]
            > first["kova_agent_guest_cpu_seconds_total"]
            and s["kova_agent_guest_vcpu_seconds_total"]
            > first["kova_agent_guest_vcpu_seconds_total"]
            and s["kova_agent_guest_network_transmit_bytes_total"] > 0 and s,
            BOOT_TIMEOUT, 0.5, "growing CPU time and NIC traffic")
        print(f"\nguest metrics: {later}")
        harness.delete("vm")
        wait_for(lambda: harness.get("vm") is None, 60, 0.2, "instance deleted")
        assert guest_samples(port, harness.ns, "vm") == {}
    finally:
        for agent in harness.agents:  # first, or it would build the guest again
            agent.stop()
        harness.agents.clear()
        remove_domain(libvirt_qemu_conn, domain)


def test_metadata_element_as_libvirt_returns_it() -> None:
    """virDomainGetMetadata gives the <instance> element without its namespace."""
    from kova.agents.virt.domain import parse_domain_metadata

    meta = parse_domain_metadata("<instance>\n  <uid>u-1</uid>\n  <namespace>ns</namespace>\n"
                                 "  <name>vm</name>\n  <host>h</host>\n</instance>")
    assert meta is not None and (meta.uid, meta.namespace, meta.name, meta.host) == (
        "u-1", "ns", "vm", "h")
    assert parse_domain_metadata("<instance><name>vm</name></instance>") is None
