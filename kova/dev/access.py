"""Kova's API component on the local stack: its certificates, the process,
and its registration with the API server as ``v1alpha1.subresources.kova.dev``.

Certificates (one CA of their own, ``kova-stream-ca``, as the chart makes
one): ``api`` serves the APIService (names ``kova-api.kova-system.svc``, the
name the API server checks) and is the client certificate the agents accept
(common name ``kova-api``); ``agent`` serves every agent's stream endpoint
(name ``kova-agent``, checked whatever address a Host advertises).

The local APIService points at an ExternalName Service ``kova-api`` whose
name is ``localhost``: the API server has no cluster network to reach a
Service address through (and Endpoints may not hold 127.0.0.1), but its
default service routing resolves an ExternalName.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from kova.crds.names import (
    APISERVICE_NAME,
    STREAM_CLIENT_NAME,
    STREAM_MIGRATION_CLIENT_NAME,
    STREAM_SERVER_NAME,
    SUBRESOURCE_GROUP,
    SUBRESOURCE_VERSION,
)
from kova.dev import paths
from kova.dev.pki import ensure_ca, issue_cert

API_NAMESPACE = "kova-system"
API_SERVICE = "kova-api"


@dataclasses.dataclass(frozen=True)
class StreamPKI:
    ca_crt: Path
    api_crt: Path
    api_key: Path
    agent_crt: Path
    agent_key: Path

    def agent_args(self, port: int = 0, bind: str = "127.0.0.1") -> list[str]:
        """``kova agent run`` flags for a stream endpoint the API component
        reaches, and the client certificate the agents send each other disks
        with (a cold migration)."""
        return ["--stream-cert-file", str(self.agent_crt), "--stream-key-file",
                str(self.agent_key), "--stream-client-ca-file", str(self.ca_crt),
                "--stream-port", str(port), "--stream-bind", bind,
                "--stream-allowed-client", STREAM_CLIENT_NAME,
                "--stream-allowed-client", STREAM_MIGRATION_CLIENT_NAME,
                "--migration-client-cert-file", str(self.mover_crt),
                "--migration-client-key-file", str(self.mover_key)]

    @property
    def mover_crt(self) -> Path:
        return self.agent_crt.with_name("mover.crt")

    @property
    def mover_key(self) -> Path:
        return self.agent_crt.with_name("mover.key")

    def api_args(self) -> list[str]:
        return ["--tls-cert-file", str(self.api_crt), "--tls-key-file", str(self.api_key),
                "--agent-client-cert-file", str(self.api_crt), "--agent-client-key-file",
                str(self.api_key), "--agent-ca-file", str(self.ca_crt)]


def ensure_stream_pki(directory: Path) -> StreamPKI:
    """The CA and the two certificates, made once and reused."""
    ca = ensure_ca(directory, "kova-stream", "kova-stream-ca")
    api = directory / "api.crt"
    if not api.exists():
        issue_cert(ca["ca_crt"], ca["ca_key"], "api", common_name=STREAM_CLIENT_NAME,
                   hosts=[f"{API_SERVICE}.{API_NAMESPACE}.svc", "localhost", "127.0.0.1"],
                   server=True, client=True, out_dir=directory, days=3650)
    agent = directory / "agent.crt"
    if not agent.exists():
        issue_cert(ca["ca_crt"], ca["ca_key"], "agent", common_name=STREAM_SERVER_NAME,
                   hosts=[STREAM_SERVER_NAME, "127.0.0.1"], server=True, out_dir=directory,
                   days=3650)
    if not (directory / "mover.crt").exists():
        issue_cert(ca["ca_crt"], ca["ca_key"], "mover", common_name=STREAM_MIGRATION_CLIENT_NAME,
                   server=False, client=True, out_dir=directory, days=3650)
    return StreamPKI(ca_crt=ca["ca_crt"], api_crt=api, api_key=directory / "api.key",
                     agent_crt=agent, agent_key=directory / "agent.key")


def api_argv(kubeconfig: str | Path, pki: StreamPKI, port: int, metrics_port: int,
             *extra: str) -> list[str]:
    return [sys.executable, "-m", "kova.cli", "api", "serve", "--kubeconfig", str(kubeconfig),
            "--bind-address", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), "--metrics-bind", "127.0.0.1",
            *pki.api_args(), *extra]


def registration_manifests(pki: StreamPKI, port: int) -> list[dict]:
    """The Service and APIService that send ``subresources.kova.dev`` to the
    API component listening on 127.0.0.1:``port``."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": API_NAMESPACE}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": API_SERVICE, "namespace": API_NAMESPACE,
                      "labels": {"app.kubernetes.io/part-of": "kova"}},
         "spec": {"type": "ExternalName", "externalName": "localhost",
                  "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": APISERVICE_NAME, "labels": {"app.kubernetes.io/part-of": "kova"}},
         "spec": {"group": SUBRESOURCE_GROUP, "version": SUBRESOURCE_VERSION,
                  "groupPriorityMinimum": 1000, "versionPriority": 15,
                  "service": {"namespace": API_NAMESPACE, "name": API_SERVICE, "port": port},
                  "caBundle": base64.b64encode(pki.ca_crt.read_bytes()).decode()}},
    ]


def kubectl(kubeconfig: str | Path, *args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([paths.kubectl(), "--kubeconfig", str(kubeconfig), *args],
                          input=input, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def register(kubeconfig: str | Path, pki: StreamPKI, port: int) -> None:
    items = {"apiVersion": "v1", "kind": "List", "items": registration_manifests(pki, port)}
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-",
            input=json.dumps(items))


def unregister(kubeconfig: str | Path) -> None:
    kubectl(kubeconfig, "delete", "apiservice", APISERVICE_NAME, "--ignore-not-found",
            check=False)


def wait_available(kubeconfig: str | Path, timeout: float = 60.0) -> None:
    """Until the API server reports the APIService Available (it reached the
    API component and read its discovery document)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        out = kubectl(kubeconfig, "get", "apiservice", APISERVICE_NAME, "-o", "json",
                      check=False)
        if out.returncode == 0:
            conds = (json.loads(out.stdout).get("status") or {}).get("conditions") or []
            avail: dict = next((c for c in conds if c.get("type") == "Available"), {})
            if avail.get("status") == "True":
                return
            last = f"{avail.get('reason')}: {avail.get('message')}"
        time.sleep(0.3)
    raise TimeoutError(f"APIService {APISERVICE_NAME} not Available after {timeout:.0f}s "
                       f"({last})")
