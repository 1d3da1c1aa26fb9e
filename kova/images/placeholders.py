"""A snapshot's TenantImage filled once its file is stored.

Kova's API component creates a snapshot's TenantImage at the request, with
``spec.saving`` set and no source (see docs/images.md, "Snapshots"); the
agent's upload names that object's uid (``placeholder=<uid>``).  Once the
file is stored and verified, the store fills that very object in one JSON
patch -- source, sha256, format, minDiskGiB, its finalizer and annotations,
``saving`` removed -- tested against its uid and ``saving`` on the API
server, so an object deleted (and perhaps created again under the same name)
meanwhile is never filled: the upload is refused and its file removed.
"""

from __future__ import annotations

import dataclasses

from kova.crds import names
from kova.images.store import StoreError
from kova.kube import Kube, KubeError, custom_path


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where an upload comes from: the Instance it is a snapshot of
    (``<namespace>/<name>``) and the uid of the TenantImage created saving
    for it."""

    snapshot_of: str | None = None
    placeholder: str | None = None


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _gone(namespace: str, name: str, why: str) -> StoreError:
    return StoreError(409, "ImageDeleted",
                      f"TenantImage {namespace}/{name} {why} while its snapshot was saved: "
                      "the upload is discarded")


def fill_ops(current: dict, uid: str, spec: dict, annotations: dict[str, str],
             finalizer: str) -> list[dict]:
    """The JSON patch that fills ``current`` (the placeholder as read):
    tested against its uid and ``saving`` where the API server applies it."""
    md = current["metadata"]
    ops: list[dict] = [{"op": "test", "path": "/metadata/uid", "value": uid},
                       {"op": "test", "path": "/spec/saving", "value": True},
                       {"op": "remove", "path": "/spec/saving"}]
    ops += [{"op": "add", "path": f"/spec/{key}", "value": value}
            for key, value in spec.items()]
    if md.get("annotations"):
        ops += [{"op": "add", "path": f"/metadata/annotations/{_pointer(k)}", "value": v}
                for k, v in annotations.items()]
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    if finalizer not in (md.get("finalizers") or []):
        ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}
                   if md.get("finalizers") else
                   {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
    return ops


async def fill(kube: Kube, namespace: str, name: str, uid: str, spec: dict,
               annotations: dict[str, str], finalizer: str) -> dict:
    """Fill the saving TenantImage ``namespace/name`` of uid ``uid``; the
    object as filled.  StoreError 409 ``ImageDeleted`` when it is gone,
    another object, or no longer saving."""
    path = custom_path(names.TENANT_IMAGES, name, namespace=namespace)
    current = await kube.get_or_none(path)
    if current is None or current["metadata"].get("uid") != uid:
        raise _gone(namespace, name, "was deleted")
    if not (current.get("spec") or {}).get("saving"):
        raise _gone(namespace, name, "was changed (no longer saving)")
    try:
        return await kube.json_patch(path, fill_ops(current, uid, spec, annotations,
                                                    finalizer))
    except KubeError as exc:
        if exc.status == 404:
            raise _gone(namespace, name, "was deleted") from None
        if exc.status in (409, 422) and await _replaced(kube, path, uid):
            raise _gone(namespace, name, "was deleted or changed") from None
        raise


async def _replaced(kube: Kube, path: str, uid: str) -> bool:
    """Whether the placeholder is no longer there as it was (a failed test)."""
    now = await kube.get_or_none(path)
    return (now is None or now["metadata"].get("uid") != uid
            or not (now.get("spec") or {}).get("saving"))
