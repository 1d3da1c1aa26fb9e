"""Tenant images (kind TenantImage): a kova-edit user uploads an image into
its namespace with ``kubectl kova image upload -n``, and the compute agent
(in-process, libvirt's test:///default) boots an Instance of that namespace
from it (``imageRef.kind: TenantImage``), fetching it from the image store
(``kova images serve`` over HTTPS) with its own token and verifying its
sha256.  A user of another namespace reads it neither from the store nor from
the API server, and cannot make the agent fetch it either."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from kova.crds import names as contract
from kova.dev import access
from tests.fixtures.agents import G, V
from tests.helpers import wait_for
from tests.integration.images.test_image_store import _upload, store  # noqa: F401

TENANT = "TenantImage"


@pytest.fixture(scope="module")
def user_roles(k8s):
    """The chart's kova-view / kova-edit / kova-admin ClusterRoles."""
    from tests.support.chart import render

    roles = [o for o in render() if o["kind"] == "ClusterRole"
             and o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
             == "user-roles"]
    access.kubectl(k8s.kubeconfig, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": roles}))
    return {o["metadata"]["name"] for o in roles}


@pytest.fixture
def other_namespace(k8s_client):
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    name = f"tenant-a-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def _api(kubeconfig):
    from kubernetes import client, config

    return client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))


def _tenant_image(custom, namespace: str, name: str) -> dict | None:
    from kubernetes import client

    try:
        return custom.get_namespaced_custom_object(G, V, namespace, contract.TENANT_IMAGES,
                                                   name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_a_tenant_uploads_an_image_and_boots_from_it(kubeconfig, store, harness, small_image,  # noqa: F811
                                                     user_roles, make_user):
    ns = harness.ns
    owner = make_user("owner", "kova-edit", ns)
    name = f"mine-{harness.host}"

    # Without --namespace it would be a public Image: not a tenant's to make.
    res = _upload(owner.kubeconfig, store, small_image, name)
    assert res.exit_code == 1 and "refused (403 Forbidden)" in res.output, res.output
    assert f"may not create images.kova.dev {name}" in res.output, res.output

    res = _upload(owner.kubeconfig, store, small_image, name, "-n", ns)
    assert res.exit_code == 0, res.output
    assert f"TenantImage {ns}/{name} is Available" in res.output, res.output
    sha = hashlib.sha256(small_image.read_bytes()).hexdigest()
    img = _tenant_image(_api(owner.kubeconfig), ns, name)  # the owner reads it
    assert img["spec"]["source"] == {"url": f"{store.url}/v1/namespaces/{ns}/images/{name}"}
    assert img["spec"]["sha256"] == sha
    assert img["metadata"]["annotations"][f"{contract.GROUP}/uploaded-by"] == owner.username
    assert store.files() == [f".namespaces/{ns}/{name}/image.qcow2",
                             f".namespaces/{ns}/{name}/meta.json"]

    harness.agent(image_ca_file=str(store.ca), image_store_url=store.url)
    harness.instance("vm1", name, image_kind=TENANT)
    harness.wait_phase("vm1", "Running", timeout=30)
    img = wait_for(lambda: (o := _tenant_image(harness.custom, ns, name)) and
                   (o.get("status") or {}).get("cachedOn") and o, 15, what="cachedOn")
    assert img["status"]["cachedOn"] == [harness.host] and img["status"]["sha256"] == sha
    cached = list((harness.tmp / "instances" / "_base").glob("*.qcow2"))
    assert [p.name for p in cached] == [f"{sha}.qcow2"]

    # The same name as a cluster Image is another image: there is none.
    harness.instance("vm2", name)
    built = harness.wait_cond("vm2", "Built", "False")
    assert built["message"] == (f"{contract.ERROR_IMAGE_NOT_FOUND}: Image {name} does not "
                                f"exist"), built


def test_another_namespace_can_neither_read_nor_boot_a_tenant_image(
        kubeconfig, store, harness, small_image, user_roles, make_user,  # noqa: F811
        other_namespace):
    from kubernetes import client

    ns_a, ns_b = other_namespace, harness.ns
    name = f"private-{harness.host}"
    res = _upload(kubeconfig, store, small_image, name, "-n", ns_a)
    assert res.exit_code == 0, res.output
    sha = hashlib.sha256(small_image.read_bytes()).hexdigest()
    stranger = make_user("stranger", "kova-edit", ns_b)
    token = json.loads(stranger.kubeconfig.read_text())["users"][0]["user"]["token"]
    path = f"/v1/namespaces/{ns_a}/images/{name}"

    # The store: 403 for every verb, whether or not the image exists.
    with store.client() as c:
        auth = {"Authorization": f"Bearer {token}"}
        for method, target in (("GET", path), ("HEAD", path), ("DELETE", path),
                               ("PUT", path + "-2"),
                               ("GET", f"/v1/namespaces/{ns_a}/images/nothing")):
            r = c.request(method, target, headers=auth, content=b"x" if method == "PUT" else None)
            assert r.status_code == 403, (method, target, r.status_code, r.text)
            if method != "HEAD":
                assert r.json()["reason"] == "Forbidden"
                assert "tenantimages.kova.dev" in r.json()["message"]
                assert f"in namespace {ns_a}" in r.json()["message"]
    assert _tenant_image(harness.custom, ns_a, name) is not None  # still there

    # The API server: forbidden in the other namespace, allowed in its own.
    theirs = _api(stranger.kubeconfig)
    with pytest.raises(client.ApiException) as err:
        theirs.get_namespaced_custom_object(G, V, ns_a, contract.TENANT_IMAGES, name)
    assert err.value.status == 403
    assert theirs.list_namespaced_custom_object(G, V, ns_b, contract.TENANT_IMAGES)["items"] == []
    # Tenants may not name files on the hosts.
    with pytest.raises(client.ApiException) as err:
        theirs.create_namespaced_custom_object(G, V, ns_b, contract.TENANT_IMAGES, {
            "apiVersion": contract.API_VERSION, "kind": TENANT,
            "metadata": {"name": "host-file"},
            "spec": {"source": {"hostPath": str(small_image)}, "sha256": sha}})
    assert err.value.status == 422 and "cannot use source.hostPath" in err.value.body

    # An Instance of namespace B names only B's tenant images.
    harness.agent(image_ca_file=str(store.ca), image_store_url=store.url)
    harness.instance("vm-a", name, image_kind=TENANT)
    built = harness.wait_cond("vm-a", "Built", "False")
    assert built["message"] == (f"{contract.ERROR_IMAGE_NOT_FOUND}: TenantImage {ns_b}/{name} "
                                f"does not exist"), built

    # A TenantImage of B that points at A's file in the store: the agent does
    # not lend it its token, so the store refuses the download.
    theirs.create_namespaced_custom_object(G, V, ns_b, contract.TENANT_IMAGES, {
        "apiVersion": contract.API_VERSION, "kind": TENANT, "metadata": {"name": "borrowed"},
        "spec": {"source": {"url": store.url + path}, "sha256": sha}})
    harness.instance("vm-b", "borrowed", image_kind=TENANT)
    built = harness.wait_cond("vm-b", "Built", "False")
    assert built["message"].startswith(f"{contract.ERROR_IMAGE_DOWNLOAD}: "), built
    assert "answered 401" in built["message"], built
    assert not list((harness.tmp / "instances" / "_base").glob("*.qcow2"))


def test_the_operator_schedules_an_instance_of_a_tenant_image(kubeconfig, store, harness,  # noqa: F811
                                                              placement, small_image,
                                                              tmp_path):
    """The operator's side: a TenantImage is found in the Instance's namespace
    (its minDiskGiB checked like an Image's); one that does not exist yet
    keeps its Instance Pending until it is uploaded.  A snapshot's
    TenantImage still saving (as the API component creates it at the
    request) holds its Instance Pending (ImageSaving); marked SnapshotFailed,
    with that reason; once the image store fills it (an upload naming its
    uid), the Instance is scheduled and runs."""
    from tests.fixtures.agents import operator_process
    from tests.integration.gitops.test_argocd_health import assess

    ns = harness.ns
    name, later = f"sched-{harness.host}", f"later-{harness.host}"
    res = _upload(kubeconfig, store, small_image, name, "-n", ns)
    assert res.exit_code == 0, res.output
    size = {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}
    with operator_process(harness, placement, tmp_path):
        harness.agent(placement_url=placement.url, image_ca_file=str(store.ca),
                      image_store_url=store.url)
        wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get("state") == "Up",
                 60, 0.2, "Host Up")
        harness.instance("vm1", name, image_kind=TENANT, schedule=False, resources=size)
        harness.instance("vm2", later, image_kind=TENANT, schedule=False, resources=size)
        assert harness.wait_phase("vm1", "Running", timeout=60)["status"]["host"] == harness.host
        assert assess(TENANT, _tenant_image(harness.custom, ns, name))[0] == "Healthy"

        pending = wait_for(lambda: (c := harness.cond("vm2", "Scheduled")) and
                           c.get("reason") == contract.REASON_IMAGE_NOT_FOUND and c, 30,
                           what="vm2 waits for its image")
        assert pending["message"] == (f"TenantImage {later} not found in the Instance's "
                                      f"namespace"), pending
        assert harness.get("vm2")["status"]["phase"] == "Pending"
        res = _upload(kubeconfig, store, small_image, later, "-n", ns)
        assert res.exit_code == 0, res.output
        harness.wait_phase("vm2", "Running", timeout=60)
        _a_saving_tenant_image_holds_its_instance(kubeconfig, store, harness, small_image)


def _a_saving_tenant_image_holds_its_instance(kubeconfig, store, harness,  # noqa: F811
                                              small_image) -> None:
    from tests.integration.images.test_image_store import _admin_token

    ns, snap = harness.ns, f"snap-{harness.host}"
    saving = harness.custom.create_namespaced_custom_object(
        G, V, ns, contract.TENANT_IMAGES, {
            "apiVersion": contract.API_VERSION, "kind": TENANT,
            "metadata": {"name": snap, "namespace": ns, "annotations": {
                contract.ANNOTATION_SNAPSHOT_OF: f"{ns}/vm1",
                contract.ANNOTATION_SNAPSHOT_REQUEST: "req-by-hand"}},
            "spec": {"saving": True}})
    harness.instance("vm3", snap, image_kind=TENANT, schedule=False,
                     resources={"vcpus": 1, "memoryMiB": 128, "diskGiB": 1})
    held = wait_for(lambda: (c := harness.cond("vm3", "Scheduled")) and
                    c.get("reason") == contract.REASON_IMAGE_SAVING and c, 30,
                    what="vm3 waits for its image to be saved")
    assert held["message"] == (f"TenantImage {snap} is being saved by a snapshot; the "
                               "Instance waits until it is stored"), held
    harness.custom.patch_namespaced_custom_object_status(
        G, V, ns, contract.TENANT_IMAGES, snap, {"status": {"conditions": [{
            "type": "Available", "status": "False",
            "reason": contract.IMAGE_REASON_SNAPSHOT_FAILED, "message": "it broke",
            "lastTransitionTime": "2026-12-07T05:00:00Z"}]}})
    failed = wait_for(lambda: (c := harness.cond("vm3", "Scheduled")) and
                      c.get("reason") == contract.REASON_IMAGE_SNAPSHOT_FAILED and c, 30,
                      what="vm3 told its image's snapshot failed")
    assert failed["message"] == f"TenantImage {snap} holds no file: it broke", failed
    assert harness.get("vm3")["status"]["phase"] == "Pending"
    # The store fills it (as for a snapshot's upload): source, sha256, saving gone.
    with store.client() as c:
        resp = c.put(f"/v1/namespaces/{ns}/images/{snap}",
                     params={"format": "qcow2", "snapshotOf": f"{ns}/vm1",
                             "placeholder": saving["metadata"]["uid"]},
                     content=small_image.read_bytes(),
                     headers={"Authorization": f"Bearer {_admin_token(kubeconfig)}"})
    assert resp.status_code == 201, resp.text
    filled = _tenant_image(harness.custom, ns, snap)
    assert filled["metadata"]["uid"] == saving["metadata"]["uid"]
    assert "saving" not in filled["spec"]
    assert filled["spec"]["sha256"] == hashlib.sha256(small_image.read_bytes()).hexdigest()
    harness.wait_phase("vm3", "Running", timeout=60)
