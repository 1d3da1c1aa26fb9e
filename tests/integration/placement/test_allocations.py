"""Allocations, consumer generations and types, usages."""

from __future__ import annotations

from tests.fixtures.placement import new_uuid


def test_put_formats_by_version(api):
    u = api.provider("cn", inventory={"VCPU": 8, "MEMORY_MB": 2048})
    c = new_uuid()
    body = {"allocations": [{"resource_provider": {"uuid": u}, "resources": {"VCPU": 1}}]}
    assert api.put(f"/allocations/{c}", json=body, version="1.0").status_code == 204
    assert api.put(f"/allocations/{c}", json=body, version="1.8").status_code == 400
    body.update(project_id="p1", user_id="u1")
    assert api.put(f"/allocations/{c}", json=body, version="1.8").status_code == 204
    r = api.get(f"/allocations/{c}", version="1.11")
    assert r.json() == {"allocations": {u: {"generation": 3, "resources": {"VCPU": 1}}}}
    r = api.get(f"/allocations/{c}", version="1.12")
    assert r.json()["project_id"] == "p1" and "consumer_generation" not in r.json()
    dict_body = {"allocations": {u: {"resources": {"VCPU": 2, "MEMORY_MB": 512}}},
                 "project_id": "p1", "user_id": "u1"}
    assert api.put(f"/allocations/{c}", json=dict_body, version="1.11").status_code == 400
    assert api.put(f"/allocations/{c}", json=dict_body, version="1.12").status_code == 204
    r = api.get(f"/allocations/{c}", version="1.28")
    assert r.json()["consumer_generation"] == 3
    assert api.get(f"/allocations/{new_uuid()}").json() == {"allocations": {}}
    assert api.put("/allocations/not-a-uuid", json=dict_body, version="1.12").status_code == 400


def test_consumer_generations(api):
    u = api.provider("cn", inventory={"VCPU": 8})
    c = new_uuid()
    r = api.allocate(c, {u: {"VCPU": 1}}, generation=5)
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    assert api.allocate(c, {u: {"VCPU": 1}}, generation=None).status_code == 204
    r = api.get(f"/allocations/{c}")
    assert r.json()["consumer_generation"] == 1 and r.json()["consumer_type"] == "INSTANCE"
    r = api.allocate(c, {u: {"VCPU": 2}}, generation=None)
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    assert api.allocate(c, {u: {"VCPU": 2}}, generation=1).status_code == 204
    body = {"allocations": {u: {"resources": {"VCPU": 2}}}, "project_id": "p", "user_id": "u"}
    assert api.put(f"/allocations/{c}", json=body, version="1.28").status_code == 400
    # consumer_type is required from 1.38
    body["consumer_generation"] = 2
    assert api.put(f"/allocations/{c}", json=body, version="1.38").status_code == 400
    assert api.put(f"/allocations/{c}", json=body, version="1.37").status_code == 204
    # emptying the allocations removes the consumer
    body = {"allocations": {}, "project_id": "p", "user_id": "u", "consumer_generation": 3}
    assert api.put(f"/allocations/{c}", json=body, version="1.28").status_code == 204
    assert api.get(f"/allocations/{c}").json() == {"allocations": {}}
    assert api.allocate(c, {u: {"VCPU": 1}}, generation=None).status_code == 204


def test_failed_claim_leaves_no_consumer(api):
    u = api.provider("cn", inventory={"VCPU": 2})
    c = new_uuid()
    assert api.allocate(c, {u: {"VCPU": 3}}).status_code == 409
    assert api.allocate(c, {u: {"VCPU": 2}}, generation=None).status_code == 204


