"""One collection of the API server kept in memory by list + watch, as
client-go's reflector and informer do, with no per-object machinery:

* a paged LIST gives the objects and the collection's resourceVersion;
* a WATCH from that resourceVersion (with bookmarks) delivers the changes;
  each one costs a dict update and one callback, whatever the collection's
  size;
* a watch the server ends (its timeout) is resumed from the last
  resourceVersion seen (an event's or a bookmark's), without a LIST;
* a resourceVersion too old to resume from (410 Gone, as an HTTP status or
  an ERROR event) means a new LIST; the new listing is compared with the
  cache and only the differences reach the callback (ADDED/MODIFIED by a
  changed resourceVersion, DELETED for what is gone).

The callback gets ``(name, object, deleted)``; for a deletion the object is
the last one seen.  ``synced`` is set once the first LIST is in the cache.
After a failed LIST or WATCH (the API server unreachable) it lists again
rather than resume: ``healthy`` is False from the failure until that LIST
succeeded, and ``on_health`` is told of both (the host monitor does not trust
the absence of renewals meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from kova.kube import Kube, KubeError

LOG = logging.getLogger("kova.operator")

Callback = Callable[[str, dict, bool], None]


def _rv(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


def by_name(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("name")


def by_namespace_and_name(obj: dict) -> str | None:
    """``namespace/name``: the key of a namespaced collection watched in
    every namespace."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta['name']}" if meta.get("name") else None


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class ListWatch:
    def __init__(self, path: str, on_event: Callback, *, what: str = "",
                 page_size: int = 500, timeout_seconds: int = 300,
                 retry_seconds: float = 1.0,
                 key: Callable[[dict], str | None] = by_name) -> None:
        self.path = path
        #: An object's key in ``items`` and the callback (its name by default).
        self.key = key
        self.on_event = on_event
        self.what = what or path
        self.page_size = page_size
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        #: key (name) -> the object as last listed or watched.
        self.items: dict[str, dict] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.healthy = True
        #: Told when ``healthy`` changes.
        self.on_health: Callable[[bool], None] | None = None
        #: Counters, for tests and metrics: LISTs, watch starts, events.
        self.lists = 0
        self.watches = 0
        self.events = 0

    # ------------------------------------------------------------ run
    async def run(self, kube: Kube) -> None:
        """List, then watch, for ever (cancel the task to stop)."""
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self.relist(kube)
                await self.watch_once(kube)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Gone:
                LOG.info("%s: resourceVersion %s too old; listing again", self.what,
                         self.resource_version)
                self.resource_version = None
            except (KubeError, aiohttp.ClientError, asyncio.TimeoutError, OSError,
                    ValueError) as exc:
                if isinstance(exc, KubeError) and exc.status == 410:
                    self.resource_version = None
                    continue
                failures += 1
                self._health(False)
                self.resource_version = None
                delay = min(self.retry_seconds * 2 ** min(failures - 1, 5), 30.0)
                LOG.warning("%s: %s: %s; again in %.1fs", self.what, type(exc).__name__, exc,
                            delay)
                await asyncio.sleep(delay)

    async def relist(self, kube: Kube) -> None:
        """LIST in pages; tell the callback what differs from the cache."""
        fresh: dict[str, dict] = {}
        params: dict[str, str] = {"limit": str(self.page_size)}
        while True:
            body = await kube.get(self.path, params)
            for item in body.get("items") or []:
                k = self.key(item)
                if k:
                    fresh[k] = item
            meta = body.get("metadata") or {}
            if not meta.get("continue"):
                break
            params = {"limit": str(self.page_size), "continue": meta["continue"]}
        old, self.items = self.items, fresh
        self.resource_version = meta.get("resourceVersion")
        self.lists += 1
        # healthy before the differences are delivered: a Lease whose last
        # renewal the failed watch missed arrives here stale, and the host
        # monitor must already know that it could not see renewals
        self._health(True)
        for name, obj in fresh.items():
            before = old.pop(name, None)
            if before is None or _rv(before) != _rv(obj):
                self.events += 1
                self.on_event(name, obj, False)
        for name, obj in old.items():
            self.events += 1
            self.on_event(name, obj, True)
        self.synced.set()

    def _health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            if self.on_health is not None:
                self.on_health(healthy)

    async def watch_once(self, kube: Kube) -> None:
        """One WATCH from the cache's resourceVersion until the server ends it."""
        params = {"resourceVersion": self.resource_version or "",
                  "allowWatchBookmarks": "true"}
        self.watches += 1
        async for event in kube.watch(self.path, params, timeout_seconds=self.timeout_seconds):
            self.apply(event)

    def apply(self, event: dict) -> None:
        """One watch event into the cache (and the callback)."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise KubeError(int(obj.get("code") or 500), obj, f"WATCH {self.path}")
        rv = _rv(obj)
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            return
        name = self.key(obj)
        if not name:
            return
        self.events += 1
        if kind == "DELETED":
            self.items.pop(name, None)
            self.on_event(name, obj, True)
        else:
            self.items[name] = obj
            self.on_event(name, obj, False)
