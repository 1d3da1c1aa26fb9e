"""The scheduler: Placement candidates -> filters -> weighers -> claim.

``Scheduler.schedule`` is the whole decision for one :class:`RequestSpec`.
The claim is ``PUT /allocations/{instance uid}`` with the consumer
generation (``None`` for a first claim): Placement checks capacity and
generations in one transaction, so a 409 only ever means someone else got
there first -- the next candidate is tried, nothing is overcommitted.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from kova.crds import names
from kova.operator.scheduler.filters import (
    DEFAULT_FILTERS,
    Candidate,
    HostInfo,
    describe_rejections,
    run_filters,
)
from kova.operator.scheduler.request import RequestSpec, format_resources
from kova.operator.scheduler.weighers import WeighConfig, WeighContext, order_candidates, weigh
from kova.placement_client import Conflict, PlacementClient, PlacementError

LOG = logging.getLogger("kova.operator.scheduler")

#: Placement's 400 for a resource class it does not know.
_UNKNOWN_RC = re.compile(r"No such resource class ([A-Z0-9_]+)")


class NoValidHost(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Decision:
    host: str
    rp_uuid: str
    alternates: list[str]
    #: Claims tried (1 = the first candidate won).
    tries: int = 1
    #: The allocation already existed (a claim made before a restart).
    adopted: bool = False
    candidates: int = 0


@dataclass
class SchedulerConfig:
    filters: tuple[str, ...] = DEFAULT_FILTERS
    weigh: WeighConfig = field(default_factory=WeighConfig)
    #: Placement's ``limit`` on allocation candidates (0 = all), Nova's
    #: ``max_placement_results``.  Small, because Placement samples them at
    #: random (``--randomize-allocation-candidates``); a batch asks for at
    #: least as many as it has members.
    candidate_limit: int = 100
    #: Pick randomly among the best N hosts (Nova's host_subset_size), which
    #: spreads concurrent decisions; 1 = always the best.
    host_subset_size: int = 1
    max_alternates: int = 3


def parse_candidates(body: dict, host_by_rp: Callable[[str], HostInfo | None]) -> list[Candidate]:
    """Candidates (one per allocation request, single-provider trees only)."""
    summaries = body.get("provider_summaries") or {}
    out: list[Candidate] = []
    for ar in body.get("allocation_requests") or []:
        allocations = ar.get("allocations") or {}
        if isinstance(allocations, list):  # pre-1.12 format, never at 1.39
            continue
        if len(allocations) != 1:
            continue  # the root provider is the host; nested trees are not used yet
        (rp,) = allocations
        summ = summaries.get(rp) or {}
        out.append(Candidate(rp_uuid=rp, host=host_by_rp(rp), allocations=allocations,
                             resources=summ.get("resources") or {},
                             traits=summ.get("traits") or []))
    return out


class Scheduler:
    def __init__(self, placement: PlacementClient, config: SchedulerConfig,
                 host_by_rp: Callable[[str], HostInfo | None],
                 host_by_name: Callable[[str], HostInfo | None],
                 weigh_ctx: WeighContext | None = None) -> None:
        self.placement = placement
        self.config = config
        self.host_by_rp = host_by_rp
        self.host_by_name = host_by_name
        self.weigh_ctx = weigh_ctx or WeighContext()

    # --------------------------------------------------------------- choose
    async def _fetch(self, req: RequestSpec, limit: int | None = None) -> dict:
        limit = self.config.candidate_limit if limit is None else limit
        params = req.query(limit)
        try:
            return await self.placement.allocation_candidates(params)
        except PlacementError as exc:
            unknown_rc = _UNKNOWN_RC.search(exc.detail) if exc.status == 400 else None
            if unknown_rc:
                rc = unknown_rc.group(1)
                raise NoValidHost(f"no host offers resource class {rc}{req.origin(rc)}: "
                                  "no Host declares it (Host spec.extraResources)") from None
            if exc.status != 400 or "trait" not in exc.detail.lower():
                raise
        # An unknown trait: a required one no host has -> no host; a forbidden
        # one no host has -> drop it.
        wanted = sorted(req.required | req.forbidden)
        known = await self.placement.existing_traits(wanted)
        missing_required = sorted(req.required - known)
        if missing_required:
            raise NoValidHost("no host has " + "; no host has ".join(
                f"trait {t}{req.origin(t)}" for t in missing_required))
        req.forbidden &= known
        return await self.placement.allocation_candidates(req.query(limit))

    async def candidates(self, req: RequestSpec, limit: int | None = None) -> list[Candidate]:
        """Placement's candidates for ``req`` (``limit``: default the
        configured one); NoValidHost, with what is short, when there are none."""
        if req.requested_host and not req.requested_rp:
            host = self.host_by_name(req.requested_host)
            if host is None or not host.rp_uuid:
                raise NoValidHost(f"requested host {req.requested_host} is not registered")
            req.requested_rp = host.rp_uuid
        body = await self._fetch(req, limit)
        cands = parse_candidates(body, self.host_by_rp)
        if not cands:
            raise NoValidHost(await self.explain_shortage(req))
        return cands

    def rank(self, req: RequestSpec, cands: list[Candidate], total: int | None = None
             ) -> list[Candidate]:
        """Filters, weighers and host_subset_size: the candidates in the order
        to try them (NoValidHost when the filters leave none)."""
        passed, rejected = run_filters(cands, req, self.config.filters)
        if not passed:
            raise NoValidHost(describe_rejections(total or len(cands), rejected))
        return self.order(req, passed)

    def order(self, req: RequestSpec, passed: list[Candidate]) -> list[Candidate]:
        """Weighers and host_subset_size over candidates that passed the filters."""
        weighed = weigh(passed, req, self.config.weigh, self.weigh_ctx)
        n = max(1, self.config.host_subset_size)
        if n > 1 and not req.preferred_hosts:
            k = random.randrange(min(n, len(weighed)))
            weighed = [weighed[k]] + weighed[:k] + weighed[k + 1:]
        return order_candidates(weighed, req.preferred_hosts)

    async def select(self, req: RequestSpec) -> tuple[list[Candidate], int]:
        """Candidates in the order to try them, and how many Placement gave."""
        cands = await self.candidates(req)
        return self.rank(req, cands), len(cands)

    async def explain_shortage(self, req: RequestSpec) -> str:
        """Why Placement found nothing: ask about each constraint alone."""
        short: list[str] = []
        try:
            for rc, amount in sorted(req.resources.items()):
                rps = await self.placement.resource_providers([("resources", f"{rc}:{amount}")])
                if not rps:
                    short.append(f"no host has {amount} {rc} free{req.origin(rc)}")
            if req.required:
                short.extend(await self._missing_traits(req))
            if req.zone:
                rps = await self.placement.resource_providers(
                    [("member_of", names.az_aggregate_uuid(req.zone))])
                if not rps:
                    short.append(f"no host in availability zone {req.zone}")
        except PlacementError as exc:
            short.append(f"({exc.detail})")
        what = "; ".join(short) or "no single host satisfies every constraint together"
        return (f"Placement found no host for resources={format_resources(req.resources)}"
                f"{' required=' + ','.join(sorted(req.required)) if req.required else ''}"
                f"{' zone=' + req.zone if req.zone else ''}: {what}")

    async def _missing_traits(self, req: RequestSpec) -> list[str]:
        """What no host has among the required traits: each trait alone,
        else the combination."""
        out = []
        for t in sorted(req.required):
            if not await self.placement.resource_providers([("required", t)]):
                out.append(f"no host has trait {t}{req.origin(t)}")
        if not out and len(req.required) > 1 and not await self.placement.resource_providers(
                [("required", ",".join(sorted(req.required)))]):
            out.append(f"no host has all of {', '.join(sorted(req.required))}")
        return out

    # ---------------------------------------------------------------- claim
    async def claim(self, req: RequestSpec, ordered: list[Candidate], *,
                    consumer_generation: int | None, adopt: bool = True,
                    ncands: int = 0) -> Decision:
        """Claim on the first candidate that Placement accepts."""
        tries = 0
        gen = consumer_generation
        for i, cand in enumerate(ordered):
            tries += 1
            try:
                await self.placement.claim(req.uid, cand.allocations,
                                           project_id=names.project_id(req.namespace),
                                           consumer_generation=gen)
            except Conflict as exc:
                current = await self.placement.consumer_allocations(req.uid)
                allocs = current.get("allocations") or {}
                if adopt and gen is None and allocs:
                    # A claim of ours from before a restart: keep it.
                    rp = next(iter(allocs))
                    host = self.host_by_rp(rp)
                    return Decision(host=host.name if host else rp, rp_uuid=rp,
                                    alternates=self._alternates(ordered, rp), tries=tries,
                                    adopted=True, candidates=ncands)
                LOG.info("claim on %s for %s/%s lost a race (%s: %s); trying the next "
                         "candidate", cand.name, req.namespace, req.name, exc.code, exc.detail)
                gen = current.get("consumer_generation") if allocs else gen
                continue
            return Decision(host=cand.name, rp_uuid=cand.rp_uuid,
                            alternates=self._alternates(ordered[i + 1:], cand.rp_uuid),
                            tries=tries, candidates=ncands)
        raise NoValidHost(f"every one of {len(ordered)} candidate host(s) was claimed by "
                          "others first")

    def _alternates(self, ordered: list[Candidate], chosen_rp: str) -> list[str]:
        return [c.name for c in ordered if c.rp_uuid != chosen_rp][: self.config.max_alternates]

    async def schedule(self, req: RequestSpec, *, consumer_generation: int | None = None,
                       adopt: bool = True) -> Decision:
        ordered, ncands = await self.select(req)
        return await self.claim(req, ordered, consumer_generation=consumer_generation,
                                adopt=adopt, ncands=ncands)
