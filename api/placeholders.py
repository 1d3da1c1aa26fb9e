"""A snapshot's TenantImage from the request on, as Glance shows a snapshot's
image at once (queued, saving, then active).

At the request the API component creates the TenantImage with ``spec.saving``
set and no source yet (owned by nobody; annotated with the Instance and the
request), its status ``Available=False``, reason ``Saving``: ``kubectl get
timg`` shows it, a second snapshot to the same name is refused at once (409),
and Instances of it wait (``ImageSaving``).  The image store fills that very
object (its uid travels with the snapshot) once the file is stored: source,
sha256, minDiskGiB, ``saving`` removed.  A snapshot that fails for good
marks it failed (``Available=False``, reason ``SnapshotFailed``), as Glance
marks a snapshot image ``killed``: no Kova component may delete objects, so
its owner deletes it to free the name.  See docs/images.md."""

from __future__ import annotations

import logging

import aiohttp

from kova.conditions import now_rfc3339
from kova.crds import names
from kova.kube import Kube, KubeError, custom_path

log = logging.getLogger("kova.api.snapshots")

#: The field manager of the placeholder's status (the store's own takes
#: Available over once the file is stored).
FIELD_MANAGER = "kova-api"


def body(inst: dict, image: str, req: str, user: str, source: dict | None = None) -> dict:
    """The TenantImage ``image`` of Instance ``inst``'s snapshot ``req``,
    saving, with the ``properties`` of ``source`` (the Image or TenantImage
    the Instance boots from, None when it is gone), as a Nova snapshot
    inherits its instance's image properties: the copy needs the same disk
    bus, NIC model, firmware, and quiescing (``requireQuiesce``)."""
    md = inst["metadata"]
    spec: dict = {"saving": True, "format": "qcow2"}
    properties = ((source or {}).get("spec") or {}).get("properties")
    if properties:
        spec["properties"] = dict(properties)
    return {
        "apiVersion": names.API_VERSION, "kind": names.ImageKind.TENANT_IMAGE.value,
        "metadata": {"name": image, "namespace": md["namespace"], "annotations": {
            names.ANNOTATION_SNAPSHOT_OF: f"{md['namespace']}/{md['name']}",
            names.ANNOTATION_SNAPSHOT_REQUEST: req,
            f"{names.GROUP}/requested-by": user[:1024]}},
        "spec": spec,
    }


def saving_status(obj: dict, inst: dict, req: str) -> dict:
    """The server-side apply of a placeholder's status: not Available, Saving."""
    md = inst["metadata"]
    return {
        "apiVersion": names.API_VERSION, "kind": names.ImageKind.TENANT_IMAGE.value,
        "metadata": {"name": obj["metadata"]["name"], "namespace": md["namespace"]},
        "status": {"observedGeneration": obj["metadata"].get("generation", 1), "conditions": [{
            "type": "Available", "status": "False", "reason": names.IMAGE_REASON_SAVING,
            "message": f"being saved by a snapshot of instance {md['namespace']}/{md['name']} "
                       f"({req}); stored once the copy is uploaded",
            "lastTransitionTime": now_rfc3339()}]},
    }


def is_placeholder_of(obj: dict | None, req: str) -> bool:
    """Whether ``obj`` is still the saving TenantImage of snapshot ``req``."""
    if not obj:
        return False
    notes = obj["metadata"].get("annotations") or {}
    return bool((obj.get("spec") or {}).get("saving")) and \
        notes.get(names.ANNOTATION_SNAPSHOT_REQUEST) == req


async def create(kube: Kube, inst: dict, image: str, req: str, user: str,
                 source: dict | None = None) -> dict:
    """Create the saving TenantImage (KubeError 409 when the name is taken),
    with ``source``'s properties (:func:`body`), and write its status (best
    effort: the object is what counts)."""
    ns = inst["metadata"]["namespace"]
    obj = await kube.create(custom_path(names.TENANT_IMAGES, namespace=ns),
                            body(inst, image, req, user, source))
    try:
        await kube.apply(custom_path(names.TENANT_IMAGES, image, namespace=ns,
                                     subresource="status"),
                         saving_status(obj, inst, req), field_manager=FIELD_MANAGER)
    except KubeError as exc:
        log.warning("TenantImage %s/%s: status Saving not written: %s", ns, image, exc)
    return obj


async def mark_failed(kube: Kube, inst: dict, image: str, req: str, uid: str,
                      message: str) -> bool:
    """Mark the TenantImage ``image`` failed (``Available=False``, reason
    ``SnapshotFailed``) if it is still snapshot ``req``'s saving one of uid
    ``uid``; whether it was.  It stays (no Kova component deletes objects):
    its owner deletes it to use the name again.  Errors are logged."""
    ns = inst["metadata"]["namespace"]
    path = custom_path(names.TENANT_IMAGES, image, namespace=ns)
    try:
        obj = await kube.get_or_none(path)
        if not is_placeholder_of(obj, req) or obj["metadata"]["uid"] != uid:
            return False
        await kube.apply(path + "/status", failed_status(obj, inst, req, message),
                         field_manager=FIELD_MANAGER)
        return True
    except (KubeError, aiohttp.ClientError, OSError) as exc:
        log.warning("TenantImage %s/%s of the failed snapshot %s not marked failed: %s", ns,
                    image, req, exc)
        return False


def failed_status(obj: dict, inst: dict, req: str, message: str) -> dict:
    """The status of a snapshot's TenantImage whose snapshot failed for good."""
    out = saving_status(obj, inst, req)
    md = inst["metadata"]
    out["status"]["conditions"][0].update(
        reason=names.IMAGE_REASON_SNAPSHOT_FAILED,
        message=(f"the snapshot of instance {md['namespace']}/{md['name']} failed ({req}): "
                 f"{message}"[:900] + "; no file was stored: delete this TenantImage to use "
                 "its name again"))
    return out