def test_capacity_and_constraints(api):
    u = api.provider("cn", inventory={
        "VCPU": {"total": 4, "max_unit": 2},
        "MEMORY_MB": {"total": 1024, "min_unit": 128, "step_size": 128, "reserved": 512},
        "DISK_GB": {"total": 10, "allocation_ratio": 2.0}})
    for res in ({"VCPU": 3}, {"MEMORY_MB": 64}, {"MEMORY_MB": 200}, {"MEMORY_MB": 640},
                {"DISK_GB": 21}, {"SRIOV_NET_VF": 1}):
        r = api.allocate(new_uuid(), {u: res})
        assert r.status_code == 409, (res, r.text)
    assert api.allocate(new_uuid(), {u: {"NOT_A_CLASS": 1}}).status_code == 400
    assert api.allocate(new_uuid(), {new_uuid(): {"VCPU": 1}}).status_code == 400
    assert api.allocate(new_uuid(), {u: {"DISK_GB": 20, "MEMORY_MB": 512}}).status_code == 204
    assert api.allocate(new_uuid(), {u: {"VCPU": 2}}).status_code == 204
    assert api.allocate(new_uuid(), {u: {"VCPU": 2}}).status_code == 204
    assert api.allocate(new_uuid(), {u: {"VCPU": 1}}).status_code == 409
    r = api.get(f"/resource_providers/{u}/usages")
    assert r.json()["usages"] == {"VCPU": 4, "MEMORY_MB": 512, "DISK_GB": 20}


def test_post_allocations_and_moves(api):
    a = api.provider("a", inventory={"VCPU": 4})
    b = api.provider("b", inventory={"VCPU": 4})
    c1, c2 = new_uuid(), new_uuid()
    assert api.allocate(c1, {a: {"VCPU": 4}}).status_code == 204
    body = {
        c1: {"allocations": {b: {"resources": {"VCPU": 4}}}, "project_id": "p",
             "user_id": "u", "consumer_generation": 1, "consumer_type": "INSTANCE"},
        c2: {"allocations": {a: {"resources": {"VCPU": 4}}}, "project_id": "p",
             "user_id": "u", "consumer_generation": None, "consumer_type": "MIGRATION"},
    }
    assert api.post("/allocations", json=body).status_code == 204
    assert api.get(f"/resource_providers/{a}/usages").json()["usages"] == {"VCPU": 4}
    r = api.get(f"/resource_providers/{a}/allocations")
    assert r.json()["allocations"] == {c2: {"resources": {"VCPU": 4}, "consumer_generation": 1}}
    r = api.get(f"/resource_providers/{a}/allocations", version="1.27")
    assert r.json()["allocations"] == {c2: {"resources": {"VCPU": 4}}}
    # one bad consumer fails the whole request
    body = {c1: {"allocations": {}, "project_id": "p", "user_id": "u",
                 "consumer_generation": 2, "consumer_type": "INSTANCE"},
            c2: {"allocations": {a: {"resources": {"VCPU": 5}}}, "project_id": "p",
                 "user_id": "u", "consumer_generation": 1, "consumer_type": "INSTANCE"}}
    assert api.post("/allocations", json=body).status_code == 409
    assert api.get(f"/allocations/{c1}").json()["allocations"]
    assert api.post("/allocations", json={}).status_code == 400
    assert api.post("/allocations", json={"x": {}}).status_code == 400


def test_delete_allocations(api):
    u = api.provider("cn", inventory={"VCPU": 4})
    c = new_uuid()
    assert api.allocate(c, {u: {"VCPU": 4}}).status_code == 204
    assert api.delete(f"/allocations/{c}").status_code == 204
    assert api.delete(f"/allocations/{c}").status_code == 404
    assert api.get(f"/resource_providers/{u}/usages").json()["usages"] == {"VCPU": 0}


def test_usages_by_project_and_type(api):
    u = api.provider("cn", inventory={"VCPU": 16, "MEMORY_MB": 4096})
    api.allocate(new_uuid(), {u: {"VCPU": 2, "MEMORY_MB": 256}}, project_id="p1", user_id="u1")
    api.allocate(new_uuid(), {u: {"VCPU": 1}}, project_id="p1", user_id="u2",
                 consumer_type="MIGRATION")
    api.allocate(new_uuid(), {u: {"VCPU": 4}}, project_id="p2", user_id="u1")
    r = api.get("/usages?project_id=p1", version="1.9")
    assert r.json() == {"usages": {"VCPU": 3, "MEMORY_MB": 256}}
    r = api.get("/usages?project_id=p1&user_id=u2", version="1.37")
    assert r.json() == {"usages": {"VCPU": 1}}
    r = api.get("/usages?project_id=p1", version="1.38")
    assert r.json() == {"usages": {
        "INSTANCE": {"consumer_count": 1, "VCPU": 2, "MEMORY_MB": 256},
        "MIGRATION": {"consumer_count": 1, "VCPU": 1}}}
    r = api.get("/usages?project_id=p1&consumer_type=all", version="1.38")
    assert r.json() == {"usages": {"all": {"consumer_count": 2, "VCPU": 3, "MEMORY_MB": 256}}}
    r = api.get("/usages?project_id=p1&consumer_type=MIGRATION", version="1.38")
    assert r.json() == {"usages": {"MIGRATION": {"consumer_count": 1, "VCPU": 1}}}
    assert api.get("/usages?project_id=p1&consumer_type=x", version="1.38").status_code == 400
    assert api.get("/usages?project_id=p1&consumer_type=all", version="1.37").status_code == 400
    assert api.get("/usages", version="1.9").status_code == 400


