"""Discovery documents of the subresource API group (what the API
server's aggregator and kubectl read), the subresources and their verbs, and
the Kubernetes ``Status`` error body."""

from __future__ import annotations

from typing import Any

from kova.crds.names import SUBRESOURCE_API_VERSION, SUBRESOURCE_GROUP, SUBRESOURCE_VERSION

#: Subresource of ``instances`` -> (HTTP method, RBAC verb).
SUBRESOURCES: dict[str, tuple[str, str]] = {
    "console": ("GET", "get"),
    "vnc": ("GET", "get"),
    "log": ("GET", "get"),
    "start": ("PUT", "update"),
    "stop": ("PUT", "update"),
    "restart": ("PUT", "update"),
    "reboot": ("PUT", "update"),
    "pause": ("PUT", "update"),
    "unpause": ("PUT", "update"),
    "resize-confirm": ("PUT", "update"),
    "resize-revert": ("PUT", "update"),
    "migrate": ("PUT", "update"),
    "snapshot": ("PUT", "update"),
    "eject": ("PUT", "update"),
}
POWER_ACTIONS = ("start", "stop", "restart", "reboot", "pause", "unpause")


def api_group() -> dict[str, Any]:
    version = {"groupVersion": SUBRESOURCE_API_VERSION, "version": SUBRESOURCE_VERSION}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": SUBRESOURCE_GROUP,
            "versions": [version], "preferredVersion": version}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]}


def api_resource_list() -> dict[str, Any]:
    """Only ``instances/<subresource>`` entries: the Instances themselves are
    ``kova.dev`` objects, so kubectl never takes this group for their home."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": SUBRESOURCE_API_VERSION,
        "resources": [
            {"name": f"instances/{sub}", "singularName": "", "namespaced": True,
             "kind": "Instance", "verbs": [verb]}
            for sub, (_method, verb) in SUBRESOURCES.items()
        ],
    }


def openapi_v2() -> dict[str, Any]:
    return {"swagger": "2.0", "info": {"title": "Kova subresources",
                                       "version": SUBRESOURCE_VERSION}, "paths": {}}


def openapi_v3_index() -> dict[str, Any]:
    return {"paths": {}}


HTTP_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                405: "MethodNotAllowed", 409: "Conflict", 500: "InternalError",
                501: "NotImplemented",
                503: "ServiceUnavailable", 504: "Timeout"}


def status(code: int, message: str, *, kova_reason: str | None = None,
           name: str | None = None, subresource: str | None = None) -> dict[str, Any]:
    """A ``metav1.Status`` failure, as the Kubernetes API answers errors;
    Kova's own reason (NotRunning, ConsoleBusy, ...) in details.causes."""
    body: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": HTTP_REASONS.get(code, "Unknown"), "code": code,
    }
    details: dict[str, Any] = {}
    if name:
        details.update(name=name, group=SUBRESOURCE_GROUP, kind="instances")
    if kova_reason:
        details["causes"] = [{"reason": kova_reason, "message": message,
                              **({"field": subresource} if subresource else {})}]
    if details:
        body["details"] = details
    return body
