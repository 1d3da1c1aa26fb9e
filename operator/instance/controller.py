"""The Instance controller: watch events in, one reconcile per work-queue key.

A reconcile reads the Instance from the informer, gathers the
:class:`~.plan.Facts` (the ledger, the host's state, the Image), asks
:func:`~.plan.next_step` what to do and does it.  Level-triggered: a
repeated or stale event only leads to the same decision again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from kova.crds import names
from kova.crds import objects as ob
from kova.operator.context import Context
from kova.operator.instance import plan
from kova.operator.instance.conductor import Conductor
from kova.operator.instance.deletion import Deletion
from kova.operator.instance.evacuation import Evacuation
from kova.operator.instance.plan import Action, Facts, HostFacts, Plan, Step
from kova.operator.instance.records import Records

LOG = logging.getLogger("kova.operator")

#: A step's code: the Instance as the next step should see it, or None to stop.
Do = Callable[[tuple, dict, Step], Awaitable["dict | None"]]


class InstanceController:
    def __init__(self, ctx: Context, records: Records, conductor: Conductor,
                 evacuation: Evacuation, deletion: Deletion) -> None:
        self.ctx = ctx
        self.records = records
        self.conductor = conductor
        self.evacuation = evacuation
        self.deletion = deletion
        self._do: dict[Action, Do] = {
            Action.NOTHING: self._nothing,
            Action.BUILD: self._last(lambda k, b, s: conductor.build(k, b)),
            Action.RESCHEDULE: self._last(lambda k, b, s: conductor.reschedule(k, b)),
            Action.FAIL_BUILD: self._last(lambda k, b, s: conductor.fail_build(b, s)),
            Action.RETRY_IMAGE: self._last(conductor.retry_image),
            Action.EVACUATE: self._last(lambda k, b, s: evacuation.evacuate(k, b)),
            Action.MARK_UNKNOWN: self._mark_unknown,
            Action.ENSURE_LABEL: lambda k, b, s: records.ensure_label(b),
            Action.ENSURE_FINALIZER: lambda k, b, s: records.ensure_finalizer(b),
            Action.RELEASE_AGENT: self._release_agent,
            Action.WAIT_FOR_AGENT: self._last(lambda k, b, s: deletion.wait_for_agent(k, b)),
            Action.DELETE: self._last(lambda k, b, s: deletion.delete(k, b)),
        }

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
        """Instances in Error because of ``image``: look at them again (the
        Image was re-created or changed; see plan's RETRY_IMAGE)."""
        for (ns, name), body in self.ctx.informer.instances():
            if (ob.ref_name(body, "imageRef") == image
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
                     image_identity=ctx.informer.image_identity(ob.ref_name(body, "imageRef")),
                     host=host_facts, max_attempts=ctx.settings.max_attempts)

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
            body = await self._do[step.action](key, body, step)

    # ------------------------------------------------------------ steps
    @staticmethod
    def _last(run: Callable[[tuple, dict, Step], Awaitable[None]]) -> Do:
        """A step after which the reconcile ends."""
        async def do(key: tuple, body: dict, step: Step) -> None:
            await run(key, body, step)
            return None
        return do

    async def _nothing(self, key: tuple, body: dict, step: Step) -> dict:
        return body

    async def _mark_unknown(self, key: tuple, body: dict, step: Step) -> dict:
        # The reconcile goes on with the Instance as it was read: its build
        # failure, label and finalizer were decided from that copy.
        await self.evacuation.mark_unknown(body)
        return body

    async def _release_agent(self, key: tuple, body: dict, step: Step) -> dict | None:
        after = await self.deletion.release_agent(body, step.reason)
        return after if ob.uid(after) == ob.uid(body) else None
