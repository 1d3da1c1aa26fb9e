"""A compromised node kept to its own provider tree in Placement (security).

Each hypervisor agent authenticates to Placement with its own pod-bound
ServiceAccount token (TokenReview against the real kube-apiserver, audience
``kova-placement``); the API server names the node of the token's pod.  The
probes are the requests a node's root would send with its agent's token to
steer scheduling for the whole cluster -- delete another host's inventory,
delete or write allocations, rename, re-parent or delete another host's
provider, lift its own host's ``COMPUTE_STATUS_DISABLED``, join an aggregate
-- each must be a 403 with ``code: kova.placement.agent_forbidden`` and
change nothing.  The operator's static admin token beside it still may do
everything.  No kubelet: the Nodes and the agents' Pods are API objects only.
"""

from __future__ import annotations

import uuid
import warnings

import pytest

from kova.placement.agentpolicy import AGENT_FORBIDDEN
from kova.placement.app import create_app
from kova.placement.auth import DEFAULT_AUDIENCE, StaticTokenAuth, TokenReviewAuth
from kova.placement_client import PlacementError, SyncPlacementClient
from tests.helpers import serve_app
from tests.reliability.record import record

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

HDR = {"openstack-api-version": "placement 1.39"}
ADMIN = "operator-admin-" + "x" * 24


