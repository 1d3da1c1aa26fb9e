"""The quota check reads ResourceQuotas from the informer's list + watch
cache (real kube-apiserver): the check itself sends no request (its client
is None here), a raised limit is honoured as soon as the watch delivers it,
and a ResourceQuota of the same name in another namespace does not count."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from kova.crds import names as contract
from kova.kube import Credentials, Kube
from kova.operator.informer import Informer, RunOptions, quota_paths
from kova.operator.listwatch import ListWatch, by_namespace_and_name
from kova.operator.quota import QuotaExceeded, Quotas


async def _wait(predicate, timeout: float = 15.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("the cache did not catch up")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _admitted(quotas: Quotas, body: dict, size: dict) -> bool:
    try:
        async with quotas.admit(body, size):
            return True
    except QuotaExceeded:
        return False


def _quota(vcpus: str) -> dict:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "kova"},
            "spec": {"hard": {contract.QUOTA_VCPUS: vcpus}}}


async def test_quota_limits_come_from_the_watch_cache(kubeconfig, k8s_client, namespace):
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    other = f"{namespace}-other-{uuid.uuid4().hex[:4]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    (path, _), = quota_paths(RunOptions(all_namespaces=True))
    informer = Informer(Credentials.load(str(kubeconfig)))
    lw = ListWatch(path, lambda *a: None, key=by_namespace_and_name, timeout_seconds=30)
    informer.quota_watches = [lw]
    kube = Kube(Credentials.load(str(kubeconfig)))
    task = asyncio.create_task(lw.run(kube))
    quotas = Quotas(None, informer)  # any request of the check itself would fail
    body = {"metadata": {"namespace": namespace, "name": "vm", "uid": str(uuid.uuid4())}}
    size = {"vcpus": 4, "memoryMiB": 512, "diskGiB": 1}
    try:
        await asyncio.wait_for(lw.synced.wait(), 30)
        assert await _admitted(quotas, body, size)  # no quota yet
        core.create_namespaced_resource_quota(namespace, _quota("2"))
        core.create_namespaced_resource_quota(other, _quota("1"))
        await _wait(lambda: len(informer.resource_quotas(namespace)) == 1
                    and len(informer.resource_quotas(other)) == 1)
        with pytest.raises(QuotaExceeded) as err:
            async with quotas.admit(body, size):
                pass
        assert "vCPUs: requested 4, 0 in use of 2" in err.value.message
        lists = lw.lists
        core.patch_namespaced_resource_quota("kova", namespace, _quota("8"))
        took = await _wait(lambda: informer.resource_quotas(namespace)[0]["spec"]["hard"][
            contract.QUOTA_VCPUS] == "8")
        print(f"raised limit in the cache after {took * 1000:.0f} ms")
        assert await _admitted(quotas, body, size)
        assert lw.lists == lists  # by the watch, not a new LIST
        # the other namespace's "kova" (1 vCPU) never applied here, and still applies there
        assert not await _admitted(quotas, {"metadata": {**body["metadata"],
                                                         "namespace": other}}, size)
        core.delete_namespaced_resource_quota("kova", namespace)
        await _wait(lambda: not informer.resource_quotas(namespace))
        assert await _admitted(quotas, body, {**size, "vcpus": 64})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kube.close()
        core.delete_namespace(other)


def test_quota_paths_follow_the_watched_namespaces():
    assert quota_paths(RunOptions(all_namespaces=False, namespaces=("a", "b"))) == [
        ("/api/v1/namespaces/a/resourcequotas", "ResourceQuotas of a"),
        ("/api/v1/namespaces/b/resourcequotas", "ResourceQuotas of b")]
    assert quota_paths(RunOptions(all_namespaces=False, namespaces=("team-*",)))[0][0] == \
        "/api/v1/resourcequotas"
