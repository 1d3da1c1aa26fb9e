"""Deleting an Instance: the agent's finalizer goes first (it destroys the
domain and its disks), then the operator frees the claim in Placement and
removes its own finalizer.  On a fenced host the agent cannot clean up, so
the operator removes the agent's finalizer itself (Nova's local delete); the
agent removes the domain of a vanished Instance when it comes back."""

from __future__ import annotations

import logging

from kova import finalizers
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import instance_path
from kova.operator.context import Context
from kova.operator.instance import status as st
from kova.operator.instance.records import Records

LOG = logging.getLogger("kova.operator")

#: How long until a deleted Instance is looked at again while its agent tears
#: down (the agent's finalizer removal is an event; this is a safety net).
AGENT_RECHECK_SECONDS = 30.0


class Deletion:
    def __init__(self, ctx: Context, records: Records) -> None:
        self.ctx = ctx
        self.records = records

    async def release_agent(self, body: dict, reason: str) -> dict:
        """Remove the agent's finalizer: its host is fenced."""
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        host = ob.placed_host(body)
        body = await finalizers.remove(self.ctx.kube, instance_path(ns, name), body,
                                       names.FINALIZER_AGENT)
        LOG.warning("%s/%s uid=%s deleted while its host %s is fenced: the agent's "
                    "finalizer was removed", ns, name, uid, host)
        self.ctx.emit(body, "Warning", names.EVENT_DELETED_ON_FENCED_HOST,
                      f"host {host} is fenced: deleted without waiting for its agent, which "
                      "removes the domain when it comes back")
        return body

    async def wait_for_agent(self, key: tuple, body: dict) -> None:
        """Phase Deleting while the agent tears the domain down."""
        if ob.status(body).get("phase") != names.InstancePhase.DELETING:
            await self.records.patch_status(body, st.deleting)
        self.ctx.queue.add_after(key, AGENT_RECHECK_SECONDS)

    async def delete(self, key: tuple, body: dict) -> None:
        """Free the claim (if any: one may exist without a recorded host, made
        just before a restart) and remove the operator's finalizer."""
        if names.FINALIZER_AGENT in ob.finalizers(body):
            # The agent's finalizer could not be removed (the Instance was
            # replaced under the same name meanwhile): wait as usual.
            await self.wait_for_agent(key, body)
            return
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        freed = await self.ctx.placement.delete_allocations(uid)
        mig = ob.status(body).get("migration") or {}
        if mig.get("uuid"):
            # deleted in the middle of a resize: the migration's hold on the
            # old size goes too (docs/moving.md)
            await self.ctx.placement.delete_allocations(mig["uuid"])
        await finalizers.remove(self.ctx.kube, instance_path(ns, name), body,
                                names.FINALIZER_OPERATOR)
        self.ctx.ledger.released(uid)
        LOG.info("deleted %s/%s uid=%s: allocations %s", ns, name, uid,
                 "freed" if freed else "were already gone")