def _agent_tokens(k8s_client, namespace: str, nodes: list[str]) -> tuple[dict, str]:
    """{node: token of the agent's Pod on that node} and a token of the same
    ServiceAccount bound to no pod."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="kova-agent")))
    tokens = {}
    for node in nodes:
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
        pod = core.create_namespaced_pod(namespace, client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"agent-{node}"),
            spec=client.V1PodSpec(service_account_name="kova-agent", node_name=node,
                                  containers=[client.V1Container(name="agent",
                                                                 image="kova:0.1.0")])))
        req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[DEFAULT_AUDIENCE], expiration_seconds=600,
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid)))
        tokens[node] = core.create_namespaced_service_account_token(
            "kova-agent", namespace, req).status.token
    unbound = core.create_namespaced_service_account_token(
        "kova-agent", namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[DEFAULT_AUDIENCE],
                                           expiration_seconds=600))).status.token
    return tokens, unbound


def _delete_nodes(k8s_client, nodes: list[str]) -> None:
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    for node in nodes:
        try:
            core.delete_node(node)
        except client.ApiException:
            pass


def test_agent_tokens_write_only_their_own_provider_tree(k8s_client, sync_kube, namespace,
                                                          tmp_path):
    suffix = uuid.uuid4().hex[:6]
    node_a, node_b = f"hv-a-{suffix}", f"hv-b-{suffix}"
    token_file = tmp_path / "tokens"
    token_file.write_text(f"admin {ADMIN}\n")
    try:
        tokens, unbound = _agent_tokens(k8s_client, namespace, [node_a, node_b])
        auth = TokenReviewAuth(sync_kube, {f"system:serviceaccount:{namespace}:kova-agent":
                                           "agent"}, static=StaticTokenAuth(token_file))
        app = create_app(f"sqlite:///{tmp_path}/p.db", auth=auth)
        try:
            with TestClient(app) as c:
                refused = _probe(c, tokens[node_a], tokens[node_b], unbound, node_a, node_b)
            with serve_app(app) as url:
                _agent_client(url, tmp_path / "agent-token", tokens, node_a, node_b)
        finally:
            app.db.dispose()
    finally:
        _delete_nodes(k8s_client, [node_a, node_b])
    record(fault="Node steers Placement",
           injected="agent A's pod-bound token against agent B's provider, allocations, "
                    "aggregates and the operator's trait; a token bound to no pod",
           times=len(refused), lost=0, duplicated=0, overcommitted=None,
           result=f"all {len(refused)} refused with 403 {AGENT_FORBIDDEN}; B's inventory "
                  "and the allocation unchanged; the operator's token still writes",
           figures={"probes": len(refused)})


def _probe(c, token_a: str, token_b: str, unbound: str, node_a: str, node_b: str) -> list:
    def call(token, method, path, json=None):
        return c.request(method, path, json=json,
                         headers={**HDR, "x-auth-token": token})

    refused: list[tuple[str, str]] = []

    def refuse(method, path, json=None, token=token_a):
        r = call(token, method, path, json)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        err = r.json()["errors"][0]
        assert err["code"] == AGENT_FORBIDDEN and err["status"] == 403, err
        refused.append((method, path))
        return err

    def ok(token, method, path, json=None, status=(200, 201, 204)):
        r = call(token, method, path, json)
        assert r.status_code in status, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    rp_a = ok(token_a, "POST", "/resource_providers", {"name": node_a})["uuid"]
    rp_b = ok(token_b, "POST", "/resource_providers", {"name": node_b})["uuid"]
    inv = {"VCPU": {"total": 8}, "MEMORY_MB": {"total": 4096}}
    for token, rp in ((token_a, rp_a), (token_b, rp_b)):
        ok(token, "PUT", f"/resource_providers/{rp}/inventories",
           {"resource_provider_generation": 0, "inventories": inv})
    ok(token_a, "PUT", "/traits/CUSTOM_KOVA_PROBE", status=(201, 204))
    ok(token_a, "PUT", "/resource_classes/CUSTOM_KOVA_PROBE", status=(201, 204))
    # the operator claims an Instance on B and fences A
    consumer = str(uuid.uuid4())
    alloc = {"allocations": {rp_b: {"resources": {"VCPU": 2}}}, "project_id": "p",
             "user_id": "u", "consumer_generation": None, "consumer_type": "INSTANCE"}
    ok(ADMIN, "PUT", f"/allocations/{consumer}", alloc)
    gen_a = ok(ADMIN, "GET", f"/resource_providers/{rp_a}")["generation"]
    ok(ADMIN, "PUT", f"/resource_providers/{rp_a}/traits",
       {"resource_provider_generation": gen_a, "traits": ["COMPUTE_STATUS_DISABLED"]})
    gen_b = ok(ADMIN, "GET", f"/resource_providers/{rp_b}")["generation"]

    # agent A against B's provider tree
    err = refuse("DELETE", f"/resource_providers/{rp_b}/inventories")
    assert node_a in err["detail"] and rp_b in err["detail"]
    refuse("DELETE", f"/resource_providers/{rp_b}/inventories/VCPU")
    refuse("PUT", f"/resource_providers/{rp_b}/inventories",
           {"resource_provider_generation": gen_b, "inventories": {"VCPU": {"total": 1}}})
    refuse("PUT", f"/resource_providers/{rp_b}/traits",
           {"resource_provider_generation": gen_b, "traits": []})
    refuse("PUT", f"/resource_providers/{rp_b}", {"name": f"{node_a}_stolen"})
    refuse("DELETE", f"/resource_providers/{rp_b}")
    refuse("POST", "/resource_providers", {"name": node_b + "-twin"})
    refuse("POST", "/resource_providers", {"name": f"{node_b}_child",
                                           "parent_provider_uuid": rp_b})
    refuse("POST", "/resource_providers", {"name": node_b, "parent_provider_uuid": rp_a})
    # allocations: none of any consumer, not even on its own provider
    refuse("DELETE", f"/allocations/{consumer}")
    refuse("PUT", f"/allocations/{consumer}", {**alloc, "consumer_generation": 1})
    refuse("PUT", f"/allocations/{uuid.uuid4()}",
           {**alloc, "allocations": {rp_a: {"resources": {"VCPU": 1}}}})
    refuse("POST", "/allocations", {consumer: {**alloc, "allocations": {}}})
    # the operator's parts of its own provider
    gen_a = ok(token_a, "GET", f"/resource_providers/{rp_a}")["generation"]
    refuse("PUT", f"/resource_providers/{rp_a}/traits",
           {"resource_provider_generation": gen_a, "traits": ["HW_CPU_X86_AVX"]})
    refuse("DELETE", f"/resource_providers/{rp_a}/traits")
    refuse("PUT", f"/resource_providers/{rp_a}/aggregates",
           {"resource_provider_generation": gen_a, "aggregates": [str(uuid.uuid4())]})
    refuse("PUT", f"/resource_providers/{rp_a}", {"name": f"{node_b}"})
    refuse("DELETE", "/traits/CUSTOM_KOVA_PROBE")
    refuse("DELETE", "/resource_classes/CUSTOM_KOVA_PROBE")
    # a token of the agents' ServiceAccount bound to no pod names no node
    refuse("GET", "/resource_providers", token=unbound)

    # nothing changed
    assert ok(ADMIN, "GET", f"/resource_providers/{rp_b}/inventories")["inventories"][
        "VCPU"]["total"] == 8
    assert ok(ADMIN, "GET", f"/allocations/{consumer}")["allocations"][rp_b][
        "resources"] == {"VCPU": 2}
    assert ok(ADMIN, "GET", f"/resource_providers/{rp_a}/traits")["traits"] == [
        "COMPUTE_STATUS_DISABLED"]
    assert ok(ADMIN, "GET", f"/resource_providers/{rp_b}")["name"] == node_b

    # what an agent does on its own tree, and reads, still pass
    ok(token_a, "PUT", f"/resource_providers/{rp_a}/traits",
       {"resource_provider_generation": gen_a,
        "traits": ["COMPUTE_STATUS_DISABLED", "HW_CPU_X86_AVX", "CUSTOM_KOVA_PROBE"]})
    child = ok(token_a, "POST", "/resource_providers",
               {"name": f"{node_a}_gpu", "parent_provider_uuid": rp_a})["uuid"]
    ok(token_a, "PUT", f"/resource_providers/{child}/inventories",
       {"resource_provider_generation": 0, "inventories": {"CUSTOM_KOVA_PROBE": {"total": 1}}})
    ok(token_a, "DELETE", f"/resource_providers/{child}")
    ok(token_a, "DELETE", f"/resource_providers/{rp_a}/inventories/MEMORY_MB")
    assert ok(token_a, "GET", f"/resource_providers/{rp_b}/usages")["usages"]["VCPU"] == 2
    assert ok(token_a, "GET", f"/allocations/{consumer}")["allocations"]
    ok(token_a, "GET", "/allocation_candidates?resources=VCPU:1")
    # and the operator still may do everything
    ok(ADMIN, "DELETE", f"/allocations/{consumer}")
    ok(ADMIN, "DELETE", f"/resource_providers/{rp_b}/inventories")
    return refused


def _agent_client(url: str, token_path, tokens: dict, node_a: str, node_b: str) -> None:
    """Kova's own client with ``--placement-token-file``: the agent's
    registration calls pass with its node's token (keeping the operator's
    trait), and the file is read again when it changes (here: B's token
    written into A's file, so the next write to A's provider is refused)."""
    token_path.write_text(tokens[node_a])
    client = SyncPlacementClient(url, token_file=str(token_path))
    try:
        rp = client.ensure_provider(node_a)["uuid"]
        client.set_inventories(rp, {"VCPU": {"total": 4}, "DISK_GB": {"total": 10}})
        assert "COMPUTE_STATUS_DISABLED" in client.set_traits(
            rp, ["HW_CPU_X86_SSE"], keep=("COMPUTE_STATUS_DISABLED",))
        assert set(client.get_inventories(rp)["inventories"]) == {"VCPU", "DISK_GB"}
        token_path.write_text(tokens[node_b])
        with pytest.raises(PlacementError) as err:
            client.set_inventories(rp, {"VCPU": {"total": 64}})
        assert err.value.status == 403 and err.value.code == AGENT_FORBIDDEN
        assert client.get_inventories(rp)["inventories"]["VCPU"]["total"] == 4
    finally:
        client.close()
