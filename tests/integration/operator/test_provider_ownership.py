"""The operator does not take a Host's status.resourceProviderUUID on trust
(security: a compromised node's agent writes its own Host's status).

Host B's status names host A's resource provider -- what a node would write
to attract A's capacity, or to have the operator write its own disabled
trait and zone onto A's provider.  The operator checks in Placement that the
provider is a root provider named after the Host: B gets
``ProviderVerified=False`` (reason ``ProviderNotOwned``) and a Warning Event,
the scheduler does not see B (an Instance pinned to B waits, others go to
A), and B's ``enabled: false`` does not disable A's provider.  Once B names
a provider of its own, it is verified and schedulable.
"""

from __future__ import annotations

import pytest

from kova.crds import names as contract
from tests.fixtures.operator import G, V, condition, wait_for
from tests.reliability.record import record

pytestmark = pytest.mark.reliability


def _provider_condition(cluster, host: str) -> dict | None:
    for c in (cluster.get_host(host).get("status") or {}).get("conditions") or []:
        if c["type"] == contract.HOST_COND_PROVIDER:
            return c
    return None


def test_a_host_claiming_another_hosts_provider_is_refused(cluster):
    a = cluster.add_host("a")
    b = cluster.add_host("b", provider=False, enabled=False)
    rp_a = cluster.hosts[a]
    cluster.api.patch_cluster_custom_object_status(G, V, "hosts", b, {"status": {
        "resourceProviderUUID": rp_a}})
    cluster.start_operator()
    cond = wait_for(lambda: (c := _provider_condition(cluster, b)) and c["status"] == "False"
                    and c, 90, what="Host B's ProviderVerified=False")  # the operator starts
    assert cond["reason"] == contract.HOST_REASON_PROVIDER_NOT_OWNED
    assert rp_a in cond["message"] and repr(a) in cond["message"]
    wait_for(lambda: [e for e in cluster.core.list_namespaced_event("default").items
                      if e.involved_object.name == b
                      and e.reason == contract.HOST_REASON_PROVIDER_NOT_OWNED], 60,
             what="a ProviderNotOwned Event on Host B")
    # B's "enabled: false" was not written onto A's provider
    traits = cluster.placement.ok(cluster.placement.http.get(
        f"/resource_providers/{rp_a}/traits")).json()["traits"]
    assert contract.TRAIT_DISABLED not in traits
    # the scheduler does not see B: pinned to B waits, the rest goes to A
    cluster.create_instance("pinned", schedulingHints={"requestedHost": b})
    inst = cluster.wait_reason("pinned", contract.REASON_NO_VALID_HOST)
    assert "not registered" in condition(inst, contract.COND_SCHEDULED)["message"]
    cluster.create_instance("free")
    assert cluster.wait_scheduled("free")["status"]["host"] == a
    assert _provider_condition(cluster, a) is None  # verified without a status write

    # B registers a provider of its own: verified, and the pinned one lands
    rp_b = cluster.placement.provider(b, {"VCPU": 8, "MEMORY_MB": 8192, "DISK_GB": 100},
                                      traits={"HW_ARCH_X86_64"})
    cluster.patch_host(b, {"enabled": True})
    cluster.api.patch_cluster_custom_object_status(G, V, "hosts", b, {"status": {
        "resourceProviderUUID": rp_b}})
    wait_for(lambda: (c := _provider_condition(cluster, b)) and c["status"] == "True", 60,
             what="Host B's ProviderVerified=True")
    assert cluster.wait_scheduled("pinned", timeout=30)["status"]["host"] == b
    record(fault="Host claims another host's provider",
           injected="Host B's status.resourceProviderUUID set to host A's provider (B "
                    "disabled), with the operator and Placement running",
           times=1, lost=0, duplicated=0, overcommitted=0,
           result="B refused (ProviderVerified=False ProviderNotOwned, Warning Event), "
                  "A's provider not disabled, an Instance pinned to B waited and the next "
                  "went to A; B schedulable once it named its own provider")
