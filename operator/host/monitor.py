"""The host monitor: heartbeat Leases -> Host ``Up``/``Down``, and the Host's
``Fenced`` condition (Nova's servicegroup driver and its "forced down").

It watches the Leases of the Lease namespace (through the informer) and
decides each Host's heartbeat state as a Lease changes or its deadline passes;
a change re-queues the Instances on that host (an Instance on a Down host is
marked Unknown, on a fenced host it is evacuated: see
:mod:`kova.operator.instance.plan`).  The active replica also writes
``Host.status.state``, the ``Ready`` and ``Fenced`` conditions, and a Warning
Event when a host goes Down: through its own keyed work queue and writers, so
that a thousand hosts changing state at once neither wait behind nor hold up
the scheduling work of the main queue.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable

from kova.conditions import get_condition, set_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import host_path, lease_path
from kova.operator import metrics
from kova.operator.context import Context
from kova.operator.host.view import lease_duration, lease_renewed
from kova.workqueue import AsyncWorkQueue

#: Concurrent Host status writers.
WRITERS = 16

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
    """Heartbeat state from the watched Leases, and Lease expiry from a heap of
    deadlines: a renewal costs a dict update, an expiry is found by one timer
    at the earliest deadline (no listing, no pass over every host).  A change
    of state queues the host in the monitor's own work queue -- coalesced, so
    a thousand hosts going Down at once are a thousand keys, each written
    once, by ``WRITERS`` writers -- and the Instances on that host."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.view = ctx.hosts
        #: The Lease watch failed (API server unreachable), and when it came
        #: back: a Lease is not counted expired for the time the monitor
        #: could not see it being renewed.
        self._blind = False
        #: Blind because a read of the Leases failed when hosts were due
        #: (not because the Lease watch failed): lifted by a read that works.
        self._probe_blind = False
        self._resumed_at: float | None = None
        #: Host -> the deadline (wall clock) its heartbeat state changes at.
        self._deadline: dict[str, float] = {}
        #: (deadline, host) entries, and each host's live entry (see _arm).
        self._heap: list[tuple[float, str]] = []
        self._queued: dict[str, float] = {}
        self._wake = asyncio.Event()
        self.expiries = 0
        #: Hosts whose status may need a write (see writer()).
        self.queue = AsyncWorkQueue()
        self._failures: dict[str, int] = {}

    # ------------------------------------------------------------ events
    def lease_changed(self, name: str, body: dict, deleted: bool) -> None:
        if deleted:
            self.view.leases.pop(name, None)
        else:
            self.view.leases[name] = body
        self.evaluate(name, time.time())

    def host_changed(self, name: str, body: dict, deleted: bool) -> None:
        """A Host appeared, changed or went away: its state from the Lease
        cache, and a status write if the status does not say it."""
        if deleted:
            self._deadline.pop(name, None)
            return
        if name not in self.view.alive:
            self.evaluate(name, time.time())
        if self.needs_write(name, body):
            self.queue.add(name)

    def lease_watch_health(self, healthy: bool) -> None:
        """The Lease watch failed (False), or listed again after a failure."""
        if not healthy:
            self._blind = True
        elif self._blind:
            self._blind = self._probe_blind = False
            self._resumed_at = time.time()
            LOG.info("host monitor: Leases readable again; no host goes Down for want of "
                     "renewals it could not see")
            for name in list(self.view.alive):
                self.evaluate(name, self._resumed_at)

    def needs_write(self, name: str, body: dict) -> bool:
        view = self.view
        want = wanted_state(view.alive.get(name, False), name in view.leases,
                            ob.status(body).get("state"))
        return (ob.status(body).get("state") != want
                or not fence_recorded(body, view.fence_reason(name, body)))

    # ------------------------------------------------------------ state
    def evaluate(self, name: str, now: float) -> bool:
        """Host ``name``'s heartbeat state now; True if it changed."""
        if self.ctx.informer.host(name) is None:
            return False
        view = self.view
        alive, deadline = self._alive(name, now)
        if deadline is not None:
            self._arm(name, deadline)
        else:
            self._deadline.pop(name, None)
        was = view.alive.get(name)
        view.alive[name] = alive
        if was == alive:
            return False
        view.changed()
        self.queue.add(name)
        if was is not None:
            self.ctx.enqueue_host_instances(name)
        if alive:
            self.ctx.retrigger_pending()
        return True

    def _alive(self, name: str, now: float) -> tuple[bool, float | None]:
        """(alive, when that ends) from the cached Lease."""
        view, grace = self.view, self.ctx.settings.heartbeat_grace
        lease = view.leases.get(name)
        renewed = lease_renewed(lease)
        if renewed is None:
            return False, None
        deadline = renewed + lease_duration(lease) + grace
        if now <= deadline:
            return True, deadline
        if view.alive.get(name) and self._resumed_at is not None:
            # Up before the API server became unreachable: give the agent
            # one full Lease period from when renewals became visible.
            resumed = self._resumed_at + lease_duration(lease) + grace
            if now <= resumed:
                return True, resumed
        return False, None

    def _arm(self, name: str, deadline: float) -> None:
        """Note ``name``'s deadline.  The heap holds one entry per host at its
        earliest deadline: a renewal (a later deadline) pushes nothing, the
        entry is moved on when it comes due; a shorter Lease (an earlier
        deadline) pushes a new entry and the old one is skipped."""
        self._deadline[name] = deadline
        queued = self._queued.get(name)
        if queued is not None and queued <= deadline:
            return
        self._queued[name] = deadline
        heapq.heappush(self._heap, (deadline, name))
        if self._heap[0][1] == name:
            self._wake.set()

    def expire(self, now: float) -> int:
        """Re-decide the hosts whose deadline passed; how many went Down."""
        return self.expire_hosts(self.due_hosts(now), now)

    def due_hosts(self, now: float) -> list[str]:
        """The hosts whose deadline passed (taken off the timer)."""
        due: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            when, name = heapq.heappop(self._heap)
            if self._queued.get(name) != when:
                continue  # superseded by an earlier entry
            del self._queued[name]
            deadline = self._deadline.get(name)
            if deadline is None:
                continue
            if deadline > now:  # renewed meanwhile: wait for the new deadline
                self._queued[name] = deadline
                heapq.heappush(self._heap, (deadline, name))
                continue
            due.append(name)
        return due

    def expire_hosts(self, due: list[str], now: float) -> int:
        down = 0
        for name in due:
            if self.evaluate(name, now) and not self.view.alive.get(name):
                down += 1
        self.expiries += down
        metrics.LEASE_EXPIRIES.inc(down)
        return down

    async def _leases_readable(self) -> bool:
        """Can the API server be read now?  An API server going away stops
        answering (so agents cannot renew) a while before its watches end."""
        try:
            await self.ctx.kube.get(lease_path(self.ctx.settings.lease_namespace),
                                    {"limit": "1"})
            return True
        except Exception as exc:  # any failure: no host goes Down on it
            LOG.warning("host monitor: Leases not readable (%s: %s); no host goes Down "
                        "until they are", type(exc).__name__, exc)
            return False

    async def _tick(self) -> None:
        """Hosts whose deadline passed go Down -- once a read of the Leases
        shows the API server answers; otherwise the monitor is blind until one
        does (and then gives every host a full Lease period)."""
        if not self._blind:
            now = time.time()
            due = self.due_hosts(now)
            if due and not await self._leases_readable():
                for name in due:
                    self._arm(name, self._deadline[name])
                self._probe_blind = True
                self.lease_watch_health(False)
            else:
                self.expire_hosts(due, now)
        elif self._probe_blind:
            watch = self.ctx.informer.leases_watch
            if (watch is None or watch.healthy) and await self._leases_readable():
                self.lease_watch_health(True)

    async def run(self) -> None:
        """The expiry timer: sleeps until the earliest deadline (at most
        ``--host-check-interval``), never while the Lease watch is failing."""
        interval = self.ctx.settings.host_check_interval
        while True:
            self._wake.clear()
            try:
                await self._tick()
            except Exception as exc:  # pragma: no cover - a bug, not a state
                LOG.exception("host monitor: %s", exc)
            delay = interval
            if self._heap and not self._blind:
                delay = min(delay, max(0.0, self._heap[0][0] - time.time()) + 0.01)
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    def count_of(self, state: str) -> Callable[[], float]:
        """A reader of the number of hosts in ``state`` (for a gauge)."""
        return lambda: self.counts()[state]

    def counts(self) -> Counter:
        """Hosts Up and Down (for the gauge, read at each scrape)."""
        alive = self.view.alive
        up = sum(1 for v in alive.values() if v)
        return Counter({names.HostState.UP: up, names.HostState.DOWN: len(alive) - up})

    async def writer(self) -> None:
        """One of the writers of Host status (the active replica's)."""
        while True:
            name = str(await self.queue.get())
            try:
                if self.ctx.leader:
                    await self.update_host(name)
                self._failures.pop(name, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                n = self._failures[name] = self._failures.get(name, 0) + 1
                delay = min(0.5 * 2 ** min(n, 6), 30.0)
                LOG.warning("host %s: status not written (%s: %s); again in %.1fs", name,
                            type(exc).__name__, exc, delay)
                self.queue.add_after(name, delay)
            finally:
                self.queue.done(name)

    async def update_host(self, name: str) -> None:
        """Write the Host's state if it differs."""
        body = self.ctx.informer.host(name)
        if body is not None:
            await self.update_host_state(name, body)

    # ------------------------------------------------------------ Host status
    async def update_host_state(self, name: str, body: dict) -> None:
        view = self.view
        fence = view.fence_reason(name, body)
        if not fence_recorded(body, fence):
            new = await self.set_host_fenced(body, fence)
            if new is None:
                return
            body = new  # its conditions now hold the Fenced one just written
        renew = ob.spec(view.leases.get(name) or {}).get("renewTime")
        written: list = []

        def change(cur: dict) -> dict | None:
            status = ob.status(cur)
            want = wanted_state(view.alive.get(name, False), name in view.leases,
                                status.get("state"))
            written.clear()
            if status.get("state") == want:
                return None
            cond = ready_condition(want, self.ctx.settings.lease_namespace, name, renew)
            written.extend((want, cond))
            new_status = {"state": want, "conditions": set_condition(
                status.get("conditions"), names.HOST_COND_READY, *cond)}
            if renew:
                new_status["lastHeartbeatTime"] = renew
            return {"status": new_status}

        if await self.ctx.kube.update_status(host_path(name), body, change) is None \
                or not written:
            return
        want, cond = written
        metrics.HOST_STATE_WRITES.inc()
        LOG.info("host %s is %s", name, want)
        if want == names.HostState.DOWN:
            self.ctx.emit(body, "Warning", names.REASON_HOST_DOWN, cond[2])

    async def set_host_fenced(self, body: dict, reason: str | None) -> dict | None:
        """The Host's Fenced condition (and an Event when it turns True)."""
        name = body["metadata"]["name"]
        cond = fenced_condition(name, reason)
        wrote: list[bool] = []

        def change(cur: dict) -> dict | None:
            wrote[:] = [not fence_recorded(cur, reason)]
            if not wrote[0]:
                return None  # already says so (read again after a conflict)
            return {"status": {"conditions": set_condition(
                ob.status(cur).get("conditions"), names.HOST_COND_FENCED, *cond)}}

        new = await self.ctx.kube.update_status(host_path(name), body, change)
        if new is None or not wrote[0]:
            return new
        metrics.HOST_STATE_WRITES.inc()
        LOG.info("host %s: fenced=%s (%s)", name, cond[0], cond[1])
        self.ctx.emit(body, "Warning" if reason else "Normal",
                      names.EVENT_HOST_FENCED if reason else names.EVENT_HOST_UNFENCED, cond[2])
        return new
