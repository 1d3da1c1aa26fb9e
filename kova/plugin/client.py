"""The plugin's connection to the cluster: the user's kubeconfig (tokens,
client certificates, exec plugins and OIDC, as :mod:`kova.kube` loads them
for every Kova component), Kova's subresource URLs, and errors worded for
people."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp

from kova.crds.names import (
    APISERVICE_NAME,
    GROUP,
    INSTANCES,
    SUBRESOURCE_API_VERSION,
    SUBRESOURCE_GROUP,
    VERSION,
)
from kova.kube import Credentials, KubeError, SyncKube, WatchStream, instance_path

#: Seconds a request may take: a power action answers once the VM's power
#: state confirms it (the API component's --action-timeout, 120 s).
REQUEST_TIMEOUT = 600.0


class PluginError(Exception):
    """Shown to the user as ``error: <message>``, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def status_message(body: Any, fallback: str) -> str:
    """The message of a Kubernetes Status body (raw, or parsed as
    :class:`~kova.kube.KubeError` holds it), else ``fallback``."""
    if not body:
        return fallback
    try:
        data = body if isinstance(body, dict) else json.loads(body)
    except (ValueError, TypeError):
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
        return text.strip() or fallback
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return fallback


def explain(status: int, body: Any, what: str) -> PluginError:
    """A PluginError for an HTTP error answer to ``what``."""
    message = status_message(body, "")
    if status == 401:
        return PluginError(f"{what}: not logged in (the API server refused the credentials "
                           f"of this kubeconfig){': ' + message if message else ''}")
    if status == 404 and "the server could not find the requested resource" in message:
        return PluginError(f"{what}: this cluster serves no {SUBRESOURCE_GROUP} API: is "
                           "Kova's API component installed (kubectl get apiservice "
                           f"{APISERVICE_NAME})?")
    if status == 503 and not message:
        message = "Kova's API component is not available"
    return PluginError(f"{what}: {message or f'HTTP {status}'}")


