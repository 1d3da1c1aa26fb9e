"""Token auth (401/403) and the async client."""

from __future__ import annotations

import asyncio
import json
import uuid
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from kova.placement.app import create_app
from kova.placement.auth import StaticTokenAuth, parse_token_file
from kova.placement_client import PlacementClient, PlacementError
from tests.helpers import serve_app


@pytest.fixture(scope="module")
def token_app(tmp_path_factory):
    d = tmp_path_factory.mktemp("auth")
    tokens = d / "tokens"
    tokens.write_text("# role token\nadmin adm1n\nreader r3ad\n")
    app = create_app(f"sqlite:///{d}/p.db", auth=StaticTokenAuth(tokens))
    yield app
    app.db.dispose()


def test_token_auth(token_app):
    with TestClient(token_app) as c:
        assert c.get("/").status_code == 200  # version discovery needs no token
        assert c.get("/healthz").status_code == 200
        r = c.get("/resource_providers")
        assert r.status_code == 401 and r.json()["errors"][0]["status"] == 401
        assert c.get("/resource_providers", headers={"x-auth-token": "nope"}).status_code == 401
        assert c.get("/resource_providers", headers={"x-auth-token": "r3ad"}).status_code == 200
        r = c.post("/resource_providers", json={"name": "x"}, headers={"x-auth-token": "r3ad"})
        assert r.status_code == 403
        r = c.post("/resource_providers", json={"name": "x"},
                   headers={"authorization": "Bearer adm1n"})
        assert r.status_code == 201


def test_token_file_format():
    assert parse_token_file("admin a\n\nreader b # c\n") == {"a": "admin", "b": "reader"}
    with pytest.raises(ValueError):
        parse_token_file("root x\n")


def test_async_client(tmp_path):
    app = create_app(f"sqlite:///{tmp_path}/c.db")

    async def main(url):
        async with PlacementClient(url) as pc:
            u = str(uuid.uuid4())
            rp = await pc.ensure_provider("host-1", u)
            assert (await pc.ensure_provider("host-1", u))["uuid"] == rp["uuid"]
            await pc.set_inventories(u, {"VCPU": {"total": 4}})
            await pc.set_traits(u, ["CUSTOM_KOVA", "HW_CPU_X86_AVX2"])
            await pc.set_aggregates(u, [str(uuid.uuid4())])
            cands = await pc.allocation_candidates({"resources": "VCPU:2"})
            alloc = cands["allocation_requests"][0]["allocations"]
            c = str(uuid.uuid4())
            await pc.claim(c, alloc, "p", "u")
            with pytest.raises(PlacementError) as exc:
                await pc.claim(c, alloc, "p", "u")
            assert exc.value.code == "placement.concurrent_update"
            assert (await pc.usages(u)) == {"VCPU": 2}
            assert await pc.delete_allocations(c) is True
            assert await pc.delete_allocations(c) is False
            await pc.delete_provider(u)
            assert await pc.get_provider(u) is None
    with serve_app(app) as url:
        asyncio.run(main(url))
    app.db.dispose()


# ---------------------------------------------------------------------------
# Every write of every route: refused without a token, with an unknown token
# and with a read-only token; the same request with the admin token succeeds
# (so the bodies are valid and the refusals are auth's, not validation's).

