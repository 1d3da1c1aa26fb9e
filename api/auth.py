"""Who is asking, and may they: request-header authentication and
SubjectAccessReview authorization, as every aggregated API server does.

The Kubernetes API server authenticates the user (token, certificate,
OIDC...), checks RBAC for ``instances/<subresource>`` in the group
``subresources.kova.dev``, then proxies the request here over TLS,
presenting its front-proxy client certificate and naming the user in the
``X-Remote-User`` / ``X-Remote-Group`` / ``X-Remote-Extra-*`` headers.  This
component believes those headers only on a connection whose client
certificate was signed by the request-header CA and carries one of the
allowed names; anything else is 401.  It then asks the API server again
(SubjectAccessReview), so a request that reached it any other way still
needs the user's permission.

The CA, allowed names and header names come from the ConfigMap
``kube-system/extension-apiserver-authentication`` that the API server
publishes (flags override).
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from typing import Any
from urllib.parse import unquote

from multidict import CIMultiDictProxy

from kova.crds.names import SUBRESOURCE_GROUP, SUBRESOURCE_VERSION

CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"


class Unauthenticated(Exception):
    """The request did not come from the API server's front proxy."""


@dataclasses.dataclass(frozen=True)
class RequestHeaderConfig:
    client_ca: str  # PEM
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)

    @classmethod
    def from_configmap(cls, cm: dict) -> RequestHeaderConfig:
        data = cm.get("data") or {}
        ca = data.get("requestheader-client-ca-file")
        if not ca:
            raise ValueError(
                "the API server publishes no requestheader-client-ca-file in "
                "kube-system/extension-apiserver-authentication: it was started without "
                "--requestheader-client-ca-file, so it cannot proxy users to aggregated APIs")

        def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = data.get(key)
            return tuple(json.loads(raw)) if raw else default

        return cls(
            client_ca=ca,
            allowed_names=names("requestheader-allowed-names", ()),
            username_headers=names("requestheader-username-headers", ("X-Remote-User",)),
            group_headers=names("requestheader-group-headers", ("X-Remote-Group",)),
            extra_prefixes=names("requestheader-extra-headers-prefix", ("X-Remote-Extra-",)),
        )

    def apply_to(self, ctx: ssl.SSLContext) -> None:
        """Ask for (but do not require) a client certificate signed by the
        request-header CA: one signed by another CA fails the handshake, none
        at all gets 401 from :func:`authenticate`."""
        ctx.load_verify_locations(cadata=self.client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def peer_common_name(peercert: dict | None) -> str | None:
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def authenticate(peercert: dict | None, headers: CIMultiDictProxy[str],
                 cfg: RequestHeaderConfig) -> User:
    """The user the API server's front proxy names in ``headers``, provided
    the connection's (verified) client certificate is the front proxy's."""
    if not peercert:
        raise Unauthenticated("no client certificate: Kova's subresource API serves only "
                              "requests proxied by the Kubernetes API server")
    cn = peer_common_name(peercert)
    if cfg.allowed_names and cn not in cfg.allowed_names:
        raise Unauthenticated(f"client certificate {cn!r} is not an allowed front proxy")
    name = next((v for h in cfg.username_headers for v in headers.getall(h, []) if v), "")
    if not name:
        raise Unauthenticated("the request names no user")
    groups = tuple(v for h in cfg.group_headers for v in headers.getall(h, []))
    extra: dict[str, list[str]] = {}
    for header, value in headers.items():
        for prefix in cfg.extra_prefixes:
            if header.lower().startswith(prefix.lower()):
                key = unquote(header[len(prefix):]).lower()
                extra.setdefault(key, []).append(value)
    return User(name=name, groups=groups, extra=extra)


def access_review(user: User, *, verb: str, namespace: str, name: str,
                  subresource: str, group: str | None = None) -> dict[str, Any]:
    """The SubjectAccessReview body for ``verb`` on ``instances/<subresource>``
    of ``group`` (default Kova's subresource group)."""
    return resource_review(user, verb=verb, namespace=namespace,
                           group=group or SUBRESOURCE_GROUP,
                           version=SUBRESOURCE_VERSION if group is None else "",
                           resource="instances", name=name, subresource=subresource)


def resource_review(user: User, *, verb: str, namespace: str, group: str, resource: str,
                    name: str, version: str = "", subresource: str = "") -> dict[str, Any]:
    """The SubjectAccessReview body for ``verb`` on ``<resource>`` of ``group``."""
    attributes = {"namespace": namespace, "verb": verb, "group": group,
                  "resource": resource, "name": name}
    if version:
        attributes["version"] = version
    if subresource:
        attributes["subresource"] = subresource
    spec: dict[str, Any] = {"user": user.name, "groups": list(user.groups),
                            "resourceAttributes": attributes}
    if user.extra:
        spec["extra"] = user.extra
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": spec}
