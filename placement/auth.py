"""Authentication: who may call which method.

``X-Auth-Token`` (or ``Authorization: Bearer``) is checked against a static
token file; a token has the role ``admin`` (everything) or ``reader``
(``GET`` only).  The token file is plain text, one token per line::

    # role   token
    admin    s3cret-admin-token
    reader   s3cret-read-only-token

A missing or unknown token is a 401, a reader calling a write method a 403.
``NoAuth`` (``--no-auth``) lets everything through, for local development.
``TokenReviewAuth`` asks the Kubernetes API (TokenReview) whether a service
account bearer token is valid and maps service accounts to roles.

For an OpenStack cloud, two strategies take the caller's identity as
OpenStack Placement does and check every action against the policy rules
(``kova.placement.policy``): ``KeystoneAuth`` trusts the headers that
keystonemiddleware's auth_token sets after validating the token
(``X-Identity-Status``, ``X-User-Id``, ``X-Project-Id``, ``X-Roles``,
``OpenStack-System-Scope``), so it must only be reachable through that
middleware; ``NoAuth2`` is OpenStack's ``noauth2`` development mode (the
token is ``user`` or ``user:project``, ``admin`` gets the admin role, roles
may be given in ``X-Roles``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kova.placement import errors
from kova.placement.policy import ACTIONS, Credentials, Enforcer

LOG = logging.getLogger("kova.placement.auth")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The audience a service-account token must be issued for (TokenReview
#: mode): a projected token requested for Placement, not a pod's default one.
DEFAULT_AUDIENCE = "kova-placement"
ROLES = ("admin", "reader")
#: TokenReview mode: a hypervisor agent, kept to its own node's provider tree
#: (:mod:`kova.placement.agentpolicy`).
AGENT = "agent"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"


def _token_from(req) -> str | None:
    token = req.headers.get("x-auth-token")
    if token:
        return token.strip()
    authz = req.headers.get("authorization", "")
    if authz.lower().startswith("bearer "):
        return authz[7:].strip()
    return None


class Authenticator:
    def role_for(self, token: str) -> str | None:
        raise NotImplementedError

    def identity_for(self, token: str) -> tuple[str | None, str | None]:
        """(role, node): the node of an agent's token, else None."""
        return self.role_for(token), None

    def identify(self, req) -> None:
        """Before routing: who is asking (401 here comes before a 404)."""

    def check(self, req) -> None:
        token = _token_from(req)
        if not token:
            raise errors.Unauthorized(
                "The request you have made requires authentication.")
        role, node = self.identity_for(token)
        if role is None:
            raise errors.Unauthorized(
                "The request you have made requires authentication.")
        req.role = role
        if role == AGENT:
            if not node:
                from kova.placement.agentpolicy import AGENT_FORBIDDEN

                err = errors.Forbidden(
                    "An agent's token must be bound to a pod on a node (a projected "
                    "service-account token); this one names no node.", code=AGENT_FORBIDDEN)
                err.always_code = True  # type: ignore[attr-defined]
                raise err
            req.agent_node = node  # checked against the provider tree after routing
            return
        if role != "admin" and req.method not in READ_METHODS:
            raise errors.Forbidden(
                "Policy does not allow this operation to be performed by a "
                "read-only token.")


class PolicyAuth(Authenticator):
    """Identity from the request, then the policy rule of the route."""

    def __init__(self, enforcer: Enforcer) -> None:
        self.enforcer = enforcer

    def credentials(self, req) -> Credentials:
        raise NotImplementedError

    def identify(self, req) -> None:
        # As OpenStack's auth middleware: before the microversion and the
        # route are looked at, for every path but the version document.
        if req.path != "/":
            req.credentials = self.credentials(req)

    def check(self, req) -> None:
        creds = req.credentials or self.credentials(req)
        req.credentials = creds
        req.role = "admin"
        action = ACTIONS.get((req.route_name, req.method))
        if action is None:
            return
        target = None
        if action == "placement:usages":
            target = {"project_id": req.get("project_id")}
        self.enforcer.authorize(action, creds, target)


def _roles(value: str | None) -> list[str]:
    return [r.strip() for r in (value or "").split(",") if r.strip()]


class KeystoneAuth(PolicyAuth):
    """Behind keystonemiddleware's auth_token: its headers are the identity."""

    def credentials(self, req) -> Credentials:
        h = req.headers
        user = h.get("x-user-id") or h.get("x-user")
        if h.get("x-identity-status", "").lower() != "confirmed" or not user:
            raise errors.BareUnauthorized()
        return Credentials(user_id=user,
                           project_id=h.get("x-project-id") or h.get("x-tenant-id"),
                           roles=_roles(h.get("x-roles")),
                           system_scope=h.get("openstack-system-scope") or None)


class NoAuth2(PolicyAuth):
    """OpenStack's noauth2: ``X-Auth-Token: user[:project]``, no validation."""

    def credentials(self, req) -> Credentials:
        h = req.headers
        token = h.get("x-auth-token")
        if token is None:
            raise errors.BareUnauthorized()
        user, _sep, project = token.partition(":")
        project = project or user
        if "x-roles" in h:
            roles = _roles(h["x-roles"])
        else:
            roles = ["admin"] if user == "admin" else []
        system = h.get("openstack-system-scope") or None
        project_id = h.get("x-project-id") or (None if system else project)
        return Credentials(user_id=user, project_id=project_id, roles=roles,
                           system_scope=system)


class NoAuth(Authenticator):
    def check(self, req) -> None:
        req.role = "admin"


