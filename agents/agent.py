"""The compute agent: Nova's nova-compute for one host.

Threads (all daemons; :meth:`Agent.stop` ends them):

* ``watch`` -- lists and watches the Instances labelled with this host (``names.LABEL_HOST``)
  into a local cache, queueing each changed Instance;
* ``worker-N`` -- take Instance keys from a :class:`WorkQueue` and reconcile
  them (one key is never reconciled by two workers at once);
* ``libvirt-events`` -- libvirt's event loop; lifecycle events queue the
  Instance the domain belongs to;
* ``lease`` -- renews the heartbeat Lease every few seconds;
* ``host`` -- keeps the Host object and the Placement provider in sync and
  queues every Instance and domain for a periodic power-state resync (a
  missed event is corrected there);
* ``metrics`` -- ``/metrics`` and ``/healthz``.

A reconcile is idempotent and safe to repeat after a crash at any line: the
libvirt domain (its UUID is the Instance uid) and the files under
``<instance-dir>/<uid>/`` are the only state on the host, and both are looked
at afresh each time.  See ``docs/agent.md``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from kova import events, finalizers
from kova import log as kova_log
from kova.agents import restart_fields
from kova.agents import status as st
from kova.agents.domain import (
    DomainMetadata,
    DomainSpec,
    DomainSpecError,
    build_domain_xml,
    domain_name,
    mac_for,
)
from kova.agents.driver import DomainInfo, DomainState, DriverError, LibvirtDriver, start_event_loop
from kova.agents.images import ImageCache, ImageError, ImageSource, create_overlay
from kova.agents.metrics import AgentMetrics
from kova.agents.metrics import serve as serve_metrics
from kova.agents.settings import AgentSettings
from kova.agents.stream import StreamServer
from kova.conditions import condition_is, now_rfc3339
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import InstancePhase, PowerState, RunStrategy
from kova.kstatus import with_kstatus
from kova.kube import (
    Credentials,
    KubeError,
    SyncKube,
    WatchStream,
    custom_path,
    host_path,
    instance_path,
    lease_path,
)
from kova.placement_client import RetryPolicy, SyncPlacementClient
from kova.workqueue import WorkQueue

log = logging.getLogger("kova.agents.agent")

GiB = 1 << 30


class BuildError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Key = tuple[str, str]


def _key(obj: dict) -> Key:
    md = obj.get("metadata") or {}
    return (md.get("namespace", ""), md.get("name", ""))


def _probe_direct_io(directory: Path) -> bool:
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


class Agent:
    def __init__(self, cfg: AgentSettings, kube: SyncKube | None = None) -> None:
        self.cfg = cfg
        self.host = cfg.host
        self.instance_dir = Path(cfg.instance_dir)
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = AgentMetrics()
        cache_dir = cfg.image_cache_dir or (self.instance_dir / "_base")
        self.images = ImageCache(cache_dir, ca_file=cfg.image_ca_file)
        self.disk_cache = cfg.disk_cache or (
            "none" if _probe_direct_io(self.instance_dir) else "writeback"
        )
        self.kube = kube or SyncKube(Credentials.load(cfg.kubeconfig),
                                     max_connections=max(8, cfg.workers * 2 + 4))
        self.queue = WorkQueue()
        self.driver = LibvirtDriver(cfg.libvirt_uri, on_event=self._on_libvirt_event)
        self.metrics.libvirt_reconnects(lambda: self.driver.reconnects)
        self.placement: SyncPlacementClient | None = None
        if cfg.placement_url:
            self.placement = SyncPlacementClient(
                cfg.placement_url, cfg.placement_token, ca_file=cfg.placement_ca_file,
                retry=RetryPolicy(budget=cfg.placement_retry_seconds),
                observe=self.metrics.observe_placement, on_retry=self.metrics.placement_retried)
        self._cache: dict[Key, dict] = {}
        self._cache_lock = threading.Lock()
        self._uid_index: dict[str, Key] = {}
        self._stop = threading.Event()
        #: Set when this host's set of Instances changed: the Host status
        #: (instance count, allocated) is refreshed without waiting for a resync.
        self._host_dirty = threading.Event()
        self._synced = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stopping: dict[str, float] = {}
        self._failures: dict[Key, int] = {}
        #: Instances waiting for their user-data Secret: retries so far.
        self._secret_waits: dict[Key, int] = {}
        self._build_started: dict[str, float] = {}
        self._awaiting_address: dict[str, float] = {}
        self._last_lease_ok = 0.0
        self._last_prune = time.monotonic()
        self._host_spec_seen: str | None = None
        self.rp_uuid: str | None = None
        self._metrics_server = None
        self._watch: WatchStream | None = None
        self.stream = StreamServer(self, cfg) if cfg.stream else None
        self._seed_lock = threading.Lock()

    # ==================================================================
    # Lifecycle
    def start(self) -> None:
        start_event_loop()
        _ = self.driver.conn  # connect (and register for events) now
        log.info("agent for host %s: libvirt %s, instances in %s, disk cache=%s",
                 self.host, self.cfg.libvirt_uri, self.instance_dir, self.disk_cache)
        # The heartbeat first: a status written by a worker must never come
        # before the Lease says this host is back (the operator would mark
        # the Instance Unknown again).
        try:
            self.renew_lease()
            self._last_lease_ok = time.monotonic()
        except Exception as exc:
            log.warning("renewing the heartbeat lease failed: %s", exc)
        # Instances next (re-adoption after a restart must not wait for
        # Placement), registration in the host thread right away.
        self._spawn("watch", self._watch_loop)
        for i in range(self.cfg.workers):
            self._spawn(f"worker-{i}", self._worker)
        self._spawn("lease", self._lease_loop)
        self._spawn("host", self._host_loop)
        if self.cfg.metrics_port:
            self._metrics_server = serve_metrics(
                self.cfg.metrics_port, self.metrics, self.healthy, self.cfg.metrics_bind
            )
            log.info("metrics and /healthz on port %s", self._metrics_server.server_address[1])
        if self.stream is not None:
            self.stream.start()

    def _spawn(self, name: str, target) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._host_dirty.set()
        self.queue.shutdown()
        if self._watch is not None:
            self._watch.stop()
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
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def wait_synced(self, timeout: float = 30.0) -> bool:
        return self._synced.wait(timeout)

    def healthy(self) -> tuple[bool, str]:
        try:
            if not self.driver.conn.isAlive():
                return False, "libvirt connection is down"
        except Exception as exc:
            return False, f"libvirt: {exc}"
        if not self._synced.is_set():
            return False, "instance watch not synced"
        if time.monotonic() - self._last_lease_ok > self.cfg.lease_duration_seconds:
            return False, "heartbeat lease not renewed"
        return True, "ok"

    # ==================================================================
    # Heartbeat and registration
    def _lease_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.renew_lease()
                self._last_lease_ok = time.monotonic()
                self.metrics.lease_renewals.labels("ok").inc()
            except Exception as exc:
                self.metrics.lease_renewals.labels("error").inc()
                log.warning("renewing the heartbeat lease failed: %s", exc)
            self._stop.wait(self.cfg.lease_renew_seconds)

    def renew_lease(self) -> None:
        ns, name = self.cfg.lease_namespace, self.host
        now = now_rfc3339(micro=True)
        spec = {
            "holderIdentity": self.host,
            "leaseDurationSeconds": self.cfg.lease_duration_seconds,
            "renewTime": now,
        }
        try:
            self.kube.merge_patch(lease_path(ns, name), {"spec": spec})
            return
        except KubeError as exc:
            if exc.status != 404:
                raise
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": ns, "labels": {names.LABEL_HOST: name}},
            "spec": {**spec, "acquireTime": now},
        }
        try:
            self.kube.create(lease_path(ns), body)
        except KubeError as exc:
            if exc.status == 404:  # the namespace is missing
                try:
                    self.kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
                except KubeError as exc2:
                    if exc2.status not in (403, 409):
                        raise
                self.kube.create(lease_path(ns), body)
            elif exc.status != 409:
                raise

    def _get_host(self) -> dict:
        found = self.kube.get_or_none(host_path(self.host))
        if found is not None:
            return found
        body = {
            "apiVersion": names.API_VERSION,
            "kind": "Host",
            "metadata": {"name": self.host},
            "spec": {},
        }
        try:
            return self.kube.create(custom_path(names.HOSTS), body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            return self.kube.get(host_path(self.host))

    def register_host(self) -> dict:
        """Create/update the Host, its resource provider, inventory and
        traits, and the Host status.  Returns the status written."""
        from kova.agents import traits as traits_mod

        info = self.driver.host_info()
        vfs = os.statvfs(self.instance_dir)
        disk_gib = max(1, vfs.f_blocks * vfs.f_frsize // GiB)
        host = self._get_host()
        spec = host.get("spec") or {}
        hstatus = host.get("status") or {}
        wanted_traits = traits_mod.host_traits(
            info, domain_type=self.cfg.domain_type, custom=spec.get("traits")
        )
        body: dict[str, Any] = {
            "capacity": {"vcpus": info.cpus, "memoryMiB": info.memory_mib, "diskGiB": disk_gib},
            "hypervisor": {
                "type": "KVM" if self.cfg.domain_type == "kvm" else "QEMU",
                "version": info.hypervisor_version,
                "libvirtVersion": info.libvirt_version,
                "hostname": info.hostname[:253],
                "cpuArch": info.arch,
                "cpuModel": info.cpu_model,
            },
            "instanceCount": self._instance_count(),
            "lastHeartbeatTime": now_rfc3339(),
            **self._stream_status(),
        }
        if self.placement is not None:
            rp = self.placement.ensure_provider(
                self.host, hstatus.get("resourceProviderUUID") or names.provider_uuid(self.host)
            )
            self.rp_uuid = rp["uuid"]
            inv = traits_mod.inventory(
                vcpus=info.cpus, memory_mib=info.memory_mib, disk_gib=disk_gib,
                ratios=spec.get("allocationRatios"), reserved=spec.get("reserved"),
            )
            self.placement.set_inventories(self.rp_uuid, inv)
            body["traits"] = self.placement.set_traits(
                self.rp_uuid, wanted_traits, keep=(names.TRAIT_DISABLED,)
            )
            body["resourceProviderUUID"] = self.rp_uuid
            body["allocated"] = self._allocated()
        else:
            body["traits"] = wanted_traits
        self._apply_status(None, names.HOSTS, self.host, "Host", body)
        self._host_spec_seen = json.dumps(spec, sort_keys=True)
        log.info("registered host %s: %d vCPU, %d MiB, %d GiB, provider %s",
                 self.host, info.cpus, info.memory_mib, disk_gib, self.rp_uuid)
        return body

    def cached_instance(self, uid: str) -> dict | None:
        """The Instance of domain ``uid`` as the watch cache has it."""
        with self._cache_lock:
            key = self._uid_index.get(uid)
            return self._cache.get(key) if key is not None else None

    def requeue(self, uid: str) -> None:
        """Reconcile (and so report) the Instance of domain ``uid`` soon."""
        with self._cache_lock:
            key = self._uid_index.get(uid)
        self.queue.add(key if key is not None else ("*domain*", uid))

    def _stream_status(self) -> dict[str, Any]:
        """Host status.streamEndpoint: where Kova's API component reaches
        this agent (absent when the stream endpoint is off)."""
        if self.stream is None or self.stream.port is None:
            return {}
        return {"streamEndpoint": {"address": self.stream.advertise_address,
                                   "port": self.stream.port}}

    def _allocated(self) -> dict[str, int]:
        if self.placement is None or self.rp_uuid is None:
            return {}
        u = self.placement.usages(self.rp_uuid)
        return {
            "vcpus": int(u.get("VCPU", 0)),
            "memoryMiB": int(u.get("MEMORY_MB", 0)),
            "diskGiB": int(u.get("DISK_GB", 0)),
        }

    def _instance_count(self) -> int:
        with self._cache_lock:
            return len(self._cache)

    def _host_loop(self) -> None:
        try:
            self.register_host()
        except Exception:
            log.exception("host registration failed; retrying at the next resync")
        next_resync = time.monotonic() + self.cfg.resync_seconds
        while True:
            dirty = self._host_dirty.wait(max(0.0, next_resync - time.monotonic()))
            if self._stop.is_set():
                break
            if dirty:
                self._stop.wait(1.0)  # let a burst of changes settle
                self._host_dirty.clear()
            try:
                host = self._get_host()
                spec_now = json.dumps(host.get("spec") or {}, sort_keys=True)
                if spec_now != self._host_spec_seen or self.rp_uuid is None and self.placement:
                    self.register_host()
                else:
                    body = {
                        "instanceCount": self._instance_count(),
                        "lastHeartbeatTime": now_rfc3339(),
                        **self._stream_status(),
                    }
                    if self.rp_uuid:
                        body["allocated"] = self._allocated()
                        body["resourceProviderUUID"] = self.rp_uuid
                    self._apply_status(None, names.HOSTS, self.host, "Host", body)
            except Exception as exc:
                log.warning("host sync failed: %s", exc)
            if time.monotonic() >= next_resync:
                self.resync()
                next_resync = time.monotonic() + self.cfg.resync_seconds

    def resync(self, strict: bool = False) -> None:
        """Queue every known Instance and every Kova domain (periodic
        power-state sync; also finds orphans).  ``strict``: a libvirt error
        is raised (the worker retries with back-off -- after libvirtd
        restarted, until it answers again) instead of only logged."""
        with self._cache_lock:
            keys = list(self._cache)
        for k in keys:
            self.queue.add(k)
        if not self._synced.is_set():
            return
        try:
            domains = self.driver.list_domains()
        except DriverError as exc:
            if strict:
                raise
            log.warning("listing domains failed: %s", exc)
            return
        domains = [d for d in domains if self._mine(d)]
        counts: dict[str, int] = {}
        for d in domains:
            counts[d.state.power_state] = counts.get(d.state.power_state, 0) + 1
            self.queue.add((d.meta.namespace, d.meta.name))
        for state in st_power_states():
            self.metrics.domains.labels(state).set(counts.get(state, 0))
        self._sweep_instance_dirs({d.uuid for d in domains})
        self._prune_images()

    def _prune_images(self) -> None:
        """Every 10 minutes: drop cached images no overlay has used for
        ``image_cache_ttl`` seconds (Nova's image cache manager)."""
        if self.cfg.image_cache_ttl <= 0 or time.monotonic() - self._last_prune < 600:
            return
        self._last_prune = time.monotonic()
        from kova.agents.images import backing_file

        in_use = set()
        for disk in self.instance_dir.glob("*/disk.qcow2"):
            b = backing_file(disk)
            if b is not None:
                in_use.add(b)
        try:
            self.images.prune(in_use, min_age=self.cfg.image_cache_ttl)
        except OSError as exc:
            log.warning("image cache prune failed: %s", exc)

    def _sweep_instance_dirs(self, domain_uids: set[str]) -> None:
        """Remove instance directories that belong to no domain and no
        Instance of this host (a build that crashed half-way)."""
        with self._cache_lock:
            known = {(o.get("metadata") or {}).get("uid") for o in self._cache.values()}
        for path in self.instance_dir.iterdir():
            if not path.is_dir() or path.name.startswith(("_", ".")):
                continue
            uid = path.name
            if uid in known or uid in domain_uids:
                continue
            try:
                info = json.loads((path / "instance.json").read_text())
            except (OSError, ValueError):
                info = {}
            ns, name = info.get("namespace"), info.get("name")
            if ns and name and self._still_ours(ns, name, uid):
                continue
            log.info("removing leftover instance directory %s", path)
            _rmtree(path)

    # ==================================================================
    # Watch
    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch_events(self._relist())
            except KubeError as exc:
                if exc.status != 410:  # 410: the resourceVersion is too old; relist
                    log.warning("instance watch failed: %s %s", exc.status, exc.reason)
                    self._stop.wait(1.0)
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning("instance watch failed: %s", exc)
                self._stop.wait(1.0)

    def _instances_query(self) -> tuple[str, dict[str, str]]:
        return custom_path(names.INSTANCES), {"labelSelector": f"{names.LABEL_HOST}={self.host}"}

    def _relist(self) -> str:
        """List this host's Instances into the cache (queueing every one that
        appeared, changed or went); the list's resourceVersion."""
        path, query = self._instances_query()
        lst = self.kube.list_all(path, query)
        fresh = {_key(o): o for o in lst.get("items") or []}
        with self._cache_lock:
            old = self._cache
            self._cache = fresh
            for o in fresh.values():
                self._uid_index[o["metadata"]["uid"]] = _key(o)
        for k in set(old) | set(fresh):
            self.queue.add(k)
        if not self._synced.is_set():
            log.info("instance watch synced: %d instances on %s", len(fresh), self.host)
            # Look at every domain on the host now, not at the first
            # periodic resync: a domain whose Instance was evacuated (or
            # deleted) while this agent was away must not run on.
            self.queue.add(("", "*resync*"))
        self._synced.set()
        return lst["metadata"]["resourceVersion"]

    def _watch_events(self, rv: str) -> None:
        """Follow the watch from ``rv`` until it ends (then relist)."""
        path, query = self._instances_query()
        self._watch = self.kube.watch(
            path, {**query, "resourceVersion": rv, "allowWatchBookmarks": "true"},
            timeout_seconds=300)
        for ev in self._watch:
            if self._stop.is_set():
                break
            typ, obj = ev.get("type"), ev.get("object") or {}
            if typ == "ERROR":
                log.info("watch error %s; relisting", obj.get("message"))
                break
            if typ != "BOOKMARK":
                self._cache_event(typ, obj)

    def _cache_event(self, typ: str, obj: dict) -> None:
        k = _key(obj)
        if typ in ("ADDED", "DELETED"):
            self._host_dirty.set()
        with self._cache_lock:
            if typ == "DELETED":
                self._cache.pop(k, None)
            else:
                cur = self._cache.get(k)
                # Our own writes land in the cache at once; an older event
                # arriving after them must not undo it.
                if cur is None or _rv(obj) >= _rv(cur) or (
                    cur["metadata"].get("uid") != obj["metadata"].get("uid")
                ):
                    self._cache[k] = obj
                self._uid_index[obj["metadata"]["uid"]] = k
        self.queue.add(k)

    def _on_libvirt_event(self, uid: str, event: str, detail: int) -> None:
        self.metrics.lifecycle_events.labels(event).inc()
        if not uid:  # connection closed: resync everything
            self.queue.add(("", "*resync*"))
            return
        self.requeue(uid)

    # ==================================================================
    # Workers
    def _worker(self) -> None:
        while not self._stop.is_set():
            k = self.queue.get(timeout=1.0)
            if k is None:
                continue
            self.metrics.queue_depth.set(len(self.queue))
            t0 = time.monotonic()
            try:
                if k == ("", "*resync*"):
                    self.resync(strict=True)
                elif k[0] == "*domain*":
                    info = self.driver.get(k[1])
                    if info is not None and self._mine(info):
                        self.queue.add((info.meta.namespace, info.meta.name))
                else:
                    self.reconcile(k)
                self._failures.pop(k, None)
                self.metrics.reconciles.labels("ok").inc()
            except Exception as exc:
                n = self._failures.get(k, 0) + 1
                self._failures[k] = n
                delay = min(30.0, 0.5 * 2 ** (n - 1))
                self.metrics.reconciles.labels("error").inc()
                log.warning("reconcile of %s failed (attempt %d, retry in %.1fs): %s",
                            "/".join(k), n, delay, exc, exc_info=n == 1,
                            extra=kova_log.object_ref("Instance", k[0] or None, k[1]))
                self.queue.add_after(k, delay)
            finally:
                self.metrics.reconcile_seconds.observe(time.monotonic() - t0)
                self.queue.done(k)

    # ==================================================================
    # Reconcile
    def reconcile(self, key: Key) -> None:
        with self._cache_lock:
            obj = self._cache.get(key)
        if obj is None:
            self._secret_waits.pop(key, None)
            self._cleanup_orphans(key)
            return
        md = obj["metadata"]
        uid = md["uid"]
        if md.get("deletionTimestamp"):
            self._secret_waits.pop(key, None)
            self._delete(obj)
            return
        placed = (obj.get("status") or {}).get("host")
        if placed != self.host:
            if placed and self.driver.lookup(uid) is not None:
                # Evacuated away and (being) placed here again: the domain
                # left from before is stale; the new placement rebuilds it.
                self._teardown_verified(uid, key)
                return
            log.debug("%s/%s: labelled for %s but status.host is %r; waiting",
                      *key, self.host, placed)
            return
        built = st.get_condition(obj, names.COND_BUILT)
        if condition_is(obj, names.COND_BUILT, "False", names.REASON_BUILD_FAILED):
            return  # the operator reschedules (and resets Built) -- no retry loop here
        info = self.driver.get(uid)
        first_start = not (built and built.get("status") == "True")
        if info is None:
            if not self._user_data_ready(obj):
                return
            try:
                info = self._build(obj)  # as defined: shut off, with our metadata
            except BuildError as exc:
                self._build_failed(obj, exc)
                return
            first_start = True
        self._apply_power(obj, info, first_start)

    # ------------------------------------------------------------------
    def _apply_power(self, obj: dict, info, first_start: bool) -> None:
        md = obj["metadata"]
        uid = md["uid"]
        key = _key(obj)
        strategy = ob.run_strategy(obj)
        ann = md.get("annotations") or {}
        meta = restart_fields.adopted(
            info.meta or DomainMetadata(uid=uid, namespace=key[0], name=key[1]), ob.spec(obj))
        state = info.state
        if meta.run_strategy == RunStrategy.HALTED and strategy != RunStrategy.HALTED:
            first_start = True
        power_ann = ann.get(names.ANNOTATION_POWER)
        action = st.power_action(strategy, state, first_start=first_start,
                                 power_annotation=power_ann)
        restart = ann.get(names.ANNOTATION_RESTART, "")
        new_meta = meta
        notices: list[tuple[str, str, str]] = []
        if first_start and not meta.restart_token and restart:
            new_meta = dataclasses.replace(new_meta, restart_token=restart)
        elif restart and restart != meta.restart_token and state.running and action is None:
            log.info("%s/%s: restart requested (%s)", *key, restart)
            notices.append(("Normal", names.EVENT_RESTARTED, f"domain restarted on {self.host}"))
            self.driver.destroy(uid)
            new_meta = self.prepare_start(obj, new_meta)
            self.driver.start(uid)
            self.metrics.power_actions.labels("restart").inc()
            new_meta = dataclasses.replace(new_meta, restart_token=restart)
            state = self.driver.state(uid) or state
        if action == st.START:
            self._stopping.pop(uid, None)
            log.info("%s/%s: starting the domain (runStrategy %s)", *key, strategy)
            new_meta = self.prepare_start(obj, new_meta)
            t_start = time.monotonic()
            self.driver.start(uid)
            log.info("%s/%s: domain started in %.2fs", *key, time.monotonic() - t_start)
            self.metrics.power_actions.labels("start").inc()
            state = self.driver.state(uid) or state
            notices.append(("Normal", names.EVENT_STARTED, f"domain started on {self.host}"))
            if uid in self._build_started:
                self.metrics.build_seconds.observe(time.monotonic() - self._build_started.pop(uid))
        elif action == st.STOP:
            if uid not in self._stopping:
                notices.append(("Normal", names.EVENT_STOPPING,
                               f"shutting the domain down on {self.host} (runStrategy {strategy})"))
                log.info("%s/%s: stopping the domain (runStrategy %s%s)", *key, strategy,
                         f", {names.ANNOTATION_POWER}={power_ann}" if power_ann else "")
            first = self._stopping.setdefault(uid, time.monotonic())
            if time.monotonic() - first >= self.cfg.shutdown_timeout:
                log.warning("%s/%s: no clean shutdown within %.0fs; destroying",
                            *key, self.cfg.shutdown_timeout)
                self.driver.destroy(uid)
                self.metrics.power_actions.labels("destroy").inc()
                self._stopping.pop(uid, None)
                state = self.driver.state(uid) or state
            else:
                self.driver.shutdown(uid)  # repeated: an early ACPI press can be lost
                self.metrics.power_actions.labels("stop").inc()
                self.queue.add_after(key, 2.0)
        else:
            if not state.running:
                self._stopping.pop(uid, None)
            if uid in self._build_started and not first_start:
                self._build_started.pop(uid, None)
        if strategy != meta.run_strategy:
            new_meta = dataclasses.replace(new_meta, run_strategy=str(strategy))
        if new_meta != info.meta and info.meta is not None:
            self.driver.set_metadata(uid, new_meta)
        self._report(obj, state, applied=new_meta.applied_spec)
        for etype, reason, message in notices:
            self._event(obj, etype, reason, message)

    def _report(self, obj: dict, state: DomainState | None, *, force_built: bool = False,
                applied: str = "") -> None:
        """Apply the status of Instance ``obj`` whose domain is in ``state``;
        ``applied``: the fingerprint of the spec its seed was written from
        (RestartRequired names the fields changed since)."""
        md = obj["metadata"]
        uid = md["uid"]
        phase, ready, reason, message = st.phase_and_ready(state)
        if state is not None and (self._stopping.get(uid) is not None) and state.running:
            phase, reason, message = (InstancePhase.RUNNING, names.REASON_STOPPING,
                                       "the guest is shutting down")
        wanted: dict[str, Any] = {
            "phase": phase,
            "powerState": state.power_state if state is not None else PowerState.NO_STATE,
            "console": {"logPath": str(self._paths(uid)["console"])},
            "conditions": [
                st.condition(obj, names.COND_BUILT, "True", names.REASON_BUILT,
                             f"domain {domain_name(*_key(obj))} defined on {self.host}"),
                st.condition(obj, names.COND_READY, ready, reason, message),
                restart_fields.condition(
                    obj, restart_fields.pending_fields(applied, ob.spec(obj))),
            ],
        }
        if self.cfg.network or self.cfg.bridge:
            addrs = self.driver.addresses(uid) if state is not None and state.running else []
            wanted["addresses"] = addrs
            if state is not None and state.running and not addrs:
                # The guest's DHCP lease comes seconds after it starts: look
                # again soon (for two minutes; the periodic resync after that).
                since = self._awaiting_address.setdefault(uid, time.monotonic())
                if time.monotonic() - since < 120:
                    self.queue.add_after(_key(obj), 3.0)
            else:
                self._awaiting_address.pop(uid, None)
        wanted = with_kstatus(wanted, obj)
        if force_built or st.status_changed(obj, wanted):
            self._apply_status(obj, names.INSTANCES, md["name"], "Instance", wanted,
                               namespace=md["namespace"])

    # ------------------------------------------------------------------
    def _paths(self, uid: str) -> dict[str, Path]:
        d = self.instance_dir / uid
        return {
            "dir": d,
            "disk": d / "disk.qcow2",
            "seed": d / "seed.iso",
            "console": d / "console.log",
            "info": d / "instance.json",
        }

    def _resources(self, obj: dict) -> dict:
        status = obj.get("status") or {}
        res = status.get("resources") or ob.spec(obj).get("resources")
        if res:
            return res
        ref = ob.ref_name(obj, "flavorRef")
        if not ref:
            raise BuildError(names.ERROR_INTERNAL,
                             "the instance has neither resources nor a flavor")
        flavor = self.kube.get_or_none(custom_path(names.FLAVORS, ref))
        if flavor is None:
            raise BuildError(names.ERROR_INTERNAL, f"flavor {ref} not found")
        fs = ob.spec(flavor)
        return {"vcpus": fs["vcpus"], "memoryMiB": fs["memoryMiB"], "diskGiB": fs["diskGiB"]}

    def _image(self, obj: dict) -> tuple[ImageSource, dict]:
        ref = ob.ref_name(obj, "imageRef")
        image = self.kube.get_or_none(custom_path(names.IMAGES, ref)) if ref else None
        if image is None:
            raise BuildError(names.ERROR_IMAGE_NOT_FOUND, f"Image {ref} does not exist")
        return ImageSource.from_image(image), image

    def _user_data(self, obj: dict) -> str:
        ud = (obj.get("spec") or {}).get("userData") or {}
        if ud.get("inline") is not None:
            return ud["inline"]
        ref = ud.get("secretRef")
        if not ref:
            return ""
        ns = obj["metadata"]["namespace"]
        secret = self.kube.get_or_none(f"/api/v1/namespaces/{ns}/secrets/{ref['name']}")
        if secret is None:
            raise BuildError(names.ERROR_USER_DATA, f"Secret {ns}/{ref['name']} does not exist")
        key = ref.get("key") or "userdata"
        data = (secret.get("data") or {}).get(key)
        if data is None:
            raise BuildError(names.ERROR_USER_DATA,
                             f"Secret {ns}/{ref['name']} has no key {key!r}")
        return base64.b64decode(data).decode("utf-8", errors="replace")

    def _user_data_ready(self, obj: dict) -> bool:
        """A user-data Secret that does not exist (yet), or lacks the key, is
        waited for like a pod waits for its Secret volume -- with GitOps the
        Secret may well arrive after the Instance: nothing is created on the
        host, ``Ready=False`` names the Secret and key (never a value), one
        Warning Event, and the Secret is read again with back-off (1 s
        doubling to 60 s; the agent may only ``get`` Secrets, not watch them)."""
        key = _key(obj)
        ref = ((obj.get("spec") or {}).get("userData") or {}).get("secretRef")
        if not ref:
            return True
        try:
            self._user_data(obj)
        except BuildError as exc:
            n = self._secret_waits.get(key, 0)
            self._secret_waits[key] = n + 1
            delay = min(60.0, 2.0 ** n)
            md = obj["metadata"]
            message = f"waiting for the user data: {exc.message}"
            wanted = {"conditions": [
                st.condition(obj, names.COND_BUILT, "Unknown", exc.code, message),
                st.condition(obj, names.COND_READY, "False", exc.code, message),
            ]}
            if st.status_changed(obj, wanted):
                log.warning("%s/%s: %s (retrying with back-off)", *key, message)
                self._apply_status(obj, names.INSTANCES, md["name"], "Instance", wanted,
                                   namespace=md["namespace"])
                self._event(obj, "Warning", exc.code, f"{self.host}: {message}")
            else:
                log.debug("%s/%s: still %s (retry in %.0fs)", *key, message, delay)
            self.metrics.user_data_waits.inc()
            self.queue.add_after(key, delay)
            return False
        if self._secret_waits.pop(key, None) is not None:
            log.info("%s/%s: its user-data Secret is there now; building", *key)
        return True

    def _build(self, obj: dict) -> DomainInfo:
        """Create everything for a new domain, define it (it is started by
        the power logic).  Raises BuildError; partial work is removed."""
        md = obj["metadata"]
        uid = md["uid"]
        key = _key(obj)
        t0 = time.monotonic()
        self._build_started[uid] = t0
        steps: list[tuple[str, float]] = []

        def step(name: str) -> None:
            steps.append((name, time.monotonic()))

        obj = self._ensure_finalizer(obj)
        step("finalizer")
        log.info("%s/%s: building (uid %s)", *key, uid)
        self._apply_status(obj, names.INSTANCES, md["name"], "Instance", {
            "phase": InstancePhase.BUILDING,
            "powerState": PowerState.NO_STATE,
            "conditions": [
                st.condition(obj, names.COND_BUILT, "Unknown", names.REASON_BUILDING,
                             f"building on {self.host}"),
                st.condition(obj, names.COND_READY, "False", names.REASON_BUILDING,
                             "the domain is being built"),
            ],
        }, namespace=md["namespace"])
        step("status")
        paths = self._paths(uid)
        created_dir = not paths["dir"].exists()
        try:
            # A domain of an earlier Instance with the same name is an orphan.
            name = domain_name(*key)
            old = self.driver.lookup_name(name)
            if old is not None and old.UUIDString() != uid:
                old_info = self.driver.info(old)
                if not self._mine(old_info):
                    raise BuildError(names.ERROR_LIBVIRT,
                                     f"a domain named {name} that this agent did not "
                                     f"create exists (uuid {old_info.uuid})")
                self._teardown_verified(old_info.uuid, key)
            res = self._resources(obj)
            source, _image = self._image(obj)
            paths["dir"].mkdir(parents=True, exist_ok=True)
            paths["info"].write_text(json.dumps(
                {"uid": uid, "namespace": key[0], "name": key[1], "host": self.host}))
            step("lookups")
            cached = self.images.fetch(source)
            step("image")
            self._count_image(cached)
            if not paths["disk"].exists():
                create_overlay(cached, paths["disk"], int(res["diskGiB"]) * GiB)
            step("overlay")
            mac = mac_for(uid)
            self._write_seed(obj, uid)
            dspec = DomainSpec(
                meta=DomainMetadata(
                    uid=uid, namespace=key[0], name=key[1], host=self.host,
                    image=source.name, generation=int(md.get("generation") or 0),
                    created=now_rfc3339(),
                    restart_token=(md.get("annotations") or {}).get(names.ANNOTATION_RESTART, ""),
                    run_strategy="",
                    applied_spec=restart_fields.fingerprint(obj.get("spec") or {}),
                ),
                vcpus=int(res["vcpus"]),
                memory_mib=int(res["memoryMiB"]),
                disk_path=str(paths["disk"]),
                console_log=str(paths["console"]),
                seed_path=str(paths["seed"]),
                domain_type=self.cfg.domain_type,  # type: ignore[arg-type]
                machine=self.cfg.machine,
                cpu_mode=self.cfg.cpu_mode,  # type: ignore[arg-type]
                disk_cache=self.disk_cache,
                network=self.cfg.network,
                bridge=self.cfg.bridge,
                mac=mac,
                vcpu_scheduler=self.cfg.guest_vcpu_scheduler,  # type: ignore[arg-type]
                vnc=self.cfg.vnc,
            )
            step("seed")
            defined = self.driver.define(build_domain_xml(dspec))
            step("define")
            prev, parts = t0, []
            for name, t in steps:
                parts.append(f"{name} {t - prev:.3f}")
                prev = t
            log.info("%s/%s: domain defined in %.2fs (%s)", *key, time.monotonic() - t0,
                     ", ".join(parts))
            self.metrics.builds.labels("ok").inc()
            return defined
        except BuildError:
            self._undo_build(uid, created_dir)
            raise
        except ImageError as exc:
            self._undo_build(uid, created_dir)
            raise BuildError(exc.code, exc.message) from exc
        except (DriverError, DomainSpecError) as exc:
            self._undo_build(uid, created_dir)
            raise BuildError(names.ERROR_LIBVIRT, str(exc)) from exc
        except KubeError:
            raise  # the API server hiccupped: retry the reconcile, not a build failure
        except OSError as exc:
            self._undo_build(uid, created_dir)
            raise BuildError(names.ERROR_INTERNAL, str(exc)) from exc

    def _write_seed(self, obj: dict, instance_id: str) -> None:
        """The NoCloud seed of the Instance's current spec (user data, SSH
        keys, host name; a network-config when guests get a NIC)."""
        from kova.agents.seed import write_nocloud_seed

        md, spec = obj["metadata"], obj.get("spec") or {}
        write_nocloud_seed(
            self._paths(md["uid"])["seed"],
            st.meta_data(instance_id, spec.get("hostname") or md["name"], spec.get("sshKeys")),
            self._user_data(obj),
            st.network_config(mac_for(md["uid"])) if (self.cfg.network or self.cfg.bridge)
            else None,
        )

    def prepare_start(self, obj: dict, meta: DomainMetadata) -> DomainMetadata:
        """Before a domain starts: when user data, SSH keys or host name
        changed since its seed was written, a new seed (with a new
        instance-id) first.  Returns the metadata to record."""
        spec = obj.get("spec") or {}
        if not restart_fields.pending_fields(meta.applied_spec, spec):
            return meta
        applied = restart_fields.fingerprint(spec)
        with self._seed_lock:  # a power action and a reconcile may both start it
            self._write_seed(obj, restart_fields.instance_id(meta.uid, applied, first=False))
        log.info("%s/%s: new seed for the changed %s", *_key(obj),
                 ", ".join(restart_fields.pending_fields(meta.applied_spec, spec)))
        return dataclasses.replace(meta, applied_spec=applied)

    def _count_image(self, cached) -> None:
        if cached.hit:
            self.metrics.image_cache_hits.inc()
        else:
            self.metrics.image_cache_misses.inc()
            self.metrics.image_bytes.inc(cached.size)

    def _undo_build(self, uid: str, remove_dir: bool = True) -> None:
        try:
            self.driver.undefine(uid)
        except DriverError as exc:
            log.warning("undefining %s after a failed build: %s", uid, exc)
        _rmtree(self._paths(uid)["dir"])
        self._build_started.pop(uid, None)

    def _build_failed(self, obj: dict, exc: BuildError) -> None:
        md = obj["metadata"]
        key = _key(obj)
        log.warning("%s/%s: build failed: %s: %s", *key, exc.code, exc.message)
        self.metrics.builds.labels("failed").inc()
        self.metrics.build_failures.labels(exc.code).inc()
        # Nothing is left on this host: drop the finalizer (first, so that a
        # reader who sees the condition also sees the finalizer gone) -- then
        # deleting the Instance does not wait for this agent.
        self._remove_finalizer(obj)
        self._apply_status(obj, names.INSTANCES, md["name"], "Instance", {
            "powerState": PowerState.NO_STATE,
            "conditions": [
                st.condition(obj, names.COND_BUILT, "False", names.REASON_BUILD_FAILED,
                             f"{exc.code}: {exc.message}"),
                st.condition(obj, names.COND_READY, "False", exc.code, exc.message),
            ],
        }, namespace=md["namespace"])
        self._event(obj, "Warning", names.REASON_BUILD_FAILED,
                    f"{self.host}: {exc.code}: {exc.message}")

    # ------------------------------------------------------------------
    def _delete(self, obj: dict) -> None:
        md = obj["metadata"]
        uid = md["uid"]
        if names.FINALIZER_AGENT not in (md.get("finalizers") or []):
            return
        log.info("%s/%s: deleting the domain and its disks", *_key(obj))
        self._teardown(uid)
        self._remove_finalizer(obj)
        self._event(obj, "Normal", names.EVENT_DELETED,
                    f"domain, disks and seed removed from {self.host}")

    def _teardown(self, uid: str) -> None:
        self._stopping.pop(uid, None)
        if self.driver.lookup(uid) is not None:
            self.driver.destroy(uid)
            self.metrics.power_actions.labels("destroy").inc()
            self.driver.undefine(uid)
        _rmtree(self._paths(uid)["dir"])
        with self._cache_lock:
            self._uid_index.pop(uid, None)

    def _live_instance(self, namespace: str, name: str) -> dict | None:
        """The Instance as the API server has it now (not the cache); None if
        it is gone."""
        return self.kube.get_or_none(instance_path(namespace, name))

    def _placed_here(self, obj: dict | None, uid: str) -> bool:
        """Whether ``obj`` is Instance uid, still placed on this host."""
        if obj is None:
            return False
        md = obj.get("metadata") or {}
        placed = (obj.get("status") or {}).get("host")
        # status.host unset with our label: the operator is recording a first
        # placement here.  Set to another host: moved (evacuated) away.
        return (
            md.get("uid") == uid
            and (md.get("labels") or {}).get(names.LABEL_HOST) == self.host
            and placed in (None, self.host)
        )

    def _still_ours(self, namespace: str, name: str, uid: str) -> bool:
        """Ask the API server (not the cache) whether Instance uid is still
        placed on this host."""
        return self._placed_here(self._live_instance(namespace, name), uid)

    def _teardown_verified(self, uid: str, key: Key) -> None:
        obj = self._live_instance(*key)
        if self._placed_here(obj, uid):
            return
        info = self.driver.get(uid)
        running = info is not None and info.state.running
        log.warning("removing stale domain %s of %s/%s (%s): its Instance is gone or placed "
                    "on another host", uid, *key, "was running" if running else "not running")
        self._teardown(uid)
        self.metrics.stale_domains.inc()
        if obj is not None and obj["metadata"].get("uid") == uid:
            self._event(obj, "Normal", names.EVENT_STALE_DOMAIN_REMOVED,
                        f"{self.host}: removed the stale copy of the domain (the Instance is "
                        f"now on {(obj.get('status') or {}).get('host')})")

    def _cleanup_orphans(self, key: Key) -> None:
        """The Instance is gone or no longer on this host: remove its domains."""
        if not self._synced.is_set():
            return
        for d in self.driver.list_domains():
            if self._mine(d) and (d.meta.namespace, d.meta.name) == key:
                self._teardown_verified(d.uuid, key)

    def _mine(self, info) -> bool:
        """A domain this agent created: Kova metadata naming this host.  A
        domain another agent (another host name, e.g. a second development
        stack on the same libvirtd) defined is never touched."""
        return info.meta is not None and info.meta.host == self.host

    # ==================================================================
    # API writes
    def _apply_status(self, obj: dict | None, plural: str, name: str, kind: str,
                      status: dict, namespace: str | None = None) -> None:
        """Server-side apply the agent's ``status`` fields (its own field
        manager, so the operator's fields are left alone).  Every apply of
        Instance conditions carries the kstatus conditions (kova.kstatus):
        server-side apply removes what this manager applied before and
        leaves out now."""
        if plural == names.INSTANCES and obj is not None:
            status = with_kstatus(status, obj)
        body = {
            "apiVersion": names.API_VERSION,
            "kind": kind,
            "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
            "status": status,
        }
        path = custom_path(plural, name, namespace=namespace, subresource="status")
        try:
            new = self.kube.apply(path, body, field_manager=names.FIELD_MANAGER_AGENT)
        except KubeError as exc:
            if exc.status == 404:
                return
            raise
        if obj is not None and namespace:
            with self._cache_lock:
                k = (namespace, name)
                cur = self._cache.get(k)
                if cur is not None and _rv(new) > _rv(cur):
                    self._cache[k] = new

    def _ensure_finalizer(self, obj: dict) -> dict:
        path = instance_path(*_key(obj))
        return self.kube.run(finalizers.add(self.kube.aio, path, obj, names.FINALIZER_AGENT))

    def _remove_finalizer(self, obj: dict) -> None:
        path = instance_path(*_key(obj))
        self.kube.run(finalizers.remove(self.kube.aio, path, obj, names.FINALIZER_AGENT))

    def _event(self, obj: dict, etype: str, reason: str, message: str) -> None:
        """An Event about Instance ``obj`` (best effort)."""
        self.kube.run(events.post(self.kube.aio, obj, etype, reason, message,
                                  component=names.COMPONENT_AGENT, host=self.host))


def _rv(obj: dict) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def st_power_states() -> tuple[PowerState, ...]:
    """The power states the domains gauge reports (all but Unknown)."""
    return tuple(s for s in PowerState if s != PowerState.UNKNOWN)
