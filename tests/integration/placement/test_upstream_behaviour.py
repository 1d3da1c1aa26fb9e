"""Regression tests for the behaviours where Kova Placement used to differ
from OpenStack Placement 16.0.0, one group per class of difference, each on
SQLite and Postgres (the ``api`` fixture): policy, generations, ordering,
error bodies, headers, sharing providers.  Metrics across workers and the
raw-socket cases run ``kova placement serve`` itself.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from kova.placement.app import create_app
from kova.placement.auth import KeystoneAuth, NoAuth, NoAuth2
from kova.placement.policy import Enforcer
from tests.fixtures.placement import new_uuid
from tests.helpers import free_port, stop_process, wait_for

JSON = {"accept": "application/json"}


def _client(app):
    from starlette.testclient import TestClient

    return TestClient(app, raise_server_exceptions=True)


@pytest.fixture
def policy_api(api, backend_url, tmp_path):
    """A second app on the same database with noauth2 and the given rules."""
    apps = []

    def make(new_defaults=True, policy_file=None, strategy=NoAuth2, scope=True):
        app = create_app(backend_url, migrate=False, auth=strategy(Enforcer(
            enforce_new_defaults=new_defaults, enforce_scope=scope,
            policy_file=str(policy_file) if policy_file else None)))
        apps.append(app)
        return _client(app)

    yield make
    for app in apps:
        app.db.dispose()


def _h(token=None, roles=None, project=None, system=False, version="latest", **extra):
    h = {"openstack-api-version": f"placement {version}", "accept": "application/json"}
    if token is not None:
        h["x-auth-token"] = token
    if roles is not None:
        h["x-roles"] = roles
    if project is not None:
        h["x-project-id"] = project
    if system:
        h["openstack-system-scope"] = "all"
    h.update(extra)
    return h


# ------------------------------------------------------------------ policy
def test_noauth2_legacy_rules(api, policy_api):
    c = policy_api(new_defaults=False)
    assert c.get("/resource_providers", headers=_h()).status_code == 401
    r = c.get("/resource_providers", headers=_h())
    assert r.json()["code"] == "401 Unauthorized"  # webob's own body, as OpenStack's
    # as OpenStack's auth middleware: identity before route and microversion
    assert c.get("/no_such_route", headers=_h()).status_code == 401
    assert c.get("/resource_providers", headers=_h(version="9.99")).status_code == 401
    assert c.get("/", headers=_h()).status_code == 200
    assert c.get("/resource_providers", headers=_h("admin")).status_code == 200
    assert c.get("/resource_providers", headers=_h("admin:admin")).status_code == 200
    r = c.get("/resource_providers", headers=_h("user"))
    assert r.status_code == 403
    assert r.json()["errors"][0]["detail"] == (
        "Policy does not allow placement:resource_providers:list to be performed.")
    # project admin passes; a system-scoped admin does not (scope)
    assert c.get("/resource_providers", headers=_h("user", "admin", "p1")).status_code == 200
    assert c.get("/resource_providers",
                 headers=_h("user", "admin,member,reader", system=True)).status_code == 403
    # the reshaper wants the service role (or, legacy, admin)
    body = {"inventories": {}, "allocations": {}}
    assert c.post("/reshaper", json=body, headers=_h("user", "member", "p1")).status_code == 403
    assert c.post("/reshaper", json=body, headers=_h("user", "admin", "p1")).status_code != 403


def test_secure_rbac_project_reader_and_service(api, policy_api):
    c = policy_api(new_defaults=True)
    reader = _h("user", "reader", "proj-a")
    assert c.get("/usages?project_id=proj-a", headers=reader).status_code == 200
    assert c.get("/usages?project_id=proj-b", headers=reader).status_code == 403
    r = c.post("/resource_providers", json={"name": "x"}, headers=reader)
    assert r.status_code == 403
    assert c.post("/resource_providers", json={"name": "x"},
                  headers=_h("user", "service", "svc")).status_code == 200
    # the legacy rule (admin on the reshaper) is gone under the new defaults
    body = {"inventories": {}, "allocations": {}}
    assert c.post("/reshaper", json=body, headers=_h("user", "admin", "p1")).status_code == 403
    assert c.post("/reshaper", json=body, headers=_h("user", "service", "p1")).status_code != 403


def test_policy_file_overrides_and_is_reread(api, policy_api, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text('"placement:resource_providers:list": "role:reader"\n')
    c = policy_api(policy_file=policy)
    reader = _h("user", "reader", "p1")
    assert c.get("/resource_providers", headers=reader).status_code == 200
    assert c.get("/resource_classes", headers=reader).status_code == 403
    time.sleep(0.01)
    policy.write_text('{"placement:resource_providers:list": "!"}')
    assert c.get("/resource_providers", headers=reader).status_code == 403
    assert c.get("/resource_providers", headers=_h("admin")).status_code == 403


def test_keystone_headers_strategy(api, policy_api):
    c = policy_api(strategy=KeystoneAuth)
    confirmed = {"x-identity-status": "Confirmed", "x-user-id": "u1",
                 "x-project-id": "p1", "x-roles": "admin,member,reader"}
    assert c.get("/resource_providers", headers={**JSON, **confirmed}).status_code == 200
    invalid = {**confirmed, "x-identity-status": "Invalid"}
    assert c.get("/resource_providers", headers={**JSON, **invalid}).status_code == 401
    nobody = {k: v for k, v in confirmed.items() if k != "x-user-id"}
    assert c.get("/resource_providers", headers={**JSON, **nobody}).status_code == 401
    member = {**confirmed, "x-roles": "member,reader"}
    assert c.get("/resource_providers", headers={**JSON, **member}).status_code == 403


def test_only_no_auth_accepts_a_request_without_token(api, backend_url, tmp_path):
    from kova.placement.auth import StaticTokenAuth

    tokens = tmp_path / "tokens"
    tokens.write_text("admin secret\n")
    modes = [NoAuth2(Enforcer()), KeystoneAuth(Enforcer()), StaticTokenAuth(tokens)]
    for auth in modes:
        app = create_app(backend_url, migrate=False, auth=auth)
        try:
            assert _client(app).get("/traits", headers=_h()).status_code == 401
        finally:
            app.db.dispose()
    app = create_app(backend_url, migrate=False, auth=NoAuth())
    try:
        assert _client(app).get("/traits", headers=_h()).status_code == 200
    finally:
        app.db.dispose()


# ------------------------------------------------------------------ generations
def _gen(api, rp):
    return api.get(f"/resource_providers/{rp}").json()["generation"]


def test_generations_change_exactly_as_openstack(api):
    a = api.provider(inventory={"VCPU": 8}, traits=["HW_CPU_X86_AVX"])
    b = api.provider(inventory={"VCPU": 8})
    g = _gen(api, a)
    # the same set of traits again: no change
    r = api.put(f"/resource_providers/{a}/traits",
                json={"traits": ["HW_CPU_X86_AVX"], "resource_provider_generation": g})
    assert r.status_code == 200 and r.json()["resource_provider_generation"] == g
    # aggregates from 1.19 always bump, even when unchanged
    agg = new_uuid()
    for _ in range(2):
        r = api.put(f"/resource_providers/{a}/aggregates",
                    json={"aggregates": [agg], "resource_provider_generation": g})
        assert r.status_code == 200 and r.json()["resource_provider_generation"] == g + 1
        g += 1
    consumer = new_uuid()
    assert api.allocate(consumer, {a: {"VCPU": 1}}).status_code == 204
    assert _gen(api, a) == g + 1
    g += 1
    # moving the allocation to b bumps b only
    gb = _gen(api, b)
    assert api.allocate(consumer, {b: {"VCPU": 1}}, generation=1).status_code == 204
    assert (_gen(api, a), _gen(api, b)) == (g, gb + 1)
    # DELETE of a consumer's allocations changes no generation
    assert api.delete(f"/allocations/{consumer}").status_code == 204
    assert (_gen(api, a), _gen(api, b)) == (g, gb + 1)
    # emptying a consumer with POST /allocations bumps its providers
    other = new_uuid()
    assert api.allocate(other, {a: {"VCPU": 2}}).status_code == 204
    g += 1
    r = api.post("/allocations", json={other: {
        "allocations": {}, "project_id": "p", "user_id": "u", "consumer_generation": 1,
        "consumer_type": "INSTANCE"}})
    assert r.status_code == 204 and _gen(api, a) == g + 1
    # DELETE of traits when the provider has none: unchanged
    assert api.delete(f"/resource_providers/{b}/traits").status_code == 204
    assert _gen(api, b) == gb + 1


# ------------------------------------------------------------------ ordering
def test_orders(api):
    api.put("/traits/CUSTOM_ZZZ_FIRST")
    rp = api.provider(inventory={"VCPU": 4}, traits=["HW_NUMA_ROOT", "CUSTOM_ZZZ_FIRST"])
    r = api.get("/allocation_candidates?resources=VCPU:1")
    # creation order of the traits (standard ones first), not alphabetical
    assert r.json()["provider_summaries"][rp]["traits"] == ["HW_NUMA_ROOT", "CUSTOM_ZZZ_FIRST"]
    aggs = [str(u) for u in ("ffffffff-0000-0000-0000-000000000000",
                             "00000000-0000-0000-0000-00000000000a")]
    gen = _gen(api, rp)
    r = api.put(f"/resource_providers/{rp}/aggregates",
                json={"aggregates": aggs, "resource_provider_generation": gen})
    assert r.json()["aggregates"] == aggs
    names = [f"order-{i}" for i in (3, 1, 2)]
    uuids = [api.provider(name=n) for n in names]
    listed = [p["uuid"] for p in api.get("/resource_providers").json()["resource_providers"]]
    assert [u for u in listed if u in uuids] == uuids


# ------------------------------------------------------------------ error bodies
def test_error_bodies(api):
    rp = api.provider()
    r = api.post(f"/resource_providers/{rp}/inventories",
                 json={"resource_class": "VCPU", "total": 0, "resource_provider_generation": 0})
    assert r.status_code == 400
    assert "Failed validating 'minimum' in schema['properties']['total']" in r.text
    r = api.delete("/resource_providers", headers=JSON)
    assert r.status_code == 405
    assert "The method DELETE is not allowed for this resource." in r.text
    r = api.post("/resource_providers", content=b'{"name": "x"}', headers=JSON)
    assert r.status_code == 400 and "content-type header required" in r.text
    for version, status in (("pony.horse", 400), ("0.5", 406)):
        r = api.get("/resource_providers", version=version, headers=JSON)
        assert r.status_code == status
        assert "openstack-api-version" not in r.headers and "vary" not in r.headers
    r = api.get(f"/{new_uuid()}", headers={"accept": "text/html"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "<h1>404 Not Found</h1>" in r.text
    r = api.get(f"/resource_providers/{new_uuid()}", headers={"accept": "*/*"})
    assert r.headers["content-type"] == "application/json"
    r = api.get(f"/resource_providers/{new_uuid()}", headers={"accept": "text/plain"})
    assert r.status_code == 406 and r.headers["content-type"].startswith("text/plain")


# ------------------------------------------------------------------ headers
def test_headers(api):
    rp = api.provider()
    r = api.post(f"/resource_providers/{rp}/inventories",
                 json={"resource_class": "VCPU", "total": 4, "resource_provider_generation": 0})
    assert r.headers["location"] == f"http://testserver/resource_providers/{rp}/inventories/VCPU"
    r = api.put("/resource_classes/CUSTOM_HEADERS", version="1.15")
    assert r.status_code == 201
    assert "last-modified" not in r.headers and "cache-control" not in r.headers
    r = api.get("/", version="1.15")
    assert r.headers["cache-control"] == "no-cache" and "last-modified" in r.headers
    assert "cache-control" not in api.get("/", version="1.14").headers


# ------------------------------------------------------------------ sharing providers
def test_sharing_providers_with_member_of_and_in_tree(api):
    agg_a, agg_c = new_uuid(), new_uuid()
    cn1 = api.provider(name="cn1", aggregates=[agg_a])
    numa = api.provider(name="numa1", parent=cn1, inventory={"VCPU": 4}, aggregates=[agg_c])
    ss1 = api.provider(name="ss1", inventory={"DISK_GB": 100},
                       traits=["MISC_SHARES_VIA_AGGREGATE"], aggregates=[agg_a])
    ss2 = api.provider(name="ss2", inventory={"DISK_GB": 100},
                       traits=["MISC_SHARES_VIA_AGGREGATE"], aggregates=[agg_c])

    def providers(query):
        r = api.get(f"/allocation_candidates?{query}")
        assert r.status_code == 200, r.text
        return sorted(sorted(a["allocations"]) for a in r.json()["allocation_requests"])

    both = "resources=VCPU:1,DISK_GB:10"
    assert providers(both) == sorted([sorted([numa, ss1]), sorted([numa, ss2])])
    # ss2 is not in aggregate A itself: only ss1 (bug 1792503)
    assert providers(f"{both}&member_of={agg_a}") == [sorted([numa, ss1])]
    assert providers(f"{both}&member_of={agg_c}") == [sorted([numa, ss2])]
    assert providers(f"{both}&member_of=!{agg_c}") == []
    # a granular group in the sharing provider's own tree still anchors cn1
    q = f"resources=VCPU:1&resources1=DISK_GB:10&in_tree1={ss1}&group_policy=none"
    assert providers(q) == [sorted([numa, ss1])]


# ------------------------------------------------------------------ served
def _serve(tmp_path, url, *args):
    port = free_port()
    log = open(tmp_path / f"serve-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "kova.cli", "placement", "serve",
                             "--database-url", url, "--port", str(port), "--no-auth",
                             "--log-level", "warning", *args],
                            stdout=log, stderr=subprocess.STDOUT)

    def up():
        assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 60, 0.2, "placement")
    return proc, port, log


def _requests_total(text: str, route: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(
        r'^placement_requests_total\{[^}]*route="%s"[^}]*\} ([0-9.e+]+)$' % route, text, re.M))


def test_metrics_add_up_across_workers(backend_url, tmp_path):
    """With two workers every scrape counts the requests of both: the total
    only grows and ends at exactly what was sent."""
    proc, port, log = _serve(tmp_path, backend_url, "--workers", "2")
    try:
        seen = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            for i in range(1, 61):
                # a new connection each time, so both workers get requests
                assert httpx.get(f"http://127.0.0.1:{port}/traits", headers=_h(),
                                 timeout=10).status_code == 200
                if i % 10 == 0:
                    seen.append(_requests_total(c.get("/metrics").text, "traits"))
        assert seen == sorted(seen) and seen[-1] == 60, seen
    finally:
        stop_process(proc)
        log.close()


def test_non_integer_content_length_is_400(tmp_path):
    """gabbi cannot send this (see test_upstream_gabbits.NOT_APPLICABLE)."""
    proc, port, log = _serve(tmp_path, f"sqlite:///{tmp_path}/p.db")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /resource_providers HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: hi\r\n\r\n")
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 400"), reply
    finally:
        stop_process(proc)
        log.close()


def test_empty_inventory_has_no_last_modified(api):
    rp = api.provider()
    r = api.get(f"/resource_providers/{rp}/inventories")
    assert r.headers["cache-control"] == "no-cache" and "last-modified" not in r.headers
    r = api.put(f"/resource_providers/{rp}/inventories",
                json={"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 2}}})
    assert "last-modified" in r.headers
    assert "last-modified" in api.get(f"/resource_providers/{rp}/inventories").headers
