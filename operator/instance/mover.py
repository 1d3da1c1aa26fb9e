"""Moving an Instance: the conductor's side of a resize and a cold
migration (Nova's ``resize_instance`` / ``migrate_server``, confirm and
revert), with Nova's migration-consumer pattern in Placement.  The decisions
are :func:`~.plan.next_step`'s, the status records :mod:`.moves`'.

Crash safety: every step starts from what the Instance records
(``status.migration``) and from what Placement holds, so an operator that
restarts at any line goes on from there:

* the migration's UUID is written to the Instance (step Claiming) before
  Placement is touched;
* the claim is one ``POST /allocations``: the migration consumer takes the
  Instance's current allocation and the Instance's own consumer the new size
  on the destination, both or neither; a restarted operator that finds the
  migration consumer holding an allocation knows the POST went through;
* confirm deletes the migration consumer's allocation (again, harmlessly,
  after a crash) before the record goes; a finished revert gives the
  migration consumer's allocation back to the Instance in one POST.
"""

from __future__ import annotations

import logging

from kova import log as kova_log
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import MigrationStep, MigrationType
from kova.operator.context import Context
from kova.operator.instance import moves
from kova.operator.instance.live import LiveMover, give_back
from kova.operator.instance.placing import Placer
from kova.operator.instance.plan import Action, Step
from kova.operator.instance.records import Records
from kova.operator.quota import QuotaExceeded, Quotas
from kova.operator.scheduler.request import InvalidRequest, MissingDependency
from kova.operator.scheduler.scheduler import NoValidHost
from kova.placement_client import Conflict

LOG = logging.getLogger("kova.operator")


