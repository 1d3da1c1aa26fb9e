"""Allocation audit: Placement's allocations against the Instances.

* an *orphan* is a consumer with allocations but no Instance of that uid
  (healed by deleting the allocations);
* a *missing* allocation is a placed Instance (status.host set, not Error)
  with no allocation (healed by claiming again on its host);
* a *mismatch* is an Instance whose allocation is on another host's provider
  (reported only).

Each finding is re-checked with a fresh read before it is reported, so a
claim or delete racing the audit is not taken for a leak.

With ``namespaces`` (an operator that handles only some namespaces, sharing
Placement with others) only those namespaces' Instances are checked, and only
allocations whose project is one of theirs can be orphans.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kova.crds import names
from kova.kube import Kube, custom_path
from kova.operator import metrics
from kova.operator.scheduler.request import format_resources
from kova.placement_client import Conflict, PlacementClient

LOG = logging.getLogger("kova.operator.audit")


@dataclass
class AuditReport:
    orphans: dict[str, dict] = field(default_factory=dict)  # consumer -> allocations
    missing: list[str] = field(default_factory=list)  # ns/name
    mismatched: list[str] = field(default_factory=list)
    healed: list[str] = field(default_factory=list)
    heal_failed: list[str] = field(default_factory=list)
    instances: int = 0
    consumers: int = 0

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.missing or self.mismatched)

    def as_dict(self) -> dict:
        return {"instances": self.instances, "consumers": self.consumers,
                "orphanAllocations": sorted(self.orphans), "missingAllocations": self.missing,
                "mismatchedHosts": self.mismatched, "healed": self.healed,
                "healFailed": self.heal_failed}


async def list_instances(kube: Kube, namespace: str | None = None) -> list[dict]:
    body = await kube.list_all(custom_path(names.INSTANCES, namespace=namespace))
    return body["items"]


async def host_providers(kube: Kube) -> dict[str, str]:
    body = await kube.get(custom_path(names.HOSTS))
    out = {}
    for h in body.get("items") or []:
        rp = (h.get("status") or {}).get("resourceProviderUUID")
        if rp:
            out[h["metadata"]["name"]] = rp
    return out


#: Providers whose allocations the audit reads at a time.
READS_IN_FLIGHT = 8


async def all_allocations(placement: PlacementClient,
                          in_flight: int = READS_IN_FLIGHT) -> dict[str, dict]:
    """consumer -> {provider: allocation}, over every provider: one read per
    provider, ``in_flight`` at a time (one after the other, a cloud's
    thousands of providers made the audit several times the time of the
    reads themselves)."""
    sem = asyncio.Semaphore(in_flight)

    async def one(rp: str) -> tuple[str, dict]:
        async with sem:
            return rp, await placement.provider_allocations(rp)

    consumers: dict[str, dict] = {}
    providers = [rp["uuid"] for rp in await placement.resource_providers()]
    for rp, allocs in await asyncio.gather(*(one(rp) for rp in providers)):
        for consumer, alloc in allocs.items():
            consumers.setdefault(consumer, {})[rp] = alloc
    return consumers


async def run_audit(kube: Kube, placement: PlacementClient, *, heal: bool = False,
                    emit: Callable[[dict, str, str, str], None] | None = None,
                    namespaces: Sequence[str] = ()) -> AuditReport:
    report, started = AuditReport(), time.monotonic()
    # Allocations first, Instances second: an allocation's Instance exists
    # before its claim, so it is in the later list.
    consumers = await all_allocations(placement)
    if namespaces:
        instances = [i for ns in namespaces for i in await list_instances(kube, ns)]
    else:
        instances = await list_instances(kube)
    hosts = await host_providers(kube)
    report.instances, report.consumers = len(instances), len(consumers)
    by_uid = {i["metadata"]["uid"]: i for i in instances}
    projects = {names.project_id(ns) for ns in namespaces}
    for consumer in sorted(set(consumers) - set(by_uid)):
        await _check_orphan(placement, report, consumer, projects, heal)
    for inst in instances:
        await _check_instance(placement, report, inst, consumers, hosts, heal, emit)
    metrics.AUDIT_ORPHANS.set(len(report.orphans))
    metrics.AUDIT_MISSING.set(len(report.missing))
    metrics.AUDIT_INSTANCES.set(report.instances)
    metrics.AUDIT_SECONDS.set(time.monotonic() - started)
    LOG.info("audit: %d instances, %d consumers, %d orphans, %d missing, %d mismatched, "
             "%d healed in %.1fs", report.instances, report.consumers, len(report.orphans),
             len(report.missing), len(report.mismatched), len(report.healed),
             time.monotonic() - started)
    return report


async def _check_orphan(placement: PlacementClient, report: AuditReport, consumer: str,
                        projects: set[str], heal: bool) -> None:
    """A consumer with allocations and no Instance (re-read before it counts)."""
    fresh = await placement.consumer_allocations(consumer)
    if not fresh.get("allocations"):
        return
    if fresh.get("consumer_type") not in (None, names.CONSUMER_TYPE):
        return  # not an Instance's (e.g. a migration's): not ours to judge
    if projects and fresh.get("project_id") not in projects:
        return  # another namespace's: not ours to judge
    report.orphans[consumer] = fresh["allocations"]
    if heal and await placement.delete_allocations(consumer):
        report.healed.append(f"orphan {consumer}")
        metrics.AUDIT_HEALED.labels(kind="orphan").inc()


async def _check_instance(placement: PlacementClient, report: AuditReport, inst: dict,
                          consumers: dict[str, dict], hosts: dict[str, str], heal: bool,
                          emit: Callable[[dict, str, str, str], None] | None) -> None:
    """A placed Instance: its allocation missing, or on another host's provider."""
    meta, status = inst["metadata"], inst.get("status") or {}
    host = status.get("host")
    if not host or status.get("phase") == names.InstancePhase.ERROR:
        return
    name = f"{meta['namespace']}/{meta['name']}"
    allocs = consumers.get(meta["uid"])
    if not allocs:
        allocs = (await placement.consumer_allocations(meta["uid"])).get("allocations") or {}
    if not allocs:
        if meta.get("deletionTimestamp"):
            return
        report.missing.append(name)
        if emit:
            emit(inst, "Warning", names.EVENT_ALLOCATION_MISSING,
                 f"no allocation in Placement for this Instance on {host}")
        if heal:
            ok = await _reclaim(placement, inst, hosts.get(host))
            (report.healed if ok else report.heal_failed).append(f"missing {name}")
            if ok:
                metrics.AUDIT_HEALED.labels(kind="missing").inc()
        return
    rp = hosts.get(host)
    if rp and rp not in allocs:
        report.mismatched.append(name)
        if emit:
            emit(inst, "Warning", names.EVENT_ALLOCATION_MISMATCH,
                 f"allocation is on provider(s) {', '.join(allocs)}, not on {host} ({rp})")


