"""The operator's scrape-time gauges: Instances by phase, and per Host its
capacity, reserved amounts, ratios and Placement's allocations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kova.operator.inventory_metrics import InventoryCollector


class Objects:
    def __init__(self, instances: list[dict], hosts: dict[str, dict]) -> None:
        self._instances, self._hosts = instances, hosts

    def instances(self):
        return ((("ns", str(i)), body) for i, body in enumerate(self._instances))

    def host_names(self) -> list[str]:
        return list(self._hosts)

    def host(self, name: str) -> dict | None:
        return self._hosts.get(name)


def samples(collector: InventoryCollector) -> dict[tuple, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_no_informer_no_series() -> None:
    assert samples(InventoryCollector()) == {}


def test_phases_and_host_resources() -> None:
    collector = InventoryCollector()
    collector.source = Objects(
        [{"status": {"phase": "Running"}}, {"status": {"phase": "Running"}},
         {"status": {"phase": "Error"}}, {}],
        {"hv-1": {"spec": {"reserved": {"vcpus": 1, "memoryMiB": 512, "diskGiB": 0},
                           "allocationRatios": {"vcpu": 4.0, "memory": 1.0, "disk": 1.5}},
                  "status": {"capacity": {"vcpus": 8, "memoryMiB": 16384, "diskGiB": 100},
                             "allocated": {"vcpus": 3, "memoryMiB": 2048, "diskGiB": 10}}},
         "hv-new": {"spec": {}}})  # not registered yet: no series
    got = samples(collector)
    phase = {dict(k[1])["phase"]: v for k, v in got.items() if k[0] == "kova_operator_instances"}
    assert phase["Running"] == 2 and phase["Error"] == 1 and phase[""] == 1
    assert phase["Pending"] == 0  # every phase is exported, so series do not come and go

    def host(metric: str) -> dict[str, float]:
        return {dict(k[1])["resource"]: v for k, v in got.items()
                if k[0] == metric and dict(k[1])["host"] == "hv-1"}

    assert host("kova_operator_host_capacity") == {"VCPU": 8, "MEMORY_MB": 16384,
                                                   "DISK_GB": 100}
    assert host("kova_operator_host_reserved") == {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 0}
    assert host("kova_operator_host_allocation_ratio") == {"VCPU": 4.0, "MEMORY_MB": 1.0,
                                                           "DISK_GB": 1.5}
    assert host("kova_operator_host_allocated") == {"VCPU": 3, "MEMORY_MB": 2048,
                                                    "DISK_GB": 10}
    assert not any(dict(k[1]).get("host") == "hv-new" for k in got)
