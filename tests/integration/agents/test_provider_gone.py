"""A resource provider that vanishes from Placement under a running agent --
deleted by hand, or Placement's database restored from a backup taken before
the host was registered (docs/operations.md) -- is registered again by the
agent, with the same uuid, its inventory and traits, without a restart."""

from __future__ import annotations

from kova.crds import names as contract
from tests.fixtures.agents import wait_for


def test_agent_registers_a_vanished_provider_again(harness, placement):
    harness.agent(placement_url=placement.url, host_check_seconds=0.5)
    rp = wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get(
        "resourceProviderUUID"), 20, what="provider registered")
    inventory = placement.http.get(f"/resource_providers/{rp}/inventories").json()
    traits = set(placement.http.get(f"/resource_providers/{rp}/traits").json()["traits"])
    assert "VCPU" in inventory["inventories"] and traits

    assert placement.http.delete(f"/resource_providers/{rp}").status_code == 204
    again = wait_for(lambda: (r := placement.http.get(f"/resource_providers/{rp}"))
                     .status_code == 200 and r.json(), 30, 0.2, "the provider back")
    assert again["name"] == harness.host
    wait_for(lambda: placement.http.get(f"/resource_providers/{rp}/inventories").json()
             ["inventories"] == inventory["inventories"], 10, 0.2, "the inventory back")
    wait_for(lambda: set(placement.http.get(f"/resource_providers/{rp}/traits").json()
                         ["traits"]) == traits, 10, 0.2, "the traits back")

    def registered() -> dict | None:
        conds = {c["type"]: c for c in ((harness.host_obj() or {}).get("status") or {})
                 .get("conditions") or []}
        c = conds.get(contract.HOST_COND_PLACEMENT)
        return c if c and c["status"] == "True" else None

    wait_for(registered, 20, 0.2, "PlacementRegistered=True again")
    assert harness.host_obj()["status"]["resourceProviderUUID"] == rp
