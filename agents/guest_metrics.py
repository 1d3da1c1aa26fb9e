"""Per-Instance guest metrics, read from libvirt at each scrape of the
agent's ``/metrics``: CPU and vCPU time, memory, disk and network I/O of
every running domain this agent created, labelled ``namespace`` and ``name``
of its Instance.  Devices are summed per guest, so a guest has a fixed set
of series whatever its disks and NICs: cardinality is bounded by the number
of Instances on the host.  One ``virConnectGetAllDomainStats`` call per
scrape; when libvirt does not answer the scrape has no guest series (the
Host's HypervisorReachable condition says why).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from kova.agents.instance.decisions import is_mine
from kova.agents.virt.driver import guest_stats
from kova.metrics import MetricSet

if TYPE_CHECKING:  # pragma: no cover
    from kova.agents.virt.driver import LibvirtDriver

log = logging.getLogger("kova.agents.guest_metrics")

LABELS = ("namespace", "name")
NS = 1e-9
KIB = 1024

#: name -> (kind, help, how to read it from a domain's statistics).
GUEST_METRICS: dict[str, tuple[str, str]] = {
    "kova_agent_guest_cpu_seconds_total": (
        "counter", "CPU time of the guest's QEMU process (vCPUs and emulation)."),
    "kova_agent_guest_vcpu_seconds_total": ("counter", "Time the guest's vCPUs ran."),
    "kova_agent_guest_vcpus": ("gauge", "vCPUs of the guest."),
    "kova_agent_guest_memory_bytes": (
        "gauge", "Memory of the guest (its balloon's current size)."),
    "kova_agent_guest_memory_rss_bytes": (
        "gauge", "Resident memory of the guest's QEMU process on the host."),
    "kova_agent_guest_disk_read_bytes_total": ("counter", "Bytes read from the guest's disks."),
    "kova_agent_guest_disk_write_bytes_total": (
        "counter", "Bytes written to the guest's disks."),
    "kova_agent_guest_disk_read_requests_total": (
        "counter", "Read requests of the guest's disks."),
    "kova_agent_guest_disk_write_requests_total": (
        "counter", "Write requests of the guest's disks."),
    "kova_agent_guest_network_receive_bytes_total": (
        "counter", "Bytes the guest's NICs received."),
    "kova_agent_guest_network_transmit_bytes_total": (
        "counter", "Bytes the guest's NICs sent."),
}


def _sum(stats: dict, group: str, field: str, count: str = "count") -> float:
    """``<group>.<i>.<field>`` summed over ``<group>.<count>`` devices (the
    vCPUs are counted by ``vcpu.maximum``)."""
    return float(sum(stats.get(f"{group}.{i}.{field}", 0)
                     for i in range(int(stats.get(f"{group}.{count}", 0)))))


def guest_values(stats: dict) -> dict[str, float]:
    """The metrics of one domain from its libvirt statistics (a value
    libvirt did not report is left out)."""
    out: dict[str, float] = {
        "kova_agent_guest_vcpu_seconds_total": _sum(stats, "vcpu", "time", "maximum") * NS,
        "kova_agent_guest_disk_read_bytes_total": _sum(stats, "block", "rd.bytes"),
        "kova_agent_guest_disk_write_bytes_total": _sum(stats, "block", "wr.bytes"),
        "kova_agent_guest_disk_read_requests_total": _sum(stats, "block", "rd.reqs"),
        "kova_agent_guest_disk_write_requests_total": _sum(stats, "block", "wr.reqs"),
        "kova_agent_guest_network_receive_bytes_total": _sum(stats, "net", "rx.bytes"),
        "kova_agent_guest_network_transmit_bytes_total": _sum(stats, "net", "tx.bytes"),
    }
    if "cpu.time" in stats:
        out["kova_agent_guest_cpu_seconds_total"] = stats["cpu.time"] * NS
    if "vcpu.current" in stats:
        out["kova_agent_guest_vcpus"] = float(stats["vcpu.current"])
    if "balloon.current" in stats:
        out["kova_agent_guest_memory_bytes"] = float(stats["balloon.current"]) * KIB
    if "balloon.rss" in stats:
        out["kova_agent_guest_memory_rss_bytes"] = float(stats["balloon.rss"]) * KIB
    return out


class GuestCollector:
    """A prometheus-client collector of this host's guests."""

    def __init__(self, driver: LibvirtDriver, host: str, metrics: MetricSet) -> None:
        self.driver = driver
        self.host = host
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        try:
            guests = [(meta, stats) for meta, stats in guest_stats(self.driver)
                      if is_mine(meta, self.host)]
        except Exception as exc:  # noqa: BLE001 - a scrape never fails for libvirt
            log.debug("no guest statistics: %s", exc)
            return
        families = {name: self.metrics.family(kind, name, doc, LABELS)
                    for name, (kind, doc) in GUEST_METRICS.items()}
        for meta, stats in guests:
            for name, value in guest_values(stats).items():
                families[name].add_metric([meta.namespace, meta.name], value)
        yield from families.values()