class Cluster:
    """The API server of the user's kubeconfig (``context``), and the
    namespace to use (the flag, else the context's, else ``default``)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 namespace: str | None = None) -> None:
        try:
            self.creds = Credentials.load(kubeconfig, context)
        except Exception as exc:  # noqa: BLE001 - any loader error is the user's to fix
            raise PluginError(f"cannot load the kubeconfig: {exc}") from None
        self.namespace = namespace or self.creds.namespace or "default"
        self._kube: SyncKube | None = None

    @property
    def kube(self) -> SyncKube:
        if self._kube is None:
            self._kube = SyncKube(self.creds, timeout=REQUEST_TIMEOUT)
        return self._kube

    def close(self) -> None:
        if self._kube is not None:
            self._kube.close()

    # ---------------------------------------------------------------- paths
    @staticmethod
    def instance_path(namespace: str, name: str) -> str:
        return instance_path(namespace, name)

    @staticmethod
    def subresource_path(namespace: str, name: str, sub: str) -> str:
        return (f"/apis/{SUBRESOURCE_API_VERSION}/namespaces/{namespace}/{INSTANCES}/"
                f"{name}/{sub}")

    # ---------------------------------------------------------------- requests
    def _unreachable(self, what: str, exc: Exception) -> PluginError:
        return PluginError(f"{what}: cannot reach the API server at {self.creds.server}: "
                           f"{exc}")

    def request(self, method: str, path: str, what: str, *,
                query: dict | None = None, json_body: Any = None) -> Any:
        """An HTTP request with the kubeconfig's credentials: the parsed JSON
        answer (202 Accepted too: a snapshot runs on after it), or a PluginError
        worded for the user.  A PATCH is a merge patch of ``json_body``."""
        try:
            if method == "PATCH":
                return self.kube.merge_patch(path, json_body)
            return self.kube.request(method, path, params=query, ok=(200, 201, 202))
        except KubeError as exc:
            raise explain(exc.status, exc.body, what) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(what, exc) from None

    def stream(self, path: str, what: str, query: dict | None = None) -> Iterator[bytes]:
        """A GET whose body is read as it comes (a followed console log)."""
        chunks = self.kube.stream(path, query)
        try:
            yield from chunks
        except KubeError as exc:
            raise explain(exc.status, exc.body, what) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(what, exc) from None
        finally:
            chunks.stop()

    def get_instance(self, namespace: str, name: str) -> dict:
        return self.request("GET", self.instance_path(namespace, name),
                            f"instance {namespace}/{name}")

    def instances(self, namespace: str, name: str, wake: float) -> Iterator[dict]:
        """Instance ``namespace/name`` now, then again each time it changes
        (a watch of that one Instance, started again after the server ends
        it), and at least every ``wake`` seconds (the latest seen).  Where
        the watch is refused (a role with ``get`` but not ``watch``) or
        breaks, it is read every ``wake`` seconds instead.  A PluginError
        once the Instance is gone."""
        current = self.get_instance(namespace, name)
        yield current
        watching = True
        while True:
            if watching:
                try:
                    yield from self._changes(namespace, name, current, wake)
                except (KubeError, aiohttp.ClientError, OSError, TimeoutError):
                    watching = False  # read it every ``wake`` seconds from now on
            else:
                time.sleep(wake)
            current = self.get_instance(namespace, name)
            yield current

    def _changes(self, namespace: str, name: str, inst: dict, wake: float) -> Iterator[dict]:
        """One watch of the Instance from ``inst``'s resourceVersion: each
        new state, or ``inst`` again after ``wake`` seconds of silence; ends
        with the watch (the server closed it, or the version expired)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{INSTANCES}"
        stream = self.kube.watch(path, {"fieldSelector": f"metadata.name={name}",
                                        "resourceVersion": inst["metadata"]["resourceVersion"]})
        try:
            while True:
                item = stream.get(wake)
                if item is WatchStream.ENDED:
                    return
                kind = (item or {}).get("type")
                if kind == "DELETED":
                    raise PluginError(f"instance {namespace}/{name} was deleted")
                if kind == "ERROR":
                    return  # e.g. 410 Gone: read it again and watch from there
                if kind in ("ADDED", "MODIFIED"):
                    inst = item["object"]
                yield inst
        finally:
            stream.stop()

    # ---------------------------------------------------------------- websockets
    def headers(self) -> dict[str, str]:
        token = self.creds.bearer()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def sslopt(self) -> dict[str, Any]:
        """websocket-client's TLS options from the kubeconfig."""
        creds = self.creds
        opt: dict[str, Any] = {"cert_reqs": ssl.CERT_NONE if creds.insecure
                               else ssl.CERT_REQUIRED, "check_hostname": not creds.insecure}
        if creds.ca_file:
            opt["ca_certs"] = creds.ca_file
        if creds.cert_file:
            opt["certfile"] = creds.cert_file
        if creds.key_file:
            opt["keyfile"] = creds.key_file
        return opt

    def websocket(self, path: str, what: str, query: dict | None = None) -> Any:
        """A connected websocket (websocket-client) to ``path``; a refused
        handshake becomes a PluginError with the API's own message."""
        import websocket

        url = self.creds.server.replace("https://", "wss://", 1).replace(
            "http://", "ws://", 1) + path + (f"?{urlencode(query)}" if query else "")
        headers = [f"{k}: {v}" for k, v in self.headers().items()]
        try:
            return websocket.create_connection(url, header=headers, sslopt=self.sslopt(),
                                               enable_multithread=True, timeout=30,
                                               skip_utf8_validation=True)
        except websocket.WebSocketBadStatusException as exc:
            raise explain(exc.status_code, exc.resp_body, what) from None
        except (websocket.WebSocketException, OSError) as exc:
            raise PluginError(f"{what}: cannot connect through the API server at "
                              f"{self.creds.server}: {exc}") from None
