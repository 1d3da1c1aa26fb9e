"""The operator process: its parts wired together, run, and shut down.

kopf (behind :mod:`.informer`) delivers watch events and keeps an index of
every kind.  Event handlers only enqueue keys; ``--workers`` coroutines
reconcile them level-triggered from the indexed objects, so a repeated or
stale event is harmless:

* ``("inst", ns, name)`` -> :class:`~.instance.controller.InstanceController`
  (scheduler + conductor + evacuation + deletion);
* ``("sg", ns, name)`` -> :class:`~.servergroup.controller.ServerGroupController`;
* ``("host", name)`` -> :class:`~.host.controller.HostController` (provider state);
* ``("hstate", name)`` -> handed to :class:`~.host.monitor.HostMonitor`'s own
  queue and writers (the Host's ``state``, ``Ready`` and ``Fenced``).

Hosts and Leases come from plain list + watch loops (see :mod:`.informer`);
the host monitor's timer finds expired Leases.  Beside them run the
host drain (:mod:`.host.drain`, the leader's), the leadership check,
the Event poster and the periodic audit.  Placement is the record of claims:
the claim is keyed by the Instance uid, so a restart never claims twice and
never loses a claim (a 409 on a first claim with an allocation present means
"already ours": it is adopted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Coroutine
from typing import Any

from kova import log as kova_log
from kova.crds import names
from kova.kube import Credentials, Kube
from kova.operator import inventory_metrics, metrics
from kova.operator.audit import audit_loop
from kova.operator.context import Context
from kova.operator.host.controller import HostController
from kova.operator.host.drain import DrainController
from kova.operator.host.monitor import WRITERS, HostMonitor
from kova.operator.host.view import HostView
from kova.operator.informer import Informer, RunOptions
from kova.operator.instance.conductor import Conductor
from kova.operator.instance.controller import InstanceController
from kova.operator.instance.deletion import Deletion
from kova.operator.instance.evacuation import Evacuation
from kova.operator.instance.mover import Mover
from kova.operator.instance.placing import Placer
from kova.operator.instance.records import Records
from kova.operator.leadership import Leadership
from kova.operator.ledger import Ledger
from kova.operator.membership import Membership
from kova.operator.quota import KEYS as QUOTA_KEYS
from kova.operator.recorder import EventRecorder
from kova.operator.scheduler.batch import BatchScheduler
from kova.operator.scheduler.scheduler import Scheduler
from kova.operator.scheduler.weighers import BuildFailures, WeighContext
from kova.operator.servergroup.controller import ServerGroupController
from kova.operator.settings import Settings
from kova.placement_client import PlacementClient, RetryPolicy
from kova.workqueue import AsyncWorkQueue

LOG = logging.getLogger("kova.operator")


def _log_ref(key: tuple) -> dict:
    """Log ``extra`` naming a work-queue key's object."""
    kind = {"inst": "Instance", "sg": "ServerGroup", "host": "Host"}.get(key[0], key[0])
    return kova_log.object_ref(kind, key[1] if len(key) > 2 else None, key[-1])


def _clients(settings: Settings, creds: Credentials) -> tuple[Kube, PlacementClient]:
    s = settings
    kube = Kube(creds, observe=lambda verb, seconds: metrics.KUBE_SECONDS.labels(
        verb=verb).observe(seconds))
    placement = PlacementClient(
        s.placement_url, s.placement_token, ca_file=s.placement_ca_file,
        retry=RetryPolicy(budget=s.placement_retry_seconds),
        observe=lambda call, seconds: metrics.PLACEMENT_SECONDS.labels(call=call).observe(
            seconds),
        on_retry=lambda reason: metrics.PLACEMENT_RETRIES.labels(reason=reason).inc())
    return kube, placement


