"""The agent's view of its Instances: a list/watch of the Instances labelled
with this host (``names.LABEL_HOST``) into a local cache, queueing each one
that appears, changes or goes.

The cache is what the reconciler reads; anything that decides to remove
something from the host asks the API server directly instead (see
:mod:`kova.agents.instance.teardown`).  The agent's own status writes go into
the cache at once (:meth:`InstanceWatch.store_own_write`), so an older watch
event cannot undo them.
"""

from __future__ import annotations

import logging
import threading

from kova.agents.context import DOMAIN_KEY, RESYNC_KEY, AgentContext, Key
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import KubeError, WatchStream, custom_path

log = logging.getLogger("kova.agents.watch")


def resource_version(obj: dict) -> int:
    try:
        return int(ob.meta(obj).get("resourceVersion") or 0)
    except ValueError:
        return 0


class InstanceWatch:
    """Thread ``watch``: :meth:`run` until the agent stops."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self._cache: dict[Key, dict] = {}
        self._uid_index: dict[str, Key] = {}
        self._lock = threading.Lock()
        #: Set once the first list is in the cache.
        self.synced = threading.Event()
        #: Set when this host's set of Instances changed: the Host status
        #: (instance count, allocated) is refreshed without waiting for a resync.
        self.membership_changed = threading.Event()
        self._stream: WatchStream | None = None

    # ------------------------------------------------------------------
    # Reads
    def get(self, key: Key) -> dict | None:
        with self._lock:
            return self._cache.get(key)

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._cache)

    def count(self) -> int:
        with self._lock:
            return len(self._cache)

    def uids(self) -> set[str]:
        with self._lock:
            return {ob.uid(o) or "" for o in self._cache.values()}

    def key_of_uid(self, uid: str) -> Key | None:
        """The Instance a domain uid belongs to, as far as the cache knows."""
        with self._lock:
            return self._uid_index.get(uid)

    def by_uid(self, uid: str) -> dict | None:
        """The cached Instance of domain ``uid``."""
        with self._lock:
            key = self._uid_index.get(uid)
            return self._cache.get(key) if key is not None else None

    def queue_uid(self, uid: str) -> None:
        """Queue the Instance of domain ``uid`` (reconciled, so reported,
        soon); a domain the cache knows no Instance of is queued as itself."""
        key = self.key_of_uid(uid)
        self.ctx.queue.add(key if key is not None else (DOMAIN_KEY, uid))

    # ------------------------------------------------------------------
    # Writes
    def store_own_write(self, new: dict) -> None:
        """The Instance as the agent's own write returned it (newer than the
        cached copy, which the watch event will bring later)."""
        key = ob.key(new)
        with self._lock:
            cur = self._cache.get(key)
            if cur is not None and resource_version(new) > resource_version(cur):
                self._cache[key] = new

    def forget_uid(self, uid: str) -> None:
        """The domain ``uid`` is gone from the host."""
        with self._lock:
            self._uid_index.pop(uid, None)

    # ------------------------------------------------------------------
    # The watch
    def run(self) -> None:
        stopping = self.ctx.stopping
        while not stopping.is_set():
            try:
                self._follow(self._relist())
            except KubeError as exc:
                if exc.status != 410:  # 410: the resourceVersion is too old; relist
                    log.warning("instance watch failed: %s %s", exc.status, exc.reason)
                    stopping.wait(1.0)
            except Exception as exc:
                if stopping.is_set():
                    break
                log.warning("instance watch failed: %s", exc)
                stopping.wait(1.0)

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()

    def _query(self) -> tuple[str, dict[str, str]]:
        selector = f"{names.LABEL_HOST}={self.ctx.host}"
        return custom_path(names.INSTANCES), {"labelSelector": selector}

    def _relist(self) -> str:
        """List this host's Instances into the cache (queueing every one that
        appeared, changed or went); the list's resourceVersion."""
        path, query = self._query()
        lst = self.ctx.kube.list_all(path, query)
        fresh = {ob.key(o): o for o in lst.get("items") or []}
        with self._lock:
            old = self._cache
            self._cache = fresh
            for k, o in fresh.items():
                self._uid_index[o["metadata"]["uid"]] = k
        for k in set(old) | set(fresh):
            self.ctx.queue.add(k)
        if not self.synced.is_set():
            log.info("instance watch synced: %d instances on %s", len(fresh), self.ctx.host)
            # Look at every domain on the host now, not at the first
            # periodic resync: a domain whose Instance was evacuated (or
            # deleted) while this agent was away must not run on.
            self.ctx.queue.add(RESYNC_KEY)
        self.synced.set()
        return lst["metadata"]["resourceVersion"]

    def _follow(self, rv: str) -> None:
        """Follow the watch from ``rv`` until it ends (then relist)."""
        path, query = self._query()
        self._stream = self.ctx.kube.watch(
            path, {**query, "resourceVersion": rv, "allowWatchBookmarks": "true"},
            timeout_seconds=300)
        for ev in self._stream:
            if self.ctx.stopping.is_set():
                break
            typ, obj = str(ev.get("type")), ev.get("object") or {}
            if typ == "ERROR":
                log.info("watch error %s; relisting", obj.get("message"))
                break
            if typ != "BOOKMARK":
                self._event(typ, obj)

    def _event(self, typ: str, obj: dict) -> None:
        k = ob.key(obj)
        if typ in ("ADDED", "DELETED"):
            self.membership_changed.set()
        with self._lock:
            if typ == "DELETED":
                self._cache.pop(k, None)
            else:
                cur = self._cache.get(k)
                # Our own writes land in the cache at once; an older event
                # arriving after them must not undo it.
                if cur is None or resource_version(obj) >= resource_version(cur) or (
                    ob.uid(cur) != ob.uid(obj)
                ):
                    self._cache[k] = obj
                self._uid_index[obj["metadata"]["uid"]] = k
        self.ctx.queue.add(k)
