"""The Go-built control plane: version, RBAC, CRDs, controller manager."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.kova.dev
spec:
  group: smoke.kova.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"""


def test_server_reports_real_release_version(kubectl) -> None:
    out = json.loads(kubectl("version", "-o", "json").stdout)
    server = out["serverVersion"]
    assert server["gitVersion"].startswith("v1.36."), server
    assert server["major"] == "1" and server["minor"].startswith("36"), server
    assert "dirty" not in server["gitVersion"] and "-" not in server["gitVersion"], server


def test_rbac_is_enforced(k8s, k8s_client) -> None:
    """An unknown bearer token is rejected; RBAC is the authorizer."""
    cfg = client.Configuration()
    cfg.host = k8s.server
    cfg.ssl_ca_cert = str(k8s.ca_file)
    cfg.api_key = {"authorization": "Bearer not-a-token"}
    with client.ApiClient(cfg) as anon:
        with pytest.raises(client.ApiException) as exc:
            client.CoreV1Api(anon).list_namespace()
    assert exc.value.status == 401
    # the rbac API group is served and the bootstrap roles exist
    roles = client.RbacAuthorizationV1Api(k8s_client).list_cluster_role()
    names = {r.metadata.name for r in roles.items}
    assert {"cluster-admin", "system:kube-controller-manager"} <= names


def test_crd_established_and_objects_round_trip(kubectl, k8s_client, namespace) -> None:
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.smoke.kova.dev",
            "--timeout=60s")
    # kubectl: create, list, delete
    kubectl("-n", namespace, "apply", "-f", "-", input=(
        "apiVersion: smoke.kova.dev/v1\nkind: Widget\n"
        "metadata: {name: w1}\nspec: {size: 3}\n"))
    listed = json.loads(kubectl("-n", namespace, "get", "widgets", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
    # schema validation at admission
    bad = kubectl("-n", namespace, "apply", "-f", "-", check=False, input=(
        "apiVersion: smoke.kova.dev/v1\nkind: Widget\n"
        "metadata: {name: w0}\nspec: {size: 0}\n"))
    assert bad.returncode != 0 and "spec.size" in bad.stderr
    # python client: create, list, delete
    co = client.CustomObjectsApi(k8s_client)
    co.create_namespaced_custom_object(
        "smoke.kova.dev", "v1", namespace, "widgets",
        {"apiVersion": "smoke.kova.dev/v1", "kind": "Widget",
         "metadata": {"name": "w2"}, "spec": {"size": 5}})
    items = co.list_namespaced_custom_object("smoke.kova.dev", "v1", namespace, "widgets")
    assert sorted(i["metadata"]["name"] for i in items["items"]) == ["w1", "w2"]
    co.delete_namespaced_custom_object("smoke.kova.dev", "v1", namespace, "widgets", "w2")
    kubectl("-n", namespace, "delete", "widget", "w1")
    items = co.list_namespaced_custom_object("smoke.kova.dev", "v1", namespace, "widgets")
    assert items["items"] == []


def test_controller_manager_runs(k8s_client, namespace) -> None:
    """The controller manager's service-account and root-CA controllers act on
    a new namespace (proof that it runs with working credentials)."""
    core = client.CoreV1Api(k8s_client)
    deadline = time.monotonic() + 60
    sa = cm = None
    while time.monotonic() < deadline:
        try:
            sa = core.read_namespaced_service_account("default", namespace)
            cm = core.read_namespaced_config_map("kube-root-ca.crt", namespace)
            break
        except client.ApiException as exc:
            assert exc.status == 404
            time.sleep(0.5)
    assert sa is not None and cm is not None
    assert "BEGIN CERTIFICATE" in cm.data["ca.crt"]
    # a bound token can be issued for that service account (signing keys work)
    tr = core.create_namespaced_service_account_token(
        "default", namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    )
    assert tr.status.token.count(".") == 2
