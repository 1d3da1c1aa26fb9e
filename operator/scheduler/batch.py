"""Batch scheduling: many new Instances decided and claimed together.

Workers hand plain requests (no server group, no host hints, not a
reschedule) to :meth:`BatchScheduler.schedule` and wait for the decision.
Whatever arrived while the previous batch was in flight becomes the next
batch, so a lone Instance is decided at once and a burst is decided in
batches as large as the burst allows (up to ``max_batch``).

For each group of identical Placement requests of a batch the candidates
are fetched once; the group's Instances are then placed one after the other
over those candidates while the batch's own consumption is added to the
providers' usage, so the weighers see the batch's earlier choices (a spread
stays a spread) and no provider is given more than its free capacity by the
batch.  The group's claims go to Placement in one ``POST /allocations``
(before the next group's candidates are fetched), which is atomic: every
consumer is written, with its consumer generation (``null``, a first claim)
and every provider checked against its capacity in one
transaction, or none is.  A 409 (capacity taken meanwhile by another
scheduler, a consumer that already has allocations after a restart) makes
the batch fall back to claiming each Instance on its own with ``PUT
/allocations/{uid}`` -- the ordinary path, which takes the next candidate
on a 409 and adopts a claim of its own from before a restart -- so a race
costs time, never an overcommit.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from kova.crds import names
from kova.operator import metrics
from kova.operator.scheduler.filters import Candidate, describe_rejections, run_filters
from kova.operator.scheduler.request import RequestSpec
from kova.operator.scheduler.scheduler import Decision, NoValidHost, Scheduler
from kova.placement_client import Conflict

LOG = logging.getLogger("kova.operator.scheduler.batch")


def batchable(req: RequestSpec) -> bool:
    """Requests whose decision depends on nothing another member of the
    batch could change: no server group, no host hints, no earlier attempt."""
    return (req.server_group is None and req.same_host is None and not req.different_host
            and not req.requested_host and not req.excluded_hosts and not req.preferred_hosts)


def _fits(c: Candidate) -> bool:
    res = c.resources
    for rc, amount in (c.allocations[c.rp_uuid].get("resources") or {}).items():
        r = res.get(rc)
        if r is None or r.get("used", 0) + amount > r.get("capacity", 0):
            return False
    return True


def _consume(c: Candidate) -> None:
    """Count a choice of this batch in the provider's summary (shared by the
    group's candidates), so that later members see it."""
    for rc, amount in (c.allocations[c.rp_uuid].get("resources") or {}).items():
        r = c.resources.get(rc)
        if r is not None:
            r["used"] = r.get("used", 0) + amount


