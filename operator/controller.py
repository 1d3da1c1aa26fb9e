"""The operator process: kopf watches and indexes, a keyed work queue, and the
reconcilers for Instances (scheduler + conductor + deletion) and Hosts (host
monitor + provider state).

kopf delivers watch events and keeps indexes of every kind (the indexes are
complete before any handler runs, so a restarted operator sees every
server-group member before it places one more).  Handlers only enqueue keys;
``workers`` coroutines reconcile them level-triggered from the indexed
objects, so a repeated or stale event is harmless.  Placement is the record of
claims: the claim is keyed by the Instance uid, so a restart never claims
twice and never loses a claim (a 409 on a first claim with an allocation
present means "already ours": it is adopted).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Hashable
from typing import Any

import kopf

from kova import events, finalizers
from kova import log as kova_log
from kova.conditions import get_condition, set_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import ServerGroupPolicy
from kova.kstatus import with_kstatus
from kova.kube import Credentials, Kube, KubeError, host_path, instance_path, lease_path
from kova.operator import metrics
from kova.operator.scheduler.batch import BatchScheduler, batchable
from kova.operator.scheduler.filters import HostInfo
from kova.operator.scheduler.request import InvalidRequest, MissingDependency, build_request
from kova.operator.scheduler.scheduler import Decision, NoValidHost, Scheduler
from kova.operator.scheduler.weighers import BuildFailures, WeighContext
from kova.operator.settings import Settings
from kova.operator.status import (
    attempts_history,
    describe_attempts,
    is_build_failed,
    placement_action,
)
from kova.placement_client import PlacementClient, PlacementError, RetryPolicy
from kova.workqueue import AsyncWorkQueue

LOG = logging.getLogger("kova.operator")

G, V = names.GROUP, names.VERSION


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def lease_fresh(lease: dict | None, now: float, grace: float = 0.0) -> bool:
    if not lease:
        return False
    spec = lease.get("spec") or {}
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 40
    return renewed is not None and now <= renewed + float(duration) + grace


def host_info(body: dict, alive: bool, fenced: bool = False) -> HostInfo:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return HostInfo(
        name=body["metadata"]["name"],
        rp_uuid=status.get("resourceProviderUUID"),
        enabled=spec.get("enabled", True),
        maintenance=bool((spec.get("maintenance") or {}).get("enabled")),
        zone=spec.get("availabilityZone"),
        alive=alive,
        fenced=fenced,
    )


def node_out_of_service(node: dict) -> bool:
    """The Node carries the out-of-service taint (any effect)."""
    return any(t.get("key") == names.TAINT_OUT_OF_SERVICE
               for t in ((node.get("spec") or {}).get("taints") or []))


def _log_ref(key: tuple) -> dict:
    """Log ``extra`` naming a work-queue key's object."""
    kind = {"inst": "Instance", "sg": "ServerGroup", "host": "Host"}.get(key[0], key[0])
    return kova_log.object_ref(kind, key[1] if len(key) > 2 else None, key[-1])


def _first(index: Any, key: Hashable) -> Any:
    if index is None:
        return None
    try:
        store = index[key]
    except KeyError:
        return None
    for value in store:
        return value
    return None


