"""Inventories of a provider."""

from __future__ import annotations

from tests.fixtures.placement import new_uuid


def _gen(api, u):
    return api.get(f"/resource_providers/{u}").json()["generation"]


def test_inventory_lifecycle(api):
    u = api.provider("cn")
    r = api.get(f"/resource_providers/{u}/inventories")
    assert r.json() == {"inventories": {}, "resource_provider_generation": 0}
    r = api.post(f"/resource_providers/{u}/inventories",
                 json={"resource_class": "VCPU", "total": 16, "max_unit": 8})
    assert r.status_code == 201
    assert r.headers["location"] == f"http://testserver/resource_providers/{u}/inventories/VCPU"
    assert r.json() == {"total": 16, "reserved": 0, "min_unit": 1, "max_unit": 8,
                        "step_size": 1, "allocation_ratio": 1.0,
                        "resource_provider_generation": 1}
    r = api.post(f"/resource_providers/{u}/inventories",
                 json={"resource_class": "VCPU", "total": 16})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    r = api.put(f"/resource_providers/{u}/inventories/VCPU",
                json={"resource_provider_generation": 1, "total": 32, "allocation_ratio": 2.0})
    assert r.status_code == 200 and r.json()["total"] == 32
    assert r.json()["resource_provider_generation"] == 2
    r = api.put(f"/resource_providers/{u}/inventories/VCPU",
                json={"resource_provider_generation": 1, "total": 32})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    r = api.put(f"/resource_providers/{u}/inventories/DISK_GB",
                json={"resource_provider_generation": 2, "total": 32})
    assert r.status_code == 400
    r = api.get(f"/resource_providers/{u}/inventories/VCPU")
    assert r.json()["allocation_ratio"] == 2.0 and r.json()["resource_provider_generation"] == 2
    assert api.get(f"/resource_providers/{u}/inventories/DISK_GB").status_code == 404
    assert api.delete(f"/resource_providers/{u}/inventories/VCPU").status_code == 204
    assert api.delete(f"/resource_providers/{u}/inventories/VCPU").status_code == 404
    assert _gen(api, u) == 3


def test_put_all_inventories(api):
    u = api.provider("cn")
    body = {"resource_provider_generation": 0,
            "inventories": {"VCPU": {"total": 8}, "MEMORY_MB": {"total": 4096, "reserved": 512}}}
    r = api.put(f"/resource_providers/{u}/inventories", json=body)
    assert r.status_code == 200 and r.json()["resource_provider_generation"] == 1
    assert r.json()["inventories"]["MEMORY_MB"]["reserved"] == 512
    r = api.put(f"/resource_providers/{u}/inventories", json=body)
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    body = {"resource_provider_generation": 1, "inventories": {"NOT_A_CLASS": {"total": 1}}}
    assert api.put(f"/resource_providers/{u}/inventories", json=body).status_code == 400
    body = {"resource_provider_generation": 1, "inventories": {"VCPU": {"total": 0}}}
    assert api.put(f"/resource_providers/{u}/inventories", json=body).status_code == 400
    body = {"resource_provider_generation": 1, "inventories": {"VCPU": {"total": "8"}}}
    assert api.put(f"/resource_providers/{u}/inventories", json=body).status_code == 400
    body = {"resource_provider_generation": 1, "inventories": {"VCPU": {"total": 8, "x": 1}}}
    assert api.put(f"/resource_providers/{u}/inventories", json=body).status_code == 400
    missing = new_uuid()
    body = {"resource_provider_generation": 1, "inventories": {"VCPU": {"total": 8}}}
    assert api.put(f"/resource_providers/{missing}/inventories",
                   json=body).status_code == 404


def test_reserved_equal_total_from_1_26(api):
    u = api.provider("cn")
    body = {"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 4, "reserved": 4}}}
    assert api.put(f"/resource_providers/{u}/inventories", json=body,
                   version="1.25").status_code == 400
    assert api.put(f"/resource_providers/{u}/inventories", json=body,
                   version="1.26").status_code == 200
    body = {"resource_provider_generation": 1, "inventories": {"VCPU": {"total": 4, "reserved": 5}}}
    assert api.put(f"/resource_providers/{u}/inventories", json=body,
                   version="1.26").status_code == 400


def test_inventory_in_use(api):
    u = api.provider("cn", inventory={"VCPU": 8, "DISK_GB": 100})
    assert api.allocate(new_uuid(), {u: {"VCPU": 2}}).status_code == 204
    gen = _gen(api, u)
    r = api.put(f"/resource_providers/{u}/inventories",
                json={"resource_provider_generation": gen,
                      "inventories": {"DISK_GB": {"total": 1}}})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.inventory.inuse"
    r = api.delete(f"/resource_providers/{u}/inventories/VCPU")
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    r = api.delete(f"/resource_providers/{u}/inventories")
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.inventory.inuse"
    # removing an unused class is fine
    assert api.delete(f"/resource_providers/{u}/inventories/DISK_GB").status_code == 204


def test_delete_all_inventories_needs_1_5(api):
    u = api.provider("cn", inventory={"VCPU": 8})
    assert api.delete(f"/resource_providers/{u}/inventories", version="1.4").status_code == 405
    assert api.delete(f"/resource_providers/{u}/inventories", version="1.5").status_code == 204
    assert api.get(f"/resource_providers/{u}/inventories").json()["inventories"] == {}


def test_bad_body_for_missing_provider_is_404(api):
    """OpenStack Placement looks the provider up before it reads the body on
    these routes, so a bad body for a missing provider is 404 there; the
    traits route validates first (400).  Found by bench/placement_parity.py."""
    missing = new_uuid()
    existing = api.provider("bad-body")
    cases = [("PUT", "/inventories", {"foo": 1}),
             ("PUT", "/inventories/VCPU", {"total": "x"}),
             ("POST", "/inventories", {"total": 1}),
             ("PUT", "/aggregates", {"aggregates": "x"}),
             ("PUT", "", {"name": 5})]
    for method, suffix, body in cases:
        r = api.request(method, f"/resource_providers/{missing}{suffix}", json=body)
        assert r.status_code == 404, (method, suffix, r.text)
        assert missing in r.json()["errors"][0]["detail"]
        r = api.request(method, f"/resource_providers/{existing}{suffix}", json=body)
        assert r.status_code == 400, (method, suffix, r.text)
    r = api.request("PUT", f"/resource_providers/{missing}/inventories", content=b"{",
                    headers={"content-type": "application/json"})
    assert r.status_code == 404, r.text
    r = api.put("/resource_providers/not-a-uuid/inventories", json={"foo": 1})
    assert r.status_code == 404, r.text
    r = api.put(f"/resource_providers/{missing}/traits", json={"traits": 5})
    assert r.status_code == 400, r.text
