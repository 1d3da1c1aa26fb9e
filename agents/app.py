"""The compute agent process: Nova's nova-compute for one host.

:class:`Agent` wires the parts together and runs them in threads (all
daemons; :meth:`Agent.stop` ends them):

* ``watch`` -- :class:`~kova.agents.watch.InstanceWatch`: lists and watches
  the Instances labelled with this host into a local cache, queueing each
  changed Instance;
* ``worker-N`` -- take keys from the :class:`~kova.workqueue.WorkQueue` and
  reconcile them (:class:`~kova.agents.instance.reconciler.Reconciler`; one
  key is never reconciled by two workers at once);
* ``libvirt-events`` -- libvirt's event loop; lifecycle events queue the
  Instance the domain belongs to;
* ``lease`` -- :class:`~kova.agents.heartbeat.Heartbeat`, the Lease;
* ``host`` -- keeps the Host object and the Placement provider in sync
  (:class:`~kova.agents.registration.Registration`) and runs the periodic
  resync: every Instance and domain queued again (a missed event is
  corrected there), leftover directories swept, unused images pruned;
* ``metrics`` -- ``/metrics`` and ``/healthz``;
* ``stream`` -- with ``--stream-cert-file``, the stream endpoint for Kova's
  API component (:class:`~kova.agents.stream.server.StreamServer`: consoles,
  VNC, the console log, power actions), its own asyncio loop.

See ``docs/agent.md`` and the module map in ``docs/architecture.md``.
"""

from __future__ import annotations

import http.server
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from kova import log as kova_log
from kova.agents.context import DOMAIN_KEY, RESYNC_KEY, AgentContext, Key
from kova.agents.guest_metrics import GuestCollector
from kova.agents.heartbeat import Heartbeat
from kova.agents.instance import decisions, snapshot
from kova.agents.instance.build import Builder
from kova.agents.instance.power import Power
from kova.agents.instance.power_actions import PowerActions
from kova.agents.instance.reconciler import Reconciler
from kova.agents.instance.report import Reporter
from kova.agents.instance.teardown import Teardown
from kova.agents.instance.userdata import UserData
from kova.agents.metrics import AgentMetrics
from kova.agents.metrics import serve as serve_metrics
from kova.agents.registration import Registration
from kova.agents.settings import AgentSettings
from kova.agents.stream.server import StreamServer
from kova.agents.virt.driver import DriverError, LibvirtDriver, start_event_loop
from kova.agents.virt.image_sources import SourcePolicy, networks
from kova.agents.virt.images import ImageCache
from kova.agents.watch import InstanceWatch
from kova.crds.names import PowerState
from kova.kube import Credentials, SyncKube
from kova.placement_client import RetryPolicy, SyncPlacementClient
from kova.workqueue import WorkQueue

log = logging.getLogger("kova.agents.app")

#: Seconds between two prunes of the image cache (at a resync).


def probe_direct_io(directory: Path) -> bool:
    """Whether files in ``directory`` can be opened with O_DIRECT (then the
    guests' disks use ``cache=none``)."""
    path = directory / f".direct-io-probe.{os.getpid()}"
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | getattr(os, "O_DIRECT", 0), 0o600)
        os.close(fd)
        return True
    except OSError:
        return False
    finally:
        try:
            path.unlink()
        except OSError:
            pass


def _placement(cfg: AgentSettings, metrics: AgentMetrics) -> SyncPlacementClient | None:
    if not cfg.placement_url:
        return None
    return SyncPlacementClient(
        cfg.placement_url, cfg.placement_token, ca_file=cfg.placement_ca_file,
        token_file=cfg.placement_token_file, retry=RetryPolicy(budget=cfg.placement_retry_seconds),
        observe=metrics.observe_placement, on_retry=metrics.placement_retried)


