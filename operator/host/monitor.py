"""The host monitor: heartbeat Leases -> Host ``Up``/``Down``, and the Host's
``Fenced`` condition (Nova's servicegroup driver and its "forced down").

Every ``--host-check-interval`` it reads the Leases of the Lease namespace and
decides each Host's heartbeat state; a change re-queues the Instances on that
host (an Instance on a Down host is marked Unknown, on a fenced host it is
evacuated: see :mod:`kova.operator.instance.plan`).  The active replica also
writes ``Host.status.state``, the ``Ready`` and ``Fenced`` conditions, and a
Warning Event when a host goes Down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from kova.conditions import get_condition, set_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import KubeError, host_path, lease_path
from kova.operator import metrics
from kova.operator.context import Context
from kova.operator.host.view import lease_duration, lease_fresh

LOG = logging.getLogger("kova.operator")


def wanted_state(alive: bool, has_lease: bool, current: str | None) -> str:
    """The Host state the heartbeat calls for."""
    if alive:
        return names.HostState.UP
    if has_lease or current == names.HostState.UP:
        return names.HostState.DOWN
    return names.HostState.UNKNOWN


def ready_condition(state: str, lease_ns: str, name: str,
                    renew: str | None) -> tuple[str, str, str]:
    """``(status, reason, message)`` of a Host's Ready condition in ``state``."""
    if state == names.HostState.UP:
        return "True", names.HOST_REASON_UP, "the heartbeat Lease is renewed"
    if state == names.HostState.DOWN:
        return ("False", names.HOST_REASON_DOWN,
                f"the heartbeat Lease {lease_ns}/{name} expired"
                + (f" (last renewed {renew})" if renew else ""))
    return ("Unknown", names.HOST_REASON_NO_HEARTBEAT,
            f"no heartbeat Lease {lease_ns}/{name} yet")


def fenced_condition(name: str, reason: str | None) -> tuple[str, str, str]:
    """``(status, reason, message)`` of a Host's Fenced condition."""
    if reason == names.HOST_REASON_FENCED_SPEC:
        return ("True", names.HOST_REASON_FENCED_SPEC,
                "spec.fenced is true: the host's instances are evacuated and it takes no new "
                "ones")
    if reason == names.HOST_REASON_FENCED_NODE:
        return ("True", names.HOST_REASON_FENCED_NODE,
                f"Node {name} is tainted {names.TAINT_OUT_OF_SERVICE}: the host's instances "
                "are evacuated and it takes no new ones")
    return "False", names.HOST_REASON_NOT_FENCED, "the host is not fenced"


def fence_recorded(body: dict, reason: str | None) -> bool:
    """The Host's Fenced condition already says ``reason`` (None: not fenced)."""
    cond = get_condition(body, names.HOST_COND_FENCED)
    if reason:
        return (cond or {}).get("reason") == reason
    return cond is None or cond.get("status") == "False"


class HostMonitor:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.view = ctx.hosts
        #: The last Lease poll failed (API server unreachable); and when the
        #: polls came back: a Lease is not counted expired for the time the
        #: monitor could not see it being renewed.
        self._poll_failed = False
        self._resumed_at: float | None = None

    async def run(self) -> None:
        ctx = self.ctx
        while True:
            try:
                if await self.poll_leases():
                    ctx.retrigger_pending()
                if ctx.leader:
                    await self.update_host_states()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._poll_failed = True
                LOG.warning("host monitor: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(ctx.settings.host_check_interval)

    # ------------------------------------------------------------ Leases
    async def poll_leases(self) -> bool:
        """Refresh the Lease cache and the hosts' heartbeat state; True if
        any host changed."""
        s = self.ctx.settings
        body = await self.ctx.kube.get(lease_path(s.lease_namespace))
        view = self.view
        view.leases = {item["metadata"]["name"]: item for item in body.get("items") or []}
        now = time.time()
        if self._poll_failed:
            self._poll_failed = False
            self._resumed_at = now
            LOG.info("host monitor: Leases readable again; no host goes Down for want of "
                     "renewals it could not see")
        changed = False
        host_names = self.ctx.informer.host_names()
        for name in host_names:
            alive = self._alive(name, now)
            if view.alive.get(name) != alive:
                changed = True
                if name in view.alive:
                    self.ctx.enqueue_host_instances(name)
            view.alive[name] = alive
        if changed:
            view.changed()
        states = Counter(names.HostState.UP if view.alive[n] else names.HostState.DOWN
                         for n in host_names)
        for state in (names.HostState.UP, names.HostState.DOWN):
            metrics.HOSTS.labels(state=state).set(states[state])
        return changed

    def _alive(self, name: str, now: float) -> bool:
        view, grace = self.view, self.ctx.settings.heartbeat_grace
        lease = view.leases.get(name)
        alive = lease_fresh(lease, now, grace)
        if not alive and view.alive.get(name) and self._resumed_at is not None:
            # Up before the API server became unreachable: give the agent
            # one full Lease period from when renewals became visible.
            alive = now <= self._resumed_at + lease_duration(lease) + grace
        return alive

    # ------------------------------------------------------------ Host status
    async def update_host_states(self) -> None:
        for name in self.ctx.informer.host_names():
            body = self.ctx.informer.host(name)
            if body is not None:
                await self.update_host_state(name, body)

    async def update_host_state(self, name: str, body: dict) -> None:
        view = self.view
        status = ob.status(body)
        want = wanted_state(view.alive.get(name, False), name in view.leases,
                            status.get("state"))
        fence = view.fence_reason(name, body)
        fence_ok = fence_recorded(body, fence)
        if status.get("state") == want and fence_ok:
            return
        if not fence_ok:
            new = await self.set_host_fenced(body, fence)
            if new is None or status.get("state") == want:
                return
            body = new  # its conditions now hold the Fenced one just written
        renew = ob.spec(view.leases.get(name) or {}).get("renewTime")
        cond = ready_condition(want, self.ctx.settings.lease_namespace, name, renew)
        patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                 "status": {"state": want, "conditions": set_condition(
                     ob.status(body).get("conditions"), names.HOST_COND_READY, *cond)}}
        if renew:
            patch["status"]["lastHeartbeatTime"] = renew
        try:
            await self.ctx.kube.merge_patch(host_path(name) + "/status", patch)
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise
            return
        LOG.info("host %s is %s", name, want)
        if want == names.HostState.DOWN:
            self.ctx.emit(body, "Warning", names.REASON_HOST_DOWN, cond[2])

    async def set_host_fenced(self, body: dict, reason: str | None) -> dict | None:
        """The Host's Fenced condition (and an Event when it turns True)."""
        name = body["metadata"]["name"]
        cond = fenced_condition(name, reason)
        patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                 "status": {"conditions": set_condition(
                     ob.status(body).get("conditions"), names.HOST_COND_FENCED, *cond)}}
        try:
            new = await self.ctx.kube.merge_patch(host_path(name) + "/status", patch)
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise
            return None
        LOG.info("host %s: fenced=%s (%s)", name, cond[0], cond[1])
        self.ctx.emit(body, "Warning" if reason else "Normal",
                      names.EVENT_HOST_FENCED if reason else names.EVENT_HOST_UNFENCED, cond[2])
        return new
