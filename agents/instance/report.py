"""What the agent writes to the API server about its Instances and its Host:
status by server-side apply (field manager ``kova-agent``, so the operator's
fields and conditions are never touched), and Events.

The status contents are decided in :mod:`kova.agents.instance.decisions`
(and ``RestartRequired`` in :mod:`kova.agents.instance.restart_fields`);
this module writes them, only when they change something.  Every Instance
status it applies carries the kstatus conditions ``Reconciling`` and
``Stalled`` (:func:`kova.kstatus.with_kstatus`): server-side apply removes a
condition this field manager applied before and leaves out now.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kova import events
from kova.agents.context import AgentContext
from kova.agents.instance import decisions, restart_fields
from kova.agents.virt.domain import domain_name
from kova.agents.virt.driver import DomainState
from kova.agents.watch import InstanceWatch
from kova.crds import names
from kova.crds import objects as ob
from kova.kstatus import with_kstatus
from kova.kube import KubeError, custom_path

log = logging.getLogger("kova.agents.instance.report")


def post_event(ctx: AgentContext, obj: dict, etype: str, reason: str, message: str) -> None:
    """An Event about Instance ``obj`` from this host's agent (best effort)."""
    ctx.kube.run(events.post(ctx.kube.aio, obj, etype, reason, message,
                             component=names.COMPONENT_AGENT, host=ctx.host))


class Reporter:
    def __init__(self, ctx: AgentContext, watch: InstanceWatch) -> None:
        self.ctx = ctx
        self.watch = watch

    def apply_status(self, plural: str, kind: str, name: str, status: dict,
                     namespace: str | None = None) -> dict | None:
        """Server-side apply the agent's ``status`` fields of one object; the
        object as written (None when it is gone)."""
        body = {
            "apiVersion": names.API_VERSION,
            "kind": kind,
            "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
            "status": status,
        }
        path = custom_path(plural, name, namespace=namespace, subresource="status")
        try:
            return self.ctx.kube.apply(path, body, field_manager=names.FIELD_MANAGER_AGENT)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def instance_status(self, obj: dict, status: dict) -> None:
        """Apply the agent's status fields of Instance ``obj``, with the
        kstatus conditions; the watch cache takes the result at once (a
        reconcile right after sees it)."""
        md = obj["metadata"]
        new = self.apply_status(names.INSTANCES, "Instance", md["name"],
                                with_kstatus(status, obj), namespace=md["namespace"])
        if new is not None:
            self.watch.store_own_write(new)

    def host_status(self, status: dict) -> None:
        """Apply the agent's status fields of this host's Host."""
        self.apply_status(names.HOSTS, "Host", self.ctx.host, status)

    def event(self, obj: dict, etype: str, reason: str, message: str) -> None:
        """An Event about Instance ``obj`` (best effort)."""
        post_event(self.ctx, obj, etype, reason, message)

    def events(self, obj: dict, notices: list[tuple[str, str, str]]) -> None:
        for etype, reason, message in notices:
            self.event(obj, etype, reason, message)

    def observed(self, obj: dict, state: DomainState | None, applied: str = "") -> None:
        """Report the domain's ``state``: phase, powerState, console log,
        Built, Ready and RestartRequired (``applied``: the fingerprint of the
        spec its seed was written from), and with a NIC the guest's addresses
        -- written only when something changed."""
        uid = ob.uid(obj) or ""
        wanted: dict[str, Any] = decisions.observed_status(
            obj, state, host=self.ctx.host, domain=domain_name(*ob.key(obj)),
            console_log=str(self.ctx.files(uid).console),
            shutting_down=uid in self.ctx.memory.stopping)
        wanted["conditions"].append(restart_fields.condition(
            obj, restart_fields.pending_fields(applied, ob.spec(obj))))
        if self.ctx.with_nic:
            wanted["addresses"] = self._addresses(obj, uid, state)
        wanted = with_kstatus(wanted, obj)
        if decisions.status_changed(obj, wanted):
            self.instance_status(obj, wanted)

    def _addresses(self, obj: dict, uid: str, state: DomainState | None) -> list:
        running = state is not None and state.running
        addrs = self.ctx.driver.addresses(uid) if running else []
        waiting = self.ctx.memory.awaiting_address
        if running and not addrs:
            since = waiting.setdefault(uid, time.monotonic())
            if decisions.poll_addresses(running=running, addresses=addrs,
                                        waited=time.monotonic() - since):
                self.ctx.queue.add_after(ob.key(obj), 3.0)
        else:
            waiting.pop(uid, None)
        return addrs
