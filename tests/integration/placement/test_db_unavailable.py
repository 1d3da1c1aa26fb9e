"""A database that cannot be reached: 503 with a code and Retry-After, never
a 500; the async client retries it with back-off, then reports it.

The database here is a Postgres URL on a loopback port where nothing listens
(a real connection refused, as while Postgres restarts); the restart itself
is exercised in tests/reliability/test_placement_postgres_restart.py.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kova.placement.app import create_app
from kova.placement_client import PlacementClient, PlacementError, RetryPolicy
from tests.helpers import free_port, serve_app

HEADERS = {"OpenStack-API-Version": "placement 1.39"}


@pytest.fixture
def app():
    app = create_app(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/placement",
                     migrate=False)
    yield app
    app.db.dispose()


def test_unreachable_database_is_503_with_code(app):
    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p",
                                     headers=HEADERS) as http:
            for method, path, body in (
                    ("GET", "/resource_providers", None),
                    ("GET", "/allocation_candidates?resources=VCPU:1", None),
                    ("POST", "/resource_providers", {"name": "h1"}),
                    ("PUT", "/allocations/2b8a4c5e-8a4e-4a59-9d4e-5b0d2f1c3a11",
                     {"allocations": {"7f0c5a3e-1d2b-4c8e-9a6f-3b2e1d0c9f8a": {
                         "resources": {"VCPU": 1}}}, "project_id": "p", "user_id": "u",
                      "consumer_generation": None, "consumer_type": "INSTANCE"})):
                r = await http.request(method, path, json=body)
                assert r.status_code == 503, (method, path, r.text)
                err = r.json()["errors"][0]
                assert err["code"] == "placement.database.unavailable"
                assert "Traceback" not in r.text
                assert r.headers["retry-after"] == "1"
            r = await http.get("/healthz")
            assert r.status_code == 503
    asyncio.run(main())


def test_client_retries_503_then_raises(app):
    async def main(url):
        async with PlacementClient(url, retry=RetryPolicy(max_retries=3,
                                                          backoff=0.01)) as pc:
            with pytest.raises(PlacementError) as exc:
                await pc.usages("2b8a4c5e-8a4e-4a59-9d4e-5b0d2f1c3a11")
            assert exc.value.status == 503
            assert pc.retried == {"503": 3}
    with serve_app(app) as url:
        asyncio.run(main(url))
