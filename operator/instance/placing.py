"""Placing an Instance: the one path from an Instance to a claim in
Placement, used by a new build, a reschedule after a failed build and an
evacuation alike.

1. Build the Placement request from the Instance, its Flavor, Image and
   ServerGroup, its hints, and where the other members of its server group
   are (:meth:`Placer.request`).
2. For a server-group member: under the group's lock (members are placed one
   at a time, each seeing where the others went), first ask Placement about
   members that record no host yet -- a claim made just before a restart is
   not in any status (:meth:`Placer.discover_member_claims`).
3. Schedule: candidates, filters, weighers, and the claim
   (``PUT /allocations/{uid}``).  A first placement adopts a claim it finds
   already made for the Instance, and may be decided in a batch with others;
   a move (reschedule, evacuation) replaces the Instance's existing claim in
   one request, guarded by its consumer generation, and never adopts.
4. Remember the claim in the ledger until the status records it
   (:meth:`Placer.record` forgets it again if the record fails, so a retry
   finds the claim in Placement instead).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from kova.crds import names
from kova.crds import objects as ob
from kova.operator.context import Context
from kova.operator.instance.records import Records
from kova.operator.scheduler.batch import BatchScheduler, batchable
from kova.operator.scheduler.request import RequestSpec, build_request
from kova.operator.scheduler.scheduler import Decision, NoValidHost, Scheduler
from kova.placement_client import Conflict

LOG = logging.getLogger("kova.operator")


@dataclass(frozen=True)
class Move:
    """Replace the Instance's existing claim (its consumer generation: None
    when it has no allocation any more).  With ``migration``: Nova's
    migration-consumer pattern -- one ``POST /allocations`` gives the
    Instance's current ``allocations`` to the consumer ``migration`` (type
    MIGRATION) and the new host's to the Instance, both or neither."""

    consumer_generation: int | None
    migration: str | None = None
    allocations: dict | None = None


Adjust = Callable[[RequestSpec], None]


