"""A small async Kubernetes REST client (aiohttp) for the writes the operator
makes outside kopf's handlers: status and metadata patches, Events, Lease
lists.  Credentials come from a kubeconfig or the in-cluster service account,
loaded by the official client's config loaders.

aiohttp rather than httpx: measured against the real API server, a PATCH
costs the client ~0.4 ms of CPU with aiohttp and ~4 ms with httpx (its
connection pool and TLS stream layers), and the operator makes two or three
such calls per scheduled Instance (docs/benchmarks.md)."""

from __future__ import annotations

import datetime as dt
import ssl
import time
from dataclasses import dataclass
from typing import Any

import json as jsonlib

import aiohttp

from kova.crds import names
from kova.operator import metrics


class KubeError(Exception):
    def __init__(self, status: int, body: Any, what: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{what}: {status} {body}")


@dataclass
class KubeCredentials:
    server: str
    ca_file: str | None = None
    insecure: bool = False
    token: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> "KubeCredentials":
        from kubernetes import client, config

        cfg = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)
        token = None
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if auth:
            token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
        return cls(server=cfg.host, ca_file=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
                   token=token, cert_file=cfg.cert_file, key_file=cfg.key_file)

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")


def instance_path(namespace: str, name: str) -> str:
    return f"/apis/{names.API_VERSION}/namespaces/{namespace}/instances/{name}"


def host_path(name: str) -> str:
    return f"/apis/{names.API_VERSION}/hosts/{name}"


def lease_path(name: str = "") -> str:
    """A host's heartbeat Lease, or (no name) the list of them."""
    base = f"/apis/coordination.k8s.io/v1/namespaces/{names.LEASE_NAMESPACE}/leases"
    return f"{base}/{name}" if name else base


def error_body(content: bytes) -> Any:
    """An error answer's body: its JSON, else its text."""
    try:
        return jsonlib.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


class LazySession:
    """Holds an aiohttp session that is created on first use, inside the
    running event loop (a session belongs to the loop it was made in), and
    closed with :meth:`close`.  The API-server and Placement clients share it."""

    def __init__(self, headers: dict[str, str], *, timeout: float, max_connections: int,
                 ssl_context: ssl.SSLContext | bool | None) -> None:
        self._headers = headers
        self._timeout = timeout
        self._max_connections = max_connections
        # None: aiohttp's default verification
        self._ssl = True if ssl_context is None else ssl_context
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, method: str, url: str, *, params=None, json: Any = None,
                   content_type: str = "application/json") -> tuple[int, bytes]:
        """One request (``json`` serialised as ``content_type``); its status
        and body."""
        data = headers = None
        if json is not None:
            data = jsonlib.dumps(json)
            headers = {"Content-Type": content_type}
        async with self.session.request(method, url, params=params, data=data,
                                        headers=headers) as resp:
            return resp.status, await resp.read()


class Kube(LazySession):
    def __init__(self, creds: KubeCredentials, *, max_connections: int = 20) -> None:
        headers = {"Accept": "application/json"}
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        self.creds = creds
        self.server = creds.server.rstrip("/")
        super().__init__(headers, timeout=30.0, max_connections=max_connections,
                         ssl_context=creds.ssl_context())

    async def request(self, method: str, path: str, *, json: Any = None, params=None,
                      content_type: str | None = None, ok=(200, 201)) -> Any:
        t0 = time.perf_counter()
        status, content = await self.send(method, self.server + path, params=params, json=json,
                                          content_type=content_type or "application/json")
        metrics.KUBE_SECONDS.labels(verb=method).observe(time.perf_counter() - t0)
        if status not in ok:
            raise KubeError(status, error_body(content), f"{method} {path}")
        return jsonlib.loads(content) if content else None

    async def get(self, path: str, params=None) -> Any:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Any:
        try:
            return await self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def merge_patch(self, path: str, body: dict) -> dict:
        return await self.request("PATCH", path, json=body,
                                  content_type="application/merge-patch+json")

    async def json_patch(self, path: str, ops: list[dict]) -> dict:
        return await self.request("PATCH", path, json=ops,
                                  content_type="application/json-patch+json")

    async def event(self, obj: dict, type_: str, reason: str, message: str,
                    component: str = "kova-operator") -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        now = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'kova')}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", names.API_VERSION),
                "kind": obj.get("kind", "Instance"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
        }
        await self.request("POST", f"/api/v1/namespaces/{ns}/events", json=body)