def parse_token_file(text: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ROLES:
            raise ValueError(f"token file line {lineno}: expected '<admin|reader> <token>'")
        tokens[parts[1]] = parts[0]
    return tokens


class StaticTokenAuth(Authenticator):
    """Tokens from a file, re-read when its modification time changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            with self._lock:
                self._tokens = parse_token_file(self.path.read_text())
                self._mtime = mtime

    def role_for(self, token: str) -> str | None:
        try:
            self._reload()
        except OSError:
            pass
        for known, role in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return role
        return None


class TokenReviewAuth(Authenticator):
    """Kubernetes service-account tokens verified with the TokenReview API.

    ``roles`` maps ``system:serviceaccount:<ns>:<name>`` usernames to a role
    (``admin``, ``reader`` or ``agent``); ``default_role`` applies to other
    authenticated users (None: refuse).  An ``agent`` is known by the node
    of the pod its token is bound to (the TokenReview's
    ``authentication.kubernetes.io/node-name``, or the bound pod's
    ``spec.nodeName`` when the API server gives only the pod) and may write
    only that node's provider tree.  ``static`` (a :class:`StaticTokenAuth`)
    is asked first, without a TokenReview: the operator's admin token beside
    the agents' own tokens.
    A token must be issued for one of ``audiences`` (by default
    ``kova-placement``: a projected service-account token with that
    audience; a pod's default token, valid for every client of the API
    server, is refused).  Verdicts are cached for ``ttl`` seconds, keyed by the token's SHA-256 (the
    cache holds no token), at most ``max_entries`` of them (so a flood of
    made-up tokens cannot grow it without bound).  When the API server cannot
    be asked the request is a 503, logged without the token.
    """

    def __init__(self, kube, roles: dict[str, str], default_role: str | None = None,
                 audiences: Sequence[str] | None = (DEFAULT_AUDIENCE,), ttl: float = 60.0,
                 max_entries: int = 10000, static: StaticTokenAuth | None = None) -> None:
        self.kube = kube  # a kova.kube.SyncKube
        self.static = static
        self.roles = roles
        self.default_role = default_role
        self.audiences = list(audiences or [])
        if not self.audiences:
            LOG.warning("TokenReview without an audience: any token of the API server's own "
                        "audience (every pod's default service-account token) is accepted")
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, tuple[str | None, str | None]]] = {}
        self._lock = threading.Lock()

    def role_for(self, token: str) -> str | None:
        return self.identity_for(token)[0]

    def identity_for(self, token: str) -> tuple[str | None, str | None]:
        if self.static is not None:
            role = self.static.role_for(token)
            if role is not None:
                return role, None
        now = time.monotonic()
        key = hashlib.sha256(token.encode()).hexdigest()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, **({"audiences": self.audiences}
                                            if self.audiences else {})}}
        try:
            review = self.kube.create("/apis/authentication.k8s.io/v1/tokenreviews", body)
        except Exception as exc:  # noqa: BLE001 - API server down, refused, timed out
            status = getattr(exc, "status", None)
            LOG.warning("TokenReview failed (%s%s); answering 503", type(exc).__name__,
                        f" {status}" if status else "")
            raise errors.ServiceUnavailable(
                "The token cannot be verified now: the Kubernetes API did not answer "
                "the TokenReview. Retry later.", headers={"retry-after": "5"}) from None
        identity: tuple[str | None, str | None] = (None, None)
        status = review.get("status") or {}
        if status.get("authenticated") and self._audience_ok(status):
            user = status.get("user") or {}
            role = self.roles.get(user.get("username") or "", self.default_role)
            identity = (role, self._node_of(user) if role == AGENT else None)
        self._remember(key, now, identity)
        return identity

    def _node_of(self, user: dict) -> str | None:
        """The node of the pod an agent's token is bound to."""
        extra = user.get("extra") or {}
        nodes = extra.get(NODE_NAME_EXTRA) or []
        if nodes:
            return nodes[0]
        pods, uids = extra.get(POD_NAME_EXTRA) or [], extra.get(POD_UID_EXTRA) or []
        parts = (user.get("username") or "").split(":")
        if not (pods and uids and len(parts) == 4):
            return None
        try:  # an API server that names the pod but not its node
            pod = self.kube.get_or_none(f"/api/v1/namespaces/{parts[2]}/pods/{pods[0]}")
        except Exception as exc:  # noqa: BLE001
            LOG.warning("reading the agent's pod %s failed: %s", pods[0], type(exc).__name__)
            raise errors.ServiceUnavailable(
                "The agent's pod cannot be read now; retry later.",
                headers={"retry-after": "5"}) from None
        if not pod or (pod.get("metadata") or {}).get("uid") != uids[0]:
            return None
        return (pod.get("spec") or {}).get("nodeName") or None

    def _audience_ok(self, status: dict) -> bool:
        """The API server says for which of the asked audiences the token
        is valid; one of ours must be among them."""
        if not self.audiences:
            return True
        return bool(set(status.get("audiences") or ()) & set(self.audiences))

    def _remember(self, key: str, now: float,
                  role: tuple[str | None, str | None]) -> None:
        with self._lock:
            if len(self._cache) >= self.max_entries:
                for k in [k for k, (exp, _) in self._cache.items() if exp <= now]:
                    del self._cache[k]
                while len(self._cache) >= self.max_entries:
                    del self._cache[next(iter(self._cache))]
            self._cache[key] = (now + self.ttl, role)
