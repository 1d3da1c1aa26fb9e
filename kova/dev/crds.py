"""Install the generated CRDs into a cluster and wait until they are served.

Used by ``kova dev up`` and by the test fixture ``kova_crds``.  The CRDs are
applied with server-side apply (field manager ``kova``), so applying them again
is a no-op, and an older version is updated in place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import yaml

from kova.crds.generate import GENERATED_DIR

FIELD_MANAGER = "kova"


class CRDInstallError(RuntimeError):
    pass


def crd_documents(directory: Path = GENERATED_DIR) -> list[dict]:
    """The CRDs in ``directory``, in file-name order."""
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition":
            docs.append(doc)
    if not docs:
        raise CRDInstallError(f"no CRDs in {directory}; run `kova crds generate`")
    return docs


def _established(crd: object) -> bool:
    conditions = getattr(getattr(crd, "status", None), "conditions", None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def apply_crds(
    kubeconfig: Path | str | None = None,
    progress: Callable[[str], None] = lambda msg: None,
    *,
    api_client: object | None = None,
    directory: Path = GENERATED_DIR,
    timeout: float = 60.0,
) -> list[str]:
    """Server-side apply every CRD and wait until each is Established.

    Pass either a kubeconfig path or a ``kubernetes.client.ApiClient``.
    Returns the CRD names.
    """
    from kubernetes import client, config

    own_client = api_client is None
    if own_client:
        api_client = config.new_client_from_config(
            config_file=str(kubeconfig) if kubeconfig else None
        )
    try:
        ext = client.ApiextensionsV1Api(api_client)
        names = []
        for doc in crd_documents(directory):
            name = doc["metadata"]["name"]
            ext.patch_custom_resource_definition(
                name,
                doc,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
            names.append(name)
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            pending = [
                n for n in pending if not _established(ext.read_custom_resource_definition(n))
            ]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise CRDInstallError(f"CRDs not Established after {timeout}s: {pending}")
            time.sleep(0.2)
        progress(f"[kova] CRDs applied and Established: {', '.join(names)}")
        return names
    finally:
        if own_client:
            api_client.close()  # type: ignore[union-attr]
