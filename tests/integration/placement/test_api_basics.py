"""Version negotiation, error format, routing and media types."""

from __future__ import annotations

import re

from tests.fixtures.placement import new_uuid


def test_root_document(api):
    r = api.get("/", version="none")
    assert r.status_code == 200
    v = r.json()["versions"][0]
    assert (v["id"], v["min_version"], v["max_version"], v["status"]) == \
        ("v1.0", "1.0", "1.39", "CURRENT")
    assert r.headers["openstack-api-version"] == "placement 1.0"
    assert "openstack-api-version" in r.headers["vary"].lower()
    assert r.headers["x-openstack-request-id"].startswith("req-")


def test_version_negotiation(api):
    assert api.get("/", version="latest").headers["openstack-api-version"] == "placement 1.39"
    assert api.get("/", version="1.17").headers["openstack-api-version"] == "placement 1.17"
    r = api.get("/", version="none", headers={"x-openstack-placement-api-version": "1.5"})
    assert r.headers["openstack-api-version"] == "placement 1.5"
    r = api.get("/", version="none",
                headers={"openstack-api-version": "compute 2.1, placement 1.30"})
    assert r.headers["openstack-api-version"] == "placement 1.30"


def test_unacceptable_and_malformed_versions(api):
    for bad in ("1.40", "2.0", "0.9"):
        r = api.get("/resource_providers", version=bad)
        assert r.status_code == 406, bad
        err = r.json()["errors"][0]
        assert err["max_version"] == "1.39" and err["min_version"] == "1.0"
    for bad in ("1.a", "one", "1.01x", "1"):
        r = api.get("/resource_providers", version=bad)
        assert r.status_code == 400, bad


def test_error_body_code_from_1_23(api):
    missing = new_uuid()
    r = api.get(f"/resource_providers/{missing}", version="1.22")
    err = r.json()["errors"][0]
    assert r.status_code == 404 and "code" not in err
    assert set(err) == {"status", "title", "detail", "request_id"}
    r = api.get(f"/resource_providers/{missing}", version="1.23")
    err = r.json()["errors"][0]
    assert err["code"] == "placement.undefined_code" and err["status"] == 404
    assert err["request_id"] == r.headers["x-openstack-request-id"]


def test_unknown_route_and_method(api):
    assert api.get("/nowhere").status_code == 404
    r = api.delete("/resource_providers")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"
    assert r.json()["errors"][0]["status"] == 405


def test_routes_gated_by_microversion(api):
    assert api.get("/resource_classes", version="1.1").status_code == 404
    assert api.get("/resource_classes", version="1.2").status_code == 200
    assert api.get("/traits", version="1.5").status_code == 404
    assert api.get("/traits", version="1.6").status_code == 200
    assert api.get("/usages?project_id=x", version="1.8").status_code == 404
    assert api.get("/allocation_candidates?resources=VCPU:1", version="1.9").status_code == 404
    assert api.post("/allocations", version="1.12", json={}).status_code == 404
    assert api.post("/reshaper", version="1.29", json={}).status_code == 404


def test_media_types_and_bodies(api):
    r = api.post("/resource_providers", content=b'{"name": "x"}',
                 headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = api.post("/resource_providers", content=b"{not json",
                 headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Malformed JSON" in r.json()["errors"][0]["detail"]
    r = api.post("/resource_providers", json={"name": "x", "colour": "red"})
    assert r.status_code == 400 and "JSON does not validate" in r.json()["errors"][0]["detail"]
    r = api.post("/resource_providers", json={"name": 42})
    assert r.status_code == 400
    r = api.post("/resource_providers", json=["name"])
    assert r.status_code == 400
    r = api.get("/resource_providers", headers={"accept": "text/html"})
    assert r.status_code == 406


def test_bad_query_strings_are_400(api):
    assert api.get("/resource_providers?colour=red").status_code == 400
    assert api.get("/resource_providers?uuid=not-a-uuid").status_code == 400
    assert api.get("/resource_providers?member_of=x", version="1.2").status_code == 400
    assert api.get("/resource_providers?resources=VCPU", version="1.4").status_code == 400
    assert api.get("/resource_providers?resources=VCPU:x", version="1.4").status_code == 400
    assert api.get("/resource_providers?resources=VCPU:0", version="1.4").status_code == 400
    assert api.get("/resource_providers?resources=NOPE:1", version="1.4").status_code == 400
    assert api.get("/resource_providers?required=NOPE", version="1.18").status_code == 400
    assert api.get("/resource_providers?required=!HW_CPU_X86_AVX",
                   version="1.21").status_code == 400
    assert api.get("/resource_providers?required=in:HW_CPU_X86_AVX",
                   version="1.38").status_code == 400
    assert api.get("/resource_providers?in_tree=bad", version="1.14").status_code == 400


def test_healthz_and_metrics(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    api.get("/resource_providers")
    text = api.get("/metrics").text
    assert "placement_requests_total" in text
    assert 'route="resource_providers"' in text
    # The first candidate search builds the provider summary snapshot.
    assert api.get("/allocation_candidates?resources=VCPU:1", version="1.10").status_code == 200
    reloads = re.search(r"^placement_snapshot_reloads_total (\S+)$",
                        api.get("/metrics").text, re.M)
    assert reloads is not None and float(reloads.group(1)) >= 1


def test_text_postgres_cannot_store_is_400(api):
    """Found by the OpenAPI fuzzer (500s on Postgres): NUL characters and
    unpaired surrogates in bodies, paths and query strings."""
    h = {"content-type": "application/json"}
    for body in (b'{"name": "a\\u0000b"}', b'{"name": "a\\ud800b"}',
                 '{"name": "a\ud800b"}'.encode("utf-8", "surrogatepass"),
                 b'{"name": "ok", "uuid": "\\u0000"}'):
        r = api.post("/resource_providers", content=body, headers=h)
        assert r.status_code == 400, (body, r.text)
        assert "NUL characters or unpaired surrogates" in r.json()["errors"][0]["detail"]
    for url in ("/resource_providers/a%00b", "/usages?project_id=a%00b",
                "/resource_providers?name=x%00"):
        r = api.get(url)
        assert r.status_code == 400 and "NUL" in r.text, (url, r.text)
    # an escaped backslash is not an escape: this name is fine
    r = api.post("/resource_providers", content=b'{"name": "x\\u00e9\\\\u0000"}', headers=h)
    assert r.status_code == 200 and r.json()["name"] == "x\u00e9\\u0000"


def test_capacity_overflowing_to_infinity_is_400(api):
    """Found by the OpenAPI fuzzer: total x a huge negative ratio is -inf."""
    u = api.provider("inf")
    r = api.put(f"/resource_providers/{u}/inventories/VCPU", json={
        "resource_provider_generation": 0, "total": 24586,
        "allocation_ratio": -1.7976931348623157e308})
    assert r.status_code == 400 and "reserved value" in r.text, r.text