class NoDiffBase(kopf.DiffBaseStorage):
    """The operator has only event and index handlers, no on.create/update
    ones, so nothing ever reads the diff base that kopf otherwise builds for
    every watch event (a deep copy of the whole object)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


class Controller:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.creds = Credentials.load(settings.kubeconfig)
        self.kube: Kube | None = None
        self.placement: PlacementClient | None = None
        self.queue: AsyncWorkQueue | None = None
        self.indexes: dict[str, Any] = {}
        self.leases: dict[str, dict] = {}
        self.alive: dict[str, bool] = {}
        #: The last Lease poll failed (API server unreachable); and when the
        #: polls came back: a Lease is not counted expired for the time the
        #: monitor could not see it being renewed.
        self._lease_poll_failed = False
        self._leases_resumed_at: float | None = None
        #: Node name -> tainted node.kubernetes.io/out-of-service.
        self.node_oos: dict[str, bool] = {}
        self.host_signatures: dict[str, tuple] = {}
        self._host_infos: dict[str, tuple] = {}
        #: Bumped whenever a Host's scheduling view changes (see host_by_rp).
        self.hosts_version = 0
        self._rp_map: dict[str, HostInfo] = {}
        self._rp_map_version = -1
        self.synced_providers: dict[str, tuple] = {}
        #: uid -> host of the claims this process recorded in status.
        self.own_hosts: dict[str, str] = {}
        #: Claims found in Placement for Instances that do not record them yet.
        self.unrecorded: dict[str, str] = {}
        #: Server-group members known to hold no claim (see discover_member_claims).
        self.no_claim: set[str] = set()
        #: Keys of Instances waiting for a host or a missing object.
        self.pending: set[Hashable] = set()
        self.retries: Counter = Counter()
        self.sg_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.failures = BuildFailures(window=settings.build_failure_window)
        self.scheduler: Scheduler | None = None
        self.batcher: BatchScheduler | None = None
        self._event_tokens = 0.0
        self._event_tokens_at: float | None = None
        self.identity = f"kova-operator@{socket.gethostname()}/{os.getpid()}"
        self.priority = (settings.priority if settings.priority is not None
                         else random.randint(1, 1_000_000))
        self.leader = not settings.peering
        #: uids this process put in phase Error (stale copies are ignored).
        self.errored: set[str] = set()
        #: uid -> the failed-image annotation this process retried after.
        self.retried: dict[str, str] = {}
        self._tasks: list[asyncio.Task] = []
        self._events: asyncio.Queue | None = None

    # ============================================================ lookups
    def host_body(self, name: str) -> dict | None:
        return _first(self.indexes.get("kova_hosts"), name)

    def host_by_name(self, name: str) -> HostInfo | None:
        body = self.host_body(name)
        if body is None:
            return None
        alive = self.alive.get(name)
        if alive is None:
            alive = lease_fresh(self.leases.get(name), time.time(),
                                self.settings.heartbeat_grace)
        fenced = self.fence_reason(name, body) is not None
        cached = self._host_infos.get(name)
        if (cached is not None and cached[0] is body and cached[1] == alive
                and cached[2] == fenced):
            return cached[3]
        info = host_info(body, alive, fenced)
        self._host_infos[name] = (body, alive, fenced, info)
        return info

    def fence_reason(self, name: str, body: dict | None = None) -> str | None:
        """Why host ``name`` is fenced (a condition reason), or None."""
        body = body if body is not None else self.host_body(name)
        if body is not None and (body.get("spec") or {}).get("fenced"):
            return names.HOST_REASON_FENCED_SPEC
        if self.node_oos.get(name):
            return names.HOST_REASON_FENCED_NODE
        return None

    def host_is_down(self, name: str) -> bool:
        """The host's Lease expired (the host monitor's Down, not merely
        'no Lease yet')."""
        return self.alive.get(name) is False and name in self.leases

    def enqueue_host_instances(self, host: str) -> None:
        """Queue every Instance recorded on ``host`` (its state changed)."""
        idx = self.indexes.get("kova_instances")
        for key in list(idx.keys()) if idx is not None else []:
            body = _first(idx, key)
            if body and (body.get("status") or {}).get("host") == host:
                self.enqueue(("inst", key[0], key[1]))

    def host_by_rp(self, rp: str) -> HostInfo | None:
        """Provider uuid -> HostInfo, from a map rebuilt only when a Host's
        scheduling-relevant fields or heartbeat state changed."""
        if self._rp_map_version != self.hosts_version:
            version = self.hosts_version
            idx = self.indexes.get("kova_hosts")
            rp_map = {}
            for name in list(idx.keys()) if idx is not None else []:
                info = self.host_by_name(name)
                if info is not None and info.rp_uuid:
                    rp_map[info.rp_uuid] = info
            self._rp_map, self._rp_map_version = rp_map, version
        return self._rp_map.get(rp)

    def instance_body(self, ns: str, name: str) -> dict | None:
        return _first(self.indexes.get("kova_instances"), (ns, name))

    def host_of(self, inst: dict) -> str | None:
        uid = inst["metadata"].get("uid")
        return (inst.get("status") or {}).get("host") or self.own_hosts.get(uid)

    def member_hosts(self, ns: str, sg: str, uid: str) -> Counter:
        """Hosts of the other members of a server group, as far as the
        Instances (status.host, the host label) and our own claims tell."""
        out: Counter = Counter()
        idx = self.indexes.get("kova_sg_members")
        if idx is not None and (ns, sg) in idx:
            for m_uid, host in idx[(ns, sg)]:
                host = host or self.own_hosts.get(m_uid) or self.unrecorded.get(m_uid)
                if m_uid != uid and host:
                    out[host] += 1
        return out

    async def discover_member_claims(self, ns: str, sg: str, uid: str) -> None:
        """Members without a host may hold a claim made just before a restart
        (claimed, not yet recorded): ask Placement once per member.  Only the
        active replica claims, under the group's lock, so "no allocation" stays
        true until this process claims it."""
        idx = self.indexes.get("kova_sg_members")
        if idx is None or (ns, sg) not in idx:
            return
        for m_uid, host in list(idx[(ns, sg)]):
            if (m_uid == uid or host or m_uid in self.own_hosts or m_uid in self.unrecorded
                    or m_uid in self.no_claim):
                continue
            allocs = (await self.placement.consumer_allocations(m_uid)).get("allocations")
            if allocs:
                h = self.host_by_rp(next(iter(allocs)))
                self.unrecorded[m_uid] = h.name if h else next(iter(allocs))
            else:
                self.no_claim.add(m_uid)

    def instance_hosts(self, ns: str) -> dict[str, str | None]:
        idx = self.indexes.get("kova_instances")
        out = {}
        if idx is None:
            return out
        for key in list(idx.keys()):
            if key[0] == ns:
                body = _first(idx, key)
                if body:
                    out[key[1]] = self.host_of(body)
        return out

    # ============================================================ kopf
    def registry(self) -> kopf.OperatorRegistry:
        reg = kopf.OperatorRegistry()
        ctl = self

        @kopf.on.login(registry=reg)
        def login(**_: Any) -> kopf.ConnectionInfo:
            # At start-up and after kopf saw a 401: the token as it is now
            # (a rotated token file, a re-run exec plugin).
            c = ctl.creds
            c.refresh()
            token = c.bearer()
            return kopf.ConnectionInfo(
                server=c.server, ca_path=c.ca_file, insecure=c.insecure,
                scheme="Bearer" if token else None, token=token,
                certificate_path=c.cert_file, private_key_path=c.key_file,
            )

        @kopf.on.startup(registry=reg)
        def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.posting.level = logging.WARNING
            settings.watching.server_timeout = 300
            settings.watching.client_timeout = 330
            settings.networking.request_timeout = 60
            settings.persistence.diffbase_storage = NoDiffBase()

        # Index handlers are coroutines: kopf runs plain functions in a thread
        # pool, a thread hand-off per watch event for a dict copy.
        @kopf.index(G, V, "instances", id="kova_instances", registry=reg)
        async def kova_instances(body: Any, name: str, namespace: str, **_: Any) -> dict:
            return {(namespace, name): dict(body)}

        @kopf.index(G, V, "instances", id="kova_sg_members", registry=reg)
        async def kova_sg_members(body: Any, spec: Any, status: Any, **_: Any) -> dict | None:
            sg = (spec.get("serverGroupRef") or {}).get("name")
            if not sg:
                return None
            host = status.get("host") or (body["metadata"].get("labels") or {}).get(
                names.LABEL_HOST)
            return {(body["metadata"]["namespace"], sg): (body["metadata"]["uid"], host)}

        @kopf.index(G, V, "hosts", id="kova_hosts", registry=reg)
        async def kova_hosts(body: Any, name: str, **_: Any) -> dict:
            return {name: dict(body)}

        @kopf.index(G, V, "hosts", id="kova_host_rps", registry=reg)
        async def kova_host_rps(name: str, status: Any, **_: Any) -> dict | None:
            rp = status.get("resourceProviderUUID")
            return {rp: name} if rp else None

        @kopf.index(G, V, "flavors", id="kova_flavors", registry=reg)
        async def kova_flavors(name: str, spec: Any, **_: Any) -> dict:
            return {name: dict(spec)}

        @kopf.index(G, V, "images", id="kova_images", registry=reg)
        async def kova_images(name: str, spec: Any, **_: Any) -> dict:
            return {name: dict(spec)}

        @kopf.index(G, V, "images", id="kova_image_ids", registry=reg)
        async def kova_image_ids(name: str, meta: Any, **_: Any) -> dict:
            return {name: f"{meta.get('uid')}/{meta.get('generation')}"}

        @kopf.index(G, V, "servergroups", id="kova_servergroups", registry=reg)
        async def kova_servergroups(name: str, namespace: str, spec: Any, **_: Any) -> dict:
            return {(namespace, name): dict(spec)}

        def capture(kwargs: dict) -> None:
            if not ctl.indexes:
                for key in ("kova_instances", "kova_sg_members", "kova_hosts", "kova_host_rps",
                            "kova_flavors", "kova_images", "kova_image_ids",
                            "kova_servergroups"):
                    ctl.indexes[key] = kwargs.get(key)

        @kopf.on.event(G, V, "instances", registry=reg)
        async def instance_event(event: dict, name: str, namespace: str, **kwargs: Any) -> None:
            capture(kwargs)
            obj = event.get("object") or {}
            sg = ((obj.get("spec") or {}).get("serverGroupRef") or {}).get("name")
            if sg:
                ctl.enqueue(("sg", namespace, sg))
            if event.get("type") == "DELETED":
                uid = obj.get("metadata", {}).get("uid")
                ctl.own_hosts.pop(uid, None)
                ctl.errored.discard(uid)
                ctl.retried.pop(uid, None)
                ctl.unrecorded.pop(uid, None)
                ctl.no_claim.discard(uid)
                ctl.pending.discard(("inst", namespace, name))
                ctl.retries.pop(("inst", namespace, name), None)
                return
            ctl.enqueue(("inst", namespace, name))

        @kopf.on.event(G, V, "hosts", registry=reg)
        async def host_event(event: dict, name: str, **kwargs: Any) -> None:
            capture(kwargs)
            if event.get("type") == "DELETED":
                ctl.host_signatures.pop(name, None)
                ctl.synced_providers.pop(name, None)
                ctl.hosts_version += 1
                return
            body = event.get("object") or {}
            spec, status = body.get("spec") or {}, body.get("status") or {}
            # Capacity settings too: the agent re-applies the inventory, and a
            # pending Instance may fit now.
            sig = (spec.get("enabled", True), json.dumps(spec.get("maintenance"), sort_keys=True),
                   spec.get("availabilityZone"), status.get("resourceProviderUUID"),
                   json.dumps(spec.get("allocationRatios"), sort_keys=True),
                   json.dumps(spec.get("reserved"), sort_keys=True),
                   bool(spec.get("fenced")))
            old = ctl.host_signatures.get(name)
            if old != sig:
                ctl.host_signatures[name] = sig
                ctl.hosts_version += 1
                ctl.enqueue(("host", name))
                ctl.retrigger_pending()
                if (old[-1] if old is not None else False) != sig[-1]:
                    ctl.enqueue_host_instances(name)  # fenced or unfenced

        if ctl.settings.node_fencing:
            @kopf.on.event("", "v1", "nodes", registry=reg)
            async def node_event(event: dict, name: str, **kwargs: Any) -> None:
                capture(kwargs)
                oos = (event.get("type") != "DELETED"
                       and node_out_of_service(event.get("object") or {}))
                if ctl.node_oos.get(name, False) == oos:
                    ctl.node_oos[name] = oos
                    return
                ctl.node_oos[name] = oos
                LOG.info("node %s: %s taint %s", name, names.TAINT_OUT_OF_SERVICE,
                         "added" if oos else "removed")
                ctl.hosts_version += 1
                ctl.enqueue(("host", name))
                ctl.enqueue_host_instances(name)
                ctl.retrigger_pending()

        async def dependency_event(event: dict, **kwargs: Any) -> None:
            capture(kwargs)
            if event.get("type") != "DELETED":
                ctl.retrigger_pending()

        @kopf.on.event(G, V, "images", registry=reg)
        async def image_event(event: dict, name: str, **kwargs: Any) -> None:
            capture(kwargs)
            if event.get("type") != "DELETED":
                ctl.retrigger_pending()
                ctl.requeue_image_failures(name)

        for plural in ("flavors", "servergroups"):
            kopf.on.event(G, V, plural, registry=reg)(dependency_event)
        return reg

    # ============================================================ queue
    def enqueue(self, key: Hashable) -> None:
        if self.queue is not None:
            self.queue.add(key)
            metrics.QUEUE_DEPTH.set(len(self.queue))

    def retrigger_pending(self) -> None:
        for key in list(self.pending):
            self.retries.pop(key, None)
            self.enqueue(key)

    def requeue_image_failures(self, image: str) -> None:
        """Instances in Error because of ``image``: look at them again (the
        Image was re-created or changed; see retry_image_failure)."""
        idx = self.indexes.get("kova_instances")
        for key in list(idx.keys()) if idx is not None else []:
            body = _first(idx, key)
            if (body and ((body.get("spec") or {}).get("imageRef") or {}).get("name") == image
                    and names.ANNOTATION_FAILED_IMAGE
                    in (body["metadata"].get("annotations") or {})):
                self.enqueue(("inst", *key))

    def image_identity(self, name: str | None) -> str:
        return (_first(self.indexes.get("kova_image_ids"), name) if name else None) or "missing"

    def backoff(self, key: Hashable) -> float:
        n = self.retries[key]
        self.retries[key] += 1
        delay = min(self.settings.backoff_max, self.settings.backoff_base * (2 ** n))
        return delay * (0.8 + 0.4 * random.random())

    async def worker(self) -> None:
        assert self.queue is not None
        while True:
            key = await self.queue.get()
            metrics.QUEUE_DEPTH.set(len(self.queue))
            try:
                if not self.leader:
                    continue
                if key[0] == "inst":
                    await self.reconcile_instance(key)
                elif key[0] == "sg":
                    await self.reconcile_server_group(key[1], key[2])
                elif key[0] == "host":
                    await self.reconcile_host(key[1])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retry with back-off
                metrics.ERRORS.labels(kind=key[0]).inc()
                delay = self.backoff(key)
                LOG.warning("reconcile %s failed (%s: %s); retrying in %.1fs",
                            "/".join(key[1:]), type(exc).__name__, exc, delay,
                            extra=_log_ref(key))
                self.queue.add_after(key, delay)
            finally:
                self.queue.done(key)

    # ============================================================ instances
    async def reconcile_instance(self, key: tuple) -> None:
        _, ns, name = key
        body = self.instance_body(ns, name)
        if body is None:
            self.pending.discard(key)
            return
        meta, status = body["metadata"], body.get("status") or {}
        if meta.get("deletionTimestamp"):
            self.pending.discard(key)
            await self.finalize(key, body)
            return
        if status.get("phase") == names.InstancePhase.ERROR:
            self.pending.discard(key)
            failed = (meta.get("annotations") or {}).get(names.ANNOTATION_FAILED_IMAGE)
            if failed is not None and self.retried.get(meta["uid"]) != failed:
                image = ((body.get("spec") or {}).get("imageRef") or {}).get("name")
                now = self.image_identity(image)
                if now not in ("missing", failed):
                    await self.retry_image_failure(key, body, image, failed, now)
            return
        uid = meta["uid"]
        if uid in self.errored:
            return
        if status.get("host"):
            own = self.own_hosts.get(uid)
            if own is not None and own != status["host"]:
                return  # a stale copy from before our last move
            self.pending.discard(key)
            if await self.host_failure(key, body):
                return
            self.retries.pop(key, None)
            if is_build_failed(body):
                await self.handle_build_failure(key, body)
                return
            labels = meta.get("labels") or {}
            if labels.get(names.LABEL_HOST) != status["host"]:
                await self.kube.merge_patch(instance_path(ns, name), {
                    "metadata": {"labels": {names.LABEL_HOST: status["host"]}}})
            if names.FINALIZER_OPERATOR not in (meta.get("finalizers") or []):
                await self.ensure_finalizer(body)
            return
        if uid in self.own_hosts:
            return  # a stale copy: our Scheduled status is on its way
        await self.schedule_new(key, body)

    def build(self, body: dict) -> tuple:
        ns = body["metadata"]["namespace"]
        spec = body.get("spec") or {}
        flavor_name = (spec.get("flavorRef") or {}).get("name")
        image_name = (spec.get("imageRef") or {}).get("name")
        sg_name = (spec.get("serverGroupRef") or {}).get("name")
        flavor = _first(self.indexes.get("kova_flavors"), flavor_name) if flavor_name else None
        image = _first(self.indexes.get("kova_images"), image_name) if image_name else None
        sg = _first(self.indexes.get("kova_servergroups"), (ns, sg_name)) if sg_name else None
        hints = spec.get("schedulingHints") or {}
        inst_hosts = self.instance_hosts(ns) if (hints.get("sameHost") or
                                                 hints.get("differentHost")) else {}
        members = self.member_hosts(ns, sg_name, body["metadata"]["uid"]) if sg_name else None
        host_rp = {}
        if hints.get("requestedHost"):
            h = self.host_by_name(hints["requestedHost"])
            if h and h.rp_uuid:
                host_rp[h.name] = h.rp_uuid
        return build_request(body, flavor=flavor, image=image, server_group=sg,
                             member_hosts=members, instance_hosts=inst_hosts, host_rp=host_rp,
                             use_image_traits=self.settings.image_traits)

    def sg_lock(self, body: dict) -> asyncio.Lock | None:
        sg = ((body.get("spec") or {}).get("serverGroupRef") or {}).get("name")
        if not sg:
            return None
        return self.sg_locks.setdefault((body["metadata"]["namespace"], sg), asyncio.Lock())

    async def schedule_new(self, key: tuple, body: dict) -> None:
        t0 = time.monotonic()
        try:
            self.build(body)  # validate before touching anything
        except MissingDependency as exc:
            metrics.OUTCOMES.labels(reason=exc.reason).inc()
            self.pending.add(key)
            await self.set_waiting(body, exc.reason, exc.message)
            delay = self.backoff(key)
            LOG.info("%s/%s uid=%s waits: %s (retry in %.1fs, or when it appears)",
                     key[1], key[2], body["metadata"]["uid"], exc.message, delay)
            self.queue.add_after(key, delay)
            return
        except InvalidRequest as exc:
            await self.set_error(body, exc.reason, exc.message)
            return
        lock = self.sg_lock(body)
        try:
            if lock is not None:
                async with lock:
                    sg = body["spec"]["serverGroupRef"]["name"]
                    await self.discover_member_claims(key[1], sg, body["metadata"]["uid"])
                    req, size = self.build(body)
                    decision = await self.scheduler.schedule(req)
                    self.own_hosts[req.uid] = decision.host
                    self.no_claim.discard(req.uid)
            else:
                req, size = self.build(body)
                if self.batcher is not None and batchable(req):
                    decision = await self.batcher.schedule(req)
                else:
                    decision = await self.scheduler.schedule(req)
                self.own_hosts[req.uid] = decision.host
        except NoValidHost as exc:
            metrics.OUTCOMES.labels(reason=names.REASON_NO_VALID_HOST).inc()
            self.pending.add(key)
            await self.set_waiting(body, names.REASON_NO_VALID_HOST, exc.message)
            delay = self.backoff(key)
            LOG.info("no valid host for %s/%s uid=%s: %s (retry in %.1fs)",
                     key[1], key[2], body["metadata"]["uid"], exc.message, delay)
            self.queue.add_after(key, delay)
            return
        metrics.SCHEDULE_DURATION.observe(time.monotonic() - t0)
        metrics.CLAIM_TRIES.observe(decision.tries)
        self.pending.discard(key)
        self.retries.pop(key, None)
        try:
            placed = await self.record_placement(body, decision.host, decision.alternates,
                                                 size, attempts=1,
                                                 reason=names.REASON_SCHEDULED,
                                                 message=self._message(decision))
        except Exception:
            self.own_hosts.pop(req.uid, None)  # let the retry adopt the claim
            raise
        if placed is None:
            return
        metrics.OUTCOMES.labels(reason=names.REASON_SCHEDULED).inc()
        metrics.BUILD_ATTEMPTS.inc()
        created = parse_time(body["metadata"].get("creationTimestamp"))
        if created:
            metrics.SCHEDULE_LATENCY.observe(max(0.0, time.time() - created))
        LOG.info("scheduled %s/%s uid=%s on %s (tries=%d adopted=%s alternates=%s)",
                 key[1], key[2], req.uid, decision.host, decision.tries, decision.adopted,
                 ",".join(decision.alternates), extra=kova_log.about(body))
        self.emit(body, "Normal", names.REASON_SCHEDULED, self._message(decision))

    @staticmethod
    def _message(decision) -> str:
        msg = f"Scheduled to host {decision.host}"
        if decision.alternates:
            msg += f" (alternates: {', '.join(decision.alternates)})"
        if decision.adopted:
            msg += " (claim found in Placement)"
        return msg

    async def record_placement(self, body: dict, host: str, alternates: list[str],
                               size: dict, *, attempts: int, reason: str, message: str,
                               reset_built: str | None = None) -> dict:
        """Metadata first -- our finalizer and the label that makes the agent
        see the Instance (it acts once status.host names it) -- then status.

        Returns None when the Instance went away (or is being deleted, which
        forbids new finalizers) after the claim: the claim is released.  Also
        None when this very placement is already recorded -- by another
        scheduler that claimed first and whose claim this one adopted, or by
        this process before a restart: nothing is written or announced twice."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        current = body
        for _ in range(5):
            fins = list(current["metadata"].get("finalizers") or [])
            patch: dict = {"metadata": {"labels": {names.LABEL_HOST: host},
                                        "resourceVersion": current["metadata"]["resourceVersion"]}}
            if names.FINALIZER_OPERATOR not in fins:
                patch["metadata"]["finalizers"] = fins + [names.FINALIZER_OPERATOR]
            try:
                body = await self.kube.merge_patch(instance_path(ns, name), patch)
                break
            except KubeError as exc:
                if exc.status in (404, 422):
                    LOG.info("%s/%s went away after its claim; releasing it", ns, name)
                    await self.placement.delete_allocations(meta["uid"])
                    self.own_hosts.pop(meta["uid"], None)
                    return None
                if exc.status != 409:
                    raise
            current = await self.kube.get(instance_path(ns, name))
        else:
            raise RuntimeError(f"metadata of {ns}/{name}: too many conflicts")

        def change(current: dict) -> dict | None:
            status = current.get("status") or {}
            cond = get_condition(current, names.COND_SCHEDULED) or {}
            if (status.get("host") == host and int(status.get("attempts") or 0) == attempts
                    and cond.get("status") == "True"):
                return None  # already recorded
            conds = set_condition(status.get("conditions"),
                                  names.COND_SCHEDULED, "True", reason, message,
                                  current["metadata"].get("generation"))
            if reset_built is not None:
                conds = set_condition(conds, names.COND_BUILT, "Unknown",
                                      names.REASON_RESCHEDULED, reset_built,
                                      current["metadata"].get("generation"))
            return {
                "phase": names.InstancePhase.SCHEDULED,
                "host": host,
                "alternateHosts": alternates or None,
                "attempts": attempts,
                "resources": size,
                "observedGeneration": current["metadata"].get("generation"),
                "conditions": conds,
                "actions": placement_action(status.get("actions"), reason, message),
            }

        written = []
        body = await self.patch_status(body, change, written=written)
        return body if written else None

    async def patch_status(self, body: dict, change, retries: int = 5,
                           written: list | None = None) -> dict:
        """Merge-patch the status computed by ``change(current)``, guarded by the
        resourceVersion (conditions are replaced as a whole list).  When
        ``change`` returns None there is nothing to write: ``current`` is
        returned as it is (and nothing appended to ``written``)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        wrote = []

        def patch(current: dict) -> dict | None:
            status = change(current)
            wrote[:] = [status is not None]
            # every phase written carries its kstatus conditions (kova.kstatus)
            return None if status is None else {"status": with_kstatus(status, current)}

        current = await self.kube.patch_guarded(instance_path(ns, name) + "/status", body, patch,
                                                read_path=instance_path(ns, name),
                                                retries=retries)
        if written is not None and wrote and wrote[0]:
            written.append(True)
        return current

    async def ensure_finalizer(self, body: dict) -> dict:
        meta = body["metadata"]
        return await finalizers.add(self.kube, instance_path(meta["namespace"], meta["name"]),
                                    body, names.FINALIZER_OPERATOR)

    async def set_waiting(self, body: dict, reason: str, message: str) -> None:
        cond = get_condition(body, names.COND_SCHEDULED)
        status = body.get("status") or {}
        if (cond and cond.get("reason") == reason and cond.get("message") == message
                and status.get("phase") == names.InstancePhase.PENDING):
            return
        metrics.PENDING.set(len(self.pending))

        def change(current: dict) -> dict | None:
            if (current.get("status") or {}).get("host"):
                # Placed meanwhile (another scheduler, or our own claim that
                # this NoValidHost raced): never put it back to Pending.
                return None
            return {
                "phase": names.InstancePhase.PENDING,
                "observedGeneration": current["metadata"].get("generation"),
                "conditions": set_condition((current.get("status") or {}).get("conditions"),
                                            names.COND_SCHEDULED, "False", reason, message,
                                            current["metadata"].get("generation")),
            }

        written = []
        body = await self.patch_status(body, change, written=written)
        if written and (not cond or cond.get("reason") != reason):
            self.emit(body, "Warning", reason, message)

    async def set_error(self, body: dict, reason: str, message: str,
                        clear_host: bool = False) -> dict:
        def change(current: dict) -> dict:
            out = {
                "phase": names.InstancePhase.ERROR,
                "observedGeneration": current["metadata"].get("generation"),
                "conditions": set_condition((current.get("status") or {}).get("conditions"),
                                            names.COND_SCHEDULED, "False", reason, message,
                                            current["metadata"].get("generation")),
            }
            if clear_host:
                out.update(host=None, alternateHosts=None)
            return out

        metrics.OUTCOMES.labels(reason=reason).inc()
        self.errored.add(body["metadata"]["uid"])
        self.unrecorded.pop(body["metadata"]["uid"], None)
        body = await self.patch_status(body, change)
        if clear_host:
            meta = body["metadata"]
            body = await self.kube.merge_patch(instance_path(meta["namespace"], meta["name"]), {
                "metadata": {"labels": {names.LABEL_HOST: None}}})
        LOG.warning("instance %s/%s uid=%s in Error: %s: %s", body["metadata"]["namespace"],
                    body["metadata"]["name"], body["metadata"]["uid"], reason, message)
        self.emit(body, "Warning", reason, message)
        return body

    # ------------------------------------------------------------ conductor
    async def handle_build_failure(self, key: tuple, body: dict) -> None:
        meta, status = body["metadata"], body.get("status") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        host = status["host"]
        attempts = int(status.get("attempts") or 1)
        cond = get_condition(body, names.COND_BUILT) or {}
        history = attempts_history(body)
        if not any(h.get("attempt") == attempts and h.get("host") == host for h in history):
            history.append({"attempt": attempts, "host": host,
                            "reason": cond.get("reason", names.REASON_BUILD_FAILED),
                            "message": cond.get("message", ""),
                            "time": cond.get("lastTransitionTime")})
            body = await self.kube.merge_patch(instance_path(ns, name), {"metadata": {
                "annotations": {names.ANNOTATION_ATTEMPTS: json.dumps(history)}}})
            self.failures.record(host)
            metrics.BUILD_FAILURES.labels(host=host).inc()
            LOG.info("build of %s/%s uid=%s failed on %s (attempt %d): %s", ns, name, uid,
                     host, attempts, cond.get("message", ""))
        code = (cond.get("message") or "").split(":", 1)[0].strip()
        if code in names.TERMINAL_BUILD_CODES:
            body = await self.mark_image_failure(body, cond)
            await self.placement.delete_allocations(uid)
            self.own_hosts.pop(uid, None)
            await self.set_error(
                body, code, f"the build failed on {host} in a way no other host can fix, "
                f"so it is not rescheduled: {cond.get('message', '')}", clear_host=True)
            return
        if attempts >= self.settings.max_attempts:
            body = await self.mark_image_failure(body, cond)
            await self.placement.delete_allocations(uid)
            self.own_hosts.pop(uid, None)
            await self.set_error(body, names.REASON_MAX_ATTEMPTS,
                                 f"build failed {attempts} time(s): " + describe_attempts(history),
                                 clear_host=True)
            return
        try:
            req, size = self.build(body)
        except (MissingDependency, InvalidRequest) as exc:
            await self.placement.delete_allocations(uid)
            await self.set_error(body, exc.reason, exc.message, clear_host=True)
            return
        req.excluded_hosts = {h["host"] for h in history}
        req.preferred_hosts = [h for h in status.get("alternateHosts") or []
                               if h not in req.excluded_hosts]
        current = await self.placement.consumer_allocations(uid)
        gen = current.get("consumer_generation") if current.get("allocations") else None
        lock = self.sg_lock(body)
        try:
            if lock is not None:
                async with lock:
                    await self.discover_member_claims(ns, req.server_group.name, uid)
                    req.server_group.member_hosts = self.member_hosts(ns, req.server_group.name,
                                                                      uid)
                    decision = await self.scheduler.schedule(req, consumer_generation=gen,
                                                             adopt=False)
                    self.own_hosts[uid] = decision.host
            else:
                decision = await self.scheduler.schedule(req, consumer_generation=gen,
                                                         adopt=False)
                self.own_hosts[uid] = decision.host
        except NoValidHost as exc:
            body = await self.mark_image_failure(body, cond)
            await self.placement.delete_allocations(uid)
            self.own_hosts.pop(uid, None)
            await self.set_error(
                body, names.REASON_NO_VALID_HOST,
                f"no host left to retry the build: {exc.message}; "
                + describe_attempts(history), clear_host=True)
            return
        msg = (f"Rescheduled to host {decision.host} after the build failed on {host} "
               f"(attempt {attempts + 1} of {self.settings.max_attempts})")
        placed = await self.record_placement(
            body, decision.host, decision.alternates, size, attempts=attempts + 1,
            reason=names.REASON_RESCHEDULED, message=msg,
            reset_built=f"build failed on {host}: " + cond.get("message", ""))
        if placed is None:
            return
        metrics.OUTCOMES.labels(reason=names.REASON_RESCHEDULED).inc()
        metrics.BUILD_ATTEMPTS.inc()
        LOG.info("rescheduled %s/%s uid=%s from %s to %s", ns, name, uid, host, decision.host)
        self.emit(body, "Normal", names.REASON_RESCHEDULED, msg)

    async def mark_image_failure(self, body: dict, cond: dict) -> dict:
        """Before an Instance goes to Error for a failure of its Image, note
        which version of the Image failed (retry_image_failure's trigger)."""
        code = (cond.get("message") or "").split(":", 1)[0].strip()
        if code not in names.IMAGE_FAILURE_CODES:
            return body
        meta = body["metadata"]
        image = ((body.get("spec") or {}).get("imageRef") or {}).get("name")
        return await self.kube.merge_patch(instance_path(meta["namespace"], meta["name"]), {
            "metadata": {"annotations": {
                names.ANNOTATION_FAILED_IMAGE: self.image_identity(image)}}})

    async def retry_image_failure(self, key: tuple, body: dict, image: str, failed: str,
                                  now: str) -> None:
        """The Image an Instance failed with was re-created or changed: start
        over (attempt history cleared, Pending, then scheduled as new)."""
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        msg = (f"Image {image} changed since the build failed "
               f"({failed} -> {now}): scheduling again")
        body = await self.kube.merge_patch(instance_path(ns, name), {"metadata": {
            "annotations": {names.ANNOTATION_ATTEMPTS: None,
                            names.ANNOTATION_FAILED_IMAGE: None}}})

        def change(current: dict) -> dict:
            gen = current["metadata"].get("generation")
            conds = set_condition((current.get("status") or {}).get("conditions"),
                                  names.COND_SCHEDULED, "False", names.REASON_RETRYING,
                                  msg, gen)
            conds = set_condition(conds, names.COND_BUILT, "Unknown",
                                  names.REASON_RETRYING, msg, gen)
            return {"phase": names.InstancePhase.PENDING, "host": None, "alternateHosts": None,
                    "attempts": None, "observedGeneration": gen, "conditions": conds}

        body = await self.patch_status(body, change)
        self.retried[uid] = failed
        self.errored.discard(uid)
        self.retries.pop(key, None)
        metrics.OUTCOMES.labels(reason=names.REASON_RETRYING).inc()
        LOG.info("%s/%s uid=%s: %s", ns, name, uid, msg)
        self.emit(body, "Normal", names.REASON_RETRYING, msg)
        self.enqueue(key)

    # ------------------------------------------------------------ deletion
    async def finalize(self, key: tuple, body: dict) -> None:
        meta = body["metadata"]
        fins = list(meta.get("finalizers") or [])
        if names.FINALIZER_OPERATOR not in fins:
            return
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        host = (body.get("status") or {}).get("host")
        if (names.FINALIZER_AGENT in fins and host
                and self.fence_reason(host) is not None):
            # The fenced host's agent cannot clean up now; it removes the
            # domain of a vanished Instance when it comes back (Nova's local
            # delete of an instance on a down compute host).
            body = await finalizers.remove(self.kube, instance_path(ns, name), body,
                                           names.FINALIZER_AGENT)
            fins = ob.finalizers(body)
            LOG.warning("%s/%s uid=%s deleted while its host %s is fenced: the agent's "
                        "finalizer was removed", ns, name, uid, host)
            self.emit(body, "Warning", names.EVENT_DELETED_ON_FENCED_HOST,
                      f"host {host} is fenced: deleted without waiting for its agent, which "
                      "removes the domain when it comes back")
        if names.FINALIZER_AGENT in fins:
            if (body.get("status") or {}).get("phase") != names.InstancePhase.DELETING:
                await self.patch_status(body, lambda cur: {"phase": names.InstancePhase.DELETING})
            # The agent's finalizer removal is an event; this is a safety net.
            self.queue.add_after(key, 30.0)
            return
        freed = await self.placement.delete_allocations(uid)
        await finalizers.remove(self.kube, instance_path(ns, name), body,
                                names.FINALIZER_OPERATOR)
        self.own_hosts.pop(uid, None)
        LOG.info("deleted %s/%s uid=%s: allocations %s", ns, name, uid,
                 "freed" if freed else "were already gone")

    # ============================================================ server groups
    async def reconcile_server_group(self, ns: str, name: str) -> None:
        """ServerGroup status: members, their hosts, PolicySatisfied."""
        sg = _first(self.indexes.get("kova_servergroups"), (ns, name))
        if sg is None:
            return
        members, hosts = [], Counter()
        idx = self.indexes.get("kova_instances")
        for key in list(idx.keys()) if idx is not None else []:
            if key[0] != ns:
                continue
            body = _first(idx, key)
            if not body or body["metadata"].get("deletionTimestamp"):
                continue
            if ((body.get("spec") or {}).get("serverGroupRef") or {}).get("name") != name:
                continue
            members.append(key[1])
            host = (body.get("status") or {}).get("host")
            if host:
                hosts[host] += 1
        policy = sg.get("policy")
        if policy == ServerGroupPolicy.AFFINITY:
            ok = len(hosts) <= 1
        elif policy == ServerGroupPolicy.ANTI_AFFINITY:
            ok = all(n <= int(sg.get("maxServerPerHost") or 1) for n in hosts.values())
        else:
            ok = True
        path = f"/apis/{names.API_VERSION}/namespaces/{ns}/servergroups/{name}"
        current = await self.kube.get_or_none(path)
        if current is None:
            return
        status = current.get("status") or {}
        want_members, want_hosts = sorted(members), sorted(hosts)
        cond = get_condition(current, names.SG_COND_POLICY_SATISFIED)
        want_cond = "True" if ok else "False"
        if (sorted(status.get("members") or []) == want_members
                and sorted(status.get("hosts") or []) == want_hosts
                and cond and cond.get("status") == want_cond):
            return
        message = (f"{len(members)} member(s) on {len(hosts)} host(s)" if ok else
                   f"the members' hosts break policy {policy}: {dict(hosts)}")
        patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                 "status": {
                     "members": want_members or None, "hosts": want_hosts or None,
                     "observedGeneration": current["metadata"].get("generation"),
                     "conditions": set_condition(
                         status.get("conditions"), names.SG_COND_POLICY_SATISFIED, want_cond,
                         names.SG_REASON_SATISFIED if ok else names.SG_REASON_VIOLATED,
                         message)}}
        try:
            await self.kube.merge_patch(path + "/status", patch)
        except KubeError as exc:
            if exc.status == 409:
                self.queue.add_after(("sg", ns, name), 0.5)
            elif exc.status != 404:
                raise

    # ============================================================ hosts
    async def reconcile_host(self, name: str) -> None:
        """Keep the provider's disabled trait and zone aggregate in step with
        Host.spec (the provider itself is the agent's)."""
        body = self.host_body(name)
        if body is None:
            return
        spec, status = body.get("spec") or {}, body.get("status") or {}
        rp = status.get("resourceProviderUUID")
        if not rp:
            return
        disabled = (not spec.get("enabled", True)
                    or bool((spec.get("maintenance") or {}).get("enabled"))
                    or self.fence_reason(name, body) is not None)
        zone = spec.get("availabilityZone")
        sig = (rp, disabled, zone)
        if self.synced_providers.get(name) == sig:
            return
        try:
            if disabled:
                await self.placement.update_traits(rp, {names.TRAIT_DISABLED}, set())
            else:
                await self.placement.update_traits(rp, set(), {names.TRAIT_DISABLED})
            annotations = body["metadata"].get("annotations") or {}
            applied = annotations.get(names.ANNOTATION_APPLIED_ZONE)
            add = {names.az_aggregate_uuid(zone)} if zone else set()
            remove = ({names.az_aggregate_uuid(applied)}
                      if applied and applied != zone else set())
            await self.placement.update_aggregates(rp, add, remove)
            if applied != zone:
                await self.kube.merge_patch(host_path(name), {"metadata": {"annotations": {
                    names.ANNOTATION_APPLIED_ZONE: zone}}})
        except PlacementError as exc:
            if exc.status == 404:
                LOG.warning("host %s: resource provider %s not found in Placement", name, rp)
                return
            raise
        self.synced_providers[name] = sig
        LOG.info("host %s: provider %s disabled=%s zone=%s", name, rp, disabled, zone)

    async def poll_leases(self) -> bool:
        """Refresh the Lease cache and ``alive``; True if any host changed."""
        body = await self.kube.get(lease_path(self.settings.lease_namespace))
        self.leases = {item["metadata"]["name"]: item for item in body.get("items") or []}
        now = time.time()
        if self._lease_poll_failed:
            self._lease_poll_failed = False
            self._leases_resumed_at = now
            LOG.info("host monitor: Leases readable again; no host goes Down for want of "
                     "renewals it could not see")
        changed = False
        idx = self.indexes.get("kova_hosts")
        host_names = list(idx.keys()) if idx is not None else []
        states = Counter()
        for name in host_names:
            lease = self.leases.get(name)
            alive = lease_fresh(lease, now, self.settings.heartbeat_grace)
            if not alive and self.alive.get(name) and self._leases_resumed_at is not None:
                # Up before the API server became unreachable: give the agent
                # one full Lease period from when renewals became visible.
                duration = float(((lease or {}).get("spec") or {}).get("leaseDurationSeconds")
                                 or 40)
                alive = now <= self._leases_resumed_at + duration + self.settings.heartbeat_grace
            if self.alive.get(name) != alive:
                changed = True
                if name in self.alive:
                    self.enqueue_host_instances(name)
            self.alive[name] = alive
        if changed:
            self.hosts_version += 1
        for name in host_names:
            alive = self.alive[name]
            states[names.HostState.UP if alive else names.HostState.DOWN] += 1
        for state in (names.HostState.UP, names.HostState.DOWN):
            metrics.HOSTS.labels(state=state).set(states[state])
        return changed

    async def update_host_states(self) -> None:
        idx = self.indexes.get("kova_hosts")
        if idx is None:
            return
        for name in list(idx.keys()):
            body = self.host_body(name)
            if body is None:
                continue
            alive = self.alive.get(name, False)
            status = body.get("status") or {}
            if alive:
                want = names.HostState.UP
            elif name in self.leases or status.get("state") == names.HostState.UP:
                want = names.HostState.DOWN
            else:
                want = names.HostState.UNKNOWN
            fence = self.fence_reason(name, body)
            fcond = get_condition(body, names.HOST_COND_FENCED)
            fence_ok = ((fcond or {}).get("reason") == fence if fence else
                        fcond is None or fcond.get("status") == "False")
            if status.get("state") == want and fence_ok:
                continue
            if not fence_ok:
                body = await self.set_host_fenced(body, fence)
                if body is None or status.get("state") == want:
                    continue
            lease = self.leases.get(name) or {}
            renew = (lease.get("spec") or {}).get("renewTime")
            if want == names.HostState.UP:
                cond = ("True", names.HOST_REASON_UP, "the heartbeat Lease is renewed")
            elif want == names.HostState.DOWN:
                cond = ("False", names.HOST_REASON_DOWN,
                        f"the heartbeat Lease {self.settings.lease_namespace}/{name} expired"
                        + (f" (last renewed {renew})" if renew else ""))
            else:
                cond = ("Unknown", names.HOST_REASON_NO_HEARTBEAT,
                        f"no heartbeat Lease {self.settings.lease_namespace}/{name} yet")
            patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                     "status": {"state": want, "conditions": set_condition(
                         status.get("conditions"), names.HOST_COND_READY, *cond)}}
            if renew:
                patch["status"]["lastHeartbeatTime"] = renew
            try:
                await self.kube.merge_patch(host_path(name) + "/status", patch)
            except KubeError as exc:
                if exc.status not in (404, 409):
                    raise
                continue
            LOG.info("host %s is %s", name, want)
            if want == names.HostState.DOWN:
                self.emit(body, "Warning", names.REASON_HOST_DOWN, cond[2])

    async def set_host_fenced(self, body: dict, reason: str | None) -> dict | None:
        """The Host's Fenced condition (and an Event when it turns True)."""
        name = body["metadata"]["name"]
        if reason == names.HOST_REASON_FENCED_SPEC:
            cond = ("True", reason, "spec.fenced is true: the host's instances are evacuated "
                    "and it takes no new ones")
        elif reason == names.HOST_REASON_FENCED_NODE:
            cond = ("True", reason, f"Node {name} is tainted {names.TAINT_OUT_OF_SERVICE}: "
                    "the host's instances are evacuated and it takes no new ones")
        else:
            cond = ("False", names.HOST_REASON_NOT_FENCED, "the host is not fenced")
        patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                 "status": {"conditions": set_condition(
                     (body.get("status") or {}).get("conditions"),
                     names.HOST_COND_FENCED, *cond)}}
        try:
            new = await self.kube.merge_patch(host_path(name) + "/status", patch)
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise
            return None
        LOG.info("host %s: fenced=%s (%s)", name, cond[0], cond[1])
        self.emit(body, "Warning" if reason else "Normal",
                  names.EVENT_HOST_FENCED if reason else names.EVENT_HOST_UNFENCED, cond[2])
        return new

    # ------------------------------------------------------------ host failure
    async def host_failure(self, key: tuple, body: dict) -> bool:
        """An Instance on a Down or fenced host (reconcile_instance's hook).

        Down only: its status says Unknown (nothing is moved -- the host may
        merely be cut off and still run the VM).  Fenced: it is evacuated.
        Returns True when the reconcile ends here."""
        status = body.get("status") or {}
        host = status["host"]
        if self.host_body(host) is None:
            return False
        if self.fence_reason(host) is not None:
            await self.evacuate(key, body, host)
            return True
        if self.host_is_down(host) and status.get("phase") != names.InstancePhase.UNKNOWN:
            # The agent may be back since the last poll (its first status
            # write can come before the next one): look at the Lease itself.
            lease = await self.kube.get_or_none(lease_path(self.settings.lease_namespace, host))
            if lease_fresh(lease, time.time(), self.settings.heartbeat_grace):
                return False
            await self.mark_unknown(body, host)
        return False

    async def mark_unknown(self, body: dict, host: str) -> None:
        lease = self.leases.get(host) or {}
        renew = (lease.get("spec") or {}).get("renewTime")
        message = (f"host {host} is Down: its heartbeat Lease expired"
                   + (f" (last renewed {renew})" if renew else "")
                   + "; the instance's state is unknown. It is not moved unless the host "
                   "is fenced")

        def change(current: dict) -> dict:
            return {
                "phase": names.InstancePhase.UNKNOWN,
                "powerState": names.PowerState.UNKNOWN,
                "conditions": set_condition((current.get("status") or {}).get("conditions"),
                                            names.COND_READY, "Unknown",
                                            names.REASON_HOST_DOWN, message,
                                            current["metadata"].get("generation")),
            }

        meta = body["metadata"]
        try:
            body = await self.patch_status(body, change)
        except KubeError as exc:
            if exc.status == 404:
                return
            raise
        metrics.OUTCOMES.labels(reason=names.REASON_HOST_DOWN).inc()
        LOG.warning("instance %s/%s uid=%s: %s", meta["namespace"], meta["name"], meta["uid"],
                    message)
        self.emit(body, "Warning", names.REASON_HOST_DOWN, message)

    async def evacuate(self, key: tuple, body: dict, old: str) -> None:
        """Move an Instance off fenced host ``old``: replace its allocation by
        one on another host (one PUT /allocations: atomic), then record the new
        host (label, status.host, Scheduled=True reason Evacuated, Built reset);
        the new host's agent rebuilds it from its image and user data.  Safe to
        repeat: an allocation already moved (a crash before the record) is kept."""
        meta, status = body["metadata"], body.get("status") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        why = self.fence_reason(old)
        try:
            req, size = self.build(body)
        except (MissingDependency, InvalidRequest) as exc:
            await self.evacuation_failed(key, body, old, f"{exc.reason}: {exc.message}")
            return
        # As Nova's evacuate: the requestedHost hint was for the first boot.
        req.requested_host = req.requested_rp = None
        current = await self.placement.consumer_allocations(uid)
        allocs = current.get("allocations") or {}
        decision = None
        if allocs:
            moved = self.host_by_rp(next(iter(allocs)))
            if moved is not None and moved.name != old and not moved.fenced:
                decision = Decision(host=moved.name, rp_uuid=moved.rp_uuid or "",
                                    alternates=[], adopted=True)
        if decision is None:
            gen = current.get("consumer_generation") if allocs else None
            lock = self.sg_lock(body)
            try:
                if lock is not None:
                    async with lock:
                        await self.discover_member_claims(ns, req.server_group.name, uid)
                        req.server_group.member_hosts = self.member_hosts(
                            ns, req.server_group.name, uid)
                        decision = await self.scheduler.schedule(
                            req, consumer_generation=gen, adopt=False)
                        self.own_hosts[uid] = decision.host
                else:
                    decision = await self.scheduler.schedule(req, consumer_generation=gen,
                                                             adopt=False)
            except NoValidHost as exc:
                await self.evacuation_failed(key, body, old, exc.message)
                return
        self.own_hosts[uid] = decision.host
        self.retries.pop(key, None)
        msg = (f"Evacuated from fenced host {old} ({why}) to host {decision.host}"
               + (" (allocation already moved)" if decision.adopted else ""))
        try:
            placed = await self.record_placement(
                body, decision.host, decision.alternates, size,
                attempts=int(status.get("attempts") or 1), reason=names.REASON_EVACUATED,
                message=msg, reset_built=f"evacuated from fenced host {old}; rebuilding on "
                f"{decision.host}")
        except Exception:
            self.own_hosts.pop(uid, None)  # the retry finds the moved allocation
            raise
        if placed is None:
            return
        metrics.OUTCOMES.labels(reason=names.REASON_EVACUATED).inc()
        LOG.warning("evacuated %s/%s uid=%s from fenced host %s to %s", ns, name, uid, old,
                    decision.host)
        self.emit(placed, "Warning", names.REASON_EVACUATED, msg)

    async def evacuation_failed(self, key: tuple, body: dict, old: str, why: str) -> None:
        message = f"cannot evacuate from fenced host {old}: {why}"
        cond = get_condition(body, names.COND_SCHEDULED) or {}
        if cond.get("reason") != names.REASON_EVACUATION_FAILED or cond.get("message") != message:
            def change(current: dict) -> dict:
                return {"conditions": set_condition(
                    (current.get("status") or {}).get("conditions"), names.COND_SCHEDULED,
                    "False", names.REASON_EVACUATION_FAILED, message,
                    current["metadata"].get("generation"))}

            body = await self.patch_status(body, change)
            self.emit(body, "Warning", names.REASON_EVACUATION_FAILED, message)
        metrics.OUTCOMES.labels(reason=names.REASON_EVACUATION_FAILED).inc()
        delay = self.backoff(key)
        LOG.warning("%s/%s: %s (retry in %.1fs)", key[1], key[2], message, delay)
        self.pending.add(key)
        self.queue.add_after(key, delay)

    async def host_monitor(self) -> None:
        while True:
            try:
                if await self.poll_leases():
                    self.retrigger_pending()
                if self.leader:
                    await self.update_host_states()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lease_poll_failed = True
                LOG.warning("host monitor: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.settings.host_check_interval)

    # ============================================================ leadership
    async def leadership(self) -> None:
        """Mirror kopf's peering decision (who is paused) for our own tasks."""
        if not self.settings.peering:
            self.leader = True
            metrics.LEADER.set(1)
            return
        if self.settings.all_namespaces:
            path = f"/apis/kopf.dev/v1/clusterkopfpeerings/{self.settings.peering_name}"
        else:
            ns = self.settings.namespaces[0]
            path = f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/{self.settings.peering_name}"
        first = True
        while True:
            try:
                obj = await self.kube.get_or_none(path)
                now = time.time()
                leader = obj is not None
                for ident, info in ((obj or {}).get("status") or {}).items():
                    if ident == self.identity or not isinstance(info, dict):
                        continue
                    seen = parse_time(info.get("lastseen"))
                    if seen is None or now > seen + float(info.get("lifetime") or 60):
                        continue
                    if int(info.get("priority") or 0) >= self.priority:
                        leader = False
                if leader and not self.leader:
                    LOG.info("this replica (%s, priority %d) is now the active one",
                             self.identity, self.priority)
                    self.leader = True
                    self.requeue_all()
                elif not leader and (self.leader or first):
                    LOG.info("standing by: another replica with a higher priority is active")
                    self.leader = False
                first = False
                metrics.LEADER.set(1 if self.leader else 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.warning("leadership check: %s", exc)
            await asyncio.sleep(2.0)

    def requeue_all(self) -> None:
        self.no_claim.clear()
        self.unrecorded.clear()
        idx = self.indexes.get("kova_instances")
        if idx is not None:
            for ns, name in list(idx.keys()):
                self.enqueue(("inst", ns, name))
        hosts = self.indexes.get("kova_hosts")
        if hosts is not None:
            self.synced_providers.clear()
            for name in list(hosts.keys()):
                self.enqueue(("host", name))

    # ============================================================ audit
    async def audit_loop(self) -> None:
        from kova.operator.audit import run_audit

        while True:
            await asyncio.sleep(self.settings.audit_interval)
            if not self.leader:
                continue
            try:
                await run_audit(self.kube, self.placement, heal=self.settings.audit_heal,
                                emit=self.emit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.warning("audit failed: %s: %s", type(exc).__name__, exc)

    # ============================================================ events
    def emit(self, obj: dict, type_: str, reason: str, message: str) -> None:
        if self._events is None or not self.settings.events:
            return
        if type_ == "Normal" and not self._event_token():
            # Informational Events (Scheduled, ...) are rate limited: the same
            # fact is in the Instance's status condition, and in a burst an
            # Event per Instance would cost the API server as much as the
            # placement itself.  Warnings are always posted.
            metrics.EVENTS_DROPPED.labels(reason=reason).inc()
            return
        try:
            self._events.put_nowait((obj, type_, reason, message))
        except asyncio.QueueFull:
            pass

    def _event_token(self) -> bool:
        """Token bucket of --event-qps / --event-burst (qps 0 = no limit)."""
        qps = self.settings.event_qps
        if qps <= 0:
            return True
        now = time.monotonic()
        burst = max(1.0, float(self.settings.event_burst))
        if self._event_tokens_at is None:
            self._event_tokens = burst
        else:
            self._event_tokens = min(burst, self._event_tokens
                                     + (now - self._event_tokens_at) * qps)
        self._event_tokens_at = now
        if self._event_tokens >= 1.0:
            self._event_tokens -= 1.0
            return True
        return False

    async def event_poster(self) -> None:
        while True:
            obj, type_, reason, message = await self._events.get()
            await events.post(self.kube, obj, type_, reason, message,
                              component=names.COMPONENT_OPERATOR)

    # ============================================================ run
    async def run(self, stop_flag: asyncio.Event | None = None,
                  ready_flag: asyncio.Event | None = None) -> None:
        s = self.settings
        self.kube = Kube(self.creds, observe=lambda verb, seconds: metrics.KUBE_SECONDS.labels(
            verb=verb).observe(seconds))
        self.placement = PlacementClient(
            s.placement_url, s.placement_token, ca_file=s.placement_ca_file,
            retry=RetryPolicy(budget=s.placement_retry_seconds),
            observe=lambda call, seconds: metrics.PLACEMENT_SECONDS.labels(call=call).observe(
                seconds),
            on_retry=lambda reason: metrics.PLACEMENT_RETRIES.labels(reason=reason).inc())
        self.queue = AsyncWorkQueue()
        self._events = asyncio.Queue(maxsize=10000)
        self.scheduler = Scheduler(self.placement, s.scheduler, self.host_by_rp,
                                   self.host_by_name, WeighContext(failures=self.failures))
        if s.max_batch > 1:
            self.batcher = BatchScheduler(self.scheduler, s.max_batch)
        try:
            await self.poll_leases()
        except Exception as exc:
            LOG.warning("initial lease poll failed: %s", exc)
        self._tasks = [asyncio.create_task(self.worker(), name=f"kova-worker-{i}")
                       for i in range(s.workers)]
        self._tasks += [
            asyncio.create_task(self.host_monitor(), name="kova-host-monitor"),
            asyncio.create_task(self.leadership(), name="kova-leadership"),
            asyncio.create_task(self.event_poster(), name="kova-events"),
        ]
        if s.audit_interval > 0:
            self._tasks.append(asyncio.create_task(self.audit_loop(), name="kova-audit"))
        LOG.info("kova operator starting: identity=%s priority=%d peering=%s namespaces=%s "
                 "placement=%s", self.identity, self.priority,
                 s.peering_name if s.peering else "standalone",
                 "*" if s.all_namespaces else ",".join(s.namespaces), s.placement_url)
        try:
            await kopf.operator(
                registry=self.registry(),
                clusterwide=s.all_namespaces,
                namespaces=() if s.all_namespaces else s.namespaces,
                standalone=not s.peering,
                peering_name=s.peering_name if s.peering else None,
                priority=self.priority if s.peering else None,
                identity=self.identity,  # type: ignore[arg-type]
                liveness_endpoint=(f"http://0.0.0.0:{s.health_port}/healthz"
                                   if s.health_port else None),
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.batcher is not None:
                await self.batcher.close()
            self.queue.shutdown()
            await self.kube.close()
            await self.placement.close()