def source_policy(cfg: AgentSettings) -> SourcePolicy:
    """Where images may come from, by the agent's settings."""
    return SourcePolicy(
        host_dirs=tuple(cfg.image_host_dirs),
        blocked=networks(cfg.image_url_blocked_networks),
        allowed=networks(cfg.image_url_allowed_networks),
        max_bytes=cfg.image_max_bytes, max_seconds=cfg.image_download_seconds)


def store_auth(store_url: str | None, creds: Credentials
               ) -> Callable[[str, str | None], dict[str, str]] | None:
    """The agent's bearer token for URLs of Kova's image store.

    A cluster Image (namespace None: administrators wrote its URL) gets the
    token for any URL of the store; a TenantImage only for the store's files
    of its own namespace (``/v1/namespaces/<namespace>/images/``), so that a
    tenant cannot make the agent fetch another namespace's image, or a cluster
    Image's file, with the agent's rights."""
    if not store_url:
        return None
    prefix = store_url.rstrip("/") + "/"

    def headers(url: str, namespace: str | None) -> dict[str, str]:
        allowed = prefix if namespace is None else \
            f"{prefix}v1/namespaces/{namespace}/images/"
        token = creds.bearer() if url.startswith(allowed) else None
        return {"Authorization": f"Bearer {token}"} if token else {}

    return headers


