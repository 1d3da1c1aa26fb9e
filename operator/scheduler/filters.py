"""Scheduler filters: which of Placement's candidates may take the Instance.

Placement already checked capacity, traits and the availability zone; these
filters check what only the Kubernetes side knows.  Each filter is a pure
function ``(candidate, request) -> None`` (passes) or a short reason string
(rejected); :func:`run_filters` applies a list of them and counts, per filter,
how many hosts it removed: the NoValidHost message names each filter with its
count (Nova's "No valid host was found", made explainable).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kova.crds.names import ServerGroupPolicy
from kova.operator.scheduler.request import RequestSpec


@dataclass
class HostInfo:
    """What the scheduler knows about a Host from its object and its Lease."""

    name: str
    rp_uuid: str | None = None
    enabled: bool = True
    maintenance: bool = False
    zone: str | None = None
    #: The heartbeat Lease is fresh.
    alive: bool = False
    #: Host.spec.fenced, or its Node is tainted node.kubernetes.io/out-of-service.
    fenced: bool = False


@dataclass
class Candidate:
    """One allocation request from ``GET /allocation_candidates`` on one host."""

    rp_uuid: str
    host: HostInfo | None
    #: The ``allocations`` of the allocation request ({rp: {resources: {}}}).
    allocations: dict
    #: ``provider_summaries[rp]["resources"]``: {rc: {capacity, used}}.
    resources: dict = field(default_factory=dict)
    traits: list[str] = field(default_factory=list)
    #: The Host's name (the provider uuid for an unknown provider).
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.host.name if self.host else self.rp_uuid

    def free(self, rc: str) -> int:
        r = self.resources.get(rc) or {}
        return int(r.get("capacity", 0)) - int(r.get("used", 0))


FilterFn = Callable[[Candidate, RequestSpec], "str | None"]


def known_host_filter(c: Candidate, req: RequestSpec) -> str | None:
    """The provider belongs to a registered Host."""
    return None if c.host is not None else "no Host object for provider"


def enabled_filter(c: Candidate, req: RequestSpec) -> str | None:
    """Host.spec.enabled (Nova's ComputeFilter, service disabled)."""
    return None if c.host is None or c.host.enabled else "host disabled"


def maintenance_filter(c: Candidate, req: RequestSpec) -> str | None:
    return None if c.host is None or not c.host.maintenance else "host in maintenance"


def fenced_filter(c: Candidate, req: RequestSpec) -> str | None:
    """A fenced host (its instances are being evacuated) takes no new ones."""
    return None if c.host is None or not c.host.fenced else "host fenced"


def heartbeat_filter(c: Candidate, req: RequestSpec) -> str | None:
    """The agent's heartbeat Lease is fresh (Nova's ComputeFilter, service up)."""
    return None if c.host is None or c.host.alive else "host down (heartbeat expired)"


def availability_zone_filter(c: Candidate, req: RequestSpec) -> str | None:
    """Placement filtered by aggregate; this re-checks against Host.spec in case
    the provider's aggregates lag behind."""
    if not req.zone or c.host is None:
        return None
    return None if c.host.zone == req.zone else f"not in zone {req.zone}"


def server_group_affinity_filter(c: Candidate, req: RequestSpec) -> str | None:
    """Hard affinity: once a member is placed, only its host qualifies."""
    sg = req.server_group
    if sg is None or sg.policy != ServerGroupPolicy.AFFINITY:
        return None
    hosts = {h for h, n in sg.member_hosts.items() if n > 0}
    if not hosts or c.name in hosts:
        return None
    return f"server group {sg.name} affinity"


def server_group_anti_affinity_filter(c: Candidate, req: RequestSpec) -> str | None:
    """Hard anti-affinity: at most maxServerPerHost members per host."""
    sg = req.server_group
    if sg is None or sg.policy != ServerGroupPolicy.ANTI_AFFINITY:
        return None
    if sg.member_hosts.get(c.name, 0) < sg.max_server_per_host:
        return None
    return f"server group {sg.name} anti-affinity"


def same_host_filter(c: Candidate, req: RequestSpec) -> str | None:
    if req.same_host is None:
        return None
    return None if c.name in req.same_host else "sameHost hint"


def different_host_filter(c: Candidate, req: RequestSpec) -> str | None:
    return "differentHost hint" if c.name in req.different_host else None


def requested_host_filter(c: Candidate, req: RequestSpec) -> str | None:
    if not req.requested_host:
        return None
    return None if c.name == req.requested_host else "not the requested host"


def retry_filter(c: Candidate, req: RequestSpec) -> str | None:
    """A host the build already failed on is not tried again (Nova's RetryFilter)."""
    return "build failed there before" if c.name in req.excluded_hosts else None


#: Every filter, by the name used in ``--filters``.
FILTERS: dict[str, FilterFn] = {
    "KnownHost": known_host_filter,
    "Enabled": enabled_filter,
    "Maintenance": maintenance_filter,
    "Fenced": fenced_filter,
    "Heartbeat": heartbeat_filter,
    "AvailabilityZone": availability_zone_filter,
    "ServerGroupAffinity": server_group_affinity_filter,
    "ServerGroupAntiAffinity": server_group_anti_affinity_filter,
    "SameHost": same_host_filter,
    "DifferentHost": different_host_filter,
    "RequestedHost": requested_host_filter,
    "Retry": retry_filter,
}

DEFAULT_FILTERS = tuple(FILTERS)


def _always(req: RequestSpec) -> bool:
    return True


#: When a filter can reject anything at all (the others always can).
_RELEVANT: dict[str, Callable[[RequestSpec], bool]] = {
    "AvailabilityZone": lambda r: bool(r.zone),
    "ServerGroupAffinity": lambda r: bool(
        r.server_group and r.server_group.policy == ServerGroupPolicy.AFFINITY),
    "ServerGroupAntiAffinity": lambda r: bool(
        r.server_group and r.server_group.policy == ServerGroupPolicy.ANTI_AFFINITY),
    "SameHost": lambda r: r.same_host is not None,
    "DifferentHost": lambda r: bool(r.different_host),
    "RequestedHost": lambda r: bool(r.requested_host),
    "Retry": lambda r: bool(r.excluded_hosts),
}


def run_filters(
    candidates: Iterable[Candidate], req: RequestSpec, names: Iterable[str] = DEFAULT_FILTERS
) -> tuple[list[Candidate], Counter]:
    """Apply the filters in order; return the survivors and, per
    ``(filter name, reason)``, how many hosts that filter removed (each host
    counted once, by its first failing filter)."""
    # Filters with nothing to check for this request are skipped.
    fns = [(n, FILTERS[n]) for n in names if _RELEVANT.get(n, _always)(req)]
    passed: list[Candidate] = []
    rejected: Counter = Counter()
    for c in candidates:
        for name, fn in fns:
            reason = fn(c, req)
            if reason is not None:
                rejected[(name, reason)] += 1
                break
        else:
            passed.append(c)
    return passed, rejected


def describe_rejections(total: int, rejected: Counter) -> str:
    """``"3 candidate host(s) from Placement, none passed the filters:
    Heartbeat removed 2 (host down (heartbeat expired)), Enabled removed 1
    (host disabled)"``."""
    parts = [f"{name} removed {n} ({reason})"
             for (name, reason), n in rejected.most_common()]
    return (f"{total} candidate host(s) from Placement, none passed the filters: "
            + ", ".join(parts))