def _write_plan(rp: str, rp2: str, consumer: str, consumer2: str) -> list[tuple]:
    """(route name, method, path, body) -- in an order in which the admin
    control requests all succeed."""
    agg = str(uuid.uuid4())
    alloc = {"allocations": {rp: {"resources": {"VCPU": 1}}}, "project_id": "p",
             "user_id": "u", "consumer_generation": None, "consumer_type": "INSTANCE"}
    return [
        ("resource_providers", "POST", "/resource_providers", {"name": "auth-new"}),
        ("resource_provider", "PUT", f"/resource_providers/{rp}", {"name": "auth-renamed"}),
        ("inventories", "POST", f"/resource_providers/{rp2}/inventories",
         {"resource_class": "DISK_GB", "total": 10, "resource_provider_generation": "GEN2"}),
        ("inventories", "PUT", f"/resource_providers/{rp2}/inventories",
         {"resource_provider_generation": "GEN2",
          "inventories": {"DISK_GB": {"total": 20}, "VCPU": {"total": 2}}}),
        ("inventory", "PUT", f"/resource_providers/{rp2}/inventories/VCPU",
         {"resource_provider_generation": "GEN2", "total": 8}),
        ("inventory", "DELETE", f"/resource_providers/{rp2}/inventories/VCPU", None),
        ("inventories", "DELETE", f"/resource_providers/{rp2}/inventories", None),
        ("provider_aggregates", "PUT", f"/resource_providers/{rp}/aggregates",
         {"aggregates": [agg], "resource_provider_generation": "GEN"}),
        ("provider_traits", "PUT", f"/resource_providers/{rp}/traits",
         {"traits": ["CUSTOM_AUTH_OLD"], "resource_provider_generation": "GEN"}),
        ("provider_traits", "DELETE", f"/resource_providers/{rp}/traits", None),
        ("resource_classes", "POST", "/resource_classes", {"name": "CUSTOM_AUTH_NEW"}),
        ("resource_class", "PUT", "/resource_classes/CUSTOM_AUTH_PUT", None),
        ("resource_class", "DELETE", "/resource_classes/CUSTOM_AUTH_OLD", None),
        ("trait", "PUT", "/traits/CUSTOM_AUTH_NEW", None),
        ("trait", "DELETE", "/traits/CUSTOM_AUTH_OLD", None),
        ("allocation", "PUT", f"/allocations/{consumer2}", alloc),
        ("allocations", "POST", "/allocations", {consumer2: {
            **alloc, "allocations": {rp: {"resources": {"VCPU": 2}}},
            "consumer_generation": "CGEN2"}}),
        ("allocation", "DELETE", f"/allocations/{consumer}", None),
        ("reshaper", "POST", "/reshaper", {
            "inventories": {rp: {"resource_provider_generation": "GEN",
                                 "inventories": {"VCPU": {"total": 16}}}},
            "allocations": {consumer2: {**alloc, "allocations": {rp: {"resources": {"VCPU": 3}}},
                                        "consumer_generation": "CGEN2"}}}),
        ("resource_provider", "DELETE", f"/resource_providers/{rp2}", None),
    ]


def _state(c, admin) -> dict:
    """Everything the writes above could change, as the admin sees it."""
    out = {}
    for path in ("/resource_providers", "/resource_classes", "/traits?name=startswith:CUSTOM_"):
        out[path] = c.get(path, headers=admin).json()
    for rp in out["/resource_providers"]["resource_providers"]:
        base = f"/resource_providers/{rp['uuid']}"
        for sub in ("/inventories", "/traits", "/aggregates", "/allocations"):
            out[base + sub] = c.get(base + sub, headers=admin).json()
    return out


