"""Per-namespace quotas (Nova's instances / cores / ram quotas, and disk).

An administrator sets them with the Kubernetes object made for the job, a
``ResourceQuota`` in the tenant's namespace, under Kova's own keys::

    spec:
      hard:
        kova.dev/instances: "10"    # Instances holding a claim
        kova.dev/vcpus: "32"        # their vCPUs (VCPU or PCPU)
        kova.dev/memory: 64Gi       # their memory
        kova.dev/disk: 1Ti          # their root disks

Tenants usually cannot write ResourceQuotas (the built-in ``edit`` and
``admin`` roles only read them), so the limits are the administrator's.
Several ResourceQuotas in one namespace: the smallest limit of each key
applies.  Kubernetes ignores these keys itself; the operator enforces them
before it schedules an Instance.

Usage is counted from what is claimed: every Instance of the namespace that
holds an allocation (placed: ``status.host`` with the claimed size in
``status.resources``, or claimed by this process and not yet recorded).  An
Instance that waits, failed for good (its claim freed) or is gone counts for
nothing; a deleted one counts until its claim is freed.  An Instance that
would go over waits in phase Pending with ``Scheduled=False``, reason
``QuotaExceeded``, a message naming the resource and the numbers, and a
Warning Event; it is retried with back-off and scheduled once room is made
or the limit raised.

Checks and claims of one namespace with a quota are made one at a time
(:meth:`Quotas.hold`), so two Instances never both take the last room.

The ResourceQuotas come from the informer's list + watch cache
(:class:`~kova.operator.listwatch.ListWatch`): the scheduling path makes no
request to the API server for them, and a changed quota retriggers the
waiting Instances at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from kova.crds import names
from kova.crds import objects as ob

LOG = logging.getLogger("kova.operator.quota")

MIB = 1024 * 1024
GIB = 1024 * MIB

#: ResourceQuota key -> (what it counts in an Instance's size, unit in bytes
#: of the quantity, or 1 for a count, and how a message names it).
KEYS: dict[str, tuple[str, int, str]] = {
    names.QUOTA_INSTANCES: ("instances", 1, "instances"),
    names.QUOTA_VCPUS: ("vcpus", 1, "vCPUs"),
    names.QUOTA_MEMORY: ("memoryMiB", MIB, "memory (MiB)"),
    names.QUOTA_DISK: ("diskGiB", GIB, "disk (GiB)"),
}


_SUFFIXES: dict[str, int | Fraction] = {
    "": 1, "m": Fraction(1, 1000),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_QUANTITY = re.compile(
    r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[kMGTPEm]?)$")


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes quantity ("64Gi", "1.5T", "500m", "10") as an exact number."""
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"not a quantity: {text!r}")
    return Fraction(Decimal(m.group(1))) * _SUFFIXES[m.group(2)]


class QuotaExceeded(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = names.REASON_QUOTA_EXCEEDED
        self.message = message


@dataclass(frozen=True)
class Limit:
    amount: int      # in the size's unit (count, MiB, GiB)
    source: str      # the ResourceQuota it comes from


def limits(quotas: Iterable[dict]) -> dict[str, Limit]:
    """The Kova limits of a namespace's ResourceQuotas: size field -> the
    smallest limit set for it.  A quantity is rounded down to whole MiB/GiB."""
    out: dict[str, Limit] = {}
    for quota in quotas:
        hard = (quota.get("spec") or {}).get("hard") or {}
        for key, (field, unit, _) in KEYS.items():
            if key not in hard:
                continue
            amount = int(parse_quantity(str(hard[key])) // unit)
            if field not in out or amount < out[field].amount:
                out[field] = Limit(amount, quota["metadata"]["name"])
    return out


def claimed_size(body: dict, pending: dict[str, dict]) -> dict | None:
    """The size an Instance holds claimed, or None when it holds no claim."""
    uid = body["metadata"].get("uid")
    status = ob.status(body)
    if status.get("host") and status.get("resources"):
        return status["resources"]
    return pending.get(uid)


def usage(instances: Iterable[dict], pending: dict[str, dict], exclude: str) -> dict[str, int]:
    """What the Instances (but ``exclude``, a uid) hold claimed."""
    used = {"instances": 0, "vcpus": 0, "memoryMiB": 0, "diskGiB": 0}
    for body in instances:
        if body["metadata"].get("uid") == exclude:
            continue
        size = claimed_size(body, pending)
        if size is None:
            continue
        used["instances"] += 1
        for field in ("vcpus", "memoryMiB", "diskGiB"):
            used[field] += int(size.get(field) or 0)
    return used


def check(namespace: str, lims: dict[str, Limit], used: dict[str, int], size: dict) -> None:
    """Raise QuotaExceeded when claiming ``size`` goes over a limit (every
    limit gone over is named)."""
    want = {"instances": 1, **{f: int(size.get(f) or 0) for f in ("vcpus", "memoryMiB", "diskGiB")}}
    over = []
    for key, (field, _, label) in KEYS.items():
        lim = lims.get(field)
        if lim is None or used[field] + want[field] <= lim.amount:
            continue
        over.append(f"{label}: requested {want[field]}, {used[field]} in use of "
                    f"{lim.amount} ({key} in ResourceQuota {lim.source})")
    if over:
        raise QuotaExceeded(f"quota of namespace {namespace} exceeded: " + "; ".join(over))


class Quotas:
    """The operator's quota check (see the module doc)."""

    def __init__(self, kube: Any, informer: Any) -> None:
        self.kube = kube
        self.informer = informer
        #: uid -> size claimed by this process, until the status records it
        self.pending: dict[str, dict] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def limits(self, namespace: str) -> dict[str, Limit]:
        """The namespace's limits, from the informer's list + watch cache of
        ResourceQuotas (no request to the API server)."""
        return limits(self.informer.resource_quotas(namespace))

    @asynccontextmanager
    async def admit(self, body: dict, size: dict) -> AsyncIterator[Callable[[dict], None]]:
        """Around a claim for ``body``: raises QuotaExceeded when claiming
        ``size`` goes over its namespace's quota; otherwise yields the
        function to call with the size claimed.  In a namespace with a Kova
        quota the check and the claim hold the namespace's lock; elsewhere
        nothing waits."""
        ns, uid = body["metadata"]["namespace"], body["metadata"]["uid"]
        lims = await self.limits(ns)
        if not lims:
            yield lambda claimed: None
            return
        async with self._locks.setdefault(ns, asyncio.Lock()):
            lims = await self.limits(ns)
            bodies = [b for _, b in self.informer.instances(ns)]
            # a claim the status records (or an Instance gone) needs no memo
            waiting = {b["metadata"].get("uid") for b in bodies if not ob.status(b).get("host")}
            for done in [u for u in self.pending if u not in waiting and u != uid]:
                del self.pending[done]
            check(ns, lims, usage(bodies, self.pending, exclude=uid), size)

            def claimed(got: dict) -> None:
                self.pending[uid] = dict(got)

            yield claimed