class Placer:
    def __init__(self, ctx: Context, records: Records, scheduler: Scheduler,
                 batcher: BatchScheduler | None = None) -> None:
        self.ctx = ctx
        self.records = records
        self.scheduler = scheduler
        self.batcher = batcher

    # ------------------------------------------------------------ the request
    def request(self, body: dict) -> tuple[RequestSpec, dict]:
        """The Placement request and the resolved size of ``body``.  Raises
        MissingDependency (a Flavor, Image or ServerGroup does not exist yet)
        or InvalidRequest (it never can be placed as asked)."""
        ctx = self.ctx
        ns = body["metadata"]["namespace"]
        spec = ob.spec(body)
        group = ob.ref_name(body, "serverGroupRef")
        hints = spec.get("schedulingHints") or {}
        inst_hosts = (self.instance_hosts(ns)
                      if hints.get("sameHost") or hints.get("differentHost") else {})
        members = self.member_hosts(ns, group, body["metadata"]["uid"]) if group else None
        host_rp = {}
        if hints.get("requestedHost"):
            h = ctx.hosts.host_by_name(hints["requestedHost"])
            if h and h.rp_uuid:
                host_rp[h.name] = h.rp_uuid
        return build_request(body, flavor=ctx.informer.flavor(ob.ref_name(body, "flavorRef")),
                             image=ctx.informer.image(ob.image_key(body)),
                             server_group=ctx.informer.server_group(ns, group),
                             member_hosts=members, instance_hosts=inst_hosts, host_rp=host_rp,
                             use_image_traits=ctx.settings.image_traits)

    def instance_hosts(self, ns: str) -> dict[str, str | None]:
        """Name -> host of the Instances of namespace ``ns`` (the sameHost
        and differentHost hints name them)."""
        ledger = self.ctx.ledger
        return {key[1]: ledger.host_of(body["metadata"].get("uid"), ob.placed_host(body))
                for key, body in self.ctx.informer.instances(ns)}

    def member_hosts(self, ns: str, group: str, uid: str) -> Counter:
        """Hosts of the other members of a server group, as far as the
        Instances (status.host, the host label) and the claims this process
        made or found tell."""
        out: Counter = Counter()
        for m_uid, host in self.ctx.informer.group_members(ns, group):
            host = self.ctx.ledger.member_host(m_uid, host)
            if m_uid != uid and host:
                out[host] += 1
        return out

    async def discover_member_claims(self, ns: str, group: str, uid: str) -> None:
        """Members without a host may hold a claim made just before a restart
        (claimed, not yet recorded): ask Placement once per member.  Only the
        active replica claims, under the group's lock, so "no allocation" stays
        true until this process claims it."""
        ledger = self.ctx.ledger
        for m_uid, host in self.ctx.informer.group_members(ns, group):
            if (m_uid == uid or host or m_uid in ledger.own_hosts or m_uid in ledger.unrecorded
                    or m_uid in ledger.no_claim):
                continue
            allocs = (await self.ctx.placement.consumer_allocations(m_uid)).get("allocations")
            if allocs:
                h = self.ctx.hosts.host_by_rp(next(iter(allocs)))
                ledger.unrecorded[m_uid] = h.name if h else next(iter(allocs))
            else:
                ledger.no_claim.add(m_uid)

    async def current_claim(self, uid: str) -> tuple[dict, int | None]:
        """The Instance's allocations in Placement and their consumer
        generation (None when there are none)."""
        current = await self.ctx.placement.consumer_allocations(uid)
        allocs = current.get("allocations") or {}
        return allocs, current.get("consumer_generation") if allocs else None

    # ------------------------------------------------------------ placing
    async def place(self, body: dict, *, adjust: Adjust | None = None,
                    move: Move | None = None) -> tuple[Decision, dict]:
        """Claim a host for ``body`` (see the module doc): the decision and
        the resolved size.  ``adjust`` changes the request before it is
        scheduled (hosts to avoid or prefer, a hint to drop).  Raises
        NoValidHost, and what :meth:`request` raises."""
        ns, uid = body["metadata"]["namespace"], body["metadata"]["uid"]
        group = ob.ref_name(body, "serverGroupRef")
        if group:
            async with self.ctx.ledger.groups.hold(ns, group):
                await self.discover_member_claims(ns, group, uid)
                req, size = self._adjusted(body, adjust)
                decision = await self._schedule(req, move, batch=False)
                self.ctx.ledger.claimed(uid, decision.host)
        else:
            req, size = self._adjusted(body, adjust)
            decision = await self._schedule(req, move, batch=True)
            self.ctx.ledger.claimed(uid, decision.host)
        return decision, size

    def _adjusted(self, body: dict, adjust: Adjust | None) -> tuple[RequestSpec, dict]:
        req, size = self.request(body)
        if adjust is not None:
            adjust(req)
        return req, size

    async def _schedule(self, req: RequestSpec, move: Move | None, batch: bool) -> Decision:
        if move is not None and move.migration and move.allocations:
            return await self._schedule_migration(req, move)
        if move is not None:
            return await self.scheduler.schedule(
                req, consumer_generation=move.consumer_generation, adopt=False)
        if batch and self.batcher is not None and batchable(req):
            return await self.batcher.schedule(req)
        return await self.scheduler.schedule(req)

    async def _schedule_migration(self, req: RequestSpec, move: Move) -> Decision:
        """Claim the first candidate Placement accepts with the allocations
        moved to the migration consumer in the same POST (see :class:`Move`)."""
        ordered, ncands = await self.scheduler.select(req)
        project = names.project_id(req.namespace)
        assert move.migration is not None
        gen = move.consumer_generation
        for i, cand in enumerate(ordered):
            try:
                await self.ctx.placement.move_allocations({
                    move.migration: {"allocations": move.allocations, "project_id": project,
                                     "consumer_generation": None,
                                     "consumer_type": names.CONSUMER_TYPE_MIGRATION},
                    req.uid: {"allocations": cand.allocations, "project_id": project,
                              "consumer_generation": gen},
                })
            except Conflict as exc:
                LOG.info("claim of %s/%s on %s with migration %s lost a race (%s); trying the "
                         "next candidate", req.namespace, req.name, cand.name, move.migration,
                         exc.detail)
                _, gen = await self.current_claim(req.uid)
                continue
            return Decision(host=cand.name, rp_uuid=cand.rp_uuid,
                            alternates=[c.name for c in ordered[i + 1:]][:3], tries=i + 1,
                            candidates=ncands)
        if not ordered:
            raise NoValidHost(await self.scheduler.explain_shortage(req))
        raise NoValidHost(f"every one of {len(ordered)} candidate host(s) was claimed by "
                          "others first")

    async def record(self, body: dict, decision: Decision, size: dict, *, attempts: int,
                     reason: str, message: str, reset_built: str | None = None) -> dict | None:
        """Record the placement in the Instance (see Records.record_placement).
        If that fails, this process forgets its claim: the retry finds it in
        Placement and adopts or replaces it, instead of taking its own status
        for a stale copy."""
        try:
            return await self.records.record_placement(
                body, decision.host, decision.alternates, size, attempts=attempts,
                reason=reason, message=message, reset_built=reset_built)
        except Exception:
            self.ctx.ledger.released(body["metadata"]["uid"])
            raise
