"""Adding and removing an object's finalizers, safely against concurrent
writers: the patch is guarded by the resourceVersion (another writer's
finalizer is never lost) and retried after a conflict with the object read
again.  A new object under the same name (another uid) is never touched."""

from __future__ import annotations

from collections.abc import Iterable

from kova.crds import objects as ob
from kova.kube import Kube, KubeError


async def update(kube: Kube, path: str, obj: dict, *, add: Iterable[str] = (),
                 remove: Iterable[str] = (), retries: int = 10) -> dict:
    """``obj`` (at ``path``) with the finalizers ``add`` present and ``remove``
    absent, as the API server has it afterwards.  Returns ``obj`` unchanged
    when it is gone (404), and the current object when it was replaced by
    another with the same name."""
    add, remove = list(add), set(remove)
    uid = ob.uid(obj)

    def change(current: dict) -> dict | None:
        if ob.uid(current) != uid:
            return None  # a new object under the same name: not ours to touch
        have = ob.finalizers(current)
        want = [f for f in have if f not in remove] + [f for f in add if f not in have]
        return None if want == have else {"metadata": {"finalizers": want}}

    try:
        return await kube.patch_guarded(path, obj, change, retries=retries)
    except KubeError as exc:
        if exc.status == 404:
            return obj
        raise


async def add(kube: Kube, path: str, obj: dict, finalizer: str) -> dict:
    """Add ``finalizer`` (see :func:`update`)."""
    if finalizer in ob.finalizers(obj):
        return obj
    return await update(kube, path, obj, add=[finalizer])


async def remove(kube: Kube, path: str, obj: dict, finalizer: str) -> dict:
    """Remove ``finalizer`` (see :func:`update`).  The object is read afresh
    first: a cached copy may predate the finalizer being added."""
    current = await kube.get_or_none(path)
    if current is None:
        return obj
    if ob.uid(current) != ob.uid(obj):
        return current
    return await update(kube, path, current, remove=[finalizer])
