"""Token auth (401/403) and the async client."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from kova.placement.app import create_app
from kova.placement.auth import StaticTokenAuth, parse_token_file
from kova.placement.client import PlacementClient, PlacementError


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

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with PlacementClient("http://placement", transport=transport) as pc:
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
    asyncio.run(main())
    app.db.dispose()
