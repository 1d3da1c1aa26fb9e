"""The Instance controller: watch events in, one reconcile per work-queue key.

A reconcile reads the Instance from the informer, gathers the
:class:`~.plan.Facts` (the ledger, the host's state, the Image), asks
:func:`~.plan.next_step` what to do and does it.  Level-triggered: a
repeated or stale event only leads to the same decision again.
"""

from __future__ import annotations

import logging
import time

from kova.crds import names
from kova.crds import objects as ob
from kova.operator.context import Context
from kova.operator.instance import plan
from kova.operator.instance.conductor import Conductor
from kova.operator.instance.deletion import Deletion
from kova.operator.instance.evacuation import Evacuation
from kova.operator.instance.mover import Mover
from kova.operator.instance.moves import wanted_size
from kova.operator.instance.plan import Action, Facts, HostFacts, Plan, Step
from kova.operator.instance.records import Records
from kova.operator.userdata import UserDataSealer

LOG = logging.getLogger("kova.operator")


class InstanceController:
    def __init__(self, ctx: Context, records: Records, conductor: Conductor,
                 evacuation: Evacuation, deletion: Deletion, mover: Mover) -> None:
        self.ctx = ctx
        self.mover = mover
        self.records = records
        self.conductor = conductor
        self.evacuation = evacuation
        self.deletion = deletion
        self.user_data = UserDataSealer(ctx)

    # ------------------------------------------------------------ events
    def changed(self, namespace: str, name: str, body: dict, deleted: bool) -> None:
        """A watch event of Instance ``namespace/name``."""
        ctx = self.ctx
        group = ob.ref_name(body, "serverGroupRef")
        if group:
            ctx.enqueue(("sg", namespace, group))
        key = ("inst", namespace, name)
        if deleted:
            ctx.ledger.forget(ob.uid(body), key)
            return
        ctx.enqueue(key)

    def image_changed(self, image: str) -> None:
        """Instances in Error because of ``image`` (an :func:`ob.image_key`):
        look at them again (the Image or TenantImage was re-created or
        changed; see plan's RETRY_IMAGE)."""
        for (ns, name), body in self.ctx.informer.instances():
            if (ob.image_key(body) == image
                    and names.ANNOTATION_FAILED_IMAGE in ob.annotations_of(body)):
                self.ctx.enqueue(("inst", ns, name))

    # ------------------------------------------------------------ reconcile
    def facts(self, body: dict) -> Facts:
        ctx, uid = self.ctx, ob.uid(body) or ""
        host = ob.placed_host(body)
        host_facts = HostFacts()
        if host:
            host_facts = HostFacts(exists=ctx.informer.host(host) is not None,
                                   fenced=ctx.hosts.fence_reason(host),
                                   down=ctx.hosts.is_down(host))
        return Facts(own_host=ctx.ledger.own_hosts.get(uid), errored=uid in ctx.ledger.errored,
                     retried_image=ctx.ledger.retried.get(uid),
                     image_identity=ctx.informer.image_identity(ob.image_key(body)),
                     host=host_facts, max_attempts=ctx.settings.max_attempts,
                     wanted_size=wanted_size(ob.spec(body), ctx.informer.flavor(
                         ob.ref_name(body, "flavorRef"))),
                     now=time.time(), confirm_window=ctx.settings.resize_confirm_window)

    def plan(self, key: tuple) -> tuple[dict | None, Plan]:
        body = self.ctx.informer.instance(key[1], key[2])
        return body, plan.next_step(body, self.facts(body) if body is not None else Facts())

    async def reconcile(self, key: tuple) -> None:
        body, todo = self.plan(key)
        if todo.settled:
            self.ctx.ledger.settle(key)
        if todo.reset_backoff:
            self.ctx.ledger.reset_backoff(key)
        for step in todo.steps:
            if body is None:
                return
            body = await self.do(key, body, step)
        if body is not None:
            await self.user_data.ensure(key, body)

    # ------------------------------------------------------------ steps
    async def do(self, key: tuple, body: dict, step: Step) -> dict | None:
        """Take one step: the Instance as the next step should see it, or
        None when the reconcile ends here."""
        match step.action:
            case Action.NOTHING:
                if step.after > 0:
                    self.ctx.queue.add_after(key, step.after)
                return body
            case Action.MARK_UNKNOWN:
                # The reconcile goes on with the Instance as it was read: its
                # build failure, label and finalizer were decided from that copy.
                await self.evacuation.mark_unknown(body)
                return body
            case Action.ENSURE_LABEL:
                return await self.records.ensure_label(body)
            case Action.ENSURE_FINALIZER:
                return await self.records.ensure_finalizer(body)
            case Action.RELEASE_AGENT:
                after = await self.deletion.release_agent(body, step.reason)
                return after if ob.uid(after) == ob.uid(body) else None
            case Action.BUILD:
                await self.conductor.build(key, body)
            case Action.RESCHEDULE:
                await self.conductor.reschedule(key, body)
            case Action.FAIL_BUILD:
                await self.conductor.fail_build(body, step)
            case Action.RETRY_IMAGE:
                await self.conductor.retry_image(key, body, step)
            case Action.EVACUATE:
                await self.evacuation.evacuate(key, body)
            case Action.WAIT_FOR_AGENT:
                await self.deletion.wait_for_agent(key, body)
            case Action.DELETE:
                await self.deletion.delete(key, body)
            case action if action in plan.MOVING:
                await self.mover.do(key, body, step)
        return None