async def _reclaim(placement: PlacementClient, inst: dict, rp: str | None) -> bool:
    """Claim the Instance's recorded size on its recorded host again."""
    size = (inst.get("status") or {}).get("resources")
    if not rp or not size:
        return False
    resources = {"VCPU": size["vcpus"], "MEMORY_MB": size["memoryMiB"],
                 "DISK_GB": size["diskGiB"]}
    body = await placement.allocation_candidates([("resources", format_resources(resources)),
                                                  ("in_tree", rp)])
    for ar in body.get("allocation_requests") or []:
        try:
            await placement.claim(inst["metadata"]["uid"], ar["allocations"],
                                  names.project_id(inst["metadata"]["namespace"]))
            return True
        except Conflict:
            return False
    return False


async def audit_loop(kube: Kube, placement: PlacementClient, *, interval: float, heal: bool,
                     active: Callable[[], bool],
                     emit: Callable[[dict, str, str, str], None] | None = None,
                     namespaces: Sequence[str] = ()) -> None:
    """The operator's periodic audit: every ``interval`` seconds while this
    replica is the ``active`` one, over ``namespaces`` (the operator's own;
    empty: every namespace).  A failed audit is logged and tried again at
    the next interval."""
    while True:
        await asyncio.sleep(interval)
        if not active():
            continue
        try:
            await run_audit(kube, placement, heal=heal, emit=emit, namespaces=namespaces)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOG.warning("audit failed: %s: %s", type(exc).__name__, exc)