class Operator:
    """One operator process."""

    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self.creds = Credentials.load(settings.kubeconfig)
        self.identity = s.replica_identity or f"{socket.gethostname()}-{os.getpid()}"
        self.priority = s.priority if s.priority is not None else random.randint(1, 1_000_000)
        self.informer = Informer(self.creds)
        #: ResourceQuota namespace/name -> its Kova limits as last watched.
        self._quota_limits: dict[str, str] = {}
        kube, placement = _clients(s, self.creds)
        self.ctx = ctx = Context(
            settings=s, kube=kube, placement=placement, informer=self.informer,
            ledger=Ledger(), hosts=HostView(self.informer, s.heartbeat_grace),
            queue=AsyncWorkQueue(),
            recorder=EventRecorder(kube, s.events, s.event_qps, s.event_burst),
            failures=BuildFailures(window=s.build_failure_window),
            leader=not s.peering and not s.share_instances)
        if s.share_instances:
            ctx.members = Membership(kube, s.member_namespace or s.lease_namespace,
                                     s.peering_name, self.identity, s.member_lease_seconds,
                                     self.members_changed, s.replica_pod_uid)
        self.scheduler = Scheduler(placement, s.scheduler, ctx.hosts.host_by_rp,
                                   ctx.hosts.host_by_name, WeighContext(failures=ctx.failures))
        self.batcher = BatchScheduler(self.scheduler, s.max_batch) if s.max_batch > 1 else None
        records = Records(ctx)
        placer = Placer(ctx, records, self.scheduler, self.batcher)
        conductor = Conductor(ctx, records, placer)
        self.instances = InstanceController(
            ctx, records, conductor, Evacuation(ctx, records, placer),
            Deletion(ctx, records), Mover(ctx, records, placer, conductor.quotas))
        # read at each scrape: Instances leave the waiting set in many places
        metrics.PENDING.set_function(lambda: len(ctx.ledger.pending))
        metrics.OWNED.set_function(ctx.owned_instances)
        inventory_metrics.INVENTORY.source = self.informer
        self.hosts = HostController(ctx)
        self.drains = DrainController(ctx, records)
        self.groups = ServerGroupController(ctx)
        self.monitor = monitor = HostMonitor(ctx)
        for state in (names.HostState.UP, names.HostState.DOWN):
            metrics.HOSTS.labels(state=state).set_function(monitor.count_of(state))
        self.leadership = Leadership(ctx, self.identity, self.priority, self.new_term)
        self._tasks: list[asyncio.Task] = []
        self._stop_timer: threading.Timer | None = None

    # ------------------------------------------------------------ informer events
    def instance_changed(self, namespace: str, name: str, body: dict, deleted: bool) -> None:
        self.instances.changed(namespace, name, body, deleted)

    def host_changed(self, name: str, body: dict, deleted: bool) -> None:
        self.hosts.host_changed(name, body, deleted)
        self.monitor.host_changed(name, body, deleted)
        self.drains.host_changed(name, body, deleted)

    def lease_changed(self, name: str, body: dict, deleted: bool) -> None:
        self.monitor.lease_changed(name, body, deleted)

    def lease_watch_health(self, healthy: bool) -> None:
        self.monitor.lease_watch_health(healthy)

    def quota_changed(self, key: str, body: dict, deleted: bool) -> None:
        """A Kova limit raised or removed may let a waiting Instance in now
        (the quota controller's status updates change no limit)."""
        hard = None if deleted else json.dumps(
            {k: v for k, v in ((body.get("spec") or {}).get("hard") or {}).items()
             if k in QUOTA_KEYS}, sort_keys=True)
        if self._quota_limits.get(key) == hard:
            return
        if hard is None:
            self._quota_limits.pop(key, None)
        else:
            self._quota_limits[key] = hard
        self.ctx.retrigger_pending()

    def node_changed(self, name: str, body: dict, deleted: bool) -> None:
        self.hosts.node_changed(name, body, deleted)

    def image_changed(self, name: str, deleted: bool) -> None:
        if not deleted:
            self.ctx.retrigger_pending()
            self.instances.image_changed(name)

    def dependency_changed(self, kind: str, namespace: str | None, name: str,
                           deleted: bool) -> None:
        """A Flavor or ServerGroup appeared, changed or went away."""
        if not deleted:
            self.ctx.retrigger_pending()
        elif kind == "servergroups":
            self.ctx.ledger.forget_key(("sg", namespace, name))

    def members_changed(self) -> None:
        """A replica came or went: every Instance may have another owner now,
        and this one may have become (or stopped being) the leader."""
        members = self.ctx.members
        assert members is not None
        # what this replica learnt of others' claims may be out of date
        self.ctx.ledger.new_term()
        was = self.ctx.leader
        self.leadership.update(members.is_leader(), first=members.changes == 1)
        if self.ctx.leader == was or not self.ctx.leader:
            self.ctx.enqueue_instances()  # new_term() queued everything otherwise

    def new_term(self) -> None:
        """This replica became the active one: look at everything again."""
        self.ctx.ledger.new_term()
        self.hosts.new_term()
        self.drains.new_term()  # before the Instances: it adopts the drains' moves
        self.ctx.enqueue_all()

    # ------------------------------------------------------------ workers
    async def worker(self) -> None:
        ctx = self.ctx
        await self.informer.hosts_synced.wait()
        if ctx.members is not None:
            await ctx.members.ready.wait()
        while True:
            key: Any = await ctx.queue.get()
            metrics.QUEUE_DEPTH.set(len(ctx.queue))
            try:
                if key[0] in ("inst", "sg"):
                    # every Instance seen first (kopf's indexes full)
                    await self.informer.synced.wait()
                if ctx.acts_on(key):
                    try:
                        await self.reconcile(key)
                    finally:
                        metrics.RECONCILES.labels(kind=key[0]).inc()
                elif key[0] == "inst":
                    ctx.ledger.settle(key)  # another replica's now: not waiting here
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retry with back-off
                metrics.ERRORS.labels(kind=key[0]).inc()
                delay = ctx.retry_later(key)
                LOG.warning("reconcile %s failed (%s: %s); retrying in %.1fs",
                            "/".join(key[1:]), type(exc).__name__, exc, delay,
                            extra=_log_ref(key))
            finally:
                ctx.queue.done(key)

    async def monitor_writer(self) -> None:
        await self.informer.hosts_synced.wait()
        await self.monitor.writer()

    async def reconcile(self, key: tuple) -> None:
        if key[0] == "inst":
            await self.instances.reconcile(key)
        elif key[0] == "sg":
            await self.groups.reconcile(key[1], key[2])
        elif key[0] == "host":
            await self.hosts.reconcile(key[1])
        elif key[0] == "hstate":
            self.monitor.queue.add(key[1])

    # ------------------------------------------------------------ run
    def _start(self) -> None:
        s, ctx = self.settings, self.ctx

        def task(coro: Coroutine, name: str) -> None:
            self._tasks.append(asyncio.create_task(coro, name=name))

        for i in range(s.workers):
            task(self.worker(), f"kova-worker-{i}")
        task(self.monitor.run(), "kova-host-monitor")
        task(self.drains.run(), "kova-host-drain")
        for i in range(WRITERS):
            task(self.monitor_writer(), f"kova-host-writer-{i}")
        if ctx.members is not None:
            task(ctx.members.run(), "kova-members")
        else:
            task(self.leadership.run(), "kova-leadership")
        task(ctx.recorder.poster(), "kova-events")
        if s.audit_interval > 0:
            # an operator of some namespaces audits those only (the command's
            # --namespace): another namespace's Instances are not its to heal
            task(audit_loop(ctx.kube, ctx.placement, interval=s.audit_interval,
                            heal=s.audit_heal, active=lambda: ctx.leader, emit=ctx.emit,
                            namespaces=() if s.all_namespaces else s.namespaces),
                 "kova-audit")

    async def run(self, stop_flag: asyncio.Event | None = None,
                  ready_flag: asyncio.Event | None = None) -> None:
        s = self.settings
        self._start()
        LOG.info("kova operator starting: identity=%s priority=%d peering=%s namespaces=%s "
                 "placement=%s", self.identity, self.priority,
                 f"shared Instances ({s.peering_name})" if s.share_instances
                 else s.peering_name if s.peering else "standalone",
                 "*" if s.all_namespaces else ",".join(s.namespaces), s.placement_url)
        options = RunOptions(
            all_namespaces=s.all_namespaces, namespaces=s.namespaces,
            peering=s.peering and not s.share_instances,
            peering_name=s.peering_name, priority=self.priority, identity=self.identity,
            health_port=s.health_port, watch_nodes=s.node_fencing,
            lease_namespace=s.lease_namespace)
        if stop_flag is not None:
            ready_flag = ready_flag if ready_flag is not None else asyncio.Event()
            self._watch_signals(stop_flag)
            self._tasks.append(asyncio.create_task(self._deadline(stop_flag, ready_flag),
                                                   name="kova-stop"))
        try:
            await self.informer.run(self, options, stop_flag=stop_flag, ready_flag=ready_flag)
        finally:
            await self.shutdown()

    def _watch_signals(self, stop_flag: asyncio.Event) -> None:
        """SIGTERM/SIGINT start the shutdown clock at once: a Python signal
        handler runs between two bytecodes of the main thread, even in the
        middle of a long callback of a busy event loop (the loop's own
        handler, which sets ``stop_flag`` too, waits for its turn)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()

        def on_signal(signum: int, frame: Any) -> None:
            self._start_stop_clock()
            loop.call_soon_threadsafe(stop_flag.set)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

    async def _deadline(self, stop_flag: asyncio.Event, ready_flag: asyncio.Event) -> None:
        await ready_flag.wait()
        # kopf installed its own signal handlers as it started (they stop
        # kopf, not stop_flag): ours again, after them.
        await asyncio.sleep(0.1)
        self._watch_signals(stop_flag)
        await stop_flag.wait()
        self._start_stop_clock()

    def _start_stop_clock(self) -> None:
        """Once asked to stop, exit within ``--shutdown-grace`` whatever the
        load: a thread (not the event loop, which may be the busy part) ends
        the process if the orderly shutdown has not by then."""
        if self._stop_timer is not None:
            return
        grace = self.settings.shutdown_grace

        def hard_stop() -> None:
            LOG.warning("the shutdown took longer than --shutdown-grace (%.0fs); exiting now",
                        grace)
            logging.shutdown()
            os._exit(0)

        self._stop_timer = timer = threading.Timer(grace, hard_stop)
        timer.daemon = True
        timer.start()
        LOG.info("stopping (at most %.0fs)", grace)

    async def shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ctx.members is not None:
            await self.ctx.members.leave()
        if self.batcher is not None:
            await self.batcher.close()
        self.ctx.queue.shutdown()
        self.monitor.queue.shutdown()
        await self.ctx.kube.close()
        await self.ctx.placement.close()
        if self._stop_timer is not None:
            self._stop_timer.cancel()