@pytest.fixture(scope="module", params=[
    "sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def token_app_backends(request, tmp_path_factory):
    """The token app on SQLite and on Postgres (where the host-registering
    writes take the fast path)."""
    d = tmp_path_factory.mktemp("auth-backends")
    tokens = d / "tokens"
    tokens.write_text("admin adm1n\nreader r3ad\n")
    if request.param == "sqlite":
        url = f"sqlite:///{d}/p.db"
    else:
        from kova.dev.postgres import sqlalchemy_url

        url = sqlalchemy_url(request.getfixturevalue("pg_database"))
    app = create_app(url, auth=StaticTokenAuth(tokens))
    yield app
    app.db.dispose()


def _existing_objects(c, admin):
    """Existing objects for the writes to act on: two providers, a class, a
    trait and a consumer with an allocation."""
    rp, rp2 = str(uuid.uuid4()), str(uuid.uuid4())
    consumer, consumer2 = str(uuid.uuid4()), str(uuid.uuid4())
    for u, name in ((rp, "auth-rp"), (rp2, "auth-rp2")):
        assert c.post("/resource_providers", json={"name": name, "uuid": u},
                      headers=admin).status_code == 200
    assert c.put(f"/resource_providers/{rp}/inventories", headers=admin, json={
        "resource_provider_generation": 0,
        "inventories": {"VCPU": {"total": 8}}}).status_code == 200
    for path in ("/resource_classes/CUSTOM_AUTH_OLD", "/traits/CUSTOM_AUTH_OLD"):
        assert c.put(path, headers=admin).status_code == 201
    assert c.put(f"/allocations/{consumer}", headers=admin, json={
        "allocations": {rp: {"resources": {"VCPU": 1}}}, "project_id": "p", "user_id": "u",
        "consumer_generation": None, "consumer_type": "INSTANCE"}).status_code == 204
    return rp, rp2, consumer, consumer2


def _body_filler(c, admin, rp, rp2, consumer2):
    """A body with the current generations in place of GEN, GEN2, CGEN2."""
    def gen(u):
        return c.get(f"/resource_providers/{u}", headers=admin).json()["generation"]

    def cgen(u):
        return c.get(f"/allocations/{u}", headers=admin).json().get("consumer_generation")

    def body_for(body):
        if body is None:
            return None
        text = json.dumps(body)
        for mark, value in (('"GEN2"', gen(rp2)), ('"GEN"', gen(rp)),
                            ('"CGEN2"', cgen(consumer2))):
            text = text.replace(mark, json.dumps(value))
        return json.loads(text)

    return body_for


def _reads_need_a_token(c, v, routes) -> None:
    """Reads without a valid token are refused too (401), with a reader token allowed."""
    for name, pattern, methods in routes:
        if "GET" in methods and name != "root" and "{" not in pattern:
            assert c.get(pattern, headers=v).status_code == 401, pattern
            query = {"allocation_candidates": "?resources=VCPU:1",
                     "usages": "?project_id=p"}.get(name, "")
            r = c.get(pattern + query, headers={**v, "x-auth-token": "r3ad"})
            assert r.status_code == 200, (pattern, r.text)


@pytest.mark.reliability
def test_every_write_refused_without_admin_token(token_app_backends):
    token_app = token_app_backends
    from kova.placement.routes import ROUTES
    from tests.reliability.record import record

    v = {"openstack-api-version": "placement 1.39"}
    admin = {**v, "x-auth-token": "adm1n"}
    refusals = {"no token": (dict(v), 401), "unknown token": ({**v, "x-auth-token": "adm1n0"}, 401),
                "bearer unknown": ({**v, "authorization": "Bearer r3ad-"}, 401),
                "read-only token": ({**v, "x-auth-token": "r3ad"}, 403),
                "read-only bearer": ({**v, "authorization": "Bearer r3ad"}, 403)}
    with TestClient(token_app) as c:
        rp, rp2, consumer, consumer2 = _existing_objects(c, admin)
        body_for = _body_filler(c, admin, rp, rp2, consumer2)
        plan = _write_plan(rp, rp2, consumer, consumer2)
        writes = {(name, m) for name, _, methods in ROUTES for m in methods if m != "GET"}
        assert {(name, m) for name, m, _, _ in plan} == writes, "a write route is not covered"

        before = _state(c, admin)
        tried = let_through = 0
        for _name, method, path, body in plan:
            for what, (headers, status) in refusals.items():
                r = c.request(method, path, headers=headers, json=body_for(body))
                tried += 1
                let_through += r.status_code < 400
                assert r.status_code == status, (what, method, path, r.status_code, r.text)
                err = r.json()["errors"][0]
                assert err["status"] == status and err["title"] and err["detail"], err
                assert err["request_id"] == r.headers["x-openstack-request-id"], err
                assert "code" in err, err
        _reads_need_a_token(c, v, ROUTES)
        assert _state(c, admin) == before, "a refused write changed something"

        # The control: the admin token makes every one of them succeed.
        for _name, method, path, body in plan:
            r = c.request(method, path, headers=admin, json=body_for(body))
            assert r.status_code < 300, (method, path, r.status_code, r.text)
        assert _state(c, admin) != before

    backend = "Postgres" if token_app.db.is_postgres else "SQLite"
    record(fault=f"Unauthenticated writes ({backend})",
           injected=f"{len(plan)} writes (every write method of the {len(writes)} "
                    "route/method pairs of the Placement API, on "
                    f"{backend}) each with no token, unknown "
                    "tokens (X-Auth-Token and Bearer) and a read-only token (both headers)",
           times=tried, lost=let_through, duplicated=0, overcommitted=None,
           result=f"{tried} requests refused (401 without a valid token, 403 for the "
                  "read-only token, Placement's error body with request id); writes let "
                  f"through: {let_through} (shown as lost); state unchanged; the same "
                  "requests with the admin token succeed",
           figures={"requests": tried, "let_through": let_through})
