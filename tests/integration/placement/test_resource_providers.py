"""Resource providers, nested trees and the list filters."""

from __future__ import annotations

from tests.fixtures.placement import new_uuid


def test_create_status_by_version(api):
    r = api.post("/resource_providers", json={"name": "old"}, version="1.19")
    assert r.status_code == 201 and r.content == b""
    assert r.headers["location"].startswith("http://testserver/resource_providers/")
    r = api.post("/resource_providers", json={"name": "new"}, version="1.20")
    assert r.status_code == 200
    body = r.json()
    assert body["generation"] == 0 and body["name"] == "new"
    assert r.headers["location"] == f"http://testserver/resource_providers/{body['uuid']}"
    rels = [link["rel"] for link in body["links"]]
    assert rels == ["self", "inventories", "usages", "aggregates", "traits", "allocations"]


def test_show_fields_by_version(api):
    u = api.provider("cn")
    r = api.get(f"/resource_providers/{u}", version="1.13")
    assert "root_provider_uuid" not in r.json()
    assert "last-modified" not in r.headers
    r = api.get(f"/resource_providers/{u}", version="1.14")
    assert r.json()["root_provider_uuid"] == u and r.json()["parent_provider_uuid"] is None
    r = api.get(f"/resource_providers/{u}", version="1.15")
    assert r.headers["cache-control"] == "no-cache" and r.headers["last-modified"]
    r = api.get(f"/resource_providers/{u}", version="1.0")
    assert [link["rel"] for link in r.json()["links"]] == ["self", "inventories", "usages"]


def test_duplicates_conflict(api):
    u = api.provider("dup")
    r = api.post("/resource_providers", json={"name": "dup"})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.duplicate_name"
    r = api.post("/resource_providers", json={"name": "other", "uuid": u})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.duplicate_name"
    other = api.provider("other2")
    r = api.put(f"/resource_providers/{other}", json={"name": "dup"})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.duplicate_name"


def test_update_and_delete(api):
    u = api.provider("a")
    r = api.put(f"/resource_providers/{u}", json={"name": "b"})
    assert r.status_code == 200 and r.json()["name"] == "b"
    assert api.put(f"/resource_providers/{u}", json={"name": "b", "uuid": u}).status_code == 400
    assert api.put(f"/resource_providers/{new_uuid()}", json={"name": "c"}).status_code == 404
    assert api.delete(f"/resource_providers/{u}").status_code == 204
    assert api.get(f"/resource_providers/{u}").status_code == 404
    assert api.delete(f"/resource_providers/{u}").status_code == 404


def test_nested_providers(api):
    root = api.provider("root")
    child = api.provider("child", parent=root)
    grandchild = api.provider("gc", parent=child)
    r = api.get(f"/resource_providers/{grandchild}")
    assert r.json()["root_provider_uuid"] == root
    assert r.json()["parent_provider_uuid"] == child
    r = api.post("/resource_providers", json={"name": "orphan", "parent_provider_uuid": new_uuid()})
    assert r.status_code == 400
    assert api.post("/resource_providers", json={"name": "p", "parent_provider_uuid": root},
                    version="1.13").status_code == 400
    r = api.delete(f"/resource_providers/{root}")
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.resource_provider.cannot_delete_parent"
    names = {p["name"] for p in api.get(f"/resource_providers?in_tree={child}").json()[
        "resource_providers"]}
    assert names == {"root", "child", "gc"}
    assert api.get(f"/resource_providers?in_tree={new_uuid()}").json()[
        "resource_providers"] == []


def test_reparenting_rules(api):
    a = api.provider("a")
    b = api.provider("b")
    c = api.provider("c", parent=a)
    # adopting a root provider is allowed from 1.14
    r = api.put(f"/resource_providers/{b}", json={"name": "b", "parent_provider_uuid": a},
                version="1.14")
    assert r.status_code == 200 and r.json()["root_provider_uuid"] == a
    # moving or orphaning needs 1.37
    other = api.provider("other")
    r = api.put(f"/resource_providers/{c}", json={"name": "c", "parent_provider_uuid": other},
                version="1.36")
    assert r.status_code == 400
    r = api.put(f"/resource_providers/{c}", json={"name": "c", "parent_provider_uuid": None},
                version="1.36")
    assert r.status_code == 400
    r = api.put(f"/resource_providers/{c}", json={"name": "c", "parent_provider_uuid": other},
                version="1.37")
    assert r.status_code == 200 and r.json()["root_provider_uuid"] == other
    # no loops
    r = api.put(f"/resource_providers/{a}", json={"name": "a", "parent_provider_uuid": b},
                version="1.37")
    assert r.status_code == 400
    r = api.put(f"/resource_providers/{c}", json={"name": "c", "parent_provider_uuid": None},
                version="1.37")
    assert r.status_code == 200 and r.json()["root_provider_uuid"] == c


