"""Rendering the Helm chart ``helm/kova`` for the tests in this folder.

The tools (helm v4, kube-score, hadolint) come from
``hack/install-helm-tools.sh``, which caches them under
``~/.cache/kova/bin``; :func:`tool` installs them on first use.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kova"
KUBE_VERSION = "v1.36.5"  # the local API server's (hack/build-control-plane.sh)

#: Values combinations every rendering test goes through: name -> --set pairs.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-db-secret": {
        "postgresql.enabled": False,
        "placement.database.existingSecret": "kova-db",
        "placement.auth.existingSecret": "kova-placement-tokens",
        "placement.replicas": 2,
    },
    "external-db-url-monitoring": {
        "postgresql.enabled": False,
        "placement.database.url": "postgresql+psycopg://kova:pw@db.example:5432/placement",
        "serviceMonitor.enabled": True,
        "prometheusRule.enabled": True,
        "placement.tls.existingSecret": "kova-placement-tls",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name": "monitoring",
        "agent.imageCA.secret": "image-mirror-tls",
    },
    "namespaced-operator-no-peering": {
        "operator.replicas": 1,
        "operator.peering.enabled": False,
        "operator.watchNamespaces[0]": "vms",
        "networkPolicy.enabled": False,
        "agent.privileged": False,
        "agent.domainType": "qemu",
        "agent.imageCA.configMap": "image-mirror-ca",
        "agent.imageCA.key": "ca-bundle.pem",
    },
    "share-instances": {
        "operator.replicas": 3,
        "operator.shareInstances": True,
        "operator.peering.enabled": False,
    },
    "peering-namespaced-external-placement": {
        "placement.enabled": False,
        "placement.externalUrl": "https://placement.example:8778",
        "placement.auth.existingSecret": "kova-placement-tokens",
        "placement.tls.existingSecret": "placement-ca",
        "placement.tls.caKey": "ca.pem",
        "operator.watchNamespaces[0]": "vms",
        "operator.watchNamespaces[1]": "dev",
        "agent.nodeRestriction.enabled": False,
        "createLeaseNamespace": True,
        "leaseNamespace": "kova-leases",
    },
    "agent-only": {
        "placement.enabled": False,
        "placement.externalUrl": "http://placement.kova-system.svc:8778",
        "placement.auth.existingSecret": "kova-placement-tokens",
        "operator.enabled": False,
        "rbac.create": True,
        "image.digest": "sha256:" + "a" * 64,
    },
}


@functools.lru_cache(maxsize=None)
def tool(name: str) -> str:
    """Path of a cached tool (installed by hack/install-helm-tools.sh)."""
    proc = subprocess.run(["bash", str(REPO / "hack" / "install-helm-tools.sh"), name],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/install-helm-tools.sh {name} failed:\n{proc.stderr}")
    return str(Path(proc.stdout.strip().splitlines()[-1]) / name)


def helm(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([tool("helm"), *args], capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def set_args(values: dict[str, Any]) -> list[str]:
    """--set / --set-string / --set-json arguments for a values dict."""
    out: list[str] = []
    for key, value in values.items():
        if isinstance(value, bool) or isinstance(value, int):
            out += ["--set", f"{key}={json.dumps(value)}"]
        elif isinstance(value, str):
            out += ["--set-string", f"{key}={value}"]
        else:
            out += ["--set-json", f"{key}={json.dumps(value)}"]
    return out


def render_text(values: dict[str, Any] | None = None, *, release: str = "kova",
                namespace: str = "kova-system", include_crds: bool = False,
                check: bool = True) -> subprocess.CompletedProcess:
    args = ["template", release, str(CHART), "--namespace", namespace,
            "--kube-version", KUBE_VERSION, *set_args(values or {})]
    if include_crds:
        args.append("--include-crds")
    return helm(*args, check=check)


def render(values: dict[str, Any] | None = None, **kw) -> list[dict[str, Any]]:
    """The chart's objects for these values (no CRDs unless include_crds)."""
    text = render_text(values, **kw).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str, name: str) -> dict:
    (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]


def component(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def chart_crds() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))}


def dump(objs: list[dict]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)
