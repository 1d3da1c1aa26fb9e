"""Gauges read from the operator's informer at each scrape (nothing is kept
in between): the Instances by phase, and per Host what it offers and what
Placement has allocated on it, as its agent reports them in the Host's status
(``capacity``, and ``allocated``: Placement's usages of its provider) and spec
(``reserved``, ``allocationRatios``).  What Placement offers for instances is
``(capacity - reserved) * allocation_ratio`` per resource class.

Every replica exports them (the paused ones keep their caches warm too), so
a dashboard takes ``max`` over the replicas."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from prometheus_client.metrics_core import Metric

from kova.crds import names
from kova.operator.metrics import M

#: Placement's resource class -> the key in Host status capacity/allocated and
#: spec.reserved, and in spec.allocationRatios.
RESOURCES = (("VCPU", "vcpus", "vcpu"), ("MEMORY_MB", "memoryMiB", "memory"),
             ("DISK_GB", "diskGiB", "disk"))
#: Phases always exported (0 when no Instance is in them), so that a
#: dashboard's series do not come and go.
PHASES = tuple(p.value for p in names.InstancePhase)


class Source(Protocol):
    def instances(self) -> Iterable[tuple[tuple[str, str], dict]]: ...
    def host_names(self) -> list[str]: ...
    def host(self, name: str) -> dict | None: ...


class InventoryCollector:
    def __init__(self) -> None:
        #: The informer to read; None until the operator has one (no series).
        self.source: Source | None = None

    def collect(self) -> Iterable[Metric]:
        source = self.source
        if source is None:
            return
        phases = M.family("gauge", "kova_operator_instances",
                          "Instances by phase (empty phase: not handled yet).", ["phase"])
        count = Counter(((body.get("status") or {}).get("phase") or "")
                        for _, body in source.instances())
        for phase in sorted(set(PHASES) | set(count)):
            phases.add_metric([phase], count.get(phase, 0))
        yield phases
        yield from self._hosts(source)

    @staticmethod
    def _hosts(source: Source) -> Iterable[Metric]:
        labels = ["host", "resource"]
        capacity = M.family("gauge", "kova_operator_host_capacity",
                            "What the host has, per Placement resource class (Host "
                            "status.capacity).", labels)
        reserved = M.family("gauge", "kova_operator_host_reserved",
                            "Kept back for the host itself (Host spec.reserved).", labels)
        ratio = M.family("gauge", "kova_operator_host_allocation_ratio",
                         "Overcommit ratio (Host spec.allocationRatios).", labels)
        allocated = M.family("gauge", "kova_operator_host_allocated",
                             "Allocated in Placement to Instances (Host status.allocated).",
                             labels)
        for name in sorted(source.host_names()):
            body = source.host(name) or {}
            spec, status = body.get("spec") or {}, body.get("status") or {}
            have = status.get("capacity") or {}
            used = status.get("allocated") or {}
            kept = spec.get("reserved") or {}
            ratios = spec.get("allocationRatios") or {}
            for rc, key, ratio_key in RESOURCES:
                if key in have:
                    capacity.add_metric([name, rc], float(have[key]))
                    reserved.add_metric([name, rc], float(kept.get(key, 0)))
                    ratio.add_metric([name, rc], float(ratios.get(ratio_key, 1.0)))
                if key in used:
                    allocated.add_metric([name, rc], float(used[key]))
        yield from (capacity, reserved, ratio, allocated)


INVENTORY = InventoryCollector()
M.registry.register(INVENTORY)
