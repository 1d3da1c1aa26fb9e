"""The operator's list + watch cache (Hosts and Leases) against the real
kube-apiserver: it follows changes, resumes a watch the server ended, and
lists again when its resourceVersion is too old (410 Gone), telling the
callback only what differs from its cache."""

from __future__ import annotations

import asyncio
import uuid

from kova.kube import Credentials, Kube, lease_path
from kova.operator.listwatch import ListWatch


class ExpiringKube(Kube):
    """The real client, except that the next watch it opens is answered
    with the API server's 410 ("too old resource version", the Status it
    sends as an ERROR event).  Injected: the test cluster's watch cache
    keeps every event of its short life, so a real API server here cannot
    be made to expire a resourceVersion on demand."""

    expire_next = False

    async def watch(self, path, params=None, *, timeout_seconds=300):
        if self.expire_next:
            self.expire_next = False
            yield {"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": f"too old resource version: {params['resourceVersion']}",
                "reason": "Expired", "code": 410}}
            return
        async for event in super().watch(path, params, timeout_seconds=timeout_seconds):
            yield event


def _lease(name: str, holder: str = "a") -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30}}


async def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the cache did not catch up")
        await asyncio.sleep(0.05)


async def test_list_watch_resume_and_relist_after_gone(kubeconfig, k8s_client, namespace):
    from kubernetes import client

    coord = client.CoordinationV1Api(k8s_client)
    tag = uuid.uuid4().hex[:6]
    for n in ("keep", "change", "drop"):
        coord.create_namespaced_lease(namespace, _lease(f"{n}-{tag}"))
    calls: list[tuple[str, bool]] = []
    # small pages: the LIST is paged (continue tokens) as at 10 000 Leases
    lw = ListWatch(lease_path(namespace), lambda name, obj, deleted: calls.append(
        (name, deleted)), page_size=2, timeout_seconds=2)
    kube = ExpiringKube(Credentials.load(str(kubeconfig)))
    task = asyncio.create_task(lw.run(kube))
    try:
        await asyncio.wait_for(lw.synced.wait(), 30)
        assert set(lw.items) == {f"{n}-{tag}" for n in ("keep", "change", "drop")}
        assert sorted(calls) == sorted((f"{n}-{tag}", False) for n in ("keep", "change", "drop"))

        # A live change; then the server ends the watch (timeoutSeconds=2)
        # and it is resumed from the last resourceVersion, without a LIST.
        coord.patch_namespaced_lease(f"change-{tag}", namespace,
                                     {"spec": {"holderIdentity": "b"}})
        await _wait(lambda: lw.items[f"change-{tag}"]["spec"]["holderIdentity"] == "b")
        await _wait(lambda: lw.watches >= 3, 15)
        assert lw.lists == 1

        # Stopped; meanwhile one Lease changes, one goes, one comes.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        calls.clear()
        coord.patch_namespaced_lease(f"change-{tag}", namespace,
                                     {"spec": {"holderIdentity": "c"}})
        coord.delete_namespaced_lease(f"drop-{tag}", namespace)
        coord.create_namespaced_lease(namespace, _lease(f"new-{tag}"))
        # Resume from a resourceVersion the server no longer has: 410 Gone.
        kube.expire_next = True
        task = asyncio.create_task(lw.run(kube))
        await _wait(lambda: lw.lists == 2)
        assert set(lw.items) == {f"{n}-{tag}" for n in ("keep", "change", "new")}
        assert lw.items[f"change-{tag}"]["spec"]["holderIdentity"] == "c"
        # Only the differences: the unchanged Lease is not reported again.
        assert sorted(calls) == sorted([(f"change-{tag}", False), (f"drop-{tag}", True),
                                        (f"new-{tag}", False)])
        assert lw.healthy

        # And it watches again after the relist.
        coord.delete_namespaced_lease(f"keep-{tag}", namespace)
        await _wait(lambda: f"keep-{tag}" not in lw.items)
        assert (f"keep-{tag}", True) in calls
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kube.close()


async def test_an_unreachable_server_marks_the_cache_unhealthy_until_it_lists(
        kubeconfig, namespace):
    """A connection refused (nothing listens on the port: what an API server
    restart looks like) makes the cache unhealthy and tells its listener."""
    health: list[bool] = []
    lw = ListWatch(lease_path(namespace), lambda *a: None, retry_seconds=0.05)
    lw.on_health = health.append
    kube = Kube(Credentials("https://127.0.0.1:1", insecure=True), timeout=2)
    task = asyncio.create_task(lw.run(kube))
    try:
        await _wait(lambda: health == [False], 10)
        assert not lw.synced.is_set() and not lw.healthy
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kube.close()
    good = Kube(Credentials.load(str(kubeconfig)))
    task = asyncio.create_task(lw.run(good))
    try:
        await _wait(lambda: health == [False, True])
        assert lw.synced.is_set() and lw.healthy
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await good.close()