@dataclass
class _Item:
    req: RequestSpec
    future: asyncio.Future
    ordered: list[Candidate] = field(default_factory=list)
    ncands: int = 0

    def resolve(self, decision: Decision) -> None:
        if not self.future.done():  # the waiting worker may have been cancelled
            self.future.set_result(decision)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class BatchScheduler:
    def __init__(self, scheduler: Scheduler, max_batch: int = 256) -> None:
        self.scheduler = scheduler
        self.max_batch = max(1, max_batch)
        self._waiting: list[_Item] = []
        self._task: asyncio.Task | None = None

    async def schedule(self, req: RequestSpec) -> Decision:
        """The decision for ``req``, made together with whatever else is
        waiting; raises NoValidHost (or the Placement error) like
        :meth:`Scheduler.schedule`."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(_Item(req, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="kova-batch-scheduler")
        return await fut

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _drain(self) -> None:
        while self._waiting:
            # Let the workers that are ready right now add theirs first.
            await asyncio.sleep(0)
            batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
            batch = [it for it in batch if not it.future.done()]  # cancelled waiters
            if not batch:
                continue
            try:
                await self._run(batch)
            except asyncio.CancelledError:
                for it in batch + self._waiting:
                    if not it.future.done():
                        it.future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every waiter gets it
                for it in batch:
                    it.fail(exc)

    # ------------------------------------------------------------ one batch
    async def _run(self, batch: list[_Item]) -> None:
        metrics.BATCH_SIZE.observe(len(batch))
        groups: dict[tuple, list[_Item]] = {}
        for it in batch:
            groups.setdefault(tuple(it.req.query()), []).append(it)
        deferred: list[_Item] = []
        # One claim per group, before the next group fetches its candidates:
        # Placement's answer to the next group then includes this group's
        # claims, so groups of different sizes never contend for a host.
        for items in groups.values():
            chosen: list[_Item] = []
            await self._decide_group(items, chosen, deferred)
            if chosen:
                await self._claim(chosen)
        # Members for which the batch itself used up the candidates: decided
        # on their own, with fresh candidates (after the batch's claims).
        for it in deferred:
            await self._single(it)

    async def _decide_group(self, items: list[_Item], chosen: list[_Item],
                            deferred: list[_Item]) -> None:
        sched = self.scheduler
        limit = sched.config.candidate_limit
        if limit:
            # Enough candidates for every member to get a host of its own.
            limit = max(limit, len(items))
        try:
            cands = await sched.candidates(items[0].req, limit)
        except NoValidHost as exc:
            for it in items:
                it.fail(NoValidHost(exc.message))
            return
        # explain_shortage/_fetch may have dropped unknown forbidden traits.
        for it in items[1:]:
            it.req.forbidden = set(items[0].req.forbidden)
        # The filters of a batchable request look only at the Host (known,
        # enabled, maintenance, heartbeat, zone): the same for every member of
        # the group and untouched by the batch's own choices -- run once.
        fitting, rejected = run_filters(cands, items[0].req, sched.config.filters)
        if not fitting:
            for it in items:
                it.fail(NoValidHost(describe_rejections(len(cands), rejected)))
            return
        for it in items:
            if not fitting:
                deferred.append(it)  # the batch itself used up every candidate
                continue
            ordered = sched.order(it.req, fitting)
            best = ordered[0]
            it.ordered, it.ncands = ordered, len(cands)
            _consume(best)
            if not _fits(best):  # only a host that just took a member can fill up
                fitting = [c for c in fitting if c is not best]
            chosen.append(it)

    async def _claim(self, chosen: list[_Item]) -> None:
        sched = self.scheduler
        if len(chosen) == 1:
            await self._claim_one(chosen[0])
            return
        try:
            await sched.placement.claim_many({
                it.req.uid: (it.ordered[0].allocations, names.project_id(it.req.namespace))
                for it in chosen})
        except Conflict as exc:
            metrics.BATCH_FALLBACKS.inc()
            LOG.info("batch claim of %d Instances lost a race (%s: %s); claiming them one "
                     "by one", len(chosen), exc.code, exc.detail)
            for it in chosen:
                await self._claim_one(it)
            return
        for it in chosen:
            best = it.ordered[0]
            it.resolve(Decision(
                host=best.name, rp_uuid=best.rp_uuid,
                alternates=sched._alternates(it.ordered[1:], best.rp_uuid),
                tries=1, candidates=it.ncands))

    async def _claim_one(self, it: _Item) -> None:
        """The ordinary claim (PUT, next candidate on 409, adoption after a
        restart); with fresh candidates if every one of ours was taken."""
        try:
            decision = await self.scheduler.claim(it.req, it.ordered, consumer_generation=None,
                                                  adopt=True, ncands=it.ncands)
        except NoValidHost:
            await self._single(it)
            return
        except Exception as exc:  # noqa: BLE001
            it.fail(exc)
            return
        it.resolve(decision)

    async def _single(self, it: _Item) -> None:
        try:
            decision = await self.scheduler.schedule(it.req)
        except Exception as exc:  # noqa: BLE001 - NoValidHost or Placement's error
            it.fail(exc)
            return
        it.resolve(decision)
