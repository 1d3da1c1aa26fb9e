"""The image store's finalizer: a file in the store goes when its Image or
TenantImage goes.

Every Image and TenantImage the store creates carries the finalizer
``kova.dev/image-store``.  Deleting one (``kubectl delete timg``, or deleting
its namespace, whose TenantImages the namespace controller deletes) only sets
its ``deletionTimestamp``; the store, which watches both kinds, removes the
file and then the finalizer, and the API server lets the object go.  So an
object and its file end together, and a store that is down holds the
deletion until it is back (it handles deletions it missed when it starts: the
first list of each kind shows them).  When it starts the store also

* adds the finalizer to its own objects made before it had one (``source.url``
  this store's URL of the object);
* warns of files no Image or TenantImage names (deleted before the store
  had its finalizer, or a crash between the file and the object); it does
  not remove them -- a store pointed at the wrong cluster must not lose its
  files -- ``DELETE /v1/images/<name>`` does.

Without the store (uninstalled), remove the finalizer by hand:
``kubectl patch timg NAME --type=merge -p '{"metadata":{"finalizers":null}}'``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kova.crds import names
from kova.images.store import ImageStore, StoreError
from kova.kube import Kube, KubeError, custom_path

log = logging.getLogger("kova.images.reaper")

FINALIZER = f"{names.GROUP}/image-store"
#: Seconds between two tries after the API server failed a list or watch.
RETRY_SECONDS = 5.0


class Reaper:
    def __init__(self, kube: Kube, store: ImageStore,
                 url_of: Callable[[str, str | None], str],
                 uploading: set[tuple[str, str | None]]) -> None:
        self.kube = kube
        self.store = store
        #: The store's URL of Image ``name`` (TenantImage ``name`` of a namespace).
        self.url_of = url_of
        #: (name, namespace) of the uploads under way (their object comes last).
        self.uploading = uploading

    async def run(self) -> None:
        """Sweep once, then follow both kinds until cancelled."""
        while True:
            try:
                await self.sweep()
                break
            except KubeError as exc:
                log.warning("cannot list the images (%s); trying again in %.0fs", exc,
                            RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)
        await asyncio.gather(*(self.follow(plural)
                               for plural in (names.IMAGES, names.TENANT_IMAGES)))

    async def sweep(self) -> None:
        """Handle every object as it is; warn of the files nothing names.
        The files are listed first: a file stored later, or one whose upload
        is under way, is not looked at (its object may not exist yet)."""
        files = [n for n in self.store.names() if n not in self.uploading]
        named: set[tuple[str, str | None]] = set()
        for plural in (names.IMAGES, names.TENANT_IMAGES):
            for obj in (await self.kube.list_all(custom_path(plural)))["items"]:
                md = obj["metadata"]
                named.add((md["name"], md.get("namespace")))
                await self.handle(plural, obj)
        for name, namespace in files:
            if (name, namespace) not in named:
                where = f"/v1/namespaces/{namespace}/images/{name}" if namespace else \
                    f"/v1/images/{name}"
                log.warning("the store holds the file of %s, which does not exist; it is kept "
                            "(a store pointed at the wrong cluster must not lose files): "
                            "DELETE %s removes it", _what(name, namespace), where)

    async def follow(self, plural: str) -> None:
        """Watch ``plural`` (from a fresh list after every end or error)."""
        while True:
            try:
                body = await self.kube.list_all(custom_path(plural))
                for obj in body["items"]:
                    await self.handle(plural, obj)
                rv = body["metadata"].get("resourceVersion")
                async for event in self.kube.watch(custom_path(plural),
                                                   {"resourceVersion": rv,
                                                    "allowWatchBookmarks": "true"}):
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        await self.handle(plural, event["object"])
                    elif event.get("type") == "ERROR":
                        break  # expired: list again
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a watch ends; follow again
                log.warning("watch of %s ended (%s); again in %.0fs", plural, exc,
                            RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)

    async def handle(self, plural: str, obj: dict) -> None:
        md = obj["metadata"]
        name, namespace = md["name"], md.get("namespace")
        finalizers = list(md.get("finalizers") or [])
        path = custom_path(plural, name, namespace=namespace)
        if md.get("deletionTimestamp"):
            if FINALIZER not in finalizers:
                return
            try:
                removed = self.store.delete(name, namespace)
            except StoreError as exc:  # a name the store cannot hold: no file
                log.warning("%s: %s", _what(name, namespace), exc.message)
                removed = False
            rest = [f for f in finalizers if f != FINALIZER]
            if await self._finalizers(path, finalizers, rest):
                log.info("%s deleted%s", _what(name, namespace),
                         ": its file is removed from the store" if removed else "")
            return
        url = ((obj.get("spec") or {}).get("source") or {}).get("url")
        if FINALIZER not in finalizers and url == self.url_of(name, namespace):
            await self._finalizers(path, finalizers, [*finalizers, FINALIZER])

    async def _finalizers(self, path: str, old: list[str], new: list[str]) -> bool:
        """Replace the object's finalizers ``old`` by ``new`` (only if they
        are still ``old``); whether that was written."""
        ops = [{"op": "test", "path": "/metadata/finalizers", "value": old},
               {"op": "replace", "path": "/metadata/finalizers", "value": new}]
        if not old:
            ops = [{"op": "add", "path": "/metadata/finalizers", "value": new}]
        try:
            await self.kube.json_patch(path, ops)
            return True
        except KubeError as exc:
            if exc.status not in (404, 409, 422):  # gone, or changed: the next event
                log.warning("%s: finalizers not written: %s", path, exc)
            return False


def _what(name: str, namespace: str | None) -> str:
    return f"TenantImage {namespace}/{name}" if namespace else f"Image {name}"