class Mover:
    def __init__(self, ctx: Context, records: Records, placer: Placer,
                 quotas: Quotas) -> None:
        self.ctx = ctx
        self.records = records
        self.placer = placer
        #: the conductor's: a resize claims its new size against the
        #: namespace's quota as a build does
        self.quotas = quotas
        self.live = LiveMover(ctx, records, placer)

    async def do(self, key: tuple, body: dict, step: Step) -> None:
        """Take ``step`` (one of plan.MOVING)."""
        match step.action:
            case Action.START_RESIZE:
                await self.start_resize(key, body)
            case Action.REFUSE_RESIZE:
                await self.refuse(body, step)
            case Action.CLAIM_MOVE:
                await self.claim(key, body)
            case Action.CONFIRM_MOVE:
                await self.confirm(body, step)
            case Action.REVERT_MOVE:
                await self.revert(body)
            case Action.FINISH_REVERT:
                await self.finish_revert(body)
            case Action.HAND_OVER:
                await self.hand_over(body, back=False)
            case Action.HAND_BACK:
                await self.hand_over(body, back=True)
            case Action.FINISH_LIVE:
                await self.live.finish(body)
            case Action.FAIL_LIVE:
                await self.live.fail(body)

    # ------------------------------------------------------------ start
    async def start_resize(self, key: tuple, body: dict) -> None:
        """Record a resize (a new migration UUID, step Claiming), then claim."""
        want = moves.wanted_size(ob.spec(body), self.ctx.informer.flavor(
            ob.ref_name(body, "flavorRef")))
        mig = moves.new_migration(body, MigrationType.RESIZE, user=names.COMPONENT_OPERATOR)
        msg = moves.resize_message(ob.status(body).get("resources"), want,
                                   ob.ref_name(body, "flavorRef"))
        written: list = []
        body = await self.records.patch_status(body, lambda cur: moves.started(cur, mig, msg),
                                               written=written)
        if not written:
            self.ctx.enqueue(key)  # a move was recorded meanwhile: plan again
            return
        LOG.info("%s/%s uid=%s: %s (migration %s)", key[1], key[2], ob.uid(body), msg,
                 mig["uuid"], extra=kova_log.about(body))
        self.ctx.emit(body, "Normal", names.EVENT_RESIZE_STARTED, msg)
        await self.claim(key, body)

    async def refuse(self, body: dict, step: Step) -> None:
        """Resized=False reason ResizeRefused (the message names the field)."""
        body = await self.records.patch_status(
            body, lambda cur: moves.refused(cur, names.REASON_RESIZE_REFUSED, step.reason))
        LOG.warning("%s/%s: resize refused: %s", *ob.key(body), step.reason,
                    extra=kova_log.about(body))
        self.ctx.emit(body, "Warning", names.REASON_RESIZE_REFUSED, step.reason)

    # ------------------------------------------------------------ claim
    async def claim(self, key: tuple, body: dict) -> None:
        """Step Claiming: the migration consumer takes the old allocation and
        the Instance's consumer the new size on the chosen host, in one POST;
        then step Moving with the destination recorded."""
        mig = ob.status(body)["migration"]
        uid, mid = ob.uid(body) or "", mig["uuid"]
        placement = self.ctx.placement
        try:
            _, size = self.placer.request(body)
        except (MissingDependency, InvalidRequest) as exc:
            await self.abort(body, exc.reason, exc.message)
            return
        if mig["type"] == MigrationType.MIGRATE and mig.get("oldResources"):
            # A migration keeps the size the Instance has, whatever Flavor
            # the spec names now (a resize to it may have been reverted).
            size = moves.size_of(mig["oldResources"]) or size
        held = await placement.consumer_allocations(mid)
        if held.get("allocations"):
            # The POST went through before a restart: the Instance's own
            # allocation is the destination's.
            allocs, _ = await self.placer.current_claim(uid)
            info = self.ctx.hosts.host_by_rp(next(iter(allocs))) if allocs else None
            dest = info.name if info else mig["sourceHost"]
        else:
            try:
                if mig["type"] == MigrationType.MIGRATE:  # the same size: no quota to take
                    dest = await self._claim_new(body, mig)
                else:
                    async with self.quotas.admit(body, size) as claimed:
                        dest = await self._claim_new(body, mig)
                        claimed(size)
            except QuotaExceeded as exc:
                await self.abort(body, exc.reason, exc.message)
                return
            except NoValidHost as exc:
                await self.abort(body, names.REASON_NO_VALID_HOST,
                                 moves.no_host_message(exc.message, mig["type"]))
                return
        if dest == mig["sourceHost"]:
            # Across hosts the Instance stays the source's until its disk is
            # on the destination (hand_over).
            self.ctx.ledger.claimed(uid, dest)
        message = moves.claimed_message({**mig, "newResources": size}, dest)
        written: list = []
        body = await self.records.patch_status(
            body, lambda cur: moves.claimed(cur, mid, dest, size, message), written=written)
        if written:
            LOG.info("%s/%s uid=%s: %s", key[1], key[2], uid, message,
                     extra=kova_log.about(body))

    async def _claim_new(self, body: dict, mig: dict) -> str:
        """Schedule the new size and move the allocations (see claim); the
        destination host.  Raises NoValidHost."""
        uid, mid, source = ob.uid(body) or "", mig["uuid"], mig["sourceHost"]
        req, _ = self.placer.request(body)
        req.requested_host = req.requested_rp = None  # the first boot's hint
        allocs, gen = await self.placer.current_claim(uid)
        if mig["type"] == MigrationType.MIGRATE and len(allocs) == 1:
            # exactly what the Instance holds on its source (see claim)
            req.resources = dict(next(iter(allocs.values()))["resources"])
        if mig["type"] == MigrationType.MIGRATE or not self.ctx.settings.allow_resize_to_same_host:
            req.excluded_hosts = {source}
        if mig.get("requestedHost"):
            info = self.ctx.hosts.host_by_name(mig["requestedHost"])
            req.requested_host = mig["requestedHost"]
            req.requested_rp = info.rp_uuid if info else None
        ordered, _ = await self.placer.scheduler.select(req)
        if not ordered:
            raise NoValidHost(await self.placer.scheduler.explain_shortage(req))
        project = names.project_id(ob.key(body)[0])
        for cand in ordered:
            try:
                await self.ctx.placement.move_allocations({
                    mid: {"allocations": allocs, "project_id": project,
                          "consumer_generation": None,
                          "consumer_type": names.CONSUMER_TYPE_MIGRATION},
                    uid: {"allocations": cand.allocations, "project_id": project,
                          "consumer_generation": gen},
                })
            except Conflict as exc:
                LOG.info("claim of the new size of %s/%s on %s lost a race (%s); trying the "
                         "next candidate", *ob.key(body), cand.name, exc.detail)
                allocs, gen = await self.placer.current_claim(uid)
                continue
            return cand.name
        raise NoValidHost(f"every one of {len(ordered)} candidate host(s) was claimed by "
                          "others first")

    async def abort(self, body: dict, reason: str, message: str) -> None:
        """The move cannot start (nothing was moved in Placement): the record
        goes, Resized=False for this generation, the action ends in Error."""
        mig = ob.status(body).get("migration") or {}
        written: list = []
        body = await self.records.patch_status(
            body, lambda cur: moves.aborted(cur, mig.get("uuid", ""), reason, message),
            written=written)
        if not written:
            return
        LOG.warning("%s/%s: move not started: %s: %s", *ob.key(body), reason, message,
                    extra=kova_log.about(body))
        self.ctx.emit(body, "Warning", reason, message)

    # ------------------------------------------------------------ verify
    async def confirm(self, body: dict, step: Step) -> None:
        """Free the old allocation (the migration consumer's), then drop the
        record; the agent removes the kept disk once it sees it gone."""
        mig = ob.status(body)["migration"]
        await self.ctx.placement.delete_allocations(mig["uuid"])
        message = moves.confirmed_message(mig, auto=bool(step.reason), by=mig.get("decidedBy"))
        body = await self.records.patch_status(
            body, lambda cur: moves.finished(cur, mig["uuid"], reverted=False, message=message))
        LOG.info("%s/%s: %s", *ob.key(body), message, extra=kova_log.about(body))
        self.ctx.emit(body, "Normal", names.EVENT_RESIZE_CONFIRMED, message)

    async def revert(self, body: dict) -> None:
        """A revert was asked for: step Reverting, the agent's turn."""
        mig = ob.status(body)["migration"]
        message = (f"reverting to {moves.describe(mig.get('oldResources'))} on "
                   f"{mig.get('sourceHost')} (asked by {mig.get('decidedBy') or 'a user'})")
        body = await self.records.patch_status(
            body, lambda cur: moves.reverting(cur, mig["uuid"], message))
        LOG.info("%s/%s: %s", *ob.key(body), message, extra=kova_log.about(body))

    async def hand_over(self, body: dict, *, back: bool) -> None:
        """A move across hosts changes hands: the source sent the disk (step
        Copied: the Instance goes to the destination, step Finishing), or the
        destination removed its copy on a revert (step Returning: back to the
        source, step Restoring).  status.host first, then the host label
        (which makes that host's agent see it; a restart in between finds
        the label differing and sets it)."""
        mig = ob.status(body)["migration"]
        uid = ob.uid(body) or ""
        S = MigrationStep
        host = mig["sourceHost"] if back else mig["destHost"]
        expect, step = (S.RETURNING, S.RESTORING) if back else (S.COPIED, S.FINISHING)
        message = (f"reverting: the copy on {mig['destHost']} is removed; {host} starts its "
                   "kept domain" if back else
                   f"the disk is on {host}; its agent defines and starts the guest there")
        self.ctx.ledger.claimed(uid, host)
        written: list = []
        body = await self.records.patch_status(
            body, lambda cur: moves.handed(cur, mig["uuid"], expect, host, step, message),
            written=written)
        if ob.labelled_host(body) != ob.placed_host(body):
            body = await self.records.ensure_label(body)
        if written:
            LOG.info("%s/%s: %s (migration %s)", *ob.key(body), message, mig["uuid"],
                     extra=kova_log.about(body))

    async def finish_revert(self, body: dict) -> None:
        """The agent reverted: the migration consumer's allocation goes back
        to the Instance in one POST, then the record goes."""
        mig = ob.status(body)["migration"]
        uid, mid = ob.uid(body) or "", mig["uuid"]
        await give_back(self.ctx, self.placer, body, mid)
        self.ctx.ledger.claimed(uid, mig["sourceHost"])
        message = moves.reverted_message(mig, mig.get("decidedBy"))
        body = await self.records.patch_status(
            body, lambda cur: moves.finished(cur, mid, reverted=True, message=message))
        if ob.labelled_host(body) != mig["sourceHost"]:
            body = await self.records.ensure_label(body)
        LOG.info("%s/%s: %s", *ob.key(body), message, extra=kova_log.about(body))
        self.ctx.emit(body, "Normal", names.EVENT_RESIZE_REVERTED, message)
