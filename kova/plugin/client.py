"""The plugin's connection to the cluster: the user's kubeconfig (tokens,
client certificates, exec plugins and OIDC, as the official client loads
them), Kova's subresource URLs, and errors worded for people."""

from __future__ import annotations

import json
import ssl
from typing import Any
from urllib.parse import urlencode

from kova.crds.common import API_VERSION, SUBRESOURCE_API_VERSION


class PluginError(Exception):
    """Shown to the user as ``error: <message>``, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def status_message(body: bytes | str | None, fallback: str) -> str:
    """The message of a Kubernetes Status body, else ``fallback``."""
    if not body:
        return fallback
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
        return text.strip() or fallback
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return fallback


def explain(status: int, body: bytes | str | None, what: str) -> PluginError:
    """A PluginError for an HTTP error answer to ``what``."""
    message = status_message(body, "")
    if status == 401:
        return PluginError(f"{what}: not logged in (the API server refused the credentials "
                           f"of this kubeconfig){': ' + message if message else ''}")
    if status == 404 and "the server could not find the requested resource" in message:
        return PluginError(f"{what}: this cluster serves no subresources.kova.dev API: is "
                           "Kova's API component installed (kubectl get apiservice "
                           "v1alpha1.subresources.kova.dev)?")
    if status == 503 and not message:
        message = "Kova's API component is not available"
    return PluginError(f"{what}: {message or f'HTTP {status}'}")


class Cluster:
    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 namespace: str | None = None) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            if kubeconfig or not _in_cluster():
                config.load_kube_config(config_file=kubeconfig, context=context,
                                        client_configuration=cfg, persist_config=False)
                ns = namespace or _context_namespace(kubeconfig, context)
            else:
                config.load_incluster_config(client_configuration=cfg)
                ns = namespace or _incluster_namespace()
        except (config.ConfigException, OSError, TypeError) as exc:
            raise PluginError(f"cannot load the kubeconfig: {exc}") from None
        self.cfg = cfg
        self.namespace = ns or "default"
        self.api = client.ApiClient(cfg)

    # ---------------------------------------------------------------- paths
    @staticmethod
    def instance_path(namespace: str, name: str) -> str:
        return f"/apis/{API_VERSION}/namespaces/{namespace}/instances/{name}"

    @staticmethod
    def subresource_path(namespace: str, name: str, sub: str) -> str:
        return (f"/apis/{SUBRESOURCE_API_VERSION}/namespaces/{namespace}/instances/"
                f"{name}/{sub}")

    # ---------------------------------------------------------------- requests
    def headers(self) -> dict[str, str]:
        auth = self.cfg.get_api_key_with_prefix("authorization") \
            or self.cfg.get_api_key_with_prefix("BearerToken")
        if auth and not auth.lower().startswith(("bearer ", "basic ")):
            auth = f"Bearer {auth}"
        return {"Authorization": auth} if auth else {}

    def request(self, method: str, path: str, what: str, *, query: dict | None = None,
                stream: bool = False) -> Any:
        """An HTTP request with the kubeconfig's credentials (through the
        official client's connection pool, which holds its TLS settings): the
        parsed JSON answer, or with ``stream`` the open urllib3 response."""
        from urllib3.exceptions import HTTPError

        url = self.cfg.host.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        try:
            resp = self.api.rest_client.pool_manager.request(
                method, url, headers={"Accept": "application/json", **self.headers()},
                preload_content=False)
        except HTTPError as exc:
            raise PluginError(f"{what}: cannot reach the API server at {self.cfg.host}: "
                              f"{exc}") from None
        if resp.status >= 300:
            body = resp.read()
            resp.release_conn()
            raise explain(resp.status, body, what)
        if stream:
            return resp
        body = resp.read()
        resp.release_conn()
        return json.loads(body) if body else None

    def get_instance(self, namespace: str, name: str) -> dict:
        return self.request("GET", self.instance_path(namespace, name),
                            f"instance {namespace}/{name}")

    # ---------------------------------------------------------------- websockets
    def sslopt(self) -> dict[str, Any]:
        opt: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED if self.cfg.verify_ssl
                               else ssl.CERT_NONE,
                               "check_hostname": bool(self.cfg.verify_ssl)}
        if self.cfg.ssl_ca_cert:
            opt["ca_certs"] = self.cfg.ssl_ca_cert
        if self.cfg.cert_file:
            opt["certfile"] = self.cfg.cert_file
        if self.cfg.key_file:
            opt["keyfile"] = self.cfg.key_file
        if getattr(self.cfg, "tls_server_name", None):
            opt["server_hostname"] = self.cfg.tls_server_name
        return opt

    def websocket(self, path: str, what: str, query: dict | None = None) -> Any:
        """A connected websocket (websocket-client) to ``path``; a refused
        handshake becomes a PluginError with the API's own message."""
        import websocket

        url = self.cfg.host.rstrip("/").replace("https://", "wss://", 1).replace(
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
                              f"{self.cfg.host}: {exc}") from None


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG") \
        and not os.path.exists(os.path.expanduser("~/.kube/config"))


def _context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    except config.ConfigException:
        return None
    chosen = next((c for c in contexts if c["name"] == context), None) if context else current
    return ((chosen or {}).get("context") or {}).get("namespace")


def _incluster_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip()
    except OSError:
        return None
