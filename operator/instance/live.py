"""The operator's side of a live migration (Nova's ``live_migrate`` through
the conductor, ``post_live_migration`` and ``rollback_live_migration``).

The claim is a cold migration's (:meth:`.mover.Mover.claim`: one POST gives
the source's allocation to the migration consumer and the Instance's own
consumer a claim on the destination); the destination agent prepares (step
Preparing), the source agent migrates (step LiveMigrating).  Then:

* step Migrated (the guest runs on the destination): the migration
  consumer's allocation on the source is deleted (again, harmlessly, after a
  restart), then the host label names the destination, then status.host
  becomes the destination and the record goes in one status write.  No confirm: a live
  migration is confirmed at once, as in Nova.
* step Failed, or an abort asked before the source agent started: the
  migration consumer's allocation goes back to the Instance in one POST (the
  destination's claim is dropped in the same request), then the record goes
  with Resized=False reason LiveMigrationFailed and a Warning Event.  The
  destination agent's prepared disk is removed by its leftover sweep once no
  record names that host.
"""

from __future__ import annotations

import logging

from kova import log as kova_log
from kova.crds import names
from kova.crds import objects as ob
from kova.operator.context import Context
from kova.operator.instance import moves
from kova.operator.instance.placing import Placer
from kova.operator.instance.records import Records

LOG = logging.getLogger("kova.operator")


async def give_back(ctx: Context, placer: Placer, body: dict, mid: str) -> None:
    """The migration consumer ``mid``'s allocation (the source's) back to the
    Instance in one POST, which drops the Instance's claim on the
    destination; nothing when the migration consumer holds nothing."""
    uid = ob.uid(body) or ""
    held = await ctx.placement.consumer_allocations(mid)
    if held.get("allocations"):
        project = names.project_id(ob.key(body)[0])
        _, gen = await placer.current_claim(uid)
        await ctx.placement.move_allocations({
            uid: {"allocations": held["allocations"], "project_id": project,
                  "consumer_generation": gen},
            mid: {"allocations": {}, "project_id": project,
                  "consumer_generation": held.get("consumer_generation"),
                  "consumer_type": names.CONSUMER_TYPE_MIGRATION},
        })


class LiveMover:
    def __init__(self, ctx: Context, records: Records, placer: Placer) -> None:
        self.ctx = ctx
        self.records = records
        self.placer = placer

    async def finish(self, body: dict) -> None:
        """Step Migrated: free the source, hand the Instance over."""
        mig = ob.status(body)["migration"]
        uid = ob.uid(body) or ""
        await self.ctx.placement.delete_allocations(mig["uuid"])
        self.ctx.ledger.claimed(uid, mig["destHost"])
        message = moves.live_message(mig, ok=True)
        # The label first: the destination's agent sees the Instance while the
        # record still says Migrated (it waits; its leftover removal spares
        # the arrived domain), never placed there without its label.
        if ob.labelled_host(body) != mig["destHost"]:
            body = await self.records.patch_metadata(
                body, {"labels": {names.LABEL_HOST: mig["destHost"]}})
        written: list = []
        body = await self.records.patch_status(
            body, lambda cur: moves.live_ended(cur, mig["uuid"], ok=True, message=message),
            written=written)
        if written:
            LOG.info("%s/%s: %s", *ob.key(body), message, extra=kova_log.about(body))
            self.ctx.emit(body, "Normal", names.REASON_LIVE_MIGRATED, message)

    async def fail(self, body: dict) -> None:
        """Step Failed (or an early abort): the source's allocation back to
        the Instance, the record goes."""
        mig = ob.status(body)["migration"]
        uid, mid = ob.uid(body) or "", mig["uuid"]
        await give_back(self.ctx, self.placer, body, mid)
        self.ctx.ledger.claimed(uid, mig["sourceHost"])
        message = moves.live_message(mig, ok=False)
        written: list = []
        body = await self.records.patch_status(
            body, lambda cur: moves.live_ended(cur, mid, ok=False, message=message),
            written=written)
        if written:
            LOG.warning("%s/%s: %s", *ob.key(body), message, extra=kova_log.about(body))
            self.ctx.emit(body, "Warning", names.REASON_LIVE_MIGRATION_FAILED, message)
