"""Integration: two replicas with kopf peering -- only one acts."""

from __future__ import annotations

from tests.fixtures.operator import wait_for


def test_only_the_leader_schedules_and_the_other_takes_over(cluster):
    cluster.add_host("h1")
    leader = cluster.start_operator("--priority", "100", peering=True, log_name="a.log")
    wait_for(lambda: "kova operator starting" in cluster.operator_log("a.log"), 30)
    cluster.create_instance("vm1")
    cluster.wait_scheduled("vm1", timeout=40)
    standby = cluster.start_operator("--priority", "10", peering=True, log_name="b.log")
    wait_for(lambda: "standing by" in cluster.operator_log("b.log"), 40,
             what="the standby to stand by")
    cluster.create_instance("vm2")
    cluster.wait_scheduled("vm2", timeout=40)
    assert "scheduled " not in cluster.operator_log("b.log")
    # The leader leaves cleanly: the standby resumes and schedules.
    cluster.stop_operator(leader)
    cluster.create_instance("vm3")
    cluster.wait_scheduled("vm3", timeout=60)
    assert "vm3" in cluster.operator_log("b.log")
    assert standby.poll() is None


async def test_peering_installed_by_the_chart_needs_no_crd_access(k8s, k8s_client, caplog):
    """The chart ships the peering CRDs and object and lets the operator only
    list/watch CRDs: ensure_peering finds the object and asks nothing else
    (it used to GET the CRDs first, 403, and warn at every start)."""
    import logging
    import uuid
    from types import SimpleNamespace

    from kubernetes import client

    from kova.kube import Credentials
    from kova.operator.peering import ensure_peering, manifests

    name = f"peer-{uuid.uuid4().hex[:6]}"
    ns = "default"
    rbac = client.RbacAuthorizationV1Api(k8s_client)
    core = client.CoreV1Api(k8s_client)
    ext = client.ApiextensionsV1Api(k8s_client)
    custom = client.CustomObjectsApi(k8s_client)
    for crd in manifests(name)[:2]:  # the CRDs, as the chart installs them
        try:
            ext.create_custom_resource_definition(crd)
        except client.ApiException as exc:
            assert exc.status == 409
    obj = manifests(name)[2]
    wait_for(lambda: _try(lambda: custom.create_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", obj)), 20, what="peering object created")
    core.create_namespaced_service_account(ns, {"metadata": {"name": name}})
    # the verbs the chart's operator ClusterRole grants on these kinds
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
         "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["list", "watch"]}]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]})
    try:
        token = core.create_namespaced_service_account_token(
            name, ns, {"spec": {"audiences": ["https://kubernetes.default.svc"]}}).status.token
        creds = Credentials(k8s.server, ca_file=str(k8s.ca_file), token=token)
        settings = SimpleNamespace(all_namespaces=True, namespaces=[], peering_name=name)
        caplog.set_level(logging.INFO, logger="kova.operator.peering")
        await ensure_peering(creds, settings)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)
        core.delete_namespaced_service_account(name, ns)
        custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)


def _try(fn) -> bool:
    from kubernetes import client

    try:
        fn()
        return True
    except client.ApiException as exc:
        if exc.status == 404:  # the CRD is not served yet
            return False
        raise
