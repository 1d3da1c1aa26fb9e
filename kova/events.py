"""Kubernetes Events about Kova's objects (what ``kubectl describe`` shows).

One body for every component: the involved object, type (Normal or
Warning), reason, a message cut to the API's 1 KiB, the reporting component
and, for the agent, its host.  Posting is best effort: a failure is logged at
debug level and never fails a reconcile.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kova.conditions import now_rfc3339
from kova.crds.names import API_VERSION

if TYPE_CHECKING:
    from kova.kube import Kube

LOG = logging.getLogger("kova.events")

NORMAL = "Normal"
WARNING = "Warning"
MAX_MESSAGE = 1024


def event_body(obj: dict, type_: str, reason: str, message: str, *, component: str,
               host: str | None = None) -> dict[str, Any]:
    """The core/v1 Event about ``obj`` (an object as the API server returned
    it; a cluster-scoped object's Events go to namespace ``default``)."""
    meta = obj.get("metadata") or {}
    now = now_rfc3339()
    source: dict[str, str] = {"component": component}
    if host:
        source["host"] = host
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name') or 'kova'}.",
                     "namespace": meta.get("namespace") or "default"},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion") or API_VERSION,
            "kind": obj.get("kind") or "Instance",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": component,
    }


async def post(kube: Kube, obj: dict, type_: str, reason: str, message: str, *,
               component: str, host: str | None = None) -> None:
    """Post an Event about ``obj``; errors are logged, never raised."""
    body = event_body(obj, type_, reason, message, component=component, host=host)
    try:
        await kube.create(f"/api/v1/namespaces/{body['metadata']['namespace']}/events", body)
    except Exception as exc:  # noqa: BLE001 - Events are best effort
        LOG.debug("event %s about %s not posted: %s", reason,
                  (obj.get("metadata") or {}).get("name"), exc)
