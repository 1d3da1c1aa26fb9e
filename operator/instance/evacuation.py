"""An Instance whose host failed (Nova's evacuate, and its "unknown" state).

* The host is Down (its heartbeat Lease expired): the Instance is marked
  Unknown and left where it is -- the host may merely be cut off and still run
  the VM, so moving it could run it twice.
* The host is fenced (``Host.spec.fenced``, or its Node tainted
  out-of-service): the Instance is evacuated -- with the moves' migration
  consumer pattern: one ``POST /allocations`` gives the fenced host's
  allocation to a migration consumer and the Instance's own consumer a claim
  on another host; the new host is recorded (an ``evacuate`` entry in
  status.actions names the migration); the migration consumer's
  allocation is freed before that record (a fenced host runs nothing).  That host's agent
  rebuilds the Instance from its image and user data.  The migration's UUID
  is derived from the Instance and the fenced host (:func:`migration_uuid`),
  so an operator restarted after the POST finds it and frees it.
"""

from __future__ import annotations

import logging
import time
import uuid

from kova.crds import names
from kova.crds import objects as ob
from kova.kube import KubeError, lease_path
from kova.operator import metrics
from kova.operator.context import Context
from kova.operator.host.view import lease_fresh
from kova.operator.instance import status as st
from kova.operator.instance.placing import Move, Placer
from kova.operator.instance.plan import attempts
from kova.operator.instance.records import Records
from kova.operator.scheduler.request import InvalidRequest, MissingDependency, RequestSpec
from kova.operator.scheduler.scheduler import Decision, NoValidHost

LOG = logging.getLogger("kova.operator")


#: Namespace of the evacuations' migration UUIDs (uuid5).
EVACUATION_NS = uuid.UUID("6b6f7661-6576-6163-7561-74696f6e0000")


def migration_uuid(uid: str, host: str) -> str:
    """The migration consumer of Instance ``uid``'s evacuation from ``host``."""
    return str(uuid.uuid5(EVACUATION_NS, f"{uid}/{host}"))


def drop_requested_host(req: RequestSpec) -> None:
    """As Nova's evacuate: the requestedHost hint was for the first boot."""
    req.requested_host = req.requested_rp = None


class Evacuation:
    def __init__(self, ctx: Context, records: Records, placer: Placer) -> None:
        self.ctx = ctx
        self.records = records
        self.placer = placer

    # ------------------------------------------------------------ Down host
    async def mark_unknown(self, body: dict) -> None:
        """Phase Unknown for an Instance on a Down host -- unless the agent
        is back since the last Lease poll (its first status write can come
        before the next poll): the Lease itself is read first."""
        host = ob.placed_host(body) or ""
        s = self.ctx.settings
        lease = await self.ctx.kube.get_or_none(lease_path(s.lease_namespace, host))
        if lease_fresh(lease, time.time(), s.heartbeat_grace):
            return
        renew = ob.spec(self.ctx.hosts.leases.get(host) or {}).get("renewTime")
        message = st.unknown_message(host, renew)
        meta = body["metadata"]
        try:
            body = await self.records.patch_status(body, lambda cur: st.unknown(cur, message))
        except KubeError as exc:
            if exc.status == 404:
                return
            raise
        metrics.OUTCOMES.labels(reason=names.REASON_HOST_DOWN).inc()
        LOG.warning("instance %s/%s uid=%s: %s", meta["namespace"], meta["name"], meta["uid"],
                    message)
        self.ctx.emit(body, "Warning", names.REASON_HOST_DOWN, message)

    # ------------------------------------------------------------ fenced host
    async def evacuate(self, key: tuple, body: dict) -> None:
        """Move an Instance off its fenced host: replace its allocation by one
        on another host (one PUT /allocations: atomic), then record the new
        host (label, status.host, Scheduled=True reason Evacuated, Built reset).
        Safe to repeat: an allocation already moved (a crash before the
        record) is kept."""
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        old = ob.placed_host(body) or ""
        why = self.ctx.hosts.fence_reason(old)
        try:
            _, size = self.placer.request(body)
        except (MissingDependency, InvalidRequest) as exc:
            await self.failed(key, body, f"{exc.reason}: {exc.message}")
            return
        allocs, generation = await self.placer.current_claim(uid)
        mid = migration_uuid(uid, old)
        decision = self.already_moved(allocs, old)
        if decision is None:
            try:
                decision, size = await self.placer.place(
                    body, adjust=drop_requested_host,
                    move=Move(generation, migration=mid, allocations=allocs))
            except NoValidHost as exc:
                await self.failed(key, body, exc.message)
                return
        else:
            self.ctx.ledger.claimed(uid, decision.host)
        self.ctx.ledger.reset_backoff(key)
        # The fenced host runs nothing: its allocation (the migration's) is
        # freed before the new host is recorded, so a restart in between
        # (which finds the claim moved and records it) leaves nothing behind.
        await self.ctx.placement.delete_allocations(mid)
        msg = (st.evacuated_message(old, why, decision.host, decision.adopted)
               + f" (migration {mid})")
        placed = await self.placer.record(
            body, decision, size, attempts=attempts(body), reason=names.REASON_EVACUATED,
            message=msg,
            reset_built=f"evacuated from fenced host {old}; rebuilding on {decision.host}")
        if placed is None:
            return
        metrics.OUTCOMES.labels(reason=names.REASON_EVACUATED).inc()
        LOG.warning("evacuated %s/%s uid=%s from fenced host %s to %s", ns, name, uid, old,
                    decision.host)
        self.ctx.emit(placed, "Warning", names.REASON_EVACUATED, msg)

    def already_moved(self, allocs: dict, old: str) -> Decision | None:
        """The claim is already on another usable host (moved before a crash,
        not yet recorded): keep it."""
        if not allocs:
            return None
        moved = self.ctx.hosts.host_by_rp(next(iter(allocs)))
        if moved is None or moved.name == old or moved.fenced:
            return None
        return Decision(host=moved.name, rp_uuid=moved.rp_uuid or "", alternates=[],
                        adopted=True)

    async def failed(self, key: tuple, body: dict, why: str) -> None:
        """Say why it cannot be evacuated (once), and retry with back-off."""
        old = ob.placed_host(body) or ""
        message = st.evacuation_failed_message(old, why)
        if not st.evacuation_failure_recorded(body, message):
            body = await self.records.patch_status(
                body, lambda cur: st.evacuation_failed(cur, message))
            self.ctx.emit(body, "Warning", names.REASON_EVACUATION_FAILED, message)
        metrics.OUTCOMES.labels(reason=names.REASON_EVACUATION_FAILED).inc()
        self.ctx.ledger.wait(key)
        delay = self.ctx.retry_later(key)
        LOG.warning("%s/%s: %s (retry in %.1fs)", key[1], key[2], message, delay)
