"""The operator's informer (kopf behind one module) against the real
kube-apiserver: the typed reads see every object that existed before it
started by the time the first event is handled (``synced``; Hosts, from their
own list + watch, by ``hosts_synced``), changes and deletions reach the
handlers as plain calls, and the views follow them."""

from __future__ import annotations

import asyncio
import signal
import uuid

from kova.crds import names
from kova.kube import Credentials
from kova.operator.informer import MISSING, Informer, RunOptions

G, V = names.GROUP, names.VERSION


class Recorder:
    """Handlers that note every call, and what the informer could read when
    the first one came."""

    def __init__(self, informer: Informer, expect: dict) -> None:
        self.informer = informer
        self.expect = expect
        self.calls: list[tuple] = []
        self.first_reads: dict | None = None

    def _note(self, *call: object) -> None:
        if self.first_reads is None:
            inf, e = self.informer, self.expect
            self.first_reads = {
                "synced": inf.synced.is_set(),
                "instance": inf.instance(e["ns"], e["inst"]) is not None,
                "flavor": inf.flavor(e["flavor"]) is not None,
                "image": inf.image(e["image"]) is not None,
                "group": inf.server_group(e["ns"], e["group"]) is not None,
                "members": inf.group_members(e["ns"], e["group"]),
            }
        self.calls.append(call)

    def instance_changed(self, namespace, name, body, deleted):
        self._note("instance", namespace, name, deleted)

    def host_changed(self, name, body, deleted):
        # Hosts come from their own list + watch, not from kopf
        self.calls.append(("host", name, deleted))

    def node_changed(self, name, body, deleted):
        self._note("node", name, deleted)

    def image_changed(self, name, deleted):
        self._note("image", name, deleted)

    def dependency_changed(self, kind, namespace, name, deleted):
        self._note(kind, namespace, name, deleted)


def _objects(ns: str, suffix: str) -> dict:
    return {"ns": ns, "inst": f"vm-{suffix}", "host": f"host-{suffix}",
            "flavor": f"flavor-{suffix}", "image": f"image-{suffix}", "group": f"web-{suffix}"}


def _create(api, e: dict) -> None:
    api.create_cluster_custom_object(G, V, "flavors", {
        "apiVersion": names.API_VERSION, "kind": "Flavor", "metadata": {"name": e["flavor"]},
        "spec": {"vcpus": 1, "memoryMiB": 256, "diskGiB": 1}})
    api.create_cluster_custom_object(G, V, "images", {
        "apiVersion": names.API_VERSION, "kind": "Image", "metadata": {"name": e["image"]},
        "spec": {"source": {"hostPath": "/var/lib/kova/images/test.qcow2"}}})
    api.create_cluster_custom_object(G, V, "hosts", {
        "apiVersion": names.API_VERSION, "kind": "Host", "metadata": {"name": e["host"]},
        "spec": {"enabled": True}})
    api.create_namespaced_custom_object(G, V, e["ns"], "servergroups", {
        "apiVersion": names.API_VERSION, "kind": "ServerGroup", "metadata": {"name": e["group"]},
        "spec": {"policy": "anti-affinity"}})
    api.create_namespaced_custom_object(G, V, e["ns"], "instances", {
        "apiVersion": names.API_VERSION, "kind": "Instance", "metadata": {
            "name": e["inst"], "labels": {names.LABEL_HOST: e["host"]}},
        "spec": {"flavorRef": {"name": e["flavor"]}, "imageRef": {"name": e["image"]},
                 "serverGroupRef": {"name": e["group"]}}})


def _delete_cluster_objects(api, e: dict) -> None:
    from kubernetes import client

    for plural, name in (("flavors", e["flavor"]), ("images", e["image"]),
                         ("hosts", e["host"])):
        try:
            api.delete_cluster_custom_object(G, V, plural, name)
        except client.ApiException:
            pass


async def test_informer_reads_events_and_deletions(kubeconfig, k8s_client, kova_crds,
                                                   namespace):
    from kubernetes import client

    api = client.CustomObjectsApi(k8s_client)
    e = _objects(namespace, uuid.uuid4().hex[:6])
    _create(api, e)
    informer = Informer(Credentials.load(str(kubeconfig)))
    rec = Recorder(informer, e)
    assert informer.instance(namespace, e["inst"]) is None  # nothing before it runs
    assert informer.image_identity(e["image"]) == MISSING
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(rec, RunOptions(watch_nodes=False), stop_flag=stop))
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(informer.synced.wait(), 60)
        # kopf filled every index before it called the first handler.
        assert rec.first_reads is not None
        members = rec.first_reads.pop("members")
        assert rec.first_reads == dict.fromkeys(
            ["synced", "instance", "flavor", "image", "group"], True)
        await asyncio.wait_for(informer.hosts_synced.wait(), 60)
        assert informer.host(e["host"]) is not None
        assert ("host", e["host"], False) in rec.calls
        inst = informer.instance(namespace, e["inst"])
        assert members == [(inst["metadata"]["uid"], e["host"])]
        assert informer.flavor(e["flavor"])["memoryMiB"] == 256
        assert informer.server_group(namespace, e["group"])["policy"] == "anti-affinity"
        image = api.get_cluster_custom_object(G, V, "images", e["image"])
        assert informer.image_identity(e["image"]) == (
            f"{image['metadata']['uid']}/{image['metadata']['generation']}")
        assert (namespace, e["inst"]) in informer.instance_keys()
        assert [k for k, _ in informer.instances(namespace)] == [(namespace, e["inst"])]
        assert e["host"] in informer.host_names()

        # A change: the index follows, the handler is told.
        api.patch_cluster_custom_object(G, V, "images", e["image"],
                                        {"spec": {"minDiskGiB": 2}})
        await _wait(lambda: (informer.image(e["image"]) or {}).get("minDiskGiB") == 2)
        assert informer.image_identity(e["image"]).endswith("/2")
        assert ("image", e["image"], False) in rec.calls

        # Deletions: gone from the views, handlers told with deleted=True.
        api.delete_namespaced_custom_object(G, V, namespace, "instances", e["inst"])
        api.delete_cluster_custom_object(G, V, "hosts", e["host"])
        await _wait(lambda: informer.instance(namespace, e["inst"]) is None
                    and informer.host(e["host"]) is None)
        assert informer.group_members(namespace, e["group"]) == []
        assert ("instance", namespace, e["inst"], True) in rec.calls
        assert ("host", e["host"], True) in rec.calls
        assert ("flavors", None, e["flavor"], False) in rec.calls
        api.delete_namespaced_custom_object(G, V, namespace, "servergroups", e["group"])
        await _wait(lambda: informer.server_group(namespace, e["group"]) is None)
        assert ("servergroups", namespace, e["group"], True) in rec.calls
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        for sig in (signal.SIGINT, signal.SIGTERM):  # kopf's, on this loop
            loop.remove_signal_handler(sig)
        _delete_cluster_objects(api, e)


async def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the informer did not catch up")
        await asyncio.sleep(0.1)