class Agent:
    def __init__(self, cfg: AgentSettings, kube: SyncKube | None = None,
                 lease_owner: dict | None = None) -> None:
        self.cfg = cfg
        self.host = cfg.host
        instance_dir = Path(cfg.instance_dir)
        instance_dir.mkdir(parents=True, exist_ok=True)
        metrics = AgentMetrics()
        driver = LibvirtDriver(cfg.libvirt_uri, on_event=self._on_libvirt_event)
        metrics.libvirt_reconnects(lambda: driver.reconnects)
        metrics.registry.register(GuestCollector(driver, cfg.host, metrics.set))
        self.ctx = ctx = AgentContext(
            cfg=cfg,
            kube=kube or SyncKube(Credentials.load(cfg.kubeconfig),
                                  max_connections=max(8, cfg.workers * 2 + 4)),
            driver=driver,
            images=ImageCache(cfg.image_cache_dir or (instance_dir / "_base"),
                              ca_file=cfg.image_ca_file, store_ca_file=cfg.image_store_ca_file,
                              policy=source_policy(cfg)),
            metrics=metrics,
            queue=WorkQueue(),
            disk_cache=cfg.disk_cache or (
                "none" if probe_direct_io(instance_dir) else "writeback"),
        )
        ctx.images.set_auth(store_auth(cfg.image_store_url, ctx.kube.aio.creds))
        self.placement = _placement(cfg, metrics)
        self.watch = InstanceWatch(ctx)
        self.report = Reporter(ctx, self.watch)
        self.heartbeat = Heartbeat(ctx, lease_owner)
        self.teardown = Teardown(ctx, self.watch, self.report)
        self.userdata = UserData(ctx, self.report)
        self.builder = Builder(ctx, self.report, self.teardown, self.userdata)
        self.reconciler = Reconciler(ctx, self.watch, self.report, self.teardown,
                                     self.userdata, self.builder, Power(ctx, self.userdata))
        self.stream = StreamServer(
            ctx, PowerActions(ctx, self.watch, self.report, self.userdata), self.healthy,
        ) if cfg.stream else None
        if self.stream is not None:
            self.stream.prepare_live = self.reconciler.live.prepare_here
            self.stream.prepare_image = self.reconciler.migrator.prepare_here
        self.registration = Registration(ctx, self.watch, self.report, self.placement,
                                         self.stream)
        self._threads: list[threading.Thread] = []
        self._last_prune = time.monotonic()
        self._metrics_server: http.server.ThreadingHTTPServer | None = None

    # The collaborators most callers want by name.
    @property
    def metrics(self) -> AgentMetrics:
        return self.ctx.metrics

    @property
    def driver(self) -> LibvirtDriver:
        return self.ctx.driver

    @property
    def queue(self) -> WorkQueue:
        return self.ctx.queue

    @property
    def kube(self) -> SyncKube:
        return self.ctx.kube

    @property
    def instance_dir(self) -> Path:
        return self.ctx.instance_dir

    # ==================================================================
    # Lifecycle
    def start(self) -> None:
        start_event_loop()
        _ = self.driver.conn  # connect (and register for events) now
        self.ctx.define_guest_filter()
        snapshot.clean_up_after_restart(self.ctx)
        log.info("agent for host %s: libvirt %s, instances in %s, disk cache=%s",
                 self.host, self.cfg.libvirt_uri, self.ctx.instance_dir, self.ctx.disk_cache)
        if self.cfg.live_migration_uri:
            log.info("live migrations to this host: the other hosts' libvirtd connects to %s",
                     self.cfg.live_migration_uri)
        else:
            log.info("this host receives no live migration (no --live-migration-uri)")
        if self.cfg.image_store_url:
            log.info("image store %s, trusted CAs: %s", self.cfg.image_store_url,
                     self.ctx.images.trusted)
        # The heartbeat first: a status written by a worker must never come
        # before the Lease says this host is back (the operator would mark
        # the Instance Unknown again).
        try:
            self.heartbeat.renew()
            self.heartbeat.last_ok = time.monotonic()
        except Exception as exc:
            log.warning("renewing the heartbeat lease failed: %s", exc)
        # The stream endpoint before the registration, whose Host status
        # advertises it (and a port in use stops the agent here).
        if self.stream is not None:
            self.stream.start()
        # Instances next (re-adoption after a restart must not wait for
        # Placement), registration in the host thread right away.
        self._spawn("watch", self.watch.run)
        for i in range(self.cfg.workers):
            self._spawn(f"worker-{i}", self._worker)
        self._spawn("lease", self.heartbeat.run)
        self._spawn("host", self._host_loop)
        if self.cfg.metrics_port:
            server = serve_metrics(
                self.cfg.metrics_port, self.metrics, self.healthy, self.cfg.metrics_bind
            )
            self._metrics_server = server
            log.info("metrics and /healthz on port %s", server.server_address[1])

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def request_stop(self) -> None:
        """Ask the agent to stop (from a signal handler): :meth:`run_forever`
        returns after stopping the threads.  Domains keep running."""
        self.ctx.stopping.set()

    def stop(self) -> None:
        self.ctx.stopping.set()
        self.watch.membership_changed.set()
        self.queue.shutdown()
        self.watch.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self.stream is not None:
            self.stream.stop()
        for t in self._threads:
            t.join(timeout=5)
        self.driver.close()
        if self.placement is not None:
            self.placement.close()
        self.kube.close()

    def run_forever(self) -> None:
        self.start()
        try:
            while not self.ctx.stopping.wait(1.0):
                pass
        finally:
            self.stop()

    def wait_synced(self, timeout: float = 30.0) -> bool:
        return self.watch.synced.wait(timeout)

    def healthy(self) -> tuple[bool, str]:
        try:
            if not self.driver.conn.isAlive():
                return False, "libvirt connection is down"
        except Exception as exc:
            return False, f"libvirt: {exc}"
        if not self.watch.synced.is_set():
            return False, "instance watch not synced"
        if not self.heartbeat.fresh():
            return False, "heartbeat lease not renewed"
        return True, "ok"

    # ==================================================================
    # The host thread: registration, Host status, periodic resync
    def _host_loop(self) -> None:
        stopping, changed = self.ctx.stopping, self.watch.membership_changed
        try:  # a Placement failure is recorded by the registration itself
            self.registration.register()
        except Exception:
            log.exception("host registration failed; retrying at the next check")
        now = time.monotonic()
        next_resync, next_check = now + self.cfg.resync_seconds, now + self.cfg.host_check_seconds
        while True:
            dirty = changed.wait(max(0.0, min(next_resync, next_check) - time.monotonic()))
            if stopping.is_set():
                break
            if dirty:
                stopping.wait(1.0)  # let a burst of changes settle
                changed.clear()
            resync = time.monotonic() >= next_resync
            try:
                if dirty or resync:
                    self.registration.sync()
                else:
                    self.registration.check()
            except Exception as exc:
                log.warning("host sync failed: %s", exc)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.cfg.host_check_seconds
            if resync:
                self.resync()
                next_resync = time.monotonic() + self.cfg.resync_seconds

    def resync(self, strict: bool = False) -> None:
        """Queue every known Instance and every Kova domain (periodic
        power-state sync; also finds orphans), sweep leftover directories and
        prune the image cache.  ``strict``: a libvirt error is raised (the
        worker retries with back-off -- after libvirtd restarted, until it
        answers again) instead of only logged."""
        for k in self.watch.keys():
            self.queue.add(k)
        if not self.watch.synced.is_set():
            return
        try:
            domains = self.teardown.mine(self.driver.list_domains())
        except DriverError as exc:
            if strict:
                raise
            log.warning("listing domains failed: %s", exc)
            return
        counts: dict[str, int] = {}
        for d in domains:
            counts[d.state.power_state] = counts.get(d.state.power_state, 0) + 1
            assert d.meta is not None
            self.queue.add((d.meta.namespace, d.meta.name))
        for state in PowerState:
            if state != PowerState.UNKNOWN:  # the domains gauge has every state but Unknown
                self.metrics.domains.labels(state).set(counts.get(state, 0))
        self.teardown.sweep_dirs({d.uuid for d in domains})
        evicting = self.cfg.image_cache_ttl > 0 or self.cfg.image_cache_min_free_percent > 0
        if evicting and time.monotonic() - self._last_prune >= self.cfg.image_cache_check_seconds:
            self._last_prune = time.monotonic()
            self.builder.prune_images()

    # ==================================================================
    # Workers and events
    def _on_libvirt_event(self, uid: str, event: str, detail: int) -> None:
        self.metrics.lifecycle_events.labels(event).inc()
        if not uid:  # connection closed: resync everything
            self.queue.add(RESYNC_KEY)
            return
        self.watch.queue_uid(uid)

    def _worker(self) -> None:
        while not self.ctx.stopping.is_set():
            k = cast("Key | None", self.queue.get(timeout=1.0))
            if k is None:
                continue
            self.metrics.queue_depth.set(len(self.queue))
            t0 = time.monotonic()
            try:
                self._handle(k)
                self.ctx.memory.failures.pop(k, None)
                self.metrics.reconciles.labels("ok").inc()
            except Exception as exc:
                self._failed(k, exc)
            finally:
                self.metrics.reconcile_seconds.observe(time.monotonic() - t0)
                self.queue.done(k)

    def _handle(self, k: Key) -> None:
        if k == RESYNC_KEY:
            self.resync(strict=True)
        elif k[0] == DOMAIN_KEY:
            info = self.driver.get(k[1])
            if info is not None and info.meta is not None and decisions.is_mine(
                    info.meta, self.host):
                self.queue.add((info.meta.namespace, info.meta.name))
        else:
            obj = self.watch.get(k)
            # every line of this reconcile names the Instance (docs/development.md "Logs")
            about = (kova_log.about({**obj, "kind": "Instance"}) if obj
                     else kova_log.object_ref("Instance", *k))
            with kova_log.bound(**about):
                self.reconciler.reconcile(k)

    def _failed(self, k: Key, exc: Exception) -> None:
        failures = self.ctx.memory.failures
        n = failures.get(k, 0) + 1
        failures[k] = n
        delay = decisions.reconcile_retry_delay(n)
        self.metrics.reconciles.labels("error").inc()
        log.warning("reconcile of %s failed (attempt %d, retry in %.1fs): %s",
                    "/".join(k), n, delay, exc, exc_info=n == 1,
                    extra=kova_log.object_ref("Instance", k[0] or None, k[1]))
        self.queue.add_after(k, delay)
