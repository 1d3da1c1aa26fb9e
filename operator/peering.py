"""kopf peering objects for leader election.

kopf pauses every replica that sees a live peer of higher (or equal)
priority, so with distinct priorities exactly one replica acts.  The peering
CRDs (``kopf.dev/v1`` ClusterKopfPeering and KopfPeering) and the peering
object must exist; :func:`ensure_peering` creates them when the operator may
(the Helm chart ships them too: :func:`manifests`).
"""

from __future__ import annotations

import asyncio
import logging

from kova.kube import Credentials, Kube, KubeError
from kova.operator.settings import Settings

LOG = logging.getLogger("kova.operator.peering")


def _crd(kind: str, plural: str, scope: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "object",
                                   "x-kubernetes-preserve-unknown-fields": True},
                    },
                }},
            }],
        },
    }


def manifests(name: str = "kova", namespace: str | None = None) -> list[dict]:
    """The peering CRDs and one peering object (cluster-wide unless
    ``namespace``)."""
    obj = {"apiVersion": "kopf.dev/v1",
           "kind": "KopfPeering" if namespace else "ClusterKopfPeering",
           "metadata": {"name": name, **({"namespace": namespace} if namespace else {})}}
    return [_crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
            _crd("KopfPeering", "kopfpeerings", "Namespaced"), obj]


async def ensure_peering(creds: Credentials, settings: Settings) -> None:
    kube = Kube(creds)
    try:
        namespaces = [None] if settings.all_namespaces else list(settings.namespaces)
        for ns in namespaces:
            crd_c, crd_n, obj = manifests(settings.peering_name, ns)
            base = (f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings" if ns
                    else "/apis/kopf.dev/v1/clusterkopfpeerings")
            # Installed by the chart: nothing to create, and an operator that
            # may not read CRDs (the chart's) needs no warning about them.
            if await kube.get_or_none(f"{base}/{settings.peering_name}") is not None:
                continue
            for crd in (crd_c, crd_n):
                path = ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                        + crd["metadata"]["name"])
                if await kube.get_or_none(path) is None:
                    await kube.create(
                        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
                    LOG.info("created CRD %s", crd["metadata"]["name"])
            for _ in range(50):
                try:
                    if await kube.get_or_none(f"{base}/{settings.peering_name}") is None:
                        await kube.create(base, obj)
                    break
                except KubeError as exc:
                    if exc.status != 404:  # CRD not served yet
                        raise
                await asyncio.sleep(0.2)
    except KubeError as exc:
        if exc.status == 403:
            LOG.warning("cannot create the kopf peering objects (%s); install them with the "
                        "chart", exc)
        else:
            raise
    finally:
        await kube.close()
