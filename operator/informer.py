"""The informer: kopf's watches and indexes behind a typed read API.

This is the one module of the operator that imports kopf.  kopf lists and
watches Instances, Hosts, Flavors, Images, ServerGroups (and Nodes, for
fencing) and keeps an in-memory index of each kind; the rest of the operator
reads them through :class:`Informer`'s methods (``instance(ns, name)``,
``host(name)``, ``flavor(name)``, ...) and is told of changes through the
:class:`Handlers` it gives -- plain callbacks, never kopf objects.

The indexes are taken from kopf's startup handler, where kopf hands every
index to the operator before any watch starts.  kopf fills all indexes from
the initial listings before it calls any event handler, so the first event
(of any kind) marks the views complete: :attr:`Informer.synced` is set then,
and the work that must see every object first (placing one more member of a
server group after a restart) waits for it.

Hosts and heartbeat Leases -- one of each per hypervisor, 10 000 and more in a
large cloud, a Lease renewed every few seconds -- do not go through kopf,
whose per-object workers cost more with every object watched: each is a plain
:class:`~.listwatch.ListWatch` (list + watch with bookmarks, relist on 410),
a dict and one callback per change.  :attr:`Informer.hosts_synced` is set
when both are listed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import kopf

from kova.conditions import get_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import Credentials, Kube, custom_path, lease_path
from kova.operator.listwatch import ListWatch, by_namespace_and_name

LOG = logging.getLogger("kova.operator")

G, V = names.GROUP, names.VERSION

#: The index ids, one per view.
INSTANCES = "kova_instances"
GROUP_MEMBERS = "kova_sg_members"
BY_HOST = "kova_instances_by_host"
FLAVORS = "kova_flavors"
IMAGES = "kova_images"
IMAGE_IDS = "kova_image_ids"
TENANT_IMAGES = "kova_tenant_images"
TENANT_IMAGE_IDS = "kova_tenant_image_ids"
SERVER_GROUPS = "kova_servergroups"
INDEXES = (INSTANCES, GROUP_MEMBERS, BY_HOST, FLAVORS, IMAGES, IMAGE_IDS, TENANT_IMAGES,
           TENANT_IMAGE_IDS, SERVER_GROUPS)

#: An Image that does not exist (``image_identity``).
MISSING = "missing"


class Handlers(Protocol):
    """What the operator does when the informer sees a change.  ``deleted``
    is True for a DELETED watch event; ``body`` is the object as watched."""

    def instance_changed(self, namespace: str, name: str, body: dict,
                         deleted: bool) -> None: ...

    def host_changed(self, name: str, body: dict, deleted: bool) -> None: ...

    def lease_changed(self, name: str, body: dict, deleted: bool) -> None:
        """A heartbeat Lease of the Lease namespace (only with
        ``RunOptions.lease_namespace``)."""

    def lease_watch_health(self, healthy: bool) -> None:
        """The Lease watch failed (False), or listed again after that."""

    def node_changed(self, name: str, body: dict, deleted: bool) -> None: ...

    def image_changed(self, name: str, deleted: bool) -> None: ...

    def dependency_changed(self, kind: str, namespace: str | None, name: str,
                           deleted: bool) -> None:
        """A Flavor (``kind`` "flavors") or ServerGroup ("servergroups")."""

    def quota_changed(self, key: str, body: dict, deleted: bool) -> None:
        """A ResourceQuota (``key``: namespace/name)."""


@dataclass
class RunOptions:
    """How kopf runs: namespaces, peering (leader election), liveness probe."""

    all_namespaces: bool = True
    namespaces: tuple[str, ...] = ()
    peering: bool = False
    peering_name: str = "kova"
    priority: int | None = None
    identity: str | None = None
    health_port: int = 0
    watch_nodes: bool = True
    #: Watch the heartbeat Leases of this namespace (None: no Leases).
    lease_namespace: str | None = None


def quota_paths(o: RunOptions) -> list[tuple[str, str]]:
    """(path, description) of the ResourceQuota collections to watch: every
    namespace's, or each watched namespace's (every namespace's when one is
    a pattern)."""
    if o.all_namespaces or any(c in ns for ns in o.namespaces for c in "*?[!"):
        return [("/api/v1/resourcequotas", "ResourceQuotas")]
    return [(f"/api/v1/namespaces/{ns}/resourcequotas", f"ResourceQuotas of {ns}")
            for ns in o.namespaces]


def tenant_image_facts(spec: dict, status: dict) -> dict:
    """What the operator keeps of a TenantImage: its spec; for a snapshot's
    one still saving whose snapshot failed for good, also ``snapshotFailed``
    (its Available condition's message): Instances of it are told so."""
    if not spec.get("saving"):
        return spec
    cond: dict = get_condition({"status": status}, "Available") or {}
    if cond.get("reason") != names.IMAGE_REASON_SNAPSHOT_FAILED:
        return spec
    return {**spec, "snapshotFailed": cond.get("message") or "the snapshot failed"}


def _first(index: Any, key: Hashable) -> Any:
    """The one value stored under ``key`` (every index here holds one value
    per object and one object per key), or None."""
    if index is None:
        return None
    try:
        store = index[key]
    except KeyError:
        return None
    for value in store:
        return value
    return None


def freeze_heap() -> int:
    """Move every object alive now -- above all the cached Hosts and Leases,
    two per hypervisor -- out of the cyclic garbage collector's generations
    (``gc.freeze``), and return how many are frozen.  The collector's full
    passes otherwise walk all of them again and again while a burst of
    Instances allocates: the collector took 57 % of an allocation-heavy
    loop's CPU beside 20 000 cached Host and Lease bodies, 43 % beside 5 000
    (measured with and without the freeze).
    Frozen objects are still freed by reference counting when a newer copy
    replaces them; only cycles among them would wait."""
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    LOG.info("informer: %d objects of the synced caches kept out of garbage collection",
             count)
    return count


def share_index_waits() -> None:
    """Let kopf's waits for its indexes share one wait per state.

    kopf holds the first event of every object listed at start until every
    index is full: each per-object worker, once it indexed its object,
    waits on one ``asyncio.Condition`` (``ToggleSet.wait_for``), and each
    object indexed after it notifies all of them, each re-acquiring the
    condition's lock in turn to re-check the same predicate -- N²/2 wake-ups
    for N Instances listed (12 s of CPU at 30 000 of them, measured on the
    ToggleSet alone).  Here the waits for the same state of the same set are
    one task, awaited (shielded) by every waiter: one wake-up per change.
    The waiters still return only once the state is reached.  Applied once,
    to kopf's class (its module path is checked: a kopf without it is left
    as it is)."""
    toggles = getattr(getattr(getattr(kopf, "_cogs", None), "aiokits", None), "aiotoggles",
                      None)
    cls = getattr(toggles, "ToggleSet", None)
    if cls is None or getattr(cls, "_kova_shared_waits", False):
        return
    original = cls.wait_for

    async def wait_for(self: Any, state: bool) -> None:
        state = bool(state)
        if self.is_on() == state:
            return
        waits = self.__dict__.setdefault("_kova_waits", {})
        shared = waits.get(state)
        if shared is None or shared.done():
            shared = waits[state] = asyncio.ensure_future(original(self, state))
        await asyncio.shield(shared)

    cls.wait_for = wait_for
    cls._kova_shared_waits = True


def _ignore(name: str, body: dict, deleted: bool) -> None:
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


class Informer:
    """Typed reads of the watched objects, and the kopf process that keeps
    them current (:meth:`run`)."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self._indexes: dict[str, Any] = {}
        #: Set once kopf has listed every watched kind (see the module doc).
        self.synced = asyncio.Event()
        #: Hosts and Leases: plain list + watch (callbacks set by :meth:`run`).
        self.hosts_watch = ListWatch(custom_path(names.HOSTS), _ignore, what="Hosts")
        self.leases_watch: ListWatch | None = None
        #: The ResourceQuotas of the watched namespaces (namespace/name ->
        #: object), for the quota check: none is read on the scheduling path.
        self.quota_watches: list[ListWatch] = []
        #: Set once the Hosts (and Leases, when watched) and the
        #: ResourceQuotas are listed.
        self.hosts_synced = asyncio.Event()

    # ------------------------------------------------------------ reads
    def resource_quotas(self, namespace: str) -> list[dict]:
        """The ResourceQuotas of ``namespace`` as last watched."""
        prefix = namespace + "/"
        return [q for w in self.quota_watches for k, q in w.items.items()
                if k.startswith(prefix)]

    def instance(self, namespace: str, name: str) -> dict | None:
        """The Instance as last watched, or None."""
        return _first(self._indexes.get(INSTANCES), (namespace, name))

    def instance_keys(self) -> list[tuple[str, str]]:
        """``(namespace, name)`` of every Instance."""
        idx = self._indexes.get(INSTANCES)
        return list(idx.keys()) if idx is not None else []

    def instances(self, namespace: str | None = None) -> Iterator[tuple[tuple[str, str], dict]]:
        """``((namespace, name), body)`` of every Instance (of ``namespace``)."""
        idx = self._indexes.get(INSTANCES)
        for key in list(idx.keys()) if idx is not None else []:
            if namespace is not None and key[0] != namespace:
                continue
            body = _first(idx, key)
            if body:
                yield key, body

    def group_members(self, namespace: str, group: str) -> list[tuple[str, str | None]]:
        """``(uid, host)`` of the Instances naming server group ``group``
        (host: status.host, else the host label, else None)."""
        idx = self._indexes.get(GROUP_MEMBERS)
        if idx is None or (namespace, group) not in idx:
            return []
        return list(idx[(namespace, group)])

    def instances_on(self, host: str) -> list[tuple[str, str]]:
        """``(namespace, name)`` of the Instances whose status.host is ``host``."""
        idx = self._indexes.get(BY_HOST)
        if idx is None or host not in idx:
            return []
        return list(idx[host])

    def host(self, name: str) -> dict | None:
        """The Host as last watched, or None."""
        return self.hosts_watch.items.get(name)

    def host_names(self) -> list[str]:
        return list(self.hosts_watch.items)

    def lease(self, name: str) -> dict | None:
        """Host ``name``'s heartbeat Lease as last watched, or None."""
        return self.leases_watch.items.get(name) if self.leases_watch else None

    def flavor(self, name: str | None) -> dict | None:
        """A Flavor's spec, or None."""
        return _first(self._indexes.get(FLAVORS), name) if name else None

    def image(self, key: str | None) -> dict | None:
        """The spec of an Image or TenantImage (``key`` as
        :func:`kova.crds.objects.image_key` makes it), or None."""
        if not key:
            return None
        return _first(self._indexes.get(TENANT_IMAGES if "/" in key else IMAGES), key)

    def image_identity(self, key: str | None) -> str:
        """``uid/generation`` of the Image or TenantImage ``key`` (a re-created
        or changed image has another), or :data:`MISSING`."""
        if not key:
            return MISSING
        index = TENANT_IMAGE_IDS if "/" in key else IMAGE_IDS
        return _first(self._indexes.get(index), key) or MISSING

    def server_group(self, namespace: str, name: str | None) -> dict | None:
        """A ServerGroup's spec, or None."""
        return _first(self._indexes.get(SERVER_GROUPS), (namespace, name)) if name else None

    # ------------------------------------------------------------ kopf
    def registry(self, handlers: Handlers, watch_nodes: bool = True) -> kopf.OperatorRegistry:
        reg = kopf.OperatorRegistry()
        self._register_process(reg)
        self._register_indexes(reg)
        self._register_events(reg, handlers, watch_nodes)
        return reg

    def _register_process(self, reg: kopf.OperatorRegistry) -> None:
        informer = self

        @kopf.on.login(registry=reg)
        def login(**_: Any) -> kopf.ConnectionInfo:
            # At start-up and after kopf saw a 401: the token as it is now
            # (a rotated token file, a re-run exec plugin).
            c = informer.creds
            c.refresh()
            token = c.bearer()
            return kopf.ConnectionInfo(
                server=c.server, ca_path=c.ca_file, insecure=c.insecure,
                scheme="Bearer" if token else None, token=token,
                certificate_path=c.cert_file, private_key_path=c.key_file,
            )

        @kopf.on.startup(registry=reg)
        def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
            settings.posting.level = logging.WARNING
            settings.watching.server_timeout = 300
            settings.watching.client_timeout = 330
            settings.networking.request_timeout = 60
            settings.persistence.diffbase_storage = NoDiffBase()
            # kopf passes every index to the startup handlers, created (empty)
            # before any watch begins: the same objects it fills later.
            informer._indexes = {key: kwargs[key] for key in INDEXES}

    @staticmethod
    def _register_indexes(reg: kopf.OperatorRegistry) -> None:
        # Index handlers are coroutines: kopf runs plain functions in a thread
        # pool, a thread hand-off per watch event for a dict copy.
        @kopf.index(G, V, "instances", id=INSTANCES, registry=reg)
        async def kova_instances(body: Any, name: str, namespace: str | None,
                                 **_: Any) -> dict:
            return {(namespace, name): dict(body)}

        @kopf.index(G, V, "instances", id=GROUP_MEMBERS, registry=reg)
        async def kova_sg_members(body: Any, spec: Any, status: Any, **_: Any) -> dict | None:
            sg = (spec.get("serverGroupRef") or {}).get("name")
            if not sg:
                return None
            host = status.get("host") or (body["metadata"].get("labels") or {}).get(
                names.LABEL_HOST)
            return {(body["metadata"]["namespace"], sg): (body["metadata"]["uid"], host)}

        @kopf.index(G, V, "instances", id=BY_HOST, registry=reg)
        async def kova_instances_by_host(body: Any, name: str, namespace: str | None,
                                         **_: Any) -> dict | None:
            host = ob.placed_host(body)
            return {host: (namespace, name)} if host else None

        @kopf.index(G, V, "flavors", id=FLAVORS, registry=reg)
        async def kova_flavors(name: str, spec: Any, **_: Any) -> dict:
            return {name: dict(spec)}

        @kopf.index(G, V, "images", id=IMAGES, registry=reg)
        async def kova_images(name: str, spec: Any, **_: Any) -> dict:
            return {name: dict(spec)}

        @kopf.index(G, V, "images", id=IMAGE_IDS, registry=reg)
        async def kova_image_ids(name: str, meta: Any, **_: Any) -> dict:
            return {name: f"{meta.get('uid')}/{meta.get('generation')}"}

        @kopf.index(G, V, names.TENANT_IMAGES, id=TENANT_IMAGES, registry=reg)
        async def kova_tenant_images(name: str, namespace: str | None, spec: Any,
                                     status: Any, **_: Any) -> dict:
            return {f"{namespace}/{name}": tenant_image_facts(dict(spec), dict(status or {}))}

        @kopf.index(G, V, names.TENANT_IMAGES, id=TENANT_IMAGE_IDS, registry=reg)
        async def kova_tenant_image_ids(name: str, namespace: str | None, meta: Any,
                                        **_: Any) -> dict:
            return {f"{namespace}/{name}": f"{meta.get('uid')}/{meta.get('generation')}"}

        @kopf.index(G, V, "servergroups", id=SERVER_GROUPS, registry=reg)
        async def kova_servergroups(name: str, namespace: str | None, spec: Any,
                                    **_: Any) -> dict:
            return {(namespace, name): dict(spec)}

    def _register_events(self, reg: kopf.OperatorRegistry, handlers: Handlers,
                         watch_nodes: bool) -> None:
        synced = self.synced

        def on(plural: str, group: str = G, version: str = V) -> Callable[
                [Callable[[dict, str, str | None], None]], None]:
            def register(call: Callable[[dict, str, str | None], None]) -> None:
                async def handler(event: Any, name: str, namespace: str | None = None,
                                  **_: Any) -> None:
                    synced.set()  # kopf calls no handler before every index is full
                    call(event, name, namespace)
                kopf.on.event(group, version, plural, registry=reg)(handler)
            return register

        def deleted(event: dict) -> bool:
            return event.get("type") == "DELETED"

        on("instances")(lambda ev, name, ns: handlers.instance_changed(
            ns or "", name, ev.get("object") or {}, deleted(ev)))
        on("images")(lambda ev, name, ns: handlers.image_changed(name, deleted(ev)))
        on(names.TENANT_IMAGES)(lambda ev, name, ns: handlers.image_changed(
            f"{ns}/{name}", deleted(ev)))
        on("flavors")(lambda ev, name, ns: handlers.dependency_changed(
            "flavors", ns, name, deleted(ev)))
        on("servergroups")(lambda ev, name, ns: handlers.dependency_changed(
            "servergroups", ns, name, deleted(ev)))
        if watch_nodes:
            on("nodes", "", "v1")(lambda ev, name, ns: handlers.node_changed(
                name, ev.get("object") or {}, deleted(ev)))

    # ------------------------------------------------------------ Hosts, Leases
    def _start_watches(self, handlers: Handlers, o: RunOptions) -> list[asyncio.Task]:
        self.hosts_watch.on_event = handlers.host_changed
        watches = [self.hosts_watch]
        if o.lease_namespace:
            self.leases_watch = ListWatch(lease_path(o.lease_namespace), handlers.lease_changed,
                                          what=f"Leases of {o.lease_namespace}")
            self.leases_watch.on_health = handlers.lease_watch_health
            watches.append(self.leases_watch)
        self.quota_watches = [
            ListWatch(path, getattr(handlers, "quota_changed", _ignore), what=what,
                      key=by_namespace_and_name)
            for path, what in quota_paths(o)]
        watches.extend(self.quota_watches)
        kube = Kube(self.creds, max_connections=len(watches) + 2)

        async def synced() -> None:
            await asyncio.gather(*(w.synced.wait() for w in watches))
            self.hosts_synced.set()
            freeze_heap()

        tasks = [asyncio.create_task(w.run(kube), name=f"kova-watch-{w.what}") for w in watches]
        tasks.append(asyncio.create_task(synced(), name="kova-watch-synced"))

        async def close() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await kube.close()
        tasks.append(asyncio.create_task(close(), name="kova-watch-session"))
        return tasks

    async def run(self, handlers: Handlers, options: RunOptions,
                  stop_flag: asyncio.Event | None = None,
                  ready_flag: asyncio.Event | None = None) -> None:
        """Run the Host and Lease watches and kopf (watches, indexes,
        peering) until ``stop_flag``."""
        o = options
        tasks = self._start_watches(handlers, o)
        try:
            await self._run_kopf(handlers, o, stop_flag, ready_flag)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_kopf(self, handlers: Handlers, o: RunOptions,
                        stop_flag: asyncio.Event | None,
                        ready_flag: asyncio.Event | None) -> None:
        share_index_waits()
        await kopf.operator(
            registry=self.registry(handlers, o.watch_nodes),
            clusterwide=o.all_namespaces,
            namespaces=() if o.all_namespaces else o.namespaces,
            standalone=not o.peering,
            peering_name=o.peering_name if o.peering else None,
            priority=o.priority if o.peering else None,
            identity=o.identity,  # type: ignore[arg-type]
            liveness_endpoint=(f"http://0.0.0.0:{o.health_port}/healthz"
                               if o.health_port else None),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )

