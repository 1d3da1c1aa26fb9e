"""The operator's guarded writes of an Instance as PUTs
(``Kube.update_guarded``) against the real kube-apiserver: the object as the
merge patch would leave it, status through the status subresource, a stale
copy retried on the API server's 409 with the object read again, and the
same results a guarded merge patch gives."""

from __future__ import annotations

import uuid

import pytest

from kova.crds.names import GROUP as G
from kova.crds.names import VERSION as V
from kova.kube import Credentials, Kube, KubeError, instance_path


def _instance(name: str) -> dict:
    return {"apiVersion": f"{G}/{V}", "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavorRef": {"name": "small"}, "imageRef": {"name": "cirros"}}}


async def test_guarded_put_of_metadata_and_status(kubeconfig, k8s_client, kova_crds, namespace):
    from kubernetes import client

    api = client.CustomObjectsApi(k8s_client)
    name = f"w-{uuid.uuid4().hex[:6]}"
    created = api.create_namespaced_custom_object(G, V, namespace, "instances", _instance(name))
    path = instance_path(namespace, name)
    kube = Kube(Credentials.load(str(kubeconfig)))
    try:
        # metadata: a label and a finalizer added, the spec kept
        labelled = await kube.update_guarded(path, created, lambda cur: {"metadata": {
            "labels": {"kova.dev/host": "h1"}, "finalizers": ["kova.dev/test"]}})
        assert labelled["metadata"]["labels"]["kova.dev/host"] == "h1"
        assert labelled["metadata"]["finalizers"] == ["kova.dev/test"]
        assert labelled["spec"] == created["spec"]

        # status: written through /status; a None removes the key; what the
        # same write says of the metadata is ignored there
        written = await kube.update_guarded(path + "/status", labelled, lambda cur: {
            "status": {"phase": "Scheduled", "host": "h1", "alternateHosts": ["h2", "h3"]}},
            read_path=path)
        assert written["status"]["alternateHosts"] == ["h2", "h3"]
        trimmed = await kube.update_guarded(path + "/status", written, lambda cur: {
            "status": {"alternateHosts": None}, "metadata": {"labels": {"x": "y"}}},
            read_path=path)
        assert trimmed["status"] == {"phase": "Scheduled", "host": "h1"}
        assert "x" not in trimmed["metadata"]["labels"]

        # nothing to write: no request, the copy as given
        assert await kube.update_guarded(path, trimmed, lambda cur: None) is trimmed

        # a stale copy: the 409 makes it read the object again and ask again
        api.patch_namespaced_custom_object(G, V, namespace, "instances", name,
                                           {"metadata": {"labels": {"other": "writer"}}})
        seen: list[str] = []

        def change(cur: dict) -> dict:
            seen.append(cur["metadata"]["resourceVersion"])
            return {"metadata": {"labels": {"kova.dev/host": "h2"}}}

        after = await kube.update_guarded(path, trimmed, change)
        assert len(seen) == 2 and seen[0] == trimmed["metadata"]["resourceVersion"]
        assert after["metadata"]["labels"] == {"kova.dev/host": "h2", "other": "writer"}
        assert after["status"] == trimmed["status"]

        # conflicts that never end: an error after the retries
        def always_stale(cur: dict) -> dict:
            api.patch_namespaced_custom_object(G, V, namespace, "instances", name, {
                "metadata": {"annotations": {"n": uuid.uuid4().hex}}})
            return {"metadata": {"labels": {"kova.dev/host": "h3"}}}

        with pytest.raises(RuntimeError, match="still conflicting"):
            await kube.update_guarded(path, after, always_stale, retries=2)

        # gone: the API server's 404
        api.patch_namespaced_custom_object(G, V, namespace, "instances", name,
                                           {"metadata": {"finalizers": None}})
        api.delete_namespaced_custom_object(G, V, namespace, "instances", name)
        with pytest.raises(KubeError) as err:
            await kube.update_guarded(path, after, lambda cur: {"status": {"phase": "Error"}})
        assert err.value.status in (404, 409)
    finally:
        await kube.close()


def test_the_chart_lets_the_operator_put_instances(k8s_client, kova_crds, namespace):
    """The chart's operator ClusterRole allows the operator's guarded PUTs of
    an Instance and its status, and of Host and ServerGroup status (the real API server's authorizer, the
    operator's user impersonated); without ``update`` they are refused."""
    from kubernetes import client

    from tests.support.chart import by_kind, render

    tag = uuid.uuid4().hex[:6]
    user = f"kova-operator-{tag}"
    role = next(r for r in by_kind(render(), "ClusterRole")
                if r["metadata"]["name"].endswith("-operator"))
    rbac = client.RbacAuthorizationV1Api(k8s_client)
    api = client.CustomObjectsApi(k8s_client)
    name = f"p-{tag}"
    api.create_namespaced_custom_object(G, V, namespace, "instances", _instance(name))
    host_name = f"p-{tag}"
    api.create_cluster_custom_object(G, V, "hosts", {
        "apiVersion": f"{G}/{V}", "kind": "Host", "metadata": {"name": host_name},
        "spec": {"enabled": True}})
    api.create_namespaced_custom_object(G, V, namespace, "servergroups", {
        "apiVersion": f"{G}/{V}", "kind": "ServerGroup", "metadata": {"name": name},
        "spec": {"policy": "anti-affinity"}})
    made: list[str] = []

    def grant(rules: list[dict], suffix: str) -> None:
        role_name = f"kova-operator-{tag}-{suffix}"
        rbac.create_cluster_role({"metadata": {"name": role_name}, "rules": rules})
        rbac.create_cluster_role_binding({
            "metadata": {"name": role_name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role_name},
            "subjects": [{"kind": "User", "name": user,
                          "apiGroup": "rbac.authorization.k8s.io"}]})
        made.append(role_name)

    def put_as_operator() -> None:
        impersonating = client.ApiClient(k8s_client.configuration)
        impersonating.set_default_header("Impersonate-User", user)
        as_operator = client.CustomObjectsApi(impersonating)
        try:
            current = as_operator.get_namespaced_custom_object(G, V, namespace, "instances",
                                                               name)
            current["metadata"].setdefault("labels", {})["kova.dev/host"] = "h1"
            current = as_operator.replace_namespaced_custom_object(
                G, V, namespace, "instances", name, current)
            current["status"] = {"phase": "Scheduled", "host": "h1"}
            as_operator.replace_namespaced_custom_object_status(G, V, namespace, "instances",
                                                                name, current)
            # the host monitor's and the server-group controller's status PUTs
            host = as_operator.get_cluster_custom_object(G, V, "hosts", host_name)
            host["status"] = {"state": "Up"}
            as_operator.replace_cluster_custom_object_status(G, V, "hosts", host_name, host)
            group = as_operator.get_namespaced_custom_object(G, V, namespace, "servergroups",
                                                             name)
            group["status"] = {"members": [name]}
            as_operator.replace_namespaced_custom_object_status(G, V, namespace,
                                                                "servergroups", name, group)
        finally:
            impersonating.close()

    try:
        without_update = [{**rule, "verbs": [v for v in rule["verbs"] if v != "update"]}
                          for rule in role["rules"]]
        grant(without_update, "patch-only")
        with pytest.raises(client.ApiException) as refused:
            put_as_operator()
        assert refused.value.status == 403
        grant(role["rules"], "chart")
        put_as_operator()
        after = api.get_namespaced_custom_object(G, V, namespace, "instances", name)
        assert after["metadata"]["labels"]["kova.dev/host"] == "h1"
        assert after["status"]["host"] == "h1"
        assert api.get_cluster_custom_object(G, V, "hosts", host_name)["status"] == {
            "state": "Up"}
        assert api.get_namespaced_custom_object(G, V, namespace, "servergroups", name)[
            "status"]["members"] == [name]
    finally:
        api.delete_cluster_custom_object(G, V, "hosts", host_name)
        for role_name in made:
            rbac.delete_cluster_role_binding(role_name)
            rbac.delete_cluster_role(role_name)