def test_reshaper(api):
    root = api.provider("root", inventory={"VCPU": 8})
    child = api.provider("child", parent=root)
    c = new_uuid()
    assert api.allocate(c, {root: {"VCPU": 2}}).status_code == 204
    root_gen = api.get(f"/resource_providers/{root}").json()["generation"]
    body = {
        "inventories": {
            root: {"resource_provider_generation": root_gen, "inventories": {}},
            child: {"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 8}}},
        },
        "allocations": {c: {"allocations": {child: {"resources": {"VCPU": 2}}},
                            "project_id": "p", "user_id": "u", "consumer_generation": 1,
                            "consumer_type": "INSTANCE"}},
    }
    r = api.post("/reshaper", json=body)
    assert r.status_code == 204, r.text
    assert api.get(f"/resource_providers/{child}/usages").json()["usages"] == {"VCPU": 2}
    assert api.get(f"/resource_providers/{root}/inventories").json()["inventories"] == {}
    assert api.get(f"/allocations/{c}").json()["consumer_generation"] == 2
    r = api.post("/reshaper", json=body)
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    body["inventories"] = {new_uuid(): {"resource_provider_generation": 0, "inventories": {}}}
    r = api.post("/reshaper", json=body)
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "placement.resource_provider.not_found"


def test_mappings_accepted_from_1_34(api):
    u = api.provider("cn", inventory={"VCPU": 8})
    c = new_uuid()
    body = {"allocations": {u: {"resources": {"VCPU": 1}}}, "project_id": "p",
            "user_id": "u", "consumer_generation": None, "mappings": {"": [u]}}
    assert api.put(f"/allocations/{c}", json=body, version="1.33").status_code == 400
    assert api.put(f"/allocations/{c}", json=body, version="1.34").status_code == 204


def test_missing_provider_sub_resources(api):
    missing = new_uuid()
    for path in ("inventories", "inventories/VCPU", "usages", "aggregates", "traits",
                 "allocations"):
        r = api.get(f"/resource_providers/{missing}/{path}")
        assert r.status_code == 404, path
        assert r.json()["errors"][0]["status"] == 404
    assert api.delete(f"/resource_providers/{missing}/traits").status_code == 404
    assert api.delete(f"/resource_providers/{missing}/inventories").status_code == 404


def test_malformed_consumer_keys_are_400(api):
    """Found by the OpenAPI fuzzer: keys matching ``^[0-9a-fA-F-]{36}$`` that
    are not UUIDs were a 500 in POST /allocations and the reshaper."""
    bad = "-" * 36
    entry = {"allocations": {}, "project_id": "p", "user_id": "u",
             "consumer_generation": None, "consumer_type": "INSTANCE"}
    r = api.post("/allocations", json={bad: entry})
    assert r.status_code == 400 and "Malformed consumer_uuid" in r.text, r.text
    u = api.provider("rs", inventory={"VCPU": 4})
    gen = api.get(f"/resource_providers/{u}").json()["generation"]
    r = api.post("/reshaper", json={
        "inventories": {u: {"resource_provider_generation": gen,
                            "inventories": {"VCPU": {"total": 4}}}},
        "allocations": {bad: entry}})
    assert r.status_code == 400 and "Malformed consumer_uuid" in r.text, r.text
