"""Deleting an Image, a TenantImage or a TenantImage's namespace through the
API server removes the file from Kova's image store (``kova images serve`` as
a process, with the real kube-apiserver and kube-controller-manager's
namespace controller): the store's finalizer ``kova.dev/image-store`` holds
the object until the file is gone, and the store then answers 404."""

from __future__ import annotations

import uuid

from kova.crds import names as contract
from kova.images.reaper import FINALIZER
from tests.fixtures.agents import G, V
from tests.helpers import wait_for
from tests.integration.images.test_image_store import (  # noqa: F401
    _admin_token,
    _qcow2,
    _upload,
    store,
)


def _custom(k8s_client):
    from kubernetes import client

    return client.CustomObjectsApi(k8s_client)


def _get(k8s_client, name: str, namespace: str | None = None) -> dict | None:
    from kubernetes import client

    custom = _custom(k8s_client)
    try:
        if namespace:
            return custom.get_namespaced_custom_object(G, V, namespace,
                                                       contract.TENANT_IMAGES, name)
        return custom.get_cluster_custom_object(G, V, contract.IMAGES, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _fetch(store, kubeconfig, path: str) -> int:  # noqa: F811
    with store.client() as c:
        return c.get(path, headers={"Authorization":
                                    f"Bearer {_admin_token(kubeconfig)}"}).status_code


def test_deleting_an_image_or_a_namespace_removes_the_stored_file(
        kubeconfig, store, k8s_client, tmp_path):  # noqa: F811
    from kubernetes import client

    suffix = uuid.uuid4().hex[:6]
    disk = _qcow2(tmp_path / "disk.qcow2")

    # A cluster Image: the store's finalizer; a delete removes the file, then the Image.
    name = f"gone-{suffix}"
    res = _upload(kubeconfig, store, disk, name)
    assert res.exit_code == 0, res.output
    assert FINALIZER in _get(k8s_client, name)["metadata"]["finalizers"]
    assert (store.root / name / "image.qcow2").is_file()
    assert _fetch(store, kubeconfig, f"/v1/images/{name}") == 200
    _custom(k8s_client).delete_cluster_custom_object(G, V, contract.IMAGES, name)
    wait_for(lambda: _get(k8s_client, name) is None, 30, 0.2, f"Image {name} deleted")
    assert not (store.root / name).exists()
    assert _fetch(store, kubeconfig, f"/v1/images/{name}") == 404
    # The name is free again: the same upload is stored anew.
    res = _upload(kubeconfig, store, disk, name)
    assert res.exit_code == 0, res.output
    _custom(k8s_client).delete_cluster_custom_object(G, V, contract.IMAGES, name)
    wait_for(lambda: _get(k8s_client, name) is None, 30, 0.2, f"Image {name} deleted")

    # TenantImages: one deleted by name, and one whose namespace is deleted.
    core = client.CoreV1Api(k8s_client)
    ns = f"cleanup-{suffix}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        for tname in ("one", "two"):
            res = _upload(kubeconfig, store, disk, tname, "--namespace", ns)
            assert res.exit_code == 0, res.output
        files = store.root / ".namespaces" / ns
        assert (files / "one" / "image.qcow2").is_file()
        _custom(k8s_client).delete_namespaced_custom_object(G, V, ns,
                                                            contract.TENANT_IMAGES, "one")
        wait_for(lambda: _get(k8s_client, "one", ns) is None, 30, 0.2, "TenantImage one gone")
        assert not (files / "one").exists() and (files / "two" / "image.qcow2").is_file()
        assert _fetch(store, kubeconfig, f"/v1/namespaces/{ns}/images/one") == 404
    finally:
        core.delete_namespace(ns)
    wait_for(lambda: not files.exists(), 90, 0.5, f"the files of namespace {ns} removed")
    assert _fetch(store, kubeconfig, f"/v1/namespaces/{ns}/images/two") == 404

    def namespace_gone() -> bool:
        try:
            core.read_namespace(ns)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(namespace_gone, 120, 1.0, f"namespace {ns} deleted")
