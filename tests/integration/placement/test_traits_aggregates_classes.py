"""Traits, aggregates and resource classes."""

from __future__ import annotations

from tests.fixtures.placement import new_uuid


def test_traits(api):
    r = api.put("/traits/CUSTOM_FAST")
    assert r.status_code == 201 and r.headers["location"] == "http://testserver/traits/CUSTOM_FAST"
    assert api.put("/traits/CUSTOM_FAST").status_code == 204
    assert api.put("/traits/NOT_CUSTOM").status_code == 400
    assert api.put("/traits/CUSTOM_lower").status_code == 400
    assert api.get("/traits/CUSTOM_FAST").status_code == 204
    assert api.get("/traits/HW_CPU_X86_AVX2").status_code == 204
    assert api.get("/traits/CUSTOM_NOPE").status_code == 404
    names = api.get("/traits?name=startswith:CUSTOM_").json()["traits"]
    assert "CUSTOM_FAST" in names and all(n.startswith("CUSTOM_") for n in names)
    assert api.get("/traits?name=in:CUSTOM_FAST,HW_CPU_X86_AVX2").json()["traits"] == [
        "CUSTOM_FAST", "HW_CPU_X86_AVX2"]
    assert api.get("/traits?name=CUSTOM_FAST").status_code == 400
    assert api.get("/traits?associated=maybe").status_code == 400
    assert len(api.get("/traits").json()["traits"]) > 300
    assert api.delete("/traits/HW_CPU_X86_AVX2").status_code == 400
    assert api.delete("/traits/CUSTOM_NOPE").status_code == 404


def test_provider_traits(api):
    u = api.provider("cn")
    api.put("/traits/CUSTOM_GOLD")
    r = api.put(f"/resource_providers/{u}/traits",
                json={"resource_provider_generation": 0,
                      "traits": ["CUSTOM_GOLD", "HW_CPU_X86_AVX2"]})
    assert r.status_code == 200
    assert r.json() == {"traits": ["CUSTOM_GOLD", "HW_CPU_X86_AVX2"],
                        "resource_provider_generation": 1}
    r = api.put(f"/resource_providers/{u}/traits",
                json={"resource_provider_generation": 0, "traits": []})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    r = api.put(f"/resource_providers/{u}/traits",
                json={"resource_provider_generation": 1, "traits": ["CUSTOM_UNKNOWN"]})
    assert r.status_code == 400
    assert api.get(f"/resource_providers/{u}/traits").json()["traits"] == [
        "CUSTOM_GOLD", "HW_CPU_X86_AVX2"]
    assert "CUSTOM_GOLD" in api.get("/traits?associated=true").json()["traits"]
    assert "CUSTOM_GOLD" not in api.get("/traits?associated=false").json()["traits"]
    assert api.delete("/traits/CUSTOM_GOLD").status_code == 409
    assert api.delete(f"/resource_providers/{u}/traits").status_code == 204
    assert api.get(f"/resource_providers/{u}/traits").json() == {
        "traits": [], "resource_provider_generation": 2}
    assert api.delete("/traits/CUSTOM_GOLD").status_code == 204
    assert api.get(f"/resource_providers/{new_uuid()}/traits").status_code == 404


def test_aggregates_by_version(api):
    u = api.provider("cn")
    agg1, agg2 = sorted([new_uuid(), new_uuid()])
    assert api.get(f"/resource_providers/{u}/aggregates", version="1.0").status_code == 404
    r = api.put(f"/resource_providers/{u}/aggregates", json=[agg1], version="1.1")
    assert r.status_code == 200 and r.json() == {"aggregates": [agg1]}
    assert api.get(f"/resource_providers/{u}").json()["generation"] == 0
    r = api.get(f"/resource_providers/{u}/aggregates", version="1.19")
    assert r.json() == {"aggregates": [agg1], "resource_provider_generation": 0}
    r = api.put(f"/resource_providers/{u}/aggregates", version="1.19",
                json={"aggregates": [agg1, agg2], "resource_provider_generation": 0})
    assert r.json() == {"aggregates": [agg1, agg2], "resource_provider_generation": 1}
    r = api.put(f"/resource_providers/{u}/aggregates", version="1.23",
                json={"aggregates": [], "resource_provider_generation": 0})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    assert api.put(f"/resource_providers/{u}/aggregates", version="1.19",
                   json=[agg1]).status_code == 400
    assert api.put(f"/resource_providers/{u}/aggregates", version="1.1",
                   json=["not-a-uuid"]).status_code == 400
    assert api.put(f"/resource_providers/{u}/aggregates", version="1.1",
                   json=[agg1, agg1]).status_code == 400


def test_resource_classes(api):
    r = api.get("/resource_classes")
    names = [rc["name"] for rc in r.json()["resource_classes"]]
    assert "VCPU" in names and "DISK_GB" in names
    r = api.post("/resource_classes", json={"name": "CUSTOM_GPU"})
    assert r.status_code == 201 and r.headers["location"] == "http://testserver/resource_classes/CUSTOM_GPU"
    assert api.post("/resource_classes", json={"name": "CUSTOM_GPU"}).status_code == 409
    assert api.post("/resource_classes", json={"name": "GPU"}).status_code == 400
    r = api.get("/resource_classes/CUSTOM_GPU")
    assert r.json() == {"name": "CUSTOM_GPU",
                        "links": [{"rel": "self", "href": "/resource_classes/CUSTOM_GPU"}]}
    assert api.get("/resource_classes/CUSTOM_NOPE").status_code == 404
    # 1.2 - 1.6: PUT renames
    r = api.put("/resource_classes/CUSTOM_GPU", json={"name": "CUSTOM_GPU2"}, version="1.6")
    assert r.status_code == 200 and r.json()["name"] == "CUSTOM_GPU2"
    assert api.put("/resource_classes/VCPU", json={"name": "CUSTOM_X"},
                   version="1.6").status_code == 400
    # 1.7+: PUT is a bodiless create-or-confirm
    assert api.put("/resource_classes/CUSTOM_NEW", version="1.7").status_code == 201
    assert api.put("/resource_classes/CUSTOM_NEW", version="1.7").status_code == 204
    assert api.put("/resource_classes/VCPU", version="1.7").status_code == 400
    u = api.provider("cn", inventory={"CUSTOM_NEW": 2})
    assert api.delete("/resource_classes/CUSTOM_NEW").status_code == 409
    assert api.delete("/resource_classes/VCPU").status_code == 400
    assert api.delete("/resource_classes/CUSTOM_NOPE").status_code == 404
    assert api.delete(f"/resource_providers/{u}").status_code == 204
    assert api.delete("/resource_classes/CUSTOM_NEW").status_code == 204