def test_delete_provider_with_allocations(api):
    u = api.provider("busy", inventory={"VCPU": 4})
    assert api.allocate(new_uuid(), {u: {"VCPU": 1}}).status_code == 204
    r = api.delete(f"/resource_providers/{u}")
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.resource_provider.inuse"


def test_delete_parent_with_allocations_reports_children_first(api):
    """A provider with both children and allocations: OpenStack Placement
    16.0.0 checks children first (found by bench/placement_parity.py)."""
    root = api.provider("busy-root", inventory={"VCPU": 4})
    child = api.provider("busy-child", parent=root)
    assert api.allocate(new_uuid(), {root: {"VCPU": 1}}).status_code == 204
    r = api.delete(f"/resource_providers/{root}")
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.resource_provider.cannot_delete_parent"
    assert api.delete(f"/resource_providers/{child}").status_code == 204
    r = api.delete(f"/resource_providers/{root}")
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.resource_provider.inuse"


def test_list_filters(api):
    agg1, agg2 = new_uuid(), new_uuid()
    api.provider("a", inventory={"VCPU": 8, "MEMORY_MB": 1024}, traits=["HW_CPU_X86_AVX2"],
                 aggregates=[agg1])
    b = api.provider("b", inventory={"VCPU": 2}, traits=["CUSTOM_GOLD"], aggregates=[agg2])
    c = api.provider("c")

    def names(qs, version="1.39"):
        r = api.get(f"/resource_providers?{qs}", version=version)
        assert r.status_code == 200, r.text
        return sorted(p["name"] for p in r.json()["resource_providers"])

    assert names("") == ["a", "b", "c"]
    assert names("name=b") == ["b"]
    assert names(f"uuid={c}") == ["c"]
    assert names(f"member_of={agg1}") == ["a"]
    assert names(f"member_of=in:{agg1},{agg2}") == ["a", "b"]
    assert names(f"member_of=!{agg1}") == ["b", "c"]
    assert names(f"member_of={agg1}&member_of={agg2}") == []
    assert api.get(f"/resource_providers?member_of={agg1}&member_of={agg2}",
                   version="1.23").status_code == 400
    assert api.get(f"/resource_providers?member_of=!{agg1}", version="1.31").status_code == 400
    assert names("resources=VCPU:4") == ["a"]
    assert names("resources=VCPU:1,MEMORY_MB:512") == ["a"]
    assert names("required=HW_CPU_X86_AVX2") == ["a"]
    assert names("required=!HW_CPU_X86_AVX2") == ["b", "c"]
    assert names("required=in:HW_CPU_X86_AVX2,CUSTOM_GOLD") == ["a", "b"]
    assert names("required=HW_CPU_X86_AVX2&required=CUSTOM_GOLD") == []
    assert names(f"in_tree={b}") == ["b"]


def test_uuid_forms_are_stored_canonical(api):
    """Found by the OpenAPI fuzzer: other UUID spellings were a database
    error on Postgres (too long for the column)."""
    import uuid

    u, agg = uuid.uuid4(), uuid.uuid4()
    r = api.post("/resource_providers", json={"name": "urn", "uuid": f"urn:uuid:{u}"})
    assert r.status_code == 200 and r.json()["uuid"] == str(u)
    assert api.get(f"/resource_providers/{u}").json()["name"] == "urn"
    for form in ("{%s}" % u, u.hex, str(u).upper()):
        r = api.post("/resource_providers", json={"name": form, "uuid": form})
        assert r.status_code == 409, r.text
        assert r.json()["errors"][0]["code"] == "placement.duplicate_name"
    r = api.post("/resource_providers", json={"name": "kid", "parent_provider_uuid": u.hex})
    assert r.status_code == 200 and r.json()["parent_provider_uuid"] == str(u)
    r = api.put(f"/resource_providers/{u}/aggregates", json={
        "resource_provider_generation": 0, "aggregates": [f"urn:uuid:{agg}", "{%s}" % agg]})
    assert r.status_code == 200 and r.json()["aggregates"] == [str(agg)]
    assert api.get(f"/resource_providers?member_of={agg}").json()[
        "resource_providers"][0]["uuid"] == str(u)


def test_generations_beyond_32_bits_are_400(api):
    """Found by the OpenAPI fuzzer: a 500 (integer out of range) on Postgres."""
    u = api.provider("big", inventory={"VCPU": 4})
    big = 2**33
    for path, body in [("inventories", {"inventories": {"VCPU": {"total": 8}}}),
                       ("inventories/VCPU", {"total": 8}),
                       ("traits", {"traits": []}), ("aggregates", {"aggregates": []})]:
        r = api.put(f"/resource_providers/{u}/{path}",
                    json={"resource_provider_generation": big, **body})
        assert r.status_code == 400, (path, r.text)
    r = api.put(f"/allocations/{new_uuid()}", json={
        "allocations": {u: {"resources": {"VCPU": 1}}}, "project_id": "p", "user_id": "u",
        "consumer_generation": -big, "consumer_type": "INSTANCE"})
    assert r.status_code == 400, r.text
